"""The dataset registry: where each dataset's files come from and what their bytes must hash to.

Every dataset names its official source. A local mirror folder (``download.mirror`` in
params.yaml, or the ``DOGIQA_MIRROR`` environment variable) is an alternative source laid out as
``mirror`` paths below; the bytes are checked against the same SHA-256 values either way, so the
source never changes the data.

A resource is either one file (``sha256`` pins it) or a folder of images (``manifest`` names a
shipped list of per-file SHA-256 values; files not in the list are counted as unverified).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dogiqa.errors import ParamError
from dogiqa.labels import CsvLabels, livec_mat


@dataclass(frozen=True)
class Resource:
    """One file or folder of a dataset, as it lies under ``data/raw/<dataset>/``."""

    dest: str
    """Path below ``data/raw/<dataset>/``."""
    mirror: str | None
    """Path below the mirror folder (file or folder); None when no mirror copy exists."""
    url: str | None = None
    """Official download: the file itself or an archive holding it."""
    member: str | None = None
    """When ``url`` is an archive: the member (file) or member prefix (folder) to take."""
    sha256: str | None = None
    """SHA-256 of the file at ``dest`` (files only)."""
    archive_sha256: str | None = None
    """SHA-256 of the archive at ``url`` when it is pinned."""
    manifest: str | None = None
    """For folders: file name under ``dogiqa/manifests`` listing per-file SHA-256 values."""
    manual: str | None = None
    """How to get it by hand when no direct download exists (login, form, cloud drive)."""
    optional: bool = False
    """Images are optional: a dataset without them still provides its labels."""

    @property
    def is_folder(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True)
class ImageSet:
    """A set of a dataset's labelled images: the label rows it leaves out (by image name)."""

    excluded: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Dataset:
    key: str
    """Short id used in params, paths and file names."""
    display: str
    """Column name in the paper's tables."""
    title: str
    homepage: str
    citation: str
    parser: Callable[[Path], pd.DataFrame]
    """Reads the label file(s) in ``data/raw/<dataset>/`` into rows (image, mos), in label-file
    order: a :class:`dogiqa.labels.CsvLabels` for a CSV file, else a function of
    :mod:`dogiqa.labels`."""
    mos_column: str
    mos_range: tuple[float, float]
    """The native rating scale, for documentation; normalisation uses the observed range."""
    labels: tuple[Resource, ...]
    images: Resource | None
    image_subdir: str = ""
    """Where the images lie below the images resource folder."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    image_sets: Mapping[str, ImageSet] = field(default_factory=dict)
    """Named sets of images other than ``all`` (every labelled image), each by the rows it leaves
    out; ``download.<key>_images`` chooses one."""

    def image_set(self, name: str) -> ImageSet:
        """The image set ``name`` (``all``: nothing left out)."""
        if name == "all":
            return ImageSet(excluded=(), reason="every labelled image")
        if name not in self.image_sets:
            known = ["all", *self.image_sets]
            raise ParamError(f"download.{self.key}_images", f"must be one of {known}, got {name!r}")
        return self.image_sets[name]


MMSP = "https://datasets.vqa.mmsp-kn.de/archives"

DATASETS: dict[str, Dataset] = {
    "koniq": Dataset(
        key="koniq",
        display="KonIQ",
        title="KonIQ-10k",
        homepage="https://database.mmsp-kn.de/koniq-10k-database.html",
        citation="Hosu et al., KonIQ-10k, IEEE TIP 2020",
        parser=CsvLabels("koniq10k_scores_and_distributions.csv", image="image_name", mos="MOS"),
        mos_column="MOS",
        mos_range=(1.0, 5.0),
        labels=(
            Resource(
                dest="koniq10k_scores_and_distributions.csv",
                mirror="labels/koniq10k_scores_and_distributions.csv",
                url=f"{MMSP}/koniq10k_scores_and_distributions.zip",
                member="koniq10k_scores_and_distributions.csv",
                sha256="a5173fb66831b2049a581d2396ef6e50d341f2af509e1f9b252d4bd49fa03b5f",
            ),
        ),
        images=Resource(
            dest="images",
            mirror=None,
            url=f"{MMSP}/koniq10k_1024x768.zip",
            member="1024x768/",
            optional=True,
        ),
        notes=("MOS on the 1-5 scale (not MOS_zscore), as the authors' code uses.",),
    ),
    "spaq": Dataset(
        key="spaq",
        display="SPAQ",
        title="SPAQ (Smartphone Photography Attribute and Quality)",
        homepage="https://github.com/h4nwei/SPAQ",
        citation="Fang et al., Perceptual quality assessment of smartphone photography, CVPR 2020",
        parser=CsvLabels("spaq_MOS_and_Image_attribute_scores.csv", image="Image name", mos="MOS"),
        mos_column="MOS",
        mos_range=(0.0, 100.0),
        labels=(
            Resource(
                dest="spaq_MOS_and_Image_attribute_scores.csv",
                mirror="labels/spaq_MOS_and_Image_attribute_scores.csv",
                sha256="00f041519b4889b6f7d09fc4854fc44545b4e97f631b10e5d0f2532e3948fdf2",
                manual=(
                    "SPAQ is distributed through cloud drives linked from "
                    "https://github.com/h4nwei/SPAQ; export 'MOS and Image attribute scores' "
                    "to CSV (the Dog-IQA authors ship such a CSV in datasets/gt of "
                    "github.com/sjtuzzq/Dog-IQA) and put it under data/raw/spaq/"
                ),
            ),
        ),
        images=Resource(
            dest="images",
            mirror=None,
            manual="download TestImage from the links at https://github.com/h4nwei/SPAQ",
            optional=True,
        ),
    ),
    "livec": Dataset(
        key="livec",
        display="LIVEC",
        title="LIVE In the Wild Image Quality Challenge (ChallengeDB)",
        homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        citation="Ghadiyaram & Bovik, Massive online crowdsourced study, IEEE TIP 2015",
        parser=livec_mat,
        mos_column="AllMOS_release",
        mos_range=(0.0, 100.0),
        labels=tuple(
            Resource(
                dest=f"Data/{name}",
                mirror=f"livec/Data/{name}",
                url="https://live.ece.utexas.edu/research/ChallengeDB/ChallengeDB_release.zip",
                member=f"ChallengeDB_release/Data/{name}",
                sha256=digest,
            )
            for name, digest in (
                (
                    "AllImages_release.mat",
                    "9dca4ac80b008c83687c873221d2d30ecbeaeb182426c16e58bddc9996826681",
                ),
                (
                    "AllMOS_release.mat",
                    "94d4034cb420f31900d739ea06001f24f5851473a0bac07a6db3766252ef1767",
                ),
                (
                    "AllStdDev_release.mat",
                    "f0679b6455dda5203890a9c010a6d0896c73da101b9f3f9f71074f8683d2d052",
                ),
            )
        )
        + (
            Resource(
                dest="README.txt",
                mirror="livec/README.txt",
                url="https://live.ece.utexas.edu/research/ChallengeDB/ChallengeDB_release.zip",
                member="ChallengeDB_release/README.txt",
                sha256="442c7a52f43a98d8d7e94c04a4e0e90d72c87f4a8102f8261d14b3a086ba527e",
            ),
        ),
        images=Resource(
            dest="Images",
            mirror="livec/Images",
            url="https://live.ece.utexas.edu/research/ChallengeDB/ChallengeDB_release.zip",
            member="ChallengeDB_release/Images/",
            manifest="livec_images.sha256",
            optional=True,
        ),
        notes=(
            "1169 images: 7 training images t1-t7 (Images/trainingImages) and 1162 test images.",
            "The copyright notice README.txt travels with every copy.",
        ),
        image_sets={
            "test": ImageSet(
                excluded=tuple(f"t{number}.bmp" for number in range(1, 8)),
                reason="the 1162 test images: the seven training images t1-t7 left out",
            )
        },
    ),
    "kadid": Dataset(
        key="kadid",
        display="KADID",
        title="KADID-10k",
        homepage="https://database.mmsp-kn.de/kadid-10k-database.html",
        citation="Lin, Hosu & Saupe, KADID-10k, QoMEX 2019",
        parser=CsvLabels("dmos.csv", image="dist_img", mos="dmos"),
        mos_column="dmos",
        mos_range=(1.0, 5.0),
        labels=(
            Resource(
                dest="dmos.csv",
                mirror="labels/kadid10k_dmos.csv",
                url=f"{MMSP}/kadid10k.zip",
                member="kadid10k/dmos.csv",
                sha256="573e2ed98fdaa2a5aed7b50ad716906e125e1001ed0e97c8e93e79d7b997ba99",
            ),
        ),
        images=Resource(
            dest="images",
            mirror=None,
            url=f"{MMSP}/kadid10k.zip",
            member="kadid10k/images/",
            optional=True,
        ),
        notes=("Column 'dmos' is on 1-5 with higher meaning better despite its name.",),
    ),
    "agiqa": Dataset(
        key="agiqa",
        display="AGIQA",
        title="AGIQA-3k",
        homepage="https://github.com/lcysyzxdxc/AGIQA-3k-Database",
        citation="Li et al., AGIQA-3k, IEEE TCSVT 2023",
        parser=CsvLabels("data.csv", image="name", mos="mos_quality"),
        mos_column="mos_quality",
        mos_range=(0.0, 5.0),
        labels=(
            Resource(
                dest="data.csv",
                mirror="labels/agiqa3k_data.csv",
                url="https://raw.githubusercontent.com/lcysyzxdxc/AGIQA-3k-Database/main/data.csv",
                sha256="4b1945c2137e196d9378b9cf4a114de2267b97a4724f0743e260287eb2ddd6c0",
            ),
        ),
        images=Resource(
            dest="images",
            mirror="agiqa3k/images",
            manifest="agiqa_images.sha256",
            manual=(
                "images are linked (cloud drive) from "
                "https://github.com/lcysyzxdxc/AGIQA-3k-Database; unpack them to "
                "data/raw/agiqa/images/"
            ),
            optional=True,
        ),
        notes=("Quality MOS is 'mos_quality'; 'mos_align' is text-image alignment.",),
    ),
}


def dataset(key: str) -> Dataset:
    try:
        return DATASETS[key]
    except KeyError:
        raise KeyError(f"unknown dataset {key!r}; known: {sorted(DATASETS)}") from None


DISPLAY_ORDER = ("SPAQ", "KonIQ", "LIVEC", "AGIQA", "KADID")
"""Column order of the paper's Table 1."""
