"""Uniform and difficult sample selection (seed 003, Eq. 5) on real data: the released lists and
MOS / rating deviations of the mirror, and the cached Q-Bench predictions as proxy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from dogiqa import selection
from dogiqa.errors import DogIQAError, ParamError

PARAMS = {
    "selection": {
        "datasets": ["agiqa"],
        "size": 20,
        "lambda": 0.01,
        "epsilon": 1.0,
        "diversity": "cosine_to_mean",
        "features": "none",
        "proxy": {"agiqa": ["qbench:internlm_xcomposer_vl", "qbench:mplug_owl"]},
    }
}


@pytest.fixture(scope="module")
def folder(mirror) -> Path:
    return mirror / "external"


def test_evenly_spaced_ranks_reproduce_the_released_uniform_list(folder):
    agiqa = selection.released_mos_std("agiqa", folder)
    ours = agiqa.image[selection.uniform_by_rank(agiqa.mos.to_numpy(), 150)]
    assert list(ours) == selection.released_list("agiqa", "uniform", folder)


def test_spaq_uniform_list_has_the_released_mos_values_though_ties_differ(folder):
    spaq = selection.released_mos_std("spaq", folder)
    ours = spaq.mos.to_numpy()[selection.uniform_by_rank(spaq.mos.to_numpy(), 150)]
    released = spaq.set_index("image").mos[selection.released_list("spaq", "uniform", folder)]
    np.testing.assert_array_equal(np.sort(ours), np.sort(released.to_numpy()))


def test_variance_normalisation_demotes_images_with_uncertain_ratings():
    proxy = np.array([0.5, 0.5, 0.5])
    mos = np.array([0.1, 0.1, 0.3])
    std = np.array([0.0, 1.0, 0.0])
    hardness = selection.difficulty(proxy, mos, std, eps=1.0)
    np.testing.assert_allclose(hardness, [0.16, 0.08, 0.04])
    assert list(selection.select_difficult(hardness, 2)) == [0, 1]


def test_diversity_bonus_prefers_an_image_unlike_the_selected_ones():
    hardness = np.array([1.0, 0.5, 0.49])
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert list(selection.select_difficult(hardness, 2, features, lam=0.0)) == [0, 1]
    # Div for image 1 (same direction as the set mean) is 0, for image 2 it is 1
    picks = selection.select_difficult(hardness, 2, features, lam=0.05)
    assert list(picks) == [0, 2]
    mse = selection.select_difficult(hardness, 2, features, lam=0.05, diversity="mse_to_mean")
    assert list(mse) == [0, 2]


def test_select_on_real_agiqa_with_cached_proxies(folder):
    p = selection.validate_params(PARAMS)
    frame = selection.select("agiqa", p, folder)
    assert len(frame) == 2982
    assert (frame.uniform > 0).sum() == 20 and (frame.difficult > 0).sum() == 20
    assert (frame.released_uniform > 0).sum() == 150 == (frame.released_difficult > 0).sum()
    assert frame.mos01.between(0, 1).all() and frame.std01.between(0, 1).all()
    chosen = frame[frame.difficult > 0].sort_values("difficult")
    # without features, the picks are the 20 largest variance-normalised proxy errors, in order
    assert chosen.difficulty.is_monotonic_decreasing
    assert chosen.difficulty.min() >= frame[frame.difficult == 0].difficulty.max()
    rows = selection.compare(frame, "agiqa", p)
    assert [(r["list"], r["selection"]) for r in rows] == [
        ("uniform", "released"),
        ("uniform", "this study"),
        ("difficult", "released"),
        ("difficult", "this study"),
    ]
    assert rows[0]["overlap_with_released"] == 150


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (("datasets", ["livec"]), "selection.datasets"),
        (("proxy", {"agiqa": ["lpips:vgg"]}), "selection.proxy.agiqa"),
        (("diversity", "clip"), "selection.diversity"),
        (("size", 0), "selection.size"),
    ],
)
def test_bad_params_fail_naming_the_param(change, param):
    params = copy.deepcopy(PARAMS)
    params["selection"][change[0]] = change[1]
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        selection.validate_params(params)


def test_missing_released_files_are_one_clear_line(tmp_path):
    with pytest.raises(DogIQAError, match="run the download-external stage"):
        selection.released_list("spaq", "uniform", tmp_path)
    with pytest.raises(DogIQAError, match="no released lists for 'livec'"):
        selection.released_list("livec", "uniform", tmp_path)
