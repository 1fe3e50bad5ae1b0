"""Paired and listwise comparisons turned into scores (seed 003, Sec. 3.1, Eqs. 1-2).

The double-stimulus method asks which of two images looks better (A, B, or "same"); the
multiple-stimulus method ranks a list of L images, which gives its C(L, 2) pairs. Either way the
answers fill a preference matrix ``C`` (Eq. 1): ``C[i, j]`` counts how often image i was
preferred over image j. A "same" answer credits half a preference to each side, as the authors'
``pair2score`` does (github.com/TianheWu/MLLMs-for-IQA, ``utils.py``).

Scores are recovered from ``C`` by

- ``thurstone_map``: Eq. 2, the maximum a posteriori estimate under Thurstone's Case V with a
  standard normal prior, ``argmax sum_ij C_ij log Phi(mu_i - mu_j) - sum_i mu_i^2 / 2`` subject to
  ``sum_i mu_i = 0`` (convex; Newton steps in scipy with the analytic gradient and Hessian);
- ``thurstone_ls``: Thurstone-Mosteller least squares, ``mu_i - mu_j ~ Phi^-1(p_ij)`` over the
  compared pairs (Mosteller 1951), one of the alternatives the paper names;
- ``bradley_terry``: the Bradley-Terry (logit) model fitted by choix's iterative Luce spectral
  ranking (``choix.ilsr_pairwise_dense``), regularised so that unbeaten images stay finite.

Pairs are sampled uniformly, per image (the authors' ``create_nr_groups``: each image meets a
fixed number of random partners), exhaustively (all C(M, 2) pairs), or actively: each round asks
the pairs whose answer is expected to tell the most about the scores, in the spirit of Ye &
Doermann's active sampling that the paper cites ([62]).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import choix
import numpy as np
from scipy import optimize, sparse, stats
from scipy.sparse.linalg import lsqr
from scipy.special import log_ndtr, ndtri

from dogiqa.errors import DogIQAError

Outcomes = np.ndarray
"""Per comparison, the credit of the first image: 1 (first preferred), 0 (second), 0.5 (same)."""


# --- designs: which images are compared ---------------------------------------------------------


def all_pairs(n_items: int) -> np.ndarray:
    """Every unordered pair once: the full double-stimulus design, C(M, 2) comparisons."""
    return np.array(list(combinations(range(n_items), 2)), dtype=int).reshape(-1, 2)


def uniform_pairs(n_items: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``n_pairs`` distinct pairs drawn uniformly among the C(M, 2) (all of them if fewer)."""
    _check_items(n_items, 2)
    candidates = all_pairs(n_items)
    if n_pairs >= len(candidates):
        return candidates[rng.permutation(len(candidates))]
    return candidates[rng.choice(len(candidates), size=n_pairs, replace=False)]


def per_item_pairs(n_items: int, per_item: int, rng: np.random.Generator) -> np.ndarray:
    """Each image paired with ``per_item`` random others (M * per_item comparisons), as the
    authors' ``create_nr_groups`` draws its double-stimulus pairs."""
    _check_items(n_items, 2)
    first = np.repeat(np.arange(n_items), per_item)
    # a partner drawn among the other M - 1 images: shift past the image itself
    partner = rng.integers(0, n_items - 1, size=first.size)
    partner = partner + (partner >= first)
    return np.column_stack([first, partner])


