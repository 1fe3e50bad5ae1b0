"""The stage tables: their columns, how each column is read, and the in-subset rule.

One definition per table (docs/data_contracts.md describes the meaning of each column); the
stages read and write them only through ``dogiqa.io``. Text columns are read as strings with an
empty cell kept as ``""``; in every other column an empty cell is missing (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dogiqa.errors import LabelError


@dataclass(frozen=True)
class Table:
    what: str
    """How messages name it, e.g. ``regions table``."""
    stage: str
    """The stage that writes it (named when it is absent)."""
    columns: tuple[str, ...]
    """Columns a reader needs (a writer writes at least these, in this order)."""
    text: tuple[str, ...] = ()
    """Columns read as strings."""


LABELS = Table(
    "labels table",
    "download",
    ("image", "path", "mos", "mos_norm", "order", "in_subset"),
    text=("image", "path"),
)
REGIONS = Table(
    "regions table",
    "segment",
    (
        "image",
        "region",
        "kind",
        "x0",
        "y0",
        "x1",
        "y1",
        "area",
        "area_authors",
        "height",
        "width",
        "count",
        "rle",
        "backend",
    ),
    text=("image", "kind", "rle", "backend"),
)
SCORES = Table(
    "scores table",
    "score",
    (
        "image",
        "region",
        "prompt_id",
        "K",
        "argmax",
        "expected",
        "raw",
        "fallback",
        "level_mass",
        "levels_found",
        "error",
    ),
    text=("image", "prompt_id", "raw", "error"),
)
"""The level columns ``p1..pK`` sit between ``K`` and ``argmax`` (see :func:`score_columns`)."""
SCORE_FIELDS = SCORES.columns[4:]
"""The columns after ``p1..pK``: the fields of a crop's ``scoring.LevelScores``
(``level_mass`` and ``levels_found`` empty where the readout does not measure them, ``error``
empty unless the model raised for that crop)."""
PREDICTIONS = Table(
    "predictions table",
    "aggregate",
    ("image", "variant", "prediction", "mos"),
    text=("image", "variant"),
)

COMPARISONS = Table(
    "comparisons table",
    "compare",
    (
        "trial",
        "first",
        "second",
        "p_first",
        "p_second",
        "p_same",
        "outcome",
        "expected",
        "answer",
        "raw",
        "fallback",
        "answer_mass",
        "answers_found",
        "error",
    ),
    text=("first", "second", "answer", "raw", "error"),
)
"""Seed 003's comparisons of a dataset's images by an MLLM: one row per compared pair (a ranked
list gives its C(L, 2) pairs), in trial order (docs/data_contracts.md)."""

SELECTIONS = Table(
    "selections table",
    "select",
    (
        "image",
        "mos",
        "std",
        "mos01",
        "std01",
        "proxy",
        "difficulty",
        "uniform",
        "difficult",
        "released_uniform",
        "released_difficult",
    ),
    text=("image",),
)
"""Seed 003's sample selections of a dataset; one column per proxy member sits before ``proxy``
(docs/data_contracts.md)."""

REGION_KINDS = ("global", "mask", "complement", "whole")
"""``global`` is the whole image (region 0); the others are Algorithm 1's final regions."""
LOCAL_KINDS = ("mask", "complement", "whole")

METRICS_KEYS = ("dataset", "main", "skipped", "bootstrap_samples", "confidence", "variants")
"""Top-level keys of ``reports/metrics/<ds>.json``; per variant the keys of
``dogiqa.metrics.evaluate``."""


def score_columns(k: int) -> list[str]:
    """The scores table's columns for K levels."""
    return [*SCORES.columns[:4], *(f"p{i}" for i in range(1, k + 1)), *SCORE_FIELDS]


def in_subset(labels: pd.DataFrame) -> pd.Series:
    """The rows of the seeded subset: ``in_subset`` is a boolean column (True/False, as the
    download stage writes it); anything else is refused."""
    column = labels["in_subset"]
    if column.dtype != bool:
        found = sorted({str(v) for v in column})[:4]
        raise LabelError(f"labels table: in_subset must be True or False, found {found}")
    return column


def stage_images(labels: pd.DataFrame) -> pd.DataFrame:
    """The images the image stages process: in the subset and with an image file, label order."""
    chosen = labels[in_subset(labels) & (labels["path"].str.strip() != "")]
    return chosen.sort_values("order", kind="stable").reset_index(drop=True)
