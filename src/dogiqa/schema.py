"""The stage tables: their columns, how each column is read, and a run's sample of images.

One definition per table (docs/data_contracts.md describes the meaning of each column); the
stages read and write them only through ``dogiqa.io``. Text columns are read as strings with an
empty cell kept as ``""``; in every other column an empty cell is missing (NaN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dogiqa import config


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
    ("image", "path", "mos", "mos_norm", "order"),
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
REGION_COUNTS = Table(
    "region counts table",
    "count_regions",
    ("image", "count", "in_sample"),
    text=("image",),
)
"""Algorithm 1's region count c of every image of a dataset (``dogiqa.count_regions``), the
population of c_max."""
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
"""Top-level keys of ``reports/metrics/<run>/<ds>.json``; per variant the keys of
``dogiqa.metrics.evaluate``."""


def score_columns(k: int) -> list[str]:
    """The scores table's columns for K levels."""
    return [*SCORES.columns[:4], *(f"p{i}" for i in range(1, k + 1)), *SCORE_FIELDS]


@dataclass(frozen=True)
class Sample:
    """A run's images: ``size`` of those with an image file drawn with ``seed`` (0 = all)."""

    size: int
    seed: int


def sample_params(params: Mapping[str, Any]) -> Sample:
    """The ``sample`` section, checked."""
    sec = config.section(params, "sample")
    return Sample(
        size=config.get_int(sec, "sample", "size", minimum=0),
        seed=config.get_int(sec, "sample", "seed", minimum=0),
    )


def sampled(labels: pd.DataFrame, sample: Sample) -> pd.Series:
    """The labels table's rows in the run's sample: a seeded random draw among the rows with an
    image path, in the table's row order (every stage of a run draws the same rows)."""
    available = (labels["path"].str.strip() != "").to_numpy()
    candidates = np.flatnonzero(available)
    chosen = np.zeros(len(labels), dtype=bool)
    if sample.size == 0 or sample.size >= len(candidates):
        chosen[candidates] = True
    else:
        rng = np.random.default_rng(sample.seed)
        chosen[rng.choice(candidates, size=sample.size, replace=False)] = True
    return pd.Series(chosen, index=labels.index)


def stage_images(labels: pd.DataFrame, sample: Sample) -> pd.DataFrame:
    """The images a run's stages process (its sample), in label order."""
    chosen = labels[sampled(labels, sample)]
    return chosen.sort_values("order", kind="stable").reset_index(drop=True)
