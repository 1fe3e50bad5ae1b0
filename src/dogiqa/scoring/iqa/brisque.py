"""BRISQUE (Mittal, Moorthy and Bovik, IEEE TIP 2012) as the authors' MATLAB release computes it.

Reproduces ``brisquescore.m`` of the BRISQUE software release (LIVE, UT Austin): ``rgb2gray``
(uint8), at two scales (the second by ``imresize(im, 0.5)``) the MSCN coefficients (7 x 7
Gaussian, sigma 7/6, ``filter2`` zero border), a GGD fit to them and an AGGD fit to the products
of neighbours in four directions (36 features), the features written with ``%f``, scaled by
``svm-scale -r allrange`` (written with ``%g``) and scored by ``svm-predict -b 1`` with the
release's epsilon-SVR ``allmodel`` (trained on the whole LIVE IQA database). The two files ship as
``resources/brisque_allmodel`` and ``resources/brisque_allrange`` (source, licence and checksums
in ``resources/iqa_parameters.yaml``); the SVR is evaluated by LIBSVM itself (libsvm-official,
the library whose ``svm-predict`` the release calls).

How closely: within 0.05 of the reference's ``brisque`` values on the five TID2013 calibration
images (``tests/test_iqa_calibration.py``). MATLAB's Image Processing Toolbox ``brisque`` uses
MathWorks' own model (the ``brisque_matlab`` row), which no public registry package ships.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
from scipy.special import gamma

from dogiqa.scoring.iqa.matlab import aggd_fit, ggd_fit, imresize, mscn, rgb2gray

# circshift offsets of brisque_feature.m: horizontal, vertical, two diagonals.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


def features(gray: np.ndarray) -> np.ndarray:
    """brisque_feature.m: the 36 features of a gray image (0..255)."""
    image = np.asarray(gray, dtype=np.float64)
    feats: list[float] = []
    for scale in (1, 2):
        structdis, _ = mscn(image, "zero")
        alpha, sigma = ggd_fit(structdis.ravel())
        feats += [alpha, sigma**2]
        for shift in _SHIFTS:
            pair = (structdis * np.roll(structdis, shift, axis=(0, 1))).ravel()
            alpha, left, right = aggd_fit(pair)
            const = np.sqrt(gamma(1 / alpha)) / np.sqrt(gamma(3 / alpha))
            mean = (right - left) * (gamma(2 / alpha) / gamma(1 / alpha)) * const
            feats += [alpha, mean, left**2, right**2]
        if scale == 1:
            image = imresize(image, 0.5)
    return np.array(feats, dtype=np.float64)


@cache
def _range() -> tuple[float, float, np.ndarray, np.ndarray]:
    """svm-scale's range file: target bounds, then per feature its minimum and maximum."""
    text = (resources.files("dogiqa.resources") / "brisque_allrange").read_text()
    lines = text.split("\n")
    lower, upper = (float(v) for v in lines[1].split())
    rows = np.array([[float(v) for v in line.split()] for line in lines[2:] if line.strip()])
    order = np.argsort(rows[:, 0])
    return lower, upper, rows[order, 1], rows[order, 2]


def scale(feats: np.ndarray) -> np.ndarray:
    """svm-scale -r allrange on features printed with ``%f``; the output as printed (``%g``)."""
    lower, upper, low, high = _range()
    printed = np.array([float(f"{v:f}") for v in feats])  # MATLAB's fprintf('%f')
    scaled = lower + (upper - lower) * (printed - low) / (high - low)
    scaled = np.where(printed == low, lower, np.where(printed == high, upper, scaled))
    return np.array([float(f"{v:g}") for v in scaled])


@cache
def _model():  # noqa: ANN202 (libsvm's model type)
    from libsvm import svmutil

    with resources.as_file(resources.files("dogiqa.resources") / "brisque_allmodel") as path:
        return svmutil.svm_load_model(str(path))


def predict(scaled: np.ndarray) -> float:
    """svm-predict -b 1 with the release's SVR (the regression value; -b 1 does not change it)."""
    from libsvm import svmutil

    node = {i + 1: float(v) for i, v in enumerate(scaled)}
    labels, _, _ = svmutil.svm_predict([0.0], [node], _model(), "-b 1 -q")
    return float(labels[0])


def brisque(rgb: np.ndarray) -> float:
    """BRISQUE of an H x W x 3 uint8 RGB image (about 0 best .. 100 worst; the SVR can leave
    that range); NaN when the features are undefined (a flat image)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        feats = features(rgb2gray(rgb))
    if not np.all(np.isfinite(feats)):
        return float("nan")
    return predict(scale(feats))
