"""Table 1: how much correlation is left when MOS is squeezed into K integer levels.

If a model predicted every image's MOS perfectly but could only answer with one of K integers,
its SRCC/PLCC against MOS would be those of MOS against its own discretised version. That is the
"upper bound" of K-level scoring *for that discretisation*. Five discretisations are compared:

- ``code``: what the authors' released code computes, ``round(s / (max - min) * K)`` with numpy's
  round-half-to-even and no subtraction of the minimum. It reproduces the printed Table 1.
- ``paper000``: seed 000's Eq. 1, ``round((s - min) / (max - min) * (K - 1))``.
- ``paper001``: seed 001's Eq. 1, ``round(K * (s - min) / (max - min))``.
- ``equal_frequency``: K bins holding about the same number of images (edges at the MOS
  quantiles j/K), the level is the bin's index.
- ``lloyd_max``: the K-level quantiser of least squared error (Lloyd's algorithm, i.e. 1-D
  k-means, ``scipy.cluster.vq.kmeans2`` started from the equal-frequency bins' means), the level is
  the rank of the image's centroid.

The last two place their bins where the MOS are, so they keep more of the ranking than uniform
rounding: the printed equations' value is the bound of *uniform* K-level rounding, not of every
K-level scorer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from scipy.cluster.vq import kmeans2

from dogiqa import io, paths, schema
from dogiqa.config import get_int, get_list, section
from dogiqa.errors import ParamError
from dogiqa.registry import DATASETS, DISPLAY_ORDER

TABLE = "table1_upper_bound"
SWEEP = "upper_bound_sweep"
"""The output tables' names (``reports/tables/<name>.csv``)."""


def discretise_code(mos: np.ndarray, k: int) -> np.ndarray:
    """The authors' code: round(s / (max - min) * K), half to even, no min subtraction."""
    return np.round(mos / (mos.max() - mos.min()) * k)


def discretise_paper000(mos: np.ndarray, k: int) -> np.ndarray:
    """Seed 000, Eq. 1: Round((s - min) / (max - min) * (K - 1))."""
    return np.round((mos - mos.min()) / (mos.max() - mos.min()) * (k - 1))


def discretise_paper001(mos: np.ndarray, k: int) -> np.ndarray:
    """Seed 001, Eq. 1: Round(K (s - min) / (max - min))."""
    return np.round(k * (mos - mos.min()) / (mos.max() - mos.min()))


def discretise_equal_frequency(mos: np.ndarray, k: int) -> np.ndarray:
    """K bins of about n/K images each: edges at the j/K quantiles of MOS, level = bin index."""
    edges = np.quantile(mos, np.arange(1, k) / k)
    return np.searchsorted(edges, mos, side="right").astype(float)


def discretise_lloyd_max(mos: np.ndarray, k: int) -> np.ndarray:
    """The least-squares K-level quantiser of MOS (Lloyd's algorithm = 1-D k-means).

    Started from the means of the equal-frequency bins, so the result is deterministic; the level
    is the rank of the image's centroid (0 ... K-1)."""
    start_levels = discretise_equal_frequency(mos, k)
    start = np.array([mos[start_levels == level].mean() for level in np.unique(start_levels)])
    centroids, assigned = kmeans2(
        mos.reshape(-1, 1), start.reshape(-1, 1), iter=100, minit="matrix"
    )
    rank_of_centroid = np.argsort(np.argsort(centroids[:, 0]))
    return rank_of_centroid[assigned].astype(float)


PRINTED_FORMULAS = ("code", "paper000", "paper001")
"""The formulas a paper states for Table 1: only these are set against the printed values."""

FORMULAS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "code": discretise_code,
    "paper000": discretise_paper000,
    "paper001": discretise_paper001,
    "equal_frequency": discretise_equal_frequency,
    "lloyd_max": discretise_lloyd_max,
}


def upper_bound(mos: np.ndarray, k: int, formula: str) -> tuple[float, float, float]:
    """SRCC, PLCC and their mean between ``mos`` and its K-level discretisation."""
    levels = FORMULAS[formula](np.asarray(mos, dtype=float), k)
    if np.unique(levels).size < 2:
        return float("nan"), float("nan"), float("nan")
    srcc = float(stats.spearmanr(mos, levels).statistic)
    plcc = float(stats.pearsonr(mos, levels).statistic)
    return srcc, plcc, (srcc + plcc) / 2


