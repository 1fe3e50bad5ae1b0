"""Label parsing: each dataset's published label file becomes one normalised table.

The table has one row per labelled image, in label-file order: ``image`` (name as written in the
label file), ``mos`` (native scale), ``mos_norm`` (min-max normalised to 0-1 over the file) and
``order``. Image paths are added by the download stage.

A dataset's registry entry names its parser directly: a :class:`CsvLabels` for a CSV file (file,
image column, MOS column: no code), or a function ``folder -> DataFrame(image, mos)`` for any other
format (:func:`livec_mat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.io

from dogiqa.errors import LabelError

if TYPE_CHECKING:  # the registry names the parsers below: no import at run time
    from dogiqa.registry import Dataset


def _read_csv(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read ``path`` and rename ``columns`` (source -> target); name a missing column clearly."""
    if not path.exists():
        raise LabelError(f"{path}: label file not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise LabelError(f"{path}: unreadable label file ({exc})") from None
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise LabelError(
            f"{path}: missing column {missing[0]!r} (columns found: {list(frame.columns)})"
        )
    return frame[list(columns)].rename(columns=columns)


@dataclass(frozen=True)
class CsvLabels:
    """A label table in one CSV file: the parser of a registry entry whose labels are a CSV file
    with one row per image (``image`` names the image column, ``mos`` the MOS column)."""

    file: str
    """The CSV file, below ``data/raw/<dataset>/``."""
    image: str
    mos: str

    def __call__(self, folder: Path) -> pd.DataFrame:
        return _read_csv(Path(folder) / self.file, {self.image: "image", self.mos: "mos"})


def _load_mat(path: Path, key: str) -> np.ndarray:
    if not path.exists():
        raise LabelError(f"{path}: label file not found")
    try:
        content = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as exc:
        raise LabelError(f"{path}: unreadable MATLAB file ({exc})") from None
    if key not in content:
        raise LabelError(f"{path}: missing variable {key!r}")
    return content[key]


def livec_mat(folder: Path) -> pd.DataFrame:
    """LIVE Challenge: image names and MOS in two MATLAB files (``Data/AllImages_release.mat``,
    ``Data/AllMOS_release.mat``), in the same order."""
    names = _load_mat(folder / "Data" / "AllImages_release.mat", "AllImages_release")
    mos = _load_mat(folder / "Data" / "AllMOS_release.mat", "AllMOS_release")
    image_names = [str(np.asarray(cell).ravel()[0]) for cell in names.ravel()]
    scores = np.asarray(mos, dtype=float).ravel()
    if len(image_names) != len(scores):
        raise LabelError(f"{folder}: {len(image_names)} image names but {len(scores)} MOS values")
    return pd.DataFrame({"image": image_names, "mos": scores})


def read_labels(spec: Dataset, folder: Path, image_set: str = "all") -> pd.DataFrame:
    """Parse a dataset's label file(s) in ``folder`` (with its registry entry's ``parser``) into
    the normalised table.

    ``image_set`` names the rows to keep: ``all``, or one of the entry's ``image_sets`` (LIVE
    Challenge's ``test`` leaves out its seven training images: 1162 remain). ``order`` keeps the
    label-file position of each row either way.
    """
    frame = spec.parser(Path(folder))
    frame["order"] = np.arange(len(frame))
    if image_set != "all":
        excluded = spec.image_set(image_set).excluded
        frame = frame[~frame["image"].astype(str).isin(excluded)].reset_index(drop=True)
    frame["image"] = frame["image"].astype(str)
    frame["mos"] = pd.to_numeric(frame["mos"], errors="coerce")
    bad = frame["mos"].isna()
    if bad.any():
        first = frame.loc[bad, "image"].iloc[0]
        raise LabelError(
            f"{spec.title}: {int(bad.sum())} rows without a numeric MOS (first: {first})"
        )
    if frame["image"].duplicated().any():
        first = frame.loc[frame["image"].duplicated(), "image"].iloc[0]
        raise LabelError(f"{spec.title}: image {first!r} is listed twice")
    low, high = frame["mos"].min(), frame["mos"].max()
    frame["mos_norm"] = (frame["mos"] - low) / (high - low) if high > low else 0.0
    return frame[["image", "mos", "mos_norm", "order"]]
