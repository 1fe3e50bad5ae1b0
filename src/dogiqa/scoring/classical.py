"""Classical no-reference IQA scorers for the CPU configuration: BRISQUE, NIQE, PIQE.

Each metric reproduces its reference MATLAB implementation (module docstrings say how closely;
``tests/test_iqa_calibration.py`` checks it on TID2013 and LIVE Challenge):

- ``brisque``: the BRISQUE release (LIVE) and its LIVE-trained SVR (``scoring.iqa.brisque``);
- ``niqe``: the NIQE release (LIVE) and its pristine model (``scoring.iqa.niqe``);
- ``piqe``: MATLAB's ``piqe`` (``scoring.iqa.piqe``).

Each gives a continuous score where lower is better. It is mapped to the K levels explicitly:

    position = 1 + (K - 1) * clip((worst - s) / (worst - best), 0, 1)

and the position is spread linearly over its two neighbouring levels
(``dogiqa.scoring.from_position``): ``expected`` equals the position and ``argmax`` is the
nearest level. The continuous score is kept as text in ``raw``. The score stage caches the
continuous score (``ClassicalScorer.measure``), which depends on neither K, the prompt nor the
anchors, and maps it to levels afterwards, so an ablation over K, or new anchors, compute no
metric again; a change of a metric's code or parameter files does (:func:`metric_settings`).
``best`` and ``worst`` are data,
not choices: percentiles of each metric over an anchor set of real images that the default run
does not evaluate (``resources/classical_anchors.yaml``, recomputed by
``python -m dogiqa.scoring.anchors``; :mod:`dogiqa.scoring.anchors` says why).

Crops whose shorter side is under a scorer's ``min_side`` are enlarged (bicubic, aspect ratio
kept) to that side first: NIQE needs two of its 96-pixel blocks per side (192), BRISQUE and
PIQE at least 16. The enlargement smooths the crop, which these metrics read as a little blur. A
score that is not a finite number (e.g. a flat crop) is a fallback (level 1, flagged).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dogiqa import config, levelmap
from dogiqa.cache import files_version
from dogiqa.errors import ParamError
from dogiqa.scoring.base import (
    LevelScores,
    ScorerBackend,
    ScorerUnit,
    fallback_scores,
    from_position,
    resize_crop,
)
from dogiqa.scoring.iqa.brisque import brisque
from dogiqa.scoring.iqa.niqe import MIN_SIDE as NIQE_MIN_SIDE
from dogiqa.scoring.iqa.niqe import niqe
from dogiqa.scoring.iqa.piqe import piqe

ANCHORS_FILE = levelmap.ANCHORS_FILE
IQA_PACKAGE = "dogiqa.scoring.iqa"
"""The metrics' implementations: a metric's code is its module and what it imports from here."""


def load_anchors() -> dict[str, dict[str, Any]]:
    """Per metric: ``best`` and ``worst`` (and how they were computed)."""
    return levelmap.load_anchors()


# --- scorer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    function: Callable[[np.ndarray], float]
    best: float
    """Score mapped to level K."""
    worst: float
    """Score mapped to level 1."""
    min_side: int
    reference: str
    calibration: str = ""
    """The row of the TID2013 calibration table that the metric reproduces
    (``samples/tid2013_calibration/official_values.csv`` of the data mirror: the reference
    implementations' values, as IQA-PyTorch publishes them), or ``none: <why not>``."""
    tolerance: float = 0.05
    """Largest difference from that row on a typical image (the median over its images)."""


def _spec(
    metric: str,
    function: Callable[[np.ndarray], float],
    min_side: int,
    reference: str,
    calibration: str,
    tolerance: float,
) -> MetricSpec:
    # A metric just added has no anchors until ``python -m dogiqa.scoring.anchors`` computes
    # them (which needs its entry here): NaN until then, refused by check_params.
    anchor = load_anchors().get(metric, {"best": math.nan, "worst": math.nan})
    return MetricSpec(
        function, anchor["best"], anchor["worst"], min_side, reference, calibration, tolerance
    )


SCORERS: dict[str, MetricSpec] = {
    "brisque": _spec(
        "brisque", brisque, 16, "BRISQUE release (LIVE), allmodel/allrange", "brisque", 0.01
    ),
    "niqe": _spec(
        "niqe", niqe, NIQE_MIN_SIDE, "NIQE release (LIVE), modelparameters.mat", "niqe", 0.05
    ),
    "piqe": _spec("piqe", piqe, 16, "MATLAB piqe.m", "piqe", 0.01),
}
"""A classical metric is one module of ``scoring/iqa`` (a function: RGB uint8 array -> score,
lower is better) and one entry here; its level-map anchors come from
``python -m dogiqa.scoring.anchors`` (``resources/classical_anchors.yaml``)."""


def level_position(score: float, spec: MetricSpec, k: int) -> float:
    """The documented map from a continuous score to a level position in [1, K]."""
    return levelmap.position(score, spec.best, spec.worst, k)


class ClassicalScorer:
    """A classical metric behind the Scorer interface: ``measure`` gives the raw metric values
    (what the score stage caches, independent of K), ``levels`` maps one onto the K levels."""

    def __init__(self, metric: str, k: int) -> None:
        self.metric = metric
        self.spec = SCORERS[metric]
        self.K = k
        self.name = metric

    def raw_score(self, crop: Image.Image) -> float:
        rgb = np.asarray(resize_crop(crop, min_side=self.spec.min_side), dtype=np.uint8)
        return self.spec.function(rgb)

    def measure(self, crops: list[Image.Image]) -> list[float | str]:
        """Per crop, the raw metric value (a non-finite one as text: JSON has no NaN)."""
        values = (self.raw_score(crop) for crop in crops)
        return [v if math.isfinite(v) else repr(v) for v in values]

    def levels(self, value: float | str) -> LevelScores:
        value = float(value)
        raw = format(value, ".8g")
        if not math.isfinite(value):
            return fallback_scores(self.K, raw)
        return from_position(level_position(value, self.spec, self.K), self.K, raw)

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        return [self.levels(value) for value in self.measure(crops)]


def metric_names(section: Mapping[str, Any]) -> list[str]:
    """The metrics of ``score.classical.scorer``: a name or a list of names, main one first."""
    value = config.get(section, "score.classical", "scorer")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise ParamError(
            "score.classical.scorer",
            f"must be a scorer name or a non-empty list of names, got {value!r}",
        )
    for name in names:
        config.get_choice({"scorer": name}, "score.classical", "scorer", SCORERS)
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        raise ParamError("score.classical.scorer", f"lists {repeated[0]!r} twice")
    unanchored = [name for name in names if math.isnan(SCORERS[name].best)]
    if unanchored:
        raise ParamError(
            "score.classical.scorer",
            f"{unanchored[0]!r} has no level-map anchors in {ANCHORS_FILE} yet; compute them "
            "with: python -m dogiqa.scoring.anchors",
        )
    return names


def check_params(section: Mapping[str, Any]) -> None:
    metric_names(section)


def implementation_files(name: str) -> tuple[Path, ...]:
    """The files that compute metric ``name``: the module of its function, the modules of
    :data:`IQA_PACKAGE` that one imports, and the packaged parameter files they read (found as
    dvc.yaml's code deps are, by :mod:`dogiqa.dvcdeps`)."""
    function = SCORERS[name].function
    return module_files(function.__module__, inspect.getsourcefile(function))


@cache
def module_files(module: str, source: str) -> tuple[Path, ...]:
    from dogiqa import dvcdeps

    modules = dvcdeps.closure([module], within=IQA_PACKAGE)
    # (a function defined elsewhere, e.g. in a test, is its own source file)
    sources = sorted(dvcdeps.module_file(m) for m in modules) or [Path(source)]
    return (*sources, *sorted(dvcdeps.resources_of(modules)))


def metric_settings(name: str) -> dict[str, Any]:
    """What shapes a metric's raw values: its name, the crop enlargement, its reference and the
    bytes of its implementation and parameter files (a changed one is measured again). Not K,
    the prompt or the anchors: they only map the cached values to levels."""
    spec = SCORERS[name]
    return {
        "metric": name,
        "min_side": spec.min_side,
        "reference": spec.reference,
        "code": files_version(implementation_files(name)),
    }


def units(section: Mapping[str, Any]) -> list[ScorerUnit]:
    """One scorer per listed metric; K only maps the cached raw values (``levels``)."""
    k = int(section["K"])
    return [
        ScorerUnit(
            name,
            metric_settings(name),
            build=lambda name=name: ClassicalScorer(name, k),
            levels=ClassicalScorer(name, k).levels,
        )
        for name in metric_names(section["classical"])
    ]


BACKEND = ScorerBackend(check=check_params, units=units, readout=False)
