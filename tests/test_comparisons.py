"""Paired and listwise comparisons to scores: Eq. 1 (preference matrix), Eq. 2 (Thurstone Case V
MAP) and the alternatives, on real MOS values and on synthetic data with a known answer."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from scipy.special import log_ndtr

from dogiqa import comparisons, metrics
from dogiqa.errors import DogIQAError


@pytest.fixture(scope="module")
def spaq_mos(mirror) -> np.ndarray:
    """100 real SPAQ MOS values, a seeded draw from the label file."""
    labels = pd.read_csv(mirror / "labels" / "spaq_MOS_and_Image_attribute_scores.csv")
    rng = np.random.default_rng(3)
    return labels.MOS.to_numpy(float)[rng.choice(len(labels), size=100, replace=False)]


@pytest.mark.parametrize("method", sorted(comparisons.AGGREGATORS))
def test_noiseless_comparisons_of_100_real_mos_recover_their_order(spaq_mos, method):
    pairs = comparisons.all_pairs(len(spaq_mos))
    assert len(pairs) == comb(100, 2)
    outcomes = comparisons.observe_pairs(
        spaq_mos, np.zeros_like(spaq_mos), pairs, np.random.default_rng(0)
    )
    matrix = comparisons.preference_matrix(len(spaq_mos), pairs, outcomes)
    scores = comparisons.aggregate(matrix, method)
    assert metrics.srcc(scores, spaq_mos) >= 0.99


def test_noiseless_lists_of_real_mos_recover_their_order(spaq_mos):
    rng = np.random.default_rng(1)
    lists = comparisons.random_lists(len(spaq_mos), 4, 3000, rng)
    pairs, outcomes = comparisons.observe_lists(spaq_mos, np.zeros_like(spaq_mos), lists, rng)
    assert len(pairs) == 3000 * comb(4, 2)
    # every pair of a noiseless ranking puts the higher MOS first (ties may go either way)
    assert np.all(spaq_mos[pairs[:, 0]] >= spaq_mos[pairs[:, 1]])
    scores = comparisons.thurstone_map(comparisons.preference_matrix(100, pairs, outcomes))
    assert metrics.srcc(scores, spaq_mos) >= 0.99


def _expected_counts(mu: np.ndarray, per_pair: float, link) -> np.ndarray:
    """Noise-free counts: C_ij = n * P(i preferred over j) under the model's link."""
    matrix = per_pair * link(mu[:, None] - mu[None, :])
    np.fill_diagonal(matrix, 0.0)
    return matrix


def test_thurstone_map_two_images_solves_eq2_exactly():
    # C = [[0, 7], [3, 0]]: with mu = (m, -m), Eq. 2 is 7 log Phi(2m) + 3 log Phi(-2m) - m^2,
    # whose stationary point is found here independently by root finding.
    matrix = np.array([[0.0, 7.0], [3.0, 0.0]])

    def derivative(m: float) -> float:
        mills = lambda d: np.exp(stats.norm.logpdf(d) - log_ndtr(d))  # noqa: E731
        return 14 * mills(2 * m) - 6 * mills(-2 * m) - 2 * m

    m = optimize.brentq(derivative, 0.0, 5.0)
    np.testing.assert_allclose(comparisons.thurstone_map(matrix), [m, -m], atol=1e-6)


def test_thurstone_map_recovers_known_scores_from_case_v_counts():
    truth = np.array([-1.2, -0.4, 0.1, 0.5, 1.0])
    matrix = _expected_counts(truth, 1e5, stats.norm.cdf)
    mu = comparisons.thurstone_map(matrix)
    assert mu.sum() == pytest.approx(0.0, abs=1e-9)
    # the prior's pull is of order 1 / (number of comparisons)
    np.testing.assert_allclose(mu, truth, atol=2e-3)


def test_thurstone_map_shrinks_toward_zero_with_few_comparisons():
    truth = np.array([-1.0, 0.0, 1.0])
    few = comparisons.thurstone_map(_expected_counts(truth, 2.0, stats.norm.cdf))
    many = comparisons.thurstone_map(_expected_counts(truth, 2000.0, stats.norm.cdf))
    assert np.all(np.abs(few) < np.abs(many) + 1e-12)
    assert np.ptp(few) < np.ptp(truth)


