"""Correlation metrics between predicted scores and MOS, with bootstrap confidence intervals.

- SRCC (Spearman) and KRCC (Kendall) measure monotonic agreement: rank order only.
- PLCC (Pearson) on the raw scores, as the Dog-IQA papers and the authors' code report it.
- PLCC after the standard 4-parameter logistic mapping (VQEG):
  ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, fitted to the MOS by least squares;
  it removes the non-linearity between a model's scale and the MOS scale before PLCC.
- Percentile bootstrap 95% intervals (``scipy.stats.bootstrap``, paired resampling of images,
  seeded) for SRCC and raw PLCC. For SRCC the samples are first replaced by integer codes
  (dense ranks), so that each resample is ranked by counting instead of sorting: the same
  resamples and the same interval as ranking the values, several times faster.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import optimize, stats

MIN_PAIRS = 3
"""Fewer valid pairs than this give no metrics (every value is None)."""
LOGISTIC_PARAMS = 4
"""Parameters of :func:`logistic4`: a fit needs more images than this (with as many or fewer it
passes through every point, or cannot be fitted at all, and its PLCC says nothing)."""


def _clean(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def srcc(pred: np.ndarray, mos: np.ndarray) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return _clean(stats.spearmanr(pred, mos).statistic)


def plcc(pred: np.ndarray, mos: np.ndarray) -> float | None:
    if np.ptp(pred) == 0 or np.ptp(mos) == 0:
        return None
    return _clean(stats.pearsonr(pred, mos).statistic)


def krcc(pred: np.ndarray, mos: np.ndarray) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return _clean(stats.kendalltau(pred, mos).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: b1, b2 the asymptotes, b3 the centre, abs(b4) the width."""
    z = np.clip(-(x - b3) / np.abs(b4), -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic4_jacobian(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    # Analytic derivatives: finite differences fail when a parameter starts at (nearly) zero.
    width = np.abs(b4)
    sig = 1.0 / (1.0 + np.exp(np.clip(-(x - b3) / width, -500.0, 500.0)))
    slope = (b1 - b2) * sig * (1.0 - sig)
    return np.column_stack(
        [sig, 1.0 - sig, -slope / width, -slope * (x - b3) / width**2 * np.sign(b4)]
    )


def too_few_for_logistic(n: int) -> str | None:
    """Why ``n`` images cannot be fitted by :func:`logistic4` (None when they can)."""
    if n > LOGISTIC_PARAMS:
        return None
    return f"logistic fit needs more than {LOGISTIC_PARAMS} images, got {n}: no plcc_logistic"


def fit_logistic(pred: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Fit :func:`logistic4` mapping ``pred`` onto ``mos``; returns (params or None, note). A fit
    that cannot be made returns None and says why in the note, never raises."""
    too_few = too_few_for_logistic(len(pred))
    if too_few:
        return None, too_few
    spread = float(np.std(pred)) or 1.0
    p0 = [float(np.max(mos)), float(np.min(mos)), float(np.mean(pred)), spread]
    try:
        with warnings.catch_warnings():
            # "covariance could not be estimated" (e.g. a perfect fit) does not affect the fit
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(
                logistic4, pred, mos, p0=p0, jac=_logistic4_jacobian, maxfev=20000
            )
    except (RuntimeError, ValueError, TypeError) as exc:
        # RuntimeError: no convergence; ValueError: non-finite input, or a singular step
        # (LinAlgError is one); TypeError: fewer points than parameters (scipy's own check).
        return None, f"logistic fit did not converge ({exc}); plcc_logistic is the raw PLCC"
    if not np.all(np.isfinite(params)):
        return None, "logistic fit gave non-finite parameters; plcc_logistic is the raw PLCC"
    return params, "converged"


def plcc_logistic(pred: np.ndarray, mos: np.ndarray) -> tuple[float | None, bool, str]:
    """PLCC between the logistic-mapped predictions and MOS: (value, converged, note). Too few
    images give no value; a fit that fails otherwise gives the raw PLCC, and the note says so."""
    params, note = fit_logistic(pred, mos)
    if too_few_for_logistic(len(pred)):
        return None, False, note
    if params is None:
        return plcc(pred, mos), False, note
    mapped = logistic4(pred, *params)
    return plcc(mapped, mos), True, note


def _rowwise_pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    num = (x * y).sum(axis=axis)
    den = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def rank_codes(values: np.ndarray) -> np.ndarray:
    """Dense integer codes 0..u-1 of ``values`` (equal values share a code, order kept).

    Any resample of the codes has the same ranks as the same resample of the values."""
    return stats.rankdata(values, method="dense").astype(np.int64) - 1


def average_ranks_of_codes(codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Tie-averaged ranks (1-based, as ``scipy.stats.rankdata``'s default) of non-negative
    integer codes along ``axis``, by counting each code per row: O(size), no sort."""
    moved = np.moveaxis(np.asarray(codes), axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    width = int(rows.max()) + 1 if rows.size else 1
    offsets = np.arange(rows.shape[0], dtype=np.int64)[:, None] * width
    counts = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * width)
    counts = counts.reshape(rows.shape[0], width)
    # A code seen k times occupies the positions up to the cumulative count: its mean is
    # cumulative - (k - 1) / 2.
    average = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
    ranks = np.take_along_axis(average, rows, axis=1)
    return np.moveaxis(ranks.reshape(moved.shape), -1, axis)


def _spearman_of_codes(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _rowwise_pearson(
        average_ranks_of_codes(x, axis=axis), average_ranks_of_codes(y, axis=axis), axis=axis
    )


def _bootstrap_inputs(statistic: str, *samples: np.ndarray) -> tuple[tuple[np.ndarray, ...], Any]:
    """The samples and vectorised statistic that the bootstrap resamples for ``statistic``."""
    if statistic == "srcc":
        return tuple(rank_codes(sample) for sample in samples), _spearman_of_codes
    if statistic == "plcc":
        return samples, _rowwise_pearson
    raise ValueError(f"unknown statistic {statistic!r}: expected 'srcc' or 'plcc'")


def _bootstrap(
    samples: tuple[np.ndarray, ...], func: Any, n_resamples: int, seed: int, level: float
) -> Any:
    """Paired percentile bootstrap of ``func(*samples)`` (``scipy.stats.BootstrapResult``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (constant) give NaN, dropped below
        return stats.bootstrap(
            samples,
            func,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            batch=200,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )


def _interval(result: Any) -> list[float] | None:
    """The result's interval; None when not finite."""
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [float(low), float(high)]


def _percentile_interval(
    samples: tuple[np.ndarray, ...], func: Any, n_resamples: int, seed: int, level: float
) -> list[float] | None:
    """Paired percentile bootstrap interval of ``func(*samples)``; None when not finite."""
    return _interval(_bootstrap(samples, func, n_resamples, seed, level))


def bootstrap_p_value(distribution: np.ndarray) -> float | None:
    """Two-sided p-value of "the difference is 0" from a bootstrap distribution of it.

    The smallest alpha at which the (1 - alpha) percentile interval excludes 0:
    2 * min(share <= 0, share >= 0), at most 1. None without finite resamples."""
    values = np.asarray(distribution, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return float(min(1.0, 2 * min(np.mean(values <= 0), np.mean(values >= 0))))


def holm(p_values: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction of a family of p-values (``statsmodels`` ``multipletests``):
    the adjusted p-values and which hypotheses are rejected at family-wise error ``alpha``.
    Missing p-values (NaN) stay missing and are not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    rejected = np.zeros(p.shape, dtype=bool)
    valid = np.isfinite(p)
    if valid.any():
        rejected[valid], adjusted[valid], _, _ = multipletests(p[valid], alpha, method="holm")
    return adjusted, rejected


def bootstrap_ci(
    pred: np.ndarray,
    mos: np.ndarray,
    statistic: str,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
) -> list[float] | None:
    """Percentile bootstrap interval of ``statistic`` ('srcc' or 'plcc') over resampled images."""
    if n_resamples <= 0:
        return None
    samples, func = _bootstrap_inputs(statistic, pred, mos)
    return _percentile_interval(samples, func, n_resamples, seed, level)


def paired_difference(
    pred_a: Any,
    pred_b: Any,
    mos: Any,
    statistic: str = "srcc",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Difference of a correlation between two predictors on the same images, with a paired
    percentile bootstrap interval (both resampled with the same images, so their shared
    image-sampling noise cancels) and the two-sided p-value of a zero difference from the same
    resamples (:func:`bootstrap_p_value`). Images where either prediction is missing are skipped."""
    a, b, m = (np.asarray(v, dtype=float) for v in (pred_a, pred_b, mos))
    valid = np.isfinite(a) & np.isfinite(b) & np.isfinite(m)
    a, b, m = a[valid], b[valid], m[valid]
    samples, func = _bootstrap_inputs(statistic, a, b, m)
    out: dict[str, Any] = {"n": int(valid.sum()), "difference": None, "ci": None, "p_value": None}
    if out["n"] < MIN_PAIRS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    out["difference"] = float(func(samples[0], samples[2]) - func(samples[1], samples[2]))
    if n_resamples > 0:

        def diff(x: np.ndarray, y: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
            return func(x, z, axis=axis) - func(y, z, axis=axis)

        result = _bootstrap(samples, diff, n_resamples, seed, level)
        out["ci"] = _interval(result)
        out["p_value"] = bootstrap_p_value(result.bootstrap_distribution)
    return out


def evaluate(
    pred: Any,
    mos: Any,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    logistic: bool = True,
    level: float = 0.95,
) -> dict[str, Any]:
    """All metrics of ``pred`` against ``mos``; pairs with a missing (NaN) prediction are skipped.

    Returns a JSON-ready dict: n (pairs used), missing (NaN predictions), srcc, plcc,
    plcc_logistic, krcc, srcc_ci, plcc_ci, logistic_converged and a note.
    """
    pred = np.asarray(pred, dtype=float)
    mos = np.asarray(mos, dtype=float)
    if pred.shape != mos.shape or pred.ndim != 1:
        raise ValueError(f"pred and mos must be 1-D of equal length, got {pred.shape}, {mos.shape}")
    valid = np.isfinite(pred) & np.isfinite(mos)
    pred, mos = pred[valid], mos[valid]
    out: dict[str, Any] = {
        "n": int(valid.sum()),
        "missing": int((~valid).sum()),
        "srcc": None,
        "plcc": None,
        "plcc_logistic": None,
        "krcc": None,
        "srcc_ci": None,
        "plcc_ci": None,
        "logistic_converged": None,
        "note": "",
    }
    if out["n"] < MIN_PAIRS:
        out["note"] = f"fewer than {MIN_PAIRS} valid pairs: no metrics"
        return out
    out["srcc"] = srcc(pred, mos)
    out["plcc"] = plcc(pred, mos)
    out["krcc"] = krcc(pred, mos)
    if np.ptp(pred) == 0:
        out["note"] = "constant predictions: correlations undefined"
        return out
    if logistic:
        value, converged, note = plcc_logistic(pred, mos)
        out["plcc_logistic"], out["logistic_converged"] = value, converged
        out["note"] = "" if converged else note
    out["srcc_ci"] = bootstrap_ci(pred, mos, "srcc", bootstrap, seed, level)
    out["plcc_ci"] = bootstrap_ci(pred, mos, "plcc", bootstrap, seed, level)
    return out
