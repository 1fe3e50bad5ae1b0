"""``dogiqa score-image`` on JPEG, PNG and BMP files (the in-repo fixture scenes), a truncated one,
from a folder outside any project (the packaged default configuration), and the parts of its
final score: the quality part on the level scale, s_seg, and the range of the final score."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from dogiqa import cli
from dogiqa.config import load_params
from dogiqa.score_image import DEFAULT_PARAMS

ROOT = Path(__file__).resolve().parents[1]
K = 7
MAX_REGIONS = 10  # segment.classical.max_regions of the study's params


@pytest.fixture(scope="module")
def files(fixtures: Path) -> dict[str, Path]:
    folder = fixtures / "images"
    return {
        "jpeg": folder / "scene2.jpg",
        "png": folder / "scene1.png",
        "bmp": folder / "scene3.bmp",
    }


def fast_params() -> dict:
    """The project's params with the fast CPU parts (PIQE alone)."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["segment"]["backend"] = "classical"
    params["score"]["backend"] = "classical"
    params["score"]["classical"]["scorer"] = "piqe"
    params["aggregate"]["main"] = "paper:argmax"
    params["aggregate"]["c_max"] = "dataset"
    return params


@pytest.fixture
def params_file(tmp_path, monkeypatch) -> Path:
    """Those params in an empty working folder (no project, no run outputs)."""
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(fast_params()))  # JSON is valid YAML
    monkeypatch.chdir(tmp_path)
    return path


def _paper_parts(entry: dict) -> tuple[float, float]:
    """The paper formula's quality part and s_seg, from the printed regions."""
    regions = entry["regions"]
    local = [r for r in regions if r["kind"] != "global"]
    s_local = sum(r["argmax"] * r["area"] for r in local) / sum(r["area"] for r in local)
    count = regions[0]["count"]
    return (regions[0]["argmax"] + s_local) / 2, count * K / entry["c_max"]


def test_json_output_for_jpeg_png_bmp(files, params_file, capsys):
    status = cli.main(
        ["--params", str(params_file), "score-image", "--json", *map(str, files.values())]
    )
    assert status == 0
    payload = json.loads(capsys.readouterr().out)
    assert [Path(e["path"]).suffix for e in payload] == [".jpg", ".png", ".bmp"]
    for entry in payload:
        assert entry["variant"] == "paper:argmax"
        assert entry["regions"][0]["kind"] == "global"
        assert len(entry["regions"]) == entry["regions"][0]["count"] + 1
        assert all(1 <= r["argmax"] <= K and len(r["probs"]) == K for r in entry["regions"])
        # no run here: c_max is the classical segmenter's cap, and the output says so
        assert entry["c_max"] == MAX_REGIONS
        assert "segment.classical.max_regions" in entry["c_max_from"]
        assert entry["configuration"] == f"--params {params_file}"
        quality, s_seg = _paper_parts(entry)
        assert entry["quality"] == pytest.approx(quality)
        assert entry["count_term"] == pytest.approx(s_seg)
        assert entry["count_term_formula"] == "s_seg = c*K/c_max"
        assert entry["score"] == pytest.approx(quality + s_seg)
        assert entry["level_scale"] == [1, K]
        assert entry["score_range"] == pytest.approx([1 + K / MAX_REGIONS, 2 * K])


def test_same_file_twice_gives_the_same_score(files, params_file, capsys):
    png = str(files["png"])
    assert cli.main(["--params", str(params_file), "score-image", "--json", png, png]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["score"] == second["score"] == pytest.approx(sum(_paper_parts(first)))


def test_text_output_shows_each_part_on_its_scale(files, params_file, capsys):
    assert cli.main(["--params", str(params_file), "score-image", str(files["png"])]) == 0
    out = capsys.readouterr().out
    assert "quality part: " in out and f"on the level scale 1..{K} (nearest level " in out
    assert "s_seg = c*K/c_max: " in out and f"c_max = {MAX_REGIONS}" in out
    assert "final score (paper:argmax): " in out
    assert "= quality part + s_seg (range 1.70..14.00)" in out
    assert f"c_max = {MAX_REGIONS}, from segment.classical.max_regions" in out
    assert "higher is better" in out and "it is not a MOS" in out


def test_truncated_file_fails_with_one_line(files, params_file, tmp_path, capsys):
    data = files["jpeg"].read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[: len(data) // 3])
    status = cli.main(["--params", str(params_file), "score-image", str(broken), str(files["png"])])
    captured = capsys.readouterr()
    assert status == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1
    assert "broken.jpg" in errors[0] and "Traceback" not in captured.err
    assert "final score (paper:argmax)" in captured.out  # the good file is still scored
    assert "scene1.png" in captured.out


def test_bad_params_fail_before_reading_images(params_file, capsys):
    params = json.loads(params_file.read_text())
    params["aggregate"]["main"] = "nope:argmax"
    params_file.write_text(json.dumps(params))
    status = cli.main(["--params", str(params_file), "score-image", "missing.jpg"])
    err = capsys.readouterr().err
    assert status == 2 and "aggregate.main" in err and "missing.jpg" not in err


def test_runs_from_a_folder_outside_any_project(files, tmp_path):
    """No params.yaml in reach and no --params: the packaged default configuration, as a user
    runs the installed command from their own folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "dogiqa", "score-image", str(files["jpeg"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration: the packaged default configuration" in result.stdout
    assert "final score (paper:argmax): " in result.stdout
    assert f"c_max = {MAX_REGIONS}, from segment.classical.max_regions" in result.stdout


def test_c_max_of_a_recorded_run_is_used_and_named(files, tmp_path, monkeypatch, capsys):
    """Inside a project, the c_max that the aggregate stage recorded for the study's datasets."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    cpu_run = {"profile": "cpu", "datasets": ["livec"], "enabled": True}
    (tmp_path / "params.yaml").write_text(json.dumps(fast_params() | {"runs": {"cpu": cpu_run}}))
    summary = tmp_path / "data" / "predictions" / "cpu" / "livec.summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"c_max": 8.0}))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # any folder of the project
    assert cli.main(["score-image", "--json", str(files["png"])]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["c_max"] == 8
    assert entry["c_max_from"] == "the study's run (data/predictions/cpu/livec.summary.json)"
    assert entry["configuration"].startswith("params.yaml of the project at ")
    assert entry["count_term"] == pytest.approx(entry["regions"][0]["count"] * K / 8)


def test_packaged_default_is_the_study_configuration():
    """The packaged configuration is params.yaml's segment, score and aggregate settings, with
    the subsections of the backends they choose."""
    text = (resources.files("dogiqa.resources") / DEFAULT_PARAMS).read_text(encoding="utf-8")
    packaged = yaml.safe_load(text)
    study = load_params(ROOT / "params.yaml")
    assert set(packaged) == {"segment", "score", "aggregate"}
    for name, section in packaged.items():
        chosen = study[name].get("backend")
        expected = {
            key: value
            for key, value in study[name].items()
            if not isinstance(value, dict) or key == chosen
        }
        assert section == expected, f"{DEFAULT_PARAMS}: {name} differs from params.yaml"
