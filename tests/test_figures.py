"""Figure 4's margins: counts per level for a K-level answer, a density for continuous scores."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dogiqa import figures  # noqa: E402


def _frame(scores: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"mos": scores + rng.normal(0, 0.5, scores.size), "score": scores})


def test_discrete_answers_get_one_bar_per_level_and_no_density(tmp_path):
    scores = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], 20)  # five levels answered of a 7-level scale
    stats = figures.figure4(_frame(scores), "levels", tmp_path / "a.png", "level")
    margin_y = plt.gcf().axes[2]
    assert stats["distinct values"] == 5 and figures.is_discrete(stats)
    assert not margin_y.lines  # no KDE curve over a discrete marginal
    heights = sorted(patch.get_width() for patch in margin_y.patches)
    assert heights == [20.0] * 5  # horizontal bars: one per answered level, its count
    plt.close("all")


def test_continuous_scores_keep_the_density(tmp_path):
    scores = np.linspace(0.1, 0.9, 100)
    stats = figures.figure4(_frame(scores), "probabilities", tmp_path / "b.png", "P(good)")
    assert not figures.is_discrete(stats)
    assert plt.gcf().axes[2].lines  # the KDE curve
    plt.close("all")
