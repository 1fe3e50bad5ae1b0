"""Correlation metrics, the logistic fit and the bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dogiqa import metrics


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    pred = rng.uniform(1, 7, 300)
    mos = metrics.logistic4(pred, 90.0, 10.0, 4.0, 0.6) + rng.normal(0, 4.0, 300)
    return pred, mos


def test_values_match_scipy(pair):
    pred, mos = pair
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, mos).statistic)
    assert result["plcc"] == pytest.approx(stats.pearsonr(pred, mos).statistic)
    assert result["krcc"] == pytest.approx(stats.kendalltau(pred, mos).statistic)
    assert result["n"] == 300 and result["missing"] == 0
    assert result["srcc_ci"] is None


def test_logistic_fit_linearises_a_sigmoid_relation(pair):
    pred, mos = pair
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["logistic_converged"] is True
    assert result["plcc_logistic"] > result["plcc"] + 0.01


def test_logistic_recovers_known_parameters():
    x = np.linspace(-5, 5, 200)
    y = metrics.logistic4(x, 90.0, 10.0, 0.5, 1.5)
    params, note = metrics.fit_logistic(x, y)
    assert note == "converged"
    np.testing.assert_allclose(
        [params[0], params[1], params[2], abs(params[3])], [90, 10, 0.5, 1.5], rtol=1e-4
    )


def test_logistic_fallback_is_noted(monkeypatch, pair):
    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", fail)
    pred, mos = pair
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["logistic_converged"] is False
    assert result["plcc_logistic"] == pytest.approx(result["plcc"])
    assert "did not converge" in result["note"]


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate(pair):
    pred, mos = pair
    first = metrics.evaluate(pred, mos, bootstrap=300, seed=7)
    again = metrics.evaluate(pred, mos, bootstrap=300, seed=7)
    other = metrics.evaluate(pred, mos, bootstrap=300, seed=8)
    assert first["srcc_ci"] == again["srcc_ci"]
    assert first["srcc_ci"] != other["srcc_ci"]
    for key in ("srcc", "plcc"):
        low, high = first[f"{key}_ci"]
        assert low < first[key] < high
        assert high - low < 0.2


def test_bootstrap_statistics_match_scipy_per_resample():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 5, 40))
    x[:, :3] = x[:, :1]  # ties
    expected = [stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    codes_x = np.stack([metrics.rank_codes(row) for row in x])
    codes_y = np.stack([metrics.rank_codes(row) for row in y])
    np.testing.assert_allclose(metrics._spearman_of_codes(codes_x, codes_y, axis=-1), expected)


def test_ranks_by_counting_equal_scipy_ranks_with_ties():
    rng = np.random.default_rng(4)
    values = rng.integers(0, 6, size=(7, 30)).astype(float)  # many ties per row
    codes = np.stack([metrics.rank_codes(row) for row in values])
    np.testing.assert_array_equal(
        metrics.average_ranks_of_codes(codes), stats.rankdata(values, axis=-1)
    )
    np.testing.assert_array_equal(
        metrics.average_ranks_of_codes(codes.T, axis=0), stats.rankdata(values.T, axis=0)
    )


def test_srcc_interval_equals_ranking_each_resample_by_sorting(pair):
    pred, mos = pair
    pred = np.round(pred, 1)  # ties, as discrete MLLM scores have

    def spearman_by_sorting(x, y, axis=-1):
        return metrics._rowwise_pearson(
            stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis
        )

    by_sorting = stats.bootstrap(
        (pred, mos),
        spearman_by_sorting,
        paired=True,
        vectorized=True,
        n_resamples=400,
        batch=200,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert metrics.bootstrap_ci(pred, mos, "srcc", 400, seed=11) == pytest.approx(
        [by_sorting.low, by_sorting.high], abs=1e-12
    )


def test_unknown_bootstrap_statistic_is_refused(pair):
    with pytest.raises(ValueError, match="unknown statistic 'krcc'"):
        metrics.bootstrap_ci(*pair, "krcc", 10, seed=0)


def test_missing_predictions_are_counted_not_scored():
    mos = np.arange(10.0)
    pred = mos.copy()
    pred[[2, 5]] = np.nan
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["n"] == 8 and result["missing"] == 2
    assert result["srcc"] == pytest.approx(1.0)


def test_degenerate_inputs_give_none_not_nan():
    constant = metrics.evaluate(np.ones(10), np.arange(10.0), bootstrap=50)
    assert constant["srcc"] is None and constant["plcc"] is None
    assert "constant" in constant["note"]
    tiny = metrics.evaluate([1.0, 2.0], [1.0, 3.0])
    assert tiny["n"] == 2 and tiny["srcc"] is None


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="equal length"):
        metrics.evaluate([1.0, 2.0, 3.0], [1.0, 2.0])


def test_paired_difference_of_two_predictors(pair):
    pred, mos = pair
    rng = np.random.default_rng(5)
    worse = pred + rng.normal(0, 2.0, pred.size)
    result = metrics.paired_difference(pred, worse, mos, "srcc", n_resamples=300, seed=0)
    expected = stats.spearmanr(pred, mos).statistic - stats.spearmanr(worse, mos).statistic
    assert result["difference"] == pytest.approx(expected)
    low, high = result["ci"]
    assert 0 < low < result["difference"] < high
    same = metrics.paired_difference(pred, pred, mos, "plcc", n_resamples=100)
    assert same["difference"] == pytest.approx(0.0) and same["ci"] == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize("n", [3, 4])
def test_too_few_images_for_the_logistic_give_no_value_and_say_why(n):
    """With no more images than the logistic's four parameters the fit either raises (scipy's
    curve_fit refuses fewer points than parameters) or passes through every point (PLCC 1):
    neither is a result, so plcc_logistic stays empty with the reason."""
    pred = np.array([1.0, 2.5, 2.0, 4.0])[:n]
    mos = np.array([10.0, 30.0, 20.0, 50.0])[:n]
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["plcc_logistic"] is None
    assert result["logistic_converged"] is False
    assert result["note"] == f"logistic fit needs more than 4 images, got {n}: no plcc_logistic"
    assert result["srcc"] == pytest.approx(1.0)  # the other metrics stay
    params, note = metrics.fit_logistic(pred, mos)
    assert params is None and note == result["note"]


@pytest.mark.parametrize(
    "error",
    [
        TypeError("The number of func parameters=4 must not exceed the number of data points=3"),
        np.linalg.LinAlgError("Singular matrix"),
    ],
)
def test_any_logistic_fit_failure_is_noted_not_raised(monkeypatch, pair, error):
    """What scipy's curve_fit raises (scipy/optimize/_minpack_py.py: TypeError for fewer points
    than parameters, LinAlgError from a singular step) becomes the note, never a traceback."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(metrics.optimize, "curve_fit", fail)
    pred, mos = pair
    result = metrics.evaluate(pred, mos, bootstrap=0)
    assert result["logistic_converged"] is False
    assert f"did not converge ({error})" in result["note"]


def test_paired_difference_p_value_agrees_with_its_interval(pair):
    pred, mos = pair
    rng = np.random.default_rng(5)
    worse = pred + rng.normal(0, 2.0, pred.size)
    clear = metrics.paired_difference(pred, worse, mos, "srcc", n_resamples=300, seed=0)
    assert clear["ci"][0] > 0 and clear["p_value"] < 0.05
    close = pred + rng.normal(0, 0.01, pred.size)
    vague = metrics.paired_difference(pred, close, mos, "srcc", n_resamples=300, seed=0)
    assert vague["ci"][0] <= 0 <= vague["ci"][1] and vague["p_value"] >= 0.05


def test_bootstrap_p_value_is_twice_the_smaller_tail():
    assert metrics.bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == 0.5
    assert metrics.bootstrap_p_value(np.array([1.0, 2.0, np.nan])) == 0.0
    assert metrics.bootstrap_p_value(np.array([np.nan])) is None


def test_holm_adjusts_step_down_and_skips_missing():
    # sorted p 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> monotone: 0.03, 0.06, 0.06
    adjusted, rejected = metrics.holm([0.04, 0.01, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.06, 0.03, np.nan, 0.06])
    assert rejected.tolist() == [False, True, False, False]
