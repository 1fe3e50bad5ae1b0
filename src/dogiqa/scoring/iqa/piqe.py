"""PIQE (Venkatanath et al., NCC 2015) as MATLAB's Image Processing Toolbox ``piqe`` computes it.

Reproduces ``piqe.m``: the RGB image padded (replicate, post) to whole 16 x 16 blocks,
``rgb2gray``, MSCN coefficients (7 x 7 Gaussian, sigma 7/6, replicate border); of the blocks
whose variance exceeds 0.1 (spatially active), those with a nearly flat 6-pixel edge segment
(noticeable artefacts) add 1 - variance and those failing the centre-surround noise criterion add
the variance; score = (sum + 1) / (active blocks + 1) * 100. No parameters to ship.

How closely: within 0.01 of MATLAB's values (printed to two decimals) on the five TID2013
calibration images (``tests/test_iqa_calibration.py``). The pypiqe package (1.2) ports the same
function but converts with OpenCV's BGR order, pads symmetrically and loops in Python: on RGB
input it differs from MATLAB (TID2013 I03: 91.8 against 100) and it is several times slower, so
this vectorised port is kept.
"""

from __future__ import annotations

import numpy as np

from dogiqa.scoring.iqa.matlab import mscn, rgb2gray

BLOCK = 16
_ACTIVITY_THRESHOLD = 0.1
_IMPAIRED_THRESHOLD = 0.1
_SEGMENT = 6


def _blocks(image: np.ndarray) -> np.ndarray:
    rows, cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    return image.reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(-1, BLOCK, BLOCK)


def _noticeable_artifacts(blocks: np.ndarray) -> np.ndarray:
    """A block is impaired when any 6-pixel segment of one of its four edges is nearly flat."""
    edges = np.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], 1)
    segments = np.lib.stride_tricks.sliding_window_view(edges, _SEGMENT, axis=-1)
    return (segments.std(axis=-1, ddof=1) < _IMPAIRED_THRESHOLD).any(axis=(1, 2))


def _noise(blocks: np.ndarray, block_var: np.ndarray) -> np.ndarray:
    """Gaussian-noise criterion: block sigma > 2 * beta (centre/surround deviation ratio)."""
    # MATLAB's centerSurDev deletes column 8 and then column 9 of the *shortened* block, so the
    # surround excludes columns 8 and 10 (1-based) while the centre is columns 8 and 9.
    centre = blocks[:, :, 7:9].reshape(len(blocks), 2 * BLOCK)
    keep = np.ones(BLOCK, dtype=bool)
    keep[[7, 9]] = False
    surround = blocks[:, :, keep].reshape(len(blocks), (BLOCK - 2) * BLOCK)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = centre.std(axis=1, ddof=1) / surround.std(axis=1, ddof=1)
    ratio = np.where(np.isnan(ratio), 0.0, ratio)
    sigma = np.sqrt(block_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
    return sigma > 2 * beta


def piqe(rgb: np.ndarray) -> float:
    """PIQE score in [0, 100] (0 best) of an H x W x 3 uint8 RGB image; 100 for a flat one."""
    rows, cols = rgb.shape[:2]
    pad = ((0, -rows % BLOCK), (0, -cols % BLOCK), (0, 0))
    padded = np.pad(rgb, pad, mode="edge")  # MATLAB pads (replicate, post) before rgb2gray
    normalised, _ = mscn(rgb2gray(padded).astype(np.float64), "replicate")
    blocks = _blocks(normalised)
    block_var = blocks.reshape(len(blocks), BLOCK * BLOCK).var(axis=1, ddof=1)
    active = block_var > _ACTIVITY_THRESHOLD
    blocks, block_var = blocks[active], block_var[active]
    artifacts = _noticeable_artifacts(blocks)
    noisy = _noise(blocks, block_var)
    distortion = np.sum(artifacts * (1 - block_var)) + np.sum(noisy * block_var)
    return float((distortion + 1.0) / (1.0 + active.sum()) * 100.0)
