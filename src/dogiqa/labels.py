"""Label parsing: each dataset's published label file becomes one normalised table.

The table has one row per labelled image, in label-file order: ``image`` (name as written in the
label file), ``mos`` (native scale), ``mos_norm`` (min-max normalised to 0-1 over the file) and
``order``. Image paths are added by the download stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from dogiqa.errors import LabelError
from dogiqa.registry import Dataset

LIVEC_TRAINING_IMAGES = 7
"""The first seven LIVE Challenge entries (t1-t7.bmp) are its training images."""


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


def _koniq(folder: Path) -> pd.DataFrame:
    return _read_csv(
        folder / "koniq10k_scores_and_distributions.csv", {"image_name": "image", "MOS": "mos"}
    )


def _spaq(folder: Path) -> pd.DataFrame:
    return _read_csv(
        folder / "spaq_MOS_and_Image_attribute_scores.csv", {"Image name": "image", "MOS": "mos"}
    )


def _kadid(folder: Path) -> pd.DataFrame:
    # 'dmos' in KADID-10k is a 1-5 mean opinion score where higher is better.
    return _read_csv(folder / "dmos.csv", {"dist_img": "image", "dmos": "mos"})


def _agiqa(folder: Path) -> pd.DataFrame:
    return _read_csv(folder / "data.csv", {"name": "image", "mos_quality": "mos"})


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


def _livec(folder: Path) -> pd.DataFrame:
    names = _load_mat(folder / "Data" / "AllImages_release.mat", "AllImages_release")
    mos = _load_mat(folder / "Data" / "AllMOS_release.mat", "AllMOS_release")
    image_names = [str(np.asarray(cell).ravel()[0]) for cell in names.ravel()]
    scores = np.asarray(mos, dtype=float).ravel()
    if len(image_names) != len(scores):
        raise LabelError(f"{folder}: {len(image_names)} image names but {len(scores)} MOS values")
    return pd.DataFrame({"image": image_names, "mos": scores})


PARSERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "koniq_csv": _koniq,
    "spaq_csv": _spaq,
    "livec_mat": _livec,
    "kadid_csv": _kadid,
    "agiqa_csv": _agiqa,
}


def read_labels(spec: Dataset, folder: Path, livec_images: str = "all") -> pd.DataFrame:
    """Parse a dataset's label file(s) in ``folder`` into the normalised table.

    ``livec_images`` = "test" drops LIVE Challenge's seven training images (1162 remain).
    """
    frame = PARSERS[spec.label_format](Path(folder))
    frame["order"] = np.arange(len(frame))
    if spec.key == "livec" and livec_images == "test":
        frame = frame.iloc[LIVEC_TRAINING_IMAGES:].reset_index(drop=True)
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
