"""NIQE (Mittal, Soundararajan and Bovik, IEEE SPL 2013) as the authors' MATLAB release computes it.

Reproduces ``computequality.m`` of the NIQE software release (LIVE, UT Austin) with its pristine
model ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``; 125 pristine images, 96 x 96
patches, sharpness threshold 0.75), shipped here as ``resources/niqe_pris_params.npz`` (see
``resources/iqa_parameters.yaml`` for its source, licence and checksum). The pipeline:
``rgb2gray`` (uint8), the image cropped to whole 96 x 96 blocks, at two scales (the second by
``imresize(im, 0.5)``) the MSCN coefficients (7 x 7 Gaussian, sigma 7/6, replicate border) and 18
AGGD features per block, then the distance between the image's multivariate Gaussian fit
(``nanmean``/``nancov``) and the pristine one, with ``pinv`` of the mean covariance.

How closely: within 0.001 of the reference's ``niqe`` values on the five TID2013 calibration
images, and per-image Spearman 0.99+ with pyiqa's released LIVE Challenge NIQE predictions
(``tests/test_iqa_calibration.py``). MATLAB's Image Processing Toolbox ``niqe`` uses another
pristine model (``defaultNIQEModel.mat``, MathWorks'), which no package on a public registry
ships; its values (the ``niqe_matlab`` row) are on a different scale.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
from scipy.special import gamma

from dogiqa.scoring.iqa.matlab import aggd_fit, imresize, mscn, rgb2gray

BLOCK = 96
"""Block side of the release (and of its pristine model)."""

MIN_SIDE = 2 * BLOCK
"""The smallest side with at least two blocks per dimension: four blocks, enough for the
covariance of the image's features to be defined."""

# circshift offsets of computefeature.m: horizontal, vertical, two diagonals.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@cache
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """The release's pristine mean (36) and covariance (36 x 36)."""
    source = resources.files("dogiqa.resources") / "niqe_pris_params.npz"
    with source.open("rb") as handle, np.load(handle) as params:
        return params["mu_pris_param"].ravel().copy(), params["cov_pris_param"].copy()


def _blocks(image: np.ndarray, side: int) -> np.ndarray:
    rows, cols = image.shape[0] // side, image.shape[1] // side
    return image.reshape(rows, side, cols, side).swapaxes(1, 2).reshape(-1, side, side)


def block_features(blocks: np.ndarray) -> np.ndarray:
    """computefeature.m for a stack of MSCN blocks: n x 18."""
    flat = blocks.reshape(len(blocks), -1)
    alpha, left, right = aggd_fit(flat)
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    features = [alpha, (left + right) * spread / 2]
    for shift in _SHIFTS:
        pair = flat * np.roll(blocks, shift, axis=(1, 2)).reshape(len(blocks), -1)
        alpha, left, right = aggd_fit(pair)
        spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
        beta_l, beta_r = left * spread, right * spread
        mean = (beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, beta_l, beta_r]
    return np.stack(features, axis=1)


def features(gray: np.ndarray) -> np.ndarray:
    """The 36 features (18 per scale) of every 96 x 96 block of a gray image (0..255)."""
    rows, cols = (gray.shape[0] // BLOCK) * BLOCK, (gray.shape[1] // BLOCK) * BLOCK
    image = np.asarray(gray, dtype=np.float64)[:rows, :cols]
    per_scale = []
    for scale in (1, 2):
        normalised, _ = mscn(image, "replicate")
        per_scale.append(block_features(_blocks(normalised, BLOCK // scale)))
        if scale == 1:
            image = imresize(image, 0.5)
    return np.concatenate(per_scale, axis=1)


def niqe_score(feats: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """Distance of the features' Gaussian fit to the model (nanmean, nancov, pinv)."""
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        return float("nan")
    mu_image = np.nanmean(feats, axis=0)
    cov_image = np.cov(complete, rowvar=False)
    # MATLAB pinv's tolerance: max(size) * eps * largest singular value.
    inverse = np.linalg.pinv((cov + cov_image) / 2, rtol=max(cov.shape) * np.finfo(float).eps)
    diff = mu - mu_image
    return float(np.sqrt(diff @ inverse @ diff))


def niqe(rgb: np.ndarray) -> float:
    """NIQE of an H x W x 3 uint8 RGB image (lower is better; about 2-3 for pristine photos).

    Both sides must be at least :data:`MIN_SIDE` pixels; NaN when the features are undefined
    (a flat image).
    """
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"NIQE needs both sides >= {MIN_SIDE} px, got {rgb.shape[1]}x{rgb.shape[0]}"
        )
    mu, cov = pristine_model()
    with np.errstate(invalid="ignore", divide="ignore"):
        return niqe_score(features(rgb2gray(rgb)), mu, cov)