def paper_table1() -> dict[tuple[int, str], float]:
    """The printed Table 1 values, keyed by (K, dataset display name)."""
    text = resources.files("dogiqa.resources").joinpath("paper_table1.yaml").read_text()
    table = yaml.safe_load(text)
    return {
        (int(k), column): float(value)
        for k, values in table["rows"].items()
        for column, value in zip(table["columns"], values, strict=True)
    }


@dataclass(frozen=True)
class UpperBoundConfig:
    datasets: list[str]
    ks: list[int]
    sweep: range
    formulas: list[str]


def validate_params(params: dict[str, Any]) -> UpperBoundConfig:
    sec = section(params, "upper_bound")
    datasets = get_list(sec, "upper_bound", "datasets")
    unknown = [key for key in datasets if key not in DATASETS]
    if unknown:
        raise ParamError("upper_bound.datasets", f"unknown dataset {unknown[0]!r}")
    ks = get_list(sec, "upper_bound", "K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ParamError("upper_bound.K", f"every K must be an integer >= 2, got {k!r}")
    low = get_int(sec, "upper_bound", "K_sweep_min", minimum=2)
    high = get_int(sec, "upper_bound", "K_sweep_max", minimum=low)
    formulas = get_list(sec, "upper_bound", "formulas")
    unknown = [name for name in formulas if name not in FORMULAS]
    if unknown:
        raise ParamError(
            "upper_bound.formulas", f"unknown formula {unknown[0]!r}; known: {sorted(FORMULAS)}"
        )
    return UpperBoundConfig(datasets, ks, range(low, high + 1), formulas)


def load_mos(dataset: str) -> np.ndarray:
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset), ("mos",))
    return labels["mos"].to_numpy(dtype=float)


def compute(
    mos_by_dataset: dict[str, np.ndarray], ks: list[int] | range, formulas: list[str]
) -> pd.DataFrame:
    """One row per (formula, K, dataset) with srcc, plcc, mean, and the paper's value + delta."""
    printed = paper_table1()
    rows = []
    for formula in formulas:
        for k in ks:
            for key, mos in mos_by_dataset.items():
                display = DATASETS[key].display
                srcc, plcc, mean = upper_bound(mos, k, formula)
                # Like against like: no paper states a data-adaptive binning for Table 1.
                paper = printed.get((k, display), np.nan) if formula in PRINTED_FORMULAS else np.nan
                rows.append(
                    {
                        "formula": formula,
                        "K": k,
                        "dataset": display,
                        "srcc": srcc,
                        "plcc": plcc,
                        "mean": mean,
                        "paper": paper,
                        "delta": mean - paper,
                    }
                )
    table = pd.DataFrame(rows)
    table["dataset"] = pd.Categorical(table["dataset"], categories=DISPLAY_ORDER, ordered=True)
    return table.sort_values(["formula", "K", "dataset"]).reset_index(drop=True)


def run(params: dict[str, Any]) -> None:
    config = validate_params(params)
    mos = {key: load_mos(key) for key in config.datasets}
    table = compute(mos, config.ks, config.formulas)
    io.write_csv_atomic(paths.table(TABLE), table.round(6))
    markdown = table.round(4).to_markdown(index=False)
    io.write_text_atomic(paths.table(TABLE, ".md"), markdown + "\n")
    sweep = compute(mos, config.sweep, config.formulas)
    io.write_csv_atomic(paths.table(SWEEP), sweep.drop(columns=["paper", "delta"]).round(6))
    code = table[(table["formula"] == "code") & table["paper"].notna()]
    worst = code.loc[code["delta"].abs().idxmax()] if len(code) else None
    if worst is not None:
        print(
            f"Table 1 ({len(code)} cells with a printed value): largest |delta| of the code "
            f"formula is {abs(worst['delta']):.4f} ({worst['dataset']}, K={worst['K']})"
        )
