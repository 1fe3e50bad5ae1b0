"""Classical scorers behind the Scorer interface: crops of any size, the level map, fallbacks.

How closely each metric reproduces its reference implementation is tested in
``tests/test_iqa_calibration.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dogiqa.errors import ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import anchors, build_scorer, check_section, from_position
from dogiqa.scoring.classical import SCORERS, ClassicalScorer, fingerprint, level_position
from dogiqa.scoring.iqa.piqe import piqe


@pytest.fixture(scope="module")
def calibration(mirror: Path) -> Path:
    return mirror / "samples" / "tid2013_calibration"


@pytest.fixture(scope="module")
def distorted(calibration: Path) -> dict[str, np.ndarray]:
    names = pd.read_csv(calibration / "official_values.csv", index_col="Method").columns
    return {name: load_rgb(calibration / "dist_dir" / name) for name in names}


@pytest.fixture(scope="module")
def photo(mirror: Path) -> Image.Image:
    return Image.fromarray(load_rgb(mirror / "livec" / "Images" / "1000.JPG"))


def ours(metric: str, images: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([SCORERS[metric].function(image) for image in images.values()])


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_strong_distortions_score_worse_than_their_reference(
    metric, distorted, calibration
) -> None:
    """I03 and I19 carry the strongest distortions (highest official BRISQUE, NIQE and PIQE);
    every scorer rates them worse than their undistorted references."""
    strong = {name: distorted[name] for name in ("I03.bmp", "I19.bmp")}
    refs = {name: load_rgb(calibration / "ref_dir" / name) for name in strong}
    assert np.all(ours(metric, strong) > ours(metric, refs))


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_level_map_is_linear_between_the_data_anchors(metric) -> None:
    spec = SCORERS[metric]
    anchor = anchors.load()[metric]
    assert (spec.best, spec.worst) == (anchor["best"], anchor["worst"])
    assert spec.best < spec.worst  # lower is better for all three
    assert level_position(spec.best, spec, 7) == 7.0
    assert level_position(spec.worst, spec, 7) == 1.0
    assert level_position((spec.best + spec.worst) / 2, spec, 5) == pytest.approx(3.0)
    span = spec.worst - spec.best
    assert level_position(spec.best - span, spec, 7) == 7.0
    assert level_position(spec.worst + span, spec, 7) == 1.0
    scores = from_position(3.25, 7, "x")
    assert scores.probs[2] == pytest.approx(0.75) and scores.probs[3] == pytest.approx(0.25)
    assert scores.expected == 3.25 and scores.argmax == 3 and sum(scores.probs) == 1.0


def test_cache_key_changes_with_the_implementation_or_the_anchors(monkeypatch) -> None:
    """The score stage keys its cache on these: other anchors score the crops again."""
    before = fingerprint("niqe")
    assert before["reference"] == SCORERS["niqe"].reference
    moved = dataclasses.replace(SCORERS["niqe"], worst=99.0)
    monkeypatch.setitem(SCORERS, "niqe", moved)
    assert fingerprint("niqe") != before


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_scorer_on_real_crops_of_any_size(metric, photo) -> None:
    image = photo
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


def test_flat_crop(photo) -> None:
    """No texture: PIQE scores 100 by definition; BRISQUE and NIQE cannot fit their models
    (no negative or positive MSCN coefficient), so the crop is a flagged fallback at level 1."""
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    assert piqe(np.asarray(flat)) == 100.0
    assert ClassicalScorer("piqe", 7).score([flat])[0].argmax == 1
    for metric in ("brisque", "niqe"):
        result = ClassicalScorer(metric, 7).score([flat])[0]
        assert result.fallback and result.argmax == 1 and result.raw == "nan"
        assert not ClassicalScorer(metric, 7).score([photo])[0].fallback


def test_build_from_params() -> None:
    section = {"backend": "classical", "K": 5, "classical": {"scorer": "piqe"}}
    check_section(section)
    scorer = build_scorer(section)
    assert (scorer.name, scorer.K) == ("piqe", 5)
    with pytest.raises(ParamError, match="score.classical.scorer"):
        check_section({"backend": "classical", "classical": {"scorer": "ssim"}})