def random_lists(
    n_items: int, list_size: int, n_lists: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_lists`` lists of ``list_size`` distinct images each (rows), for listwise ranking."""
    _check_items(n_items, list_size)
    if list_size < 2:
        raise DogIQAError(f"a list needs at least 2 images, got {list_size}")
    return np.array([rng.choice(n_items, size=list_size, replace=False) for _ in range(n_lists)])


def per_item_lists(
    n_items: int, list_size: int, per_item: int, rng: np.random.Generator
) -> np.ndarray:
    """Each image leads ``per_item`` lists of ``list_size`` distinct images, the others drawn at
    random (M * per_item lists), as the authors' ``create_nr_groups`` draws its lists."""
    _check_items(n_items, list_size)
    if list_size < 2:
        raise DogIQAError(f"a list needs at least 2 images, got {list_size}")
    rows = []
    for item in range(n_items):
        others = np.delete(np.arange(n_items), item)
        for _ in range(per_item):
            rows.append([item, *rng.choice(others, size=list_size - 1, replace=False)])
    return np.array(rows, dtype=int).reshape(-1, list_size)


def ranking_to_pairs(ranked: np.ndarray) -> np.ndarray:
    """A ranking (best first) as its C(L, 2) pairs, the better image first (outcome 1)."""
    ranked = np.asarray(ranked, dtype=int)
    return np.array([(ranked[a], ranked[b]) for a, b in combinations(range(len(ranked)), 2)])


def _check_items(n_items: int, needed: int) -> None:
    if n_items < needed:
        raise DogIQAError(f"need at least {needed} images to compare, got {n_items}")


# --- simulated observers ------------------------------------------------------------------------


def observe_pairs(
    quality: np.ndarray,
    spread: np.ndarray,
    pairs: np.ndarray,
    rng: np.random.Generator,
    same_margin: float = 0.0,
) -> Outcomes:
    """One simulated observer per comparison: each image is perceived as a draw from
    N(quality, spread^2); the larger draw wins, and draws closer than ``same_margin`` are
    answered "same" (0.5). ``spread = 0`` gives noiseless comparisons."""
    quality, spread = np.asarray(quality, float), np.asarray(spread, float)
    draws = quality[pairs] + spread[pairs] * rng.standard_normal(pairs.shape)
    difference = draws[:, 0] - draws[:, 1]
    outcomes = np.where(difference > 0, 1.0, 0.0)
    outcomes[np.abs(difference) <= same_margin] = 0.5
    return outcomes


def observe_lists(
    quality: np.ndarray, spread: np.ndarray, lists: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, Outcomes]:
    """One simulated observer ranks each list by its own noisy perception; returns every
    list's C(L, 2) pairs (better first) and their outcomes (all 1)."""
    quality, spread = np.asarray(quality, float), np.asarray(spread, float)
    draws = quality[lists] + spread[lists] * rng.standard_normal(lists.shape)
    order = np.argsort(-draws, axis=1, kind="stable")
    ranked = np.take_along_axis(lists, order, axis=1)
    pairs = np.concatenate([ranking_to_pairs(row) for row in ranked])
    return pairs, np.ones(len(pairs))


# --- Eq. 1: the preference matrix ---------------------------------------------------------------


def preference_matrix(n_items: int, pairs: np.ndarray, outcomes: Outcomes) -> np.ndarray:
    """C[i, j] = times image i was preferred over image j (Eq. 1); "same" adds 0.5 to both."""
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    outcomes = np.asarray(outcomes, float)
    if len(pairs) != len(outcomes):
        raise DogIQAError(f"{len(pairs)} pairs but {len(outcomes)} outcomes")
    if np.any((outcomes < 0) | (outcomes > 1)):
        raise DogIQAError("outcomes must lie in [0, 1] (1: first preferred, 0.5: same)")
    if np.any(pairs[:, 0] == pairs[:, 1]):
        raise DogIQAError("an image cannot be compared with itself")
    matrix = np.zeros((n_items, n_items))
    np.add.at(matrix, (pairs[:, 0], pairs[:, 1]), outcomes)
    np.add.at(matrix, (pairs[:, 1], pairs[:, 0]), 1.0 - outcomes)
    return matrix


# --- aggregation: matrix -> scores --------------------------------------------------------------


def _inverse_mills(d: np.ndarray) -> np.ndarray:
    """phi(d) / Phi(d), computed in logs so that it stays finite far in the tails."""
    return np.exp(stats.norm.logpdf(d) - log_ndtr(d))


def _observed(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(matrix)
    return rows, cols, matrix[rows, cols]


def _negative_log_posterior(
    matrix: np.ndarray,
) -> tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], Callable[[np.ndarray], np.ndarray]]:
    """Eq. 2's objective (negated) with its gradient, and its Hessian: the identity (prior)
    plus, per compared pair, ``C_ij * r(d) * (d + r(d))`` on the pair's 2x2 block, where
    ``d = mu_i - mu_j``, ``r = phi / Phi`` and ``r (d + r)`` is the second derivative of
    ``-log Phi(d)``."""
    rows, cols, weights = _observed(matrix)
    n_items = len(matrix)

    def value_and_gradient(mu: np.ndarray) -> tuple[float, np.ndarray]:
        d = mu[rows] - mu[cols]
        value = -np.sum(weights * log_ndtr(d)) + 0.5 * np.sum(mu**2)
        pull = weights * _inverse_mills(d)
        grad = mu - np.bincount(rows, pull, n_items) + np.bincount(cols, pull, n_items)
        return value, grad

    def hessian(mu: np.ndarray) -> np.ndarray:
        d = mu[rows] - mu[cols]
        r = _inverse_mills(d)
        curvature = weights * r * (d + r)
        out = np.eye(n_items)
        np.add.at(out, (rows, rows), curvature)
        np.add.at(out, (cols, cols), curvature)
        np.add.at(out, (rows, cols), -curvature)
        np.add.at(out, (cols, rows), -curvature)
        return out

    return value_and_gradient, hessian


