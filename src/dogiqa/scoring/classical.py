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
nearest level. The continuous score is kept as text in ``raw``. ``best`` and ``worst`` are data,
not choices: percentiles of each metric over an anchor set of real images that the default run
does not evaluate (``resources/classical_anchors.yaml``, recomputed by
``python -m dogiqa.scoring.anchors``; :mod:`dogiqa.scoring.anchors` says why).

Crops whose shorter side is under a scorer's ``min_side`` are enlarged (bicubic, aspect ratio
kept) to that side first: NIQE needs two of its 96-pixel blocks per side (192), BRISQUE and
PIQE at least 16. The enlargement smooths the crop, which these metrics read as a little blur. A
score that is not a finite number (e.g. a flat crop) is a fallback (level 1, flagged).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dogiqa import config
from dogiqa.scoring import LevelScores, anchors, fallback_scores, from_position, resize_crop
from dogiqa.scoring.iqa.brisque import brisque
from dogiqa.scoring.iqa.niqe import MIN_SIDE as NIQE_MIN_SIDE
from dogiqa.scoring.iqa.niqe import niqe
from dogiqa.scoring.iqa.piqe import piqe

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


def _spec(
    metric: str, function: Callable[[np.ndarray], float], min_side: int, reference: str
) -> MetricSpec:
    anchor = anchors.load()[metric]
    return MetricSpec(function, anchor["best"], anchor["worst"], min_side, reference)


SCORERS: dict[str, MetricSpec] = {
    "brisque": _spec("brisque", brisque, 16, "BRISQUE release (LIVE), allmodel/allrange"),
    "niqe": _spec("niqe", niqe, NIQE_MIN_SIDE, "NIQE release (LIVE), modelparameters.mat"),
    "piqe": _spec("piqe", piqe, 16, "MATLAB piqe.m"),
}


def fingerprint(metric: str) -> dict[str, Any]:
    """What shapes a scorer's levels besides the params: its implementation and its anchors (part
    of the score cache's key, so that a change of either scores the crops again)."""
    spec = SCORERS[metric]
    return {
        "reference": spec.reference,
        "best": spec.best,
        "worst": spec.worst,
        "min_side": spec.min_side,
    }


def level_position(score: float, spec: MetricSpec, k: int) -> float:
    """The documented map from a continuous score to a level position in [1, K]."""
    t = (spec.worst - score) / (spec.worst - spec.best)
    return 1.0 + (k - 1) * min(max(t, 0.0), 1.0)


class ClassicalScorer:
    """A classical metric behind the Scorer interface."""

    def __init__(self, metric: str, k: int) -> None:
        self.metric = metric
        self.spec = SCORERS[metric]
        self.K = k
        self.name = metric

    def raw_score(self, crop: Image.Image) -> float:
        rgb = np.asarray(resize_crop(crop, min_side=self.spec.min_side), dtype=np.uint8)
        return self.spec.function(rgb)

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        out = []
        for crop in crops:
            value = self.raw_score(crop)
            raw = format(value, ".8g")
            if not math.isfinite(value):
                out.append(fallback_scores(self.K, raw))
                continue
            out.append(from_position(level_position(value, self.spec, self.K), self.K, raw))
        return out


def check_params(section: Mapping[str, Any]) -> None:
    config.get_choice(section, "score.classical", "scorer", SCORERS)


def build(section: Mapping[str, Any], k: int) -> ClassicalScorer:
    return ClassicalScorer(section["scorer"], k)
