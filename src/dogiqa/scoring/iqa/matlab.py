"""The MATLAB functions that the reference code of NIQE, BRISQUE and PIQE calls, in numpy.

Each reproduces what the named MATLAB function does on the inputs those metrics pass it (uint8
RGB in, double images inside); the tests compare the metrics built on them with MATLAB's
published values.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from scipy.special import gamma

# rgb2gray's weights: ITU-R BT.601 (0.2989, 0.5870, 0.1140) as MATLAB stores them.
_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# The shape grid of the reference code's moment matching, 0.2:0.001:10.
_SHAPES = 0.2 + 0.001 * np.arange(9801)
# AGGD: r(a) = G(2/a)^2 / (G(1/a) G(3/a)) rises from 0 to 0.75 with the shape a.
_AGGD_RATIO = gamma(2 / _SHAPES) ** 2 / (gamma(1 / _SHAPES) * gamma(3 / _SHAPES))
# GGD (BRISQUE): rho(a) = G(1/a) G(3/a) / G(2/a)^2 = 1 / r(a), falling with a.
_GGD_RATIO = 1.0 / _AGGD_RATIO


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """``rgb2gray`` of an H x W x 3 uint8 image: the weighted sum rounded half away from zero
    to uint8, as MATLAB converts a double to uint8."""
    red, green, blue = (rgb[..., c].astype(np.float64) for c in range(3))
    gray = red * _GRAY[0] + green * _GRAY[1] + blue * _GRAY[2]
    return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)


def gaussian_local_stats(image: np.ndarray, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and deviation under ``fspecial('gaussian', 7, 7/6)``, normalised to sum 1.

    ``border`` is ``'replicate'`` (``imfilter(..., 'replicate')``, ``imgaussfilt`` with
    replicate padding: NIQE, PIQE) or ``'zero'`` (``filter2(..., 'same')``: BRISQUE). The
    7 x 7 window is separable, so two 1-D passes give the same sums.
    """
    mode = {"replicate": "nearest", "zero": "constant"}[border]
    kwargs = {"sigma": 7 / 6, "mode": mode, "radius": 3, "cval": 0.0}
    mu = scipy.ndimage.gaussian_filter(image, **kwargs)
    sigma = np.sqrt(np.abs(scipy.ndimage.gaussian_filter(image * image, **kwargs) - mu * mu))
    return mu, sigma


ROUNDING_NOISE = 1e-12
"""Below this, an MSCN coefficient of an image on the 0..255 scale is rounding noise."""


def mscn(image: np.ndarray, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients ``(im - mu) / (sigma + 1)`` and sigma.

    Where the neighbourhood is flat, exact arithmetic gives 0 but floating point leaves
    +-1e-14, whose sign depends on the summation order of the filter (MATLAB's and scipy's
    differ). The AGGD fits split coefficients by sign, so that noise moves the score of an image
    with flat areas (NIQE of TID2013's I19 by 0.4 between two summation orders). Coefficients
    below :data:`ROUNDING_NOISE` are set to the exact 0: on real images the smallest genuine
    ones are above 1e-10, the noise below 1e-13.
    """
    mu, sigma = gaussian_local_stats(image, border)
    normalised = (image - mu) / (sigma + 1.0)
    normalised[np.abs(normalised) < ROUNDING_NOISE] = 0.0
    return normalised, sigma


def _cubic(x: np.ndarray) -> np.ndarray:
    """imresize's bicubic kernel (Keys, a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """imresize's ``contributions`` along one dimension: per output pixel, the weights and the
    (0-based) input indices of its taps; bicubic, antialiased when shrinking, mirrored borders."""
    out_length = int(np.ceil(in_length * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    indices = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    used = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns
    return weights[:, used], indices[:, used]


def _resize_rows(image: np.ndarray, scale: float) -> np.ndarray:
    weights, indices = _contributions(image.shape[0], scale)
    out = np.zeros((weights.shape[0], image.shape[1]))
    for tap in range(weights.shape[1]):
        out += weights[:, tap, None] * image[indices[:, tap]]
    return out


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """``imresize(image, scale)`` of a 2-D double image: bicubic with antialiasing, output size
    ``ceil(size * scale)``, rows first (MATLAB's order for equal scales)."""
    return _resize_rows(_resize_rows(image, scale).T, scale).T


def _nearest(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the entry of the increasing ``table`` nearest to each value: MATLAB's
    ``[~, i] = min((table - v).^2)``, the first index on a tie and index 1 for NaN."""
    right = np.clip(np.searchsorted(table, values), 1, len(table) - 1)
    left = right - 1
    index = np.where(np.abs(values - table[left]) <= np.abs(table[right] - values), left, right)
    return np.where(np.isnan(values), 0, index)


def aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``estimateaggdparam`` over the last axis: shape alpha and the left and right standard
    deviations (NaN where a side has no sample, as MATLAB's mean of an empty set)."""
    negative, positive = samples < 0, samples > 0
    square = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((square * negative).sum(-1) / negative.sum(-1))
        right = np.sqrt((square * positive).sum(-1) / positive.sum(-1))
        gamma_hat = left / right
        r_hat = np.abs(samples).mean(-1) ** 2 / square.mean(-1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = _SHAPES[_nearest(_AGGD_RATIO, r_norm)]
    return alpha, left, right


def ggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BRISQUE's ``estimateggdparam`` over the last axis: shape alpha and the deviation."""
    sigma_sq = (samples * samples).mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = sigma_sq / np.abs(samples).mean(-1) ** 2
    alpha = _SHAPES[_nearest(-_GGD_RATIO, -rho)]  # negated: an increasing table
    return alpha, np.sqrt(sigma_sq)