def thurstone_map(matrix: np.ndarray) -> np.ndarray:
    """Eq. 2: Thurstone Case V scores by MAP with a standard normal prior, summing to zero.

    The prior makes the problem strictly convex, so the optimum is unique; its gradient with
    respect to a common shift is ``sum_i mu_i``, so the optimum satisfies the constraint by
    itself (the final centring only removes rounding). Solved by Newton steps in a trust region
    (scipy's ``trust-exact``) with the analytic Hessian, which is dense: meant for the hundreds
    of images a comparison experiment shows, not for whole datasets."""
    matrix = _square(matrix)
    value_and_gradient, hessian = _negative_log_posterior(matrix)
    result = optimize.minimize(
        value_and_gradient,
        np.zeros(len(matrix)),
        jac=True,
        hess=hessian,
        method="trust-exact",
        options={"gtol": 1e-9},
    )
    # trust-exact may stop at float precision short of gtol when counts are large: accept a
    # gradient small relative to the number of comparisons
    if not result.success and np.max(np.abs(result.jac)) > 1e-7 * max(1.0, matrix.sum()):
        raise DogIQAError(f"Thurstone MAP did not converge: {result.message}")
    return result.x - result.x.mean()


def thurstone_map_covariance(matrix: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Laplace approximation of the posterior covariance at the MAP scores: the inverse Hessian
    of Eq. 2's negative log-posterior."""
    _, hessian = _negative_log_posterior(_square(matrix))
    return np.linalg.inv(hessian(mu))


def thurstone_ls(matrix: np.ndarray) -> np.ndarray:
    """Thurstone-Mosteller least squares over the compared pairs, scores summing to zero.

    ``p_ij = (w_ij + 1/2) / (n_ij + 1)`` (w: i's wins over j, n: comparisons of the pair), the
    usual continuity correction that keeps unanimous pairs finite; then
    ``mu_i - mu_j ~ Phi^-1(p_ij)``."""
    matrix = _square(matrix)
    upper_i, upper_j = np.nonzero(np.triu(matrix + matrix.T, k=1))
    counts = matrix[upper_i, upper_j] + matrix[upper_j, upper_i]
    z = ndtri((matrix[upper_i, upper_j] + 0.5) / (counts + 1.0))
    n_pairs, n_items = len(z), len(matrix)
    index = np.arange(n_pairs)
    design = sparse.csr_matrix(
        (
            np.concatenate([np.ones(n_pairs), -np.ones(n_pairs), np.ones(n_items)]),
            (
                np.concatenate([index, index, np.full(n_items, n_pairs)]),
                np.concatenate([upper_i, upper_j, np.arange(n_items)]),
            ),
        ),
        shape=(n_pairs + 1, n_items),
    )
    # the last row, sum(mu) = 0, fixes the free shift
    target = np.append(z, 0.0)
    mu = lsqr(design, target, atol=1e-12, btol=1e-12, iter_lim=100000)[0]
    return mu - mu.mean()


BRADLEY_TERRY_ALPHA = 0.01
"""Regularisation of choix's I-LSR: without it an image that never loses has no finite score."""


def bradley_terry(matrix: np.ndarray, alpha: float = BRADLEY_TERRY_ALPHA) -> np.ndarray:
    """Bradley-Terry log-strengths by choix's I-LSR on the (dense) preference matrix."""
    matrix = _square(matrix)
    return np.asarray(choix.ilsr_pairwise_dense(matrix, alpha=alpha), float)


AGGREGATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "thurstone_map": thurstone_map,
    "thurstone_ls": thurstone_ls,
    "bradley_terry": bradley_terry,
}
"""Preference matrix -> one score per image (higher is better)."""