def test_thurstone_ls_recovers_known_scores():
    truth = np.array([-0.8, -0.1, 0.3, 0.6])
    mu = comparisons.thurstone_ls(_expected_counts(truth, 1e6, stats.norm.cdf))
    np.testing.assert_allclose(mu, truth, atol=1e-3)


def test_bradley_terry_recovers_known_log_strengths():
    truth = np.array([-1.0, 0.0, 0.5, 1.5])
    matrix = _expected_counts(truth, 1e5, stats.logistic.cdf)
    theta = comparisons.bradley_terry(matrix, alpha=1e-9)
    np.testing.assert_allclose(theta - theta.mean(), truth - truth.mean(), atol=1e-3)


def test_preference_matrix_counts_preferences_and_splits_same():
    pairs = np.array([[0, 1], [0, 1], [1, 2], [2, 0]])
    matrix = comparisons.preference_matrix(3, pairs, np.array([1.0, 0.0, 0.5, 1.0]))
    expected = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]])
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == len(pairs)


@pytest.mark.parametrize(
    ("pairs", "outcomes", "message"),
    [
        (np.array([[0, 0]]), np.array([1.0]), "itself"),
        (np.array([[0, 1]]), np.array([2.0]), r"\[0, 1\]"),
        (np.array([[0, 1]]), np.array([1.0, 0.0]), "1 pairs but 2 outcomes"),
    ],
)
def test_bad_comparisons_are_refused_in_one_line(pairs, outcomes, message):
    with pytest.raises(DogIQAError, match=message):
        comparisons.preference_matrix(2, pairs, outcomes)


def test_unknown_aggregation_and_bad_matrix_are_named():
    with pytest.raises(DogIQAError, match="unknown aggregation 'elo'"):
        comparisons.aggregate(np.zeros((2, 2)), "elo")
    with pytest.raises(DogIQAError, match="square"):
        comparisons.thurstone_map(np.zeros((2, 3)))


def test_designs_have_the_stated_sizes_and_no_self_comparison():
    rng = np.random.default_rng(0)
    per_item = comparisons.per_item_pairs(30, 5, rng)
    assert len(per_item) == 150 and np.all(per_item[:, 0] != per_item[:, 1])
    assert np.array_equal(np.bincount(per_item[:, 0]), np.full(30, 5))
    uniform = comparisons.uniform_pairs(30, 100, rng)
    assert len({tuple(p) for p in uniform}) == 100
    assert len(comparisons.uniform_pairs(5, 100, rng)) == comb(5, 2)
    lists = comparisons.random_lists(30, 4, 20, rng)
    assert lists.shape == (20, 4) and all(len(set(row)) == 4 for row in lists)
    np.testing.assert_array_equal(
        comparisons.ranking_to_pairs(np.array([7, 3, 5])), [[7, 3], [7, 5], [3, 5]]
    )


def test_active_sampling_spends_its_budget_on_informative_pairs():
    quality = np.linspace(0.0, 3.0, 20)
    rng = np.random.default_rng(0)

    def judge(pairs: np.ndarray) -> np.ndarray:
        return comparisons.observe_pairs(quality, np.zeros(20), pairs, rng)

    pairs, outcomes = comparisons.active_pairs(20, judge, budget=120, batch=40, rng=rng)
    assert len(pairs) == len(outcomes) == 120
    assert np.all(pairs[:, 0] != pairs[:, 1])
    # after the first (uniform) round, the chosen pairs are closer in quality than random ones
    gap = np.abs(quality[pairs[:, 0]] - quality[pairs[:, 1]])
    assert gap[40:].mean() < gap[:40].mean()


def test_information_gain_is_largest_for_uncertain_close_pairs():
    gain = comparisons.information_gain(np.array([0.0, 3.0, 0.0]), np.array([1.0, 1.0, 0.01]))
    assert gain[0] > gain[1] and gain[0] > gain[2] and np.all(gain >= 0)
