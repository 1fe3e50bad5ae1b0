"""Classical scorers behind the Scorer interface: crops of any size, the level map, fallbacks.

How closely each metric reproduces its reference implementation is tested in
``tests/test_iqa_calibration.py``.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dogiqa import dvcdeps
from dogiqa.errors import ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import anchors, build_scorer, check_section, from_position
from dogiqa.scoring.classical import (
    SCORERS,
    ClassicalScorer,
    implementation_files,
    level_position,
    metric_settings,
    module_files,
)
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


def test_implementation_files_are_each_metrics_code_and_parameter_files() -> None:
    names = {m: {p.name for p in implementation_files(m)} for m in SCORERS}
    assert {"niqe.py", "matlab.py", "niqe_pris_params.npz"} <= names["niqe"]
    assert {"brisque.py", "matlab.py", "brisque_allmodel", "brisque_allrange"} <= names["brisque"]
    assert names["piqe"] == {"piqe.py", "matlab.py"}
    assert "classical_anchors.yaml" not in set().union(*names.values())


def test_cache_key_follows_the_implementation_not_the_anchors(tmp_path, monkeypatch) -> None:
    """The score stage keys a metric's cached raw values on ``metric_settings``: a changed
    module or parameter file measures again; other anchors (or K) only map them again."""
    before = {m: metric_settings(m) for m in SCORERS}
    moved = dataclasses.replace(SCORERS["niqe"], best=1.0, worst=99.0)
    monkeypatch.setitem(SCORERS, "niqe", moved)
    assert metric_settings("niqe") == before["niqe"]
    assert ClassicalScorer("niqe", 7).levels(5.0) != ClassicalScorer("piqe", 7).levels(5.0)

    package = tmp_path / "dogiqa"
    shutil.copytree(dvcdeps.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(dvcdeps, "PACKAGE_DIR", package)

    def settings_after(change: str) -> dict[str, dict]:
        with (package / change).open("ab") as handle:
            handle.write(b"\n")
        module_files.cache_clear()
        return {m: metric_settings(m) for m in SCORERS}

    module_files.cache_clear()
    try:
        assert {m: metric_settings(m) for m in SCORERS} == before  # same bytes, same key
        changed = settings_after("resources/niqe_pris_params.npz")
        assert [m for m in SCORERS if changed[m] != before[m]] == ["niqe"]
        changed = settings_after("resources/brisque_allrange")
        assert changed["brisque"] != before["brisque"] and changed["piqe"] == before["piqe"]
        changed = settings_after("scoring/iqa/matlab.py")
        assert all(changed[m]["code"] != before[m]["code"] for m in SCORERS)
    finally:
        module_files.cache_clear()


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