def aggregate(matrix: np.ndarray, method: str = "thurstone_map") -> np.ndarray:
    if method not in AGGREGATORS:
        raise DogIQAError(f"unknown aggregation {method!r}; known: {sorted(AGGREGATORS)}")
    return AGGREGATORS[method](matrix)


def _square(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DogIQAError(f"a preference matrix is square, got shape {matrix.shape}")
    if np.any(matrix < 0) or np.any(np.diag(matrix) != 0):
        raise DogIQAError("a preference matrix has non-negative counts and a zero diagonal")
    return matrix


# --- active sampling ----------------------------------------------------------------------------

_BALD_C2 = np.pi * np.log(2.0) / 2.0
"""h(Phi(x)) ~ exp(-x^2 / (pi ln 2)) in bits; C^2 of Houlsby et al.'s closed form."""


def information_gain(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Expected information (bits) that one probit comparison with score difference
    d ~ N(mean, variance) gives about d: H[Phi(m / sqrt(1 + v))] - E_d H[Phi(d)], the second
    term in Houlsby et al.'s (2011) closed-form approximation."""
    p = stats.norm.cdf(mean / np.sqrt(1.0 + variance))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    marginal = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    expected = np.sqrt(_BALD_C2 / (variance + _BALD_C2)) * np.exp(
        -(mean**2) / (2.0 * (variance + _BALD_C2))
    )
    return marginal - expected


def active_pairs(
    n_items: int,
    judge: Callable[[np.ndarray], Outcomes],
    budget: int,
    batch: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Outcomes]:
    """Ask ``budget`` comparisons in rounds of ``batch``: the first round uniformly, each later
    round the pairs of largest expected information gain under the current Thurstone MAP scores
    and their Laplace covariance. ``judge(pairs)`` answers a round (outcomes as above)."""
    if budget < 1 or batch < 1:
        raise DogIQAError(f"budget and batch must be positive, got {budget} and {batch}")
    candidates = all_pairs(n_items)
    pairs = uniform_pairs(n_items, min(batch, budget), rng)
    outcomes = judge(pairs)
    while len(pairs) < budget:
        matrix = preference_matrix(n_items, pairs, outcomes)
        mu = thurstone_map(matrix)
        cov = thurstone_map_covariance(matrix, mu)
        i, j = candidates[:, 0], candidates[:, 1]
        variance = cov[i, i] + cov[j, j] - 2.0 * cov[i, j]
        gain = information_gain(mu[i] - mu[j], variance)
        take = min(batch, budget - len(pairs))
        chosen = candidates[np.argsort(-gain, kind="stable")[:take]]
        pairs = np.concatenate([pairs, chosen])
        outcomes = np.concatenate([outcomes, judge(chosen)])
    return pairs, outcomes
