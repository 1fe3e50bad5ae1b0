"""``dogiqa score-image`` on real JPEG, PNG and BMP files, and on a truncated one."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dogiqa import cli
from dogiqa.config import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(mirror) -> dict[str, Path]:
    return {
        "jpeg": mirror / "livec" / "Images" / "1000.JPG",
        "png": mirror / "samples" / "kadid10k" / "I01_01_05.png",
        "bmp": mirror / "livec" / "Images" / "trainingImages" / "t1.bmp",
    }


@pytest.fixture
def params_file(tmp_path, monkeypatch) -> Path:
    """The project's params with the fast CPU parts, in an empty working folder (no summaries)."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["segment"]["backend"] = "classical"
    params["score"]["backend"] = "classical"
    params["score"]["classical"]["scorer"] = "piqe"
    params["aggregate"]["main"] = "paper:argmax"
    params["aggregate"]["c_max"] = "dataset"
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(params))  # JSON is valid YAML
    monkeypatch.chdir(tmp_path)
    return path


def _paper_score(entry: dict) -> float:
    regions = entry["regions"]
    local = [r for r in regions if r["kind"] != "global"]
    s_local = sum(r["argmax"] * r["area"] for r in local) / sum(r["area"] for r in local)
    count = regions[0]["count"]
    return (regions[0]["argmax"] + s_local) / 2 + count * 7 / entry["c_max"]


def test_json_output_for_jpeg_png_bmp(files, params_file, capsys):
    status = cli.main(
        ["--params", str(params_file), "score-image", "--json", *map(str, files.values())]
    )
    assert status == 0
    payload = json.loads(capsys.readouterr().out)
    assert [Path(e["path"]).suffix for e in payload] == [".JPG", ".png", ".bmp"]
    counts = [e["regions"][0]["count"] for e in payload]
    for entry in payload:
        assert entry["variant"] == "paper:argmax"
        assert entry["regions"][0]["kind"] == "global"
        assert len(entry["regions"]) == entry["regions"][0]["count"] + 1
        assert all(1 <= r["argmax"] <= 7 and len(r["probs"]) == 7 for r in entry["regions"])
        # no aggregate summary here: c_max is the largest count among the files
        assert entry["c_max"] == max(counts)
        assert entry["score"] == pytest.approx(_paper_score(entry))


def test_same_file_twice_gives_the_same_score(files, params_file, capsys):
    png = str(files["png"])
    assert cli.main(["--params", str(params_file), "score-image", "--json", png, png]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["score"] == second["score"] == pytest.approx(_paper_score(first))


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
    assert "I01_01_05.png" in captured.out


def test_bad_params_fail_before_reading_images(params_file, capsys):
    params = json.loads(params_file.read_text())
    params["aggregate"]["main"] = "nope:argmax"
    params_file.write_text(json.dumps(params))
    status = cli.main(["--params", str(params_file), "score-image", "missing.jpg"])
    err = capsys.readouterr().err
    assert status == 2 and "aggregate.main" in err and "missing.jpg" not in err
