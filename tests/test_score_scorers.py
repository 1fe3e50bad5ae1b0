"""Several classical scorers in one score run, identical crops scored once, the cache format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stage_project import real_images, study_params, write_labels

from dogiqa import io, paths, score, segment
from dogiqa.errors import ParamError
from dogiqa.scoring.classical import ClassicalScorer
from dogiqa.segmentation.algorithm1 import region_rows

SCORERS = ["niqe", "piqe", "brisque"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    root = tmp_path_factory.mktemp("segmented")
    write_labels(root, [(p.name, str(p)) for p in real_images(3)])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        segment.run("livec", study_params())
    return root


def project(segmented: Path, target: Path) -> Path:
    for table in (paths.labels_table, paths.regions_table):
        table("livec", base=target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(table("livec", base=segmented), table("livec", base=target))
    return target


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Per classical scorer, the number of crops of each call."""
    seen: dict[str, list[int]] = {}
    real = ClassicalScorer.measure

    def counted(self: ClassicalScorer, crops: list) -> list:
        seen.setdefault(self.metric, []).append(len(crops))
        return real(self, crops)

    monkeypatch.setattr(ClassicalScorer, "measure", counted)
    return seen


def scorer_params(scorer: Any, **changes: Any) -> dict[str, Any]:
    return study_params(score__classical__scorer=scorer, **changes)


def test_one_run_with_several_scorers_equals_one_run_each(segmented, tmp_path, monkeypatch):
    monkeypatch.chdir(project(segmented, tmp_path / "together"))
    together = score.run("livec", scorer_params(SCORERS))
    regions = pd.read_csv(paths.regions_table("livec"))
    assert len(together) == len(regions) * len(SCORERS)
    # Image, then region, then the scorers in the listed order.
    expected = [
        (image, region, name)
        for image, region in zip(regions["image"], regions["region"], strict=True)
        for name in SCORERS
    ]
    assert list(together[["image", "region", "prompt_id"]].itertuples(index=False)) == expected
    summary = json.loads(paths.summary("scores", "livec").read_text())
    assert summary["prompt_id"] == "niqe" and summary["prompt_ids"] == SCORERS
    assert summary["regions_scored"] == len(regions)
    assert set(summary["fallbacks_by_prompt"]) == set(SCORERS)
    written = pd.read_csv(paths.scores_table("livec"), dtype=str, keep_default_na=False)

    monkeypatch.chdir(project(segmented, tmp_path / "apart"))
    for name in SCORERS:
        alone = score.run("livec", scorer_params(name))
        assert (alone["prompt_id"] == name).all()
        part = written[written["prompt_id"] == name].reset_index(drop=True)
        apart = pd.read_csv(paths.scores_table("livec"), dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(part, apart)  # the same text, cell for cell


def test_adding_a_scorer_scores_only_the_new_one(segmented, tmp_path, monkeypatch, calls):
    monkeypatch.chdir(project(segmented, tmp_path))
    score.run("livec", scorer_params("piqe"))
    assert set(calls) == {"piqe"}
    calls.clear()
    score.run("livec", scorer_params(["piqe", "niqe"]))
    assert set(calls) == {"niqe"} and len(calls["niqe"]) == 3  # one call per image
    calls.clear()
    table = score.run("livec", scorer_params(["niqe", "piqe"]))
    assert calls == {}  # both cached; the order follows the params
    assert list(table["prompt_id"][:2]) == ["niqe", "piqe"]
    score.run("livec", scorer_params("piqe", score__K=5))
    assert calls == {}  # another K maps the same raw values
    score.run("livec", scorer_params("piqe", score__crop="mask"))
    assert set(calls) == {"piqe"}  # other crops: measured again


def test_identical_crops_are_scored_once(tmp_path, monkeypatch, calls, mirror) -> None:
    """A region whose bounding box is the whole image is, in bbox mode, the whole image."""
    photo = real_images(1)[0]
    write_labels(tmp_path, [(photo.name, str(photo))])
    height, width = 500, 500
    yy, xx = np.mgrid[:height, :width]
    frame = (yy < 40) | (xx < 40) | (yy >= height - 40) | (xx >= width - 40)  # bbox: everything
    block = (yy >= 100) & (yy < 300) & (xx >= 120) & (xx < 380)
    rows = region_rows([frame, block], height, width, 1000.0)
    regions = pd.DataFrame([{**r, "image": photo.name, "backend": "classical"} for r in rows])
    io.write_csv_atomic(paths.regions_table("livec", base=tmp_path), regions[segment.COLUMNS])
    monkeypatch.chdir(tmp_path)
    full = [r["region"] for r in rows if (r["x0"], r["y0"], r["x1"], r["y1"]) == (0, 0, 500, 500)]
    assert len(full) >= 2 and full[0] == 0

    table = score.run("livec", scorer_params("piqe"))
    assert calls["piqe"] == [len(rows) - len(full) + 1]
    assert table.loc[table["region"].isin(full), "raw"].nunique() == 1
    summary = json.loads(paths.summary("scores", "livec").read_text())
    assert summary["scorer_calls"] == calls["piqe"][0] and summary["regions_scored"] == len(rows)
    calls.clear()
    masked = score.run("livec", scorer_params("piqe", score__crop="mask"))
    assert calls["piqe"] == [len(rows)]  # masked crops differ
    assert masked.loc[0, "raw"] == table.loc[0, "raw"]


def test_cached_values_follow_the_image_bytes(segmented, tmp_path, calls):
    """An image file whose bytes change is measured again; the others come from the cache."""
    root = project(segmented, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        labels = pd.read_csv(paths.labels_table("livec"))
        first = Path(labels.loc[0, "path"])
        copy = root / "copy" / first.name
        copy.parent.mkdir()
        shutil.copy(first, copy)
        labels.loc[0, "path"] = str(copy)
        labels.to_csv(paths.labels_table("livec"), index=False)
        score.run("livec", scorer_params("piqe"))
        reference = Path(paths.scores_table("livec")).read_bytes()
        calls.clear()
        copy.write_bytes(copy.read_bytes() + b"\0")  # other bytes, same pixels
        score.run("livec", scorer_params("piqe"))
        assert list(calls) == ["piqe"] and len(calls["piqe"]) == 1  # that image alone, again
        assert Path(paths.scores_table("livec")).read_bytes() == reference


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "must be a scorer name or a non-empty list"),
        (["piqe", "ssim"], "must be one of"),
        (["piqe", "piqe"], "lists 'piqe' twice"),
        ({"piqe": 1}, "must be a scorer name or a non-empty list"),
    ],
)
def test_bad_scorer_lists(value, message) -> None:
    with pytest.raises(ParamError, match=rf"params: score\.classical\.scorer: {message}"):
        score.validate_params(scorer_params(value))
