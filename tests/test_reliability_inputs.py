"""Hostile inputs at the stage and CLI level.

A subset that mixes real photos with every kind of awkward file goes through the segment and
score stages: files that cannot be read are recorded with one line each and counted in the
stage summaries, the rest is processed (odd modes, EXIF rotation and a 1x1 image included, by
every classical scorer). At the CLI, what stops a stage (a bad param, a missing or incomplete
table) is one line on stderr and exit status 2, and every param is checked before any input is
read or any output written. (tests/test_images.py checks the image loader file by file.)
"""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from stage_project import (
    cli,
    cli_env,
    fixture_images,
    run_cli,
    study_params,
    write_labels,
    write_params,
)

from dogiqa import aggregate, cache, download, evaluate, io, merge_scores, paths, score, segment
from dogiqa.errors import LabelError, ParamError

SCORERS = ["piqe", "brisque", "niqe"]


PHOTOS = [path for path in fixture_images() if "distorted" not in path.name]


def _photo(index: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A fixture scene, downscaled (small images keep the test fast)."""
    with Image.open(PHOTOS[index]) as image:
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _bomb(path: Path) -> None:
    """A PNG whose header claims 60000 x 60000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _hostile_files(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Files that load (name -> path) and files that must be refused (name -> reason)."""
    folder.mkdir()
    good: dict[str, Path] = {}
    for name, index in (("photo_a.jpg", 0), ("photo_b.jpg", 1)):
        _photo(index).save(folder / name, quality=92)
        good[name] = folder / name
    photo = _photo(2)
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    gray = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(folder / "deep16.png")  # mode I;16
    photo.convert("L").save(folder / "gray.jpg")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(folder / "alpha.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 160 x 120 stored, 120 x 160 shown
    photo.save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (200, 120, 40)).save(folder / "dot.png")
    for name in ("cmyk.jpg", "deep16.png", "gray.jpg", "alpha.png", "palette.png"):
        good[name] = folder / name
    good["rotated.jpg"] = folder / "rotated.jpg"
    good["dot.png"] = folder / "dot.png"

    (folder / "empty.jpg").write_bytes(b"")
    full = (folder / "photo_a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "notes.png").write_text("a text file with an image extension\n")
    _bomb(folder / "bomb.png")
    bad = {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "notes.png": "not an image",
        "bomb.png": "decompression bomb",
        "missing.jpg": "not found",  # listed in the labels, absent on disk
    }
    return good, bad


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Segment and score (three classical scorers) a subset with every kind of hostile file."""
    root = tmp_path_factory.mktemp("hostile")
    good, bad = _hostile_files(root / "files")
    names = ["photo_a.jpg", *bad, *[n for n in good if n != "photo_a.jpg"]]
    rows = [(n, str(good.get(n, root / "files" / n))) for n in names]
    write_labels(root, rows)
    params = study_params(score__classical__scorer=SCORERS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        regions = segment.run("livec", params)
        scores = score.run("livec", params)
    return {"root": root, "good": good, "bad": bad, "regions": regions, "scores": scores}


def _summary(root: Path, kind: str) -> dict[str, Any]:
    return json.loads(paths.summary(kind, "livec", base=root).read_text())


def test_segment_records_each_bad_file_and_processes_the_rest(hostile) -> None:
    summary = _summary(hostile["root"], "regions")
    bad, good = hostile["bad"], hostile["good"]
    assert summary["images"] == len(bad) + len(good)
    assert summary["processed"] == len(good)
    reasons = {s["image"]: s["reason"] for s in summary["skipped"]}
    assert list(reasons) == list(bad)  # label order
    for name, expected in bad.items():
        assert expected in reasons[name] and name in reasons[name]
        assert "\n" not in reasons[name] and "Traceback" not in reasons[name]
    assert list(dict.fromkeys(hostile["regions"]["image"])) == [
        "photo_a.jpg",
        *[n for n in good if n != "photo_a.jpg"],
    ]


def test_odd_files_are_segmented_as_displayed(hostile) -> None:
    first = hostile["regions"][hostile["regions"]["region"] == 0].set_index("image")
    assert first.loc["rotated.jpg", ["height", "width"]].tolist() == [160, 120]  # EXIF applied
    assert first.loc["dot.png", ["height", "width", "count"]].tolist() == [1, 1, 1]
    for name in ("cmyk.jpg", "deep16.png", "gray.jpg", "alpha.png", "palette.png"):
        assert first.loc[name, ["height", "width"]].tolist() == [120, 160]


def test_every_classical_scorer_scores_every_readable_file(hostile) -> None:
    scores: pd.DataFrame = hostile["scores"]
    regions: pd.DataFrame = hostile["regions"]
    assert len(scores) == len(regions) * len(SCORERS)
    assert set(scores["image"]) == set(hostile["good"])
    for prompt_id in SCORERS:
        part = scores[scores["prompt_id"] == prompt_id]
        assert list(zip(part["image"], part["region"], strict=True)) == list(
            zip(regions["image"], regions["region"], strict=True)
        )
    dot = scores[scores["image"] == "dot.png"]
    assert (
        sorted(dot["prompt_id"].unique()) == sorted(SCORERS) and dot["argmax"].between(1, 7).all()
    )
    summary = _summary(hostile["root"], "scores")
    assert summary["images"] == summary["images_scored"] == len(hostile["good"])
    assert summary["skipped"] == []


def test_skip_counts_reach_the_metrics(hostile, monkeypatch) -> None:
    monkeypatch.chdir(hostile["root"])
    params = study_params(score__classical__scorer=SCORERS, evaluate__bootstrap_samples=0)
    aggregate.run("livec", params)
    report = evaluate.run("livec", params)
    assert report["skipped"] == {"segment": len(hostile["bad"]), "score": 0}
    written = json.loads((paths.metrics_file("livec", base=hostile["root"])).read_text())
    assert written["skipped"] == report["skipped"]


def test_score_skips_files_that_went_bad_after_segmentation(hostile, tmp_path, monkeypatch):
    """The score stage meets a deleted and a truncated file: both counted, the rest scored."""
    root = hostile["root"]
    labels = pd.read_csv(paths.labels_table("livec", base=root), keep_default_na=False)
    copies = tmp_path / "files"
    copies.mkdir()
    for name, path in hostile["good"].items():
        (copies / name).write_bytes(path.read_bytes())
    labels["path"] = [str(copies / n) for n in labels["image"]]
    write_labels(tmp_path, list(zip(labels["image"], labels["path"], strict=True)))
    (tmp_path / paths.REGIONS).mkdir(parents=True)
    io.write_csv_atomic(paths.regions_table("livec", base=tmp_path), hostile["regions"])
    (copies / "gray.jpg").unlink()
    data = (copies / "photo_b.jpg").read_bytes()
    (copies / "photo_b.jpg").write_bytes(data[: len(data) // 3])
    monkeypatch.chdir(tmp_path)
    table = score.run("livec", study_params())
    summary = _summary(tmp_path, "scores")
    reasons = {s["image"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"photo_b.jpg", "gray.jpg"}
    assert "truncated" in reasons["photo_b.jpg"] and "not found" in reasons["gray.jpg"]
    assert summary["images"] == len(hostile["good"])
    assert summary["images_scored"] == len(hostile["good"]) - 2 == table["image"].nunique()


def test_a_skipped_file_is_retried_once_it_is_repaired(tmp_path, monkeypatch) -> None:
    photo = PHOTOS[1]
    broken = tmp_path / "later.jpg"
    broken.write_bytes(photo.read_bytes()[:500])
    write_labels(tmp_path, [(photo.name, str(photo)), ("later.jpg", str(broken))])
    monkeypatch.chdir(tmp_path)
    params = study_params()
    segment.run("livec", params)
    score.run("livec", params)
    calls = {"n": 0}
    real = segment.segment_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_image", counted)
    segment.run("livec", params)
    assert calls["n"] == 0  # the skip is reused while the file is unchanged
    broken.write_bytes(photo.read_bytes())
    segment.run("livec", params)
    assert calls["n"] == 1
    table = score.run("livec", params)
    assert set(table["image"]) == {photo.name, "later.jpg"}


def test_a_stage_with_bad_images_prints_one_line_each_and_succeeds(hostile, tmp_path) -> None:
    root = hostile["root"]
    labels = pd.read_csv(paths.labels_table("livec", base=root), keep_default_na=False)
    write_labels(tmp_path, list(zip(labels["image"], labels["path"], strict=True)))
    write_params(tmp_path, study_params())
    result = run_cli(tmp_path, "segment", "--dataset", "livec")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    for name, reason in hostile["bad"].items():
        mentions = [line for line in lines if f"skipping {name}:" in line]
        assert len(mentions) == 1 and reason in mentions[0]


# --- the CLI: one line and exit status 2 --------------------------------------------------------


def _cli_project(root: Path, **changes: Any) -> None:
    """A complete small project (labels, regions) with params changed as given."""
    photo = PHOTOS[1]
    write_labels(root, [(photo.name, str(photo))])
    params = study_params()
    write_params(root, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        segment.run("livec", params)
    write_params(root, study_params(**changes))


CLI_FAILURES = [
    ("segment", {"segment__min_area": -5}, "params: segment.min_area: must be >= 1, got -5"),
    ("segment", {"segment__backend": "sam3"}, "params: segment.backend: must be one of"),
    ("score", {"score__K": 4}, "params: score.K: must be odd"),
    ("score", {"score__K": 11}, "params: score.K: must be between 3 and 9, got 11"),
    ("score", {"score__backend": "gpu"}, "params: score.backend: must be one of"),
    ("score", {"score__prompt": "paper_word_k8"}, "params: score.prompt: must be one of"),
    (
        "score",
        {"score__classical__scorer": ["piqe", "ssim"]},
        "params: score.classical.scorer: must be one of",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "changes", "message"), CLI_FAILURES)
def test_cli_bad_param_is_one_line_and_status_2(tmp_path, stage, changes, message) -> None:
    _cli_project(tmp_path, **changes)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
    result = run_cli(tmp_path, stage, "--dataset", "livec")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dogiqa {stage}: error: {message}")
    assert result.stdout == ""
    after = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "table", "drop", "message"),
    [
        ("segment", "labels", "path", "missing column(s) ['path']"),
        ("score", "labels", "path", "missing column(s) ['path']"),
        ("score", "regions", "rle", "missing column(s) ['rle']"),
    ],
)
def test_cli_table_with_a_missing_column(tmp_path, stage, table, drop, message) -> None:
    _cli_project(tmp_path)
    path = (paths.labels_table if table == "labels" else paths.regions_table)(
        "livec", base=tmp_path
    )
    pd.read_csv(path).drop(columns=[drop]).to_csv(path, index=False)
    result = run_cli(tmp_path, stage, "--dataset", "livec")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"dogiqa {stage}: error: ") and message in result.stderr


@pytest.mark.slow
def test_cli_missing_inputs_and_corrupt_label_file(tmp_path, mirror) -> None:
    write_params(tmp_path, study_params())
    result = run_cli(tmp_path, "score", "--dataset", "livec")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "regions table not found (run the segment stage first)" in result.stderr
    # A label file whose column is missing never gets past the checksum: refused in one line.
    fake = tmp_path / "mirror"
    (fake / "labels").mkdir(parents=True)
    agiqa = pd.read_csv(mirror / "labels" / "agiqa3k_data.csv")
    agiqa.drop(columns=["mos_quality"]).to_csv(fake / "labels" / "agiqa3k_data.csv", index=False)
    write_params(tmp_path, study_params(download__datasets=["agiqa"], datasets=["agiqa"]))
    result = subprocess.run(
        cli("dogiqa", "download", "--dataset", "agiqa"),
        cwd=tmp_path,
        env=cli_env() | {"DOGIQA_MIRROR": str(fake)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "checksum mismatch, refused" in result.stderr


# --- every stage checks its params before it reads or writes anything --------------------------

STAGE_PARAMS = [
    (segment.run, {"segment__min_area": -1}, "segment.min_area"),
    (segment.run, {"segment__min_area_fraction": -0.1}, "segment.min_area_fraction"),
    (segment.run, {"segment__backend": "sam3"}, "segment.backend"),
    (score.run, {"score__K": 4}, "score.K"),
    (score.run, {"score__K": 1}, "score.K"),
    (score.run, {"score__K": 11}, "score.K"),
    (score.run, {"score__backend": "gpu"}, "score.backend"),
    (score.run, {"score__backend": "hf", "score__hf__model": "gpt-9"}, "score.hf.model"),
    (score.run, {"score__backend": "openai", "score__openai__model": ""}, "score.openai.model"),
    (score.run, {"score__prompt": "paper_word_k8"}, "score.prompt"),
    (score.run, {"score__classical__scorer": []}, "score.classical.scorer"),
    (score.run, {"score__classical__scorer": ["piqe", "piqe"]}, "score.classical.scorer"),
    (score.run, {"score__shards": [1]}, "score.shards"),
    (merge_scores.run, {"score__K": 4}, "score.K"),
    (download.run, {"download__livec_images": "some"}, "download.livec_images"),
    (segment.run, {"sample__size": -1}, "sample.size"),
    (aggregate.run, {"sample__seed": -1}, "sample.seed"),
    (aggregate.run, {"aggregate__readouts": ["median"]}, "aggregate.readouts"),
    (evaluate.run, {"evaluate__confidence": 2.0}, "evaluate.confidence"),
]


@pytest.mark.parametrize(("stage", "changes", "param"), STAGE_PARAMS)
def test_params_are_checked_before_any_input_is_read(tmp_path, monkeypatch, stage, changes, param):
    _cli_project(tmp_path)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an input was read before the params were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pd, "read_csv", forbidden)
    monkeypatch.setattr(cache.ImageCache, "__init__", forbidden)
    with pytest.raises(ParamError, match=rf"params: {param.replace('.', '[.]')}:"):
        stage("livec", study_params(**changes))
    after = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before


def test_label_table_missing_column_in_process(tmp_path, monkeypatch) -> None:
    write_labels(tmp_path, [("a.jpg", "a.jpg")])
    path = paths.labels_table("livec", base=tmp_path)
    pd.read_csv(path).drop(columns=["order"]).to_csv(path, index=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelError, match=r"missing column\(s\) \['order'\]"):
        segment.run("livec", study_params())
