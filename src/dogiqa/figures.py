"""Figure 4 of the paper: MOS against predicted scores, with the histogram of each on the margins.

Shared by the notebook of the published prediction sets (04) and the notebook of this study's run
(06), so both draw and describe a prediction set the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dogiqa import metrics, paths


def discreteness(scores: np.ndarray) -> dict[str, Any]:
    """Range and discreteness of a prediction set: a K-level answer takes few distinct values,
    all of them integers; an aggregated score spreads between them."""
    scores = np.asarray(scores, dtype=float)
    return {
        "min": float(scores.min()),
        "max": float(scores.max()),
        "distinct values": int(np.unique(scores).size),
        "share at an integer": float(np.mean(np.isclose(scores, np.round(scores)))),
    }


DISCRETE_MAX_VALUES = 20
"""At most this many distinct values, all integers: a K-level answer (drawn as counts per level)."""


def is_discrete(shape: Mapping[str, Any]) -> bool:
    """Whether a prediction set, described by :func:`discreteness`, is a K-level answer."""
    return shape["share at an integer"] == 1.0 and shape["distinct values"] <= DISCRETE_MAX_VALUES


def _shown(value: float | None) -> str:
    """A correlation for a title; undefined (None) when the scores do not vary."""
    return "undefined" if value is None else f"{value:.3f}"


def figure4(
    frame: pd.DataFrame,
    title: str,
    target: Path,
    ylabel: str,
    result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Joint plot of ``frame.mos`` (x) against ``frame.score`` (y), saved to ``target`` (PNG).

    ``result`` holds n, SRCC and PLCC when they were computed elsewhere (the external metrics
    table); without it they are computed here, without bootstrap. Returns the statistics printed
    with the figure plus :func:`discreteness`; the figure stays open for the notebook to show.
    """
    import seaborn as sns

    data = frame.dropna(subset=["score", "mos"])
    if data.empty:
        raise ValueError(f"{title}: no image has both a score and a MOS")
    shape = discreteness(data.score.to_numpy(float))
    with sns.axes_style("ticks"):
        grid = sns.JointGrid(data=data, x="mos", y="score", height=4.2)
        grid.plot_joint(sns.regplot, ci=None, scatter_kws={"s": 8, "alpha": 0.35})
        sns.histplot(x=data.mos, ax=grid.ax_marg_x, bins=40, kde=True)
        if is_discrete(shape):
            # A K-level answer has no density: one bar per answered level, counts only.
            sns.histplot(y=data.score, ax=grid.ax_marg_y, discrete=True, shrink=0.8)
        else:
            sns.histplot(y=data.score, ax=grid.ax_marg_y, bins=40, kde=True)
        for margin in (grid.ax_marg_x, grid.ax_marg_y):
            margin.set(xlabel="", ylabel="")
    if result is None:
        result = metrics.evaluate(data.score, data.mos, bootstrap=0)
    grid.set_axis_labels("MOS", ylabel)
    grid.figure.suptitle(
        f"{title}\nSRCC {_shown(result['srcc'])}, PLCC {_shown(result['plcc'])}, n = {result['n']}",
        y=1.02,
        fontsize=10,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" entry: the PNG bytes then depend on the data alone.
    grid.savefig(target, dpi=90, bbox_inches="tight", metadata={"Software": None})
    return {
        "set": title,
        "figure": paths.show(target),
        "n": result["n"],
        "srcc": result["srcc"],
        "plcc": result["plcc"],
        **shape,
    }
