"""The segment stage on real mirror images: the table contract, coverage, resume, statistics."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from stage_project import one_run

from dogiqa import count_regions, paths, segment, segment_stats
from dogiqa.errors import DogIQAError, LabelError, ParamError
from dogiqa.segmentation.algorithm1 import Threshold, check_regions_table

pytestmark = pytest.mark.mirror  # real LIVE Challenge images of the mirror throughout

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
LIVEC_IMAGES = [
    "1000.JPG",
    "1001.JPG",
    "1002.JPG",
    "1003.JPG",
    "1004.JPG",
    "1005.JPG",
    "1024.JPG",
    "1113.JPG",
    "1010.JPG",
    "1011.JPG",
]


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    return {"sample": {"size": 0, "seed": 0}, "segment": loaded["segment"]}


def write_labels(root: Path, dataset: str = "livec") -> list[str]:
    """A labels table: ten real images, plus rows the stage must skip (a broken file) or
    ignore (no image file)."""
    bad = root / "broken.JPG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [(name, str(MIRROR / "livec" / "Images" / name)) for name in LIVEC_IMAGES]
    rows.insert(3, ("broken.JPG", str(bad)))
    rows.insert(1, ("gone.JPG", ""))  # not available: no path
    table = pd.DataFrame(
        [
            {"image": n, "path": p, "mos": 50.0, "mos_norm": 0.5, "order": i}
            for i, (n, p) in enumerate(rows)
        ]
    )
    out = paths.labels_table(dataset, base=root)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return [n for n, p in rows if p]


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory, params: dict[str, Any]):
    root = tmp_path_factory.mktemp("project")
    expected = write_labels(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        table = segment.run("livec", params)
    return root, expected, table


def test_regions_table_follows_the_contract(stage_run, params) -> None:
    root, expected, table = stage_run
    assert list(table.columns) == segment.COLUMNS
    written = pd.read_csv(paths.regions_table("livec", base=root))
    assert list(written.columns) == segment.COLUMNS
    assert len(written) == len(table)
    images = [n for n in expected if n != "broken.JPG"]
    assert list(dict.fromkeys(written["image"])) == images  # label order, broken one skipped
    assert (written["backend"] == "classical").all()
    for _, group in written.groupby("image", sort=False):
        assert list(group["region"]) == list(range(len(group)))
        kinds = list(group["kind"])
        assert kinds[0] == "global" and set(kinds[1:]) <= {"mask", "complement", "whole"}
        masks = group[group["kind"] == "mask"]
        assert list(masks["area"]) == sorted(masks["area"], reverse=True)
    assert written.loc[written["image"] == "1024.JPG", ["height", "width"]].iloc[0].tolist() == [
        960,
        640,
    ]


def test_bboxes_inside_and_full_coverage_over_the_subset(stage_run, params) -> None:
    root, _, _ = stage_run
    written = pd.read_csv(paths.regions_table("livec", base=root))
    threshold = Threshold(params["segment"]["min_area"], params["segment"]["min_area_fraction"])
    assert check_regions_table(written, threshold, mode="correct") == []


def test_summary_counts_and_skips(stage_run) -> None:
    root, expected, table = stage_run
    summary = json.loads(paths.summary("regions", "livec", base=root).read_text())
    assert summary["images"] == len(expected) == 11
    assert summary["processed"] == 10
    assert [s["image"] for s in summary["skipped"]] == ["broken.JPG"]
    assert "broken.JPG" in summary["skipped"][0]["reason"]
    assert "\n" not in summary["skipped"][0]["reason"]
    counts = table[table["region"] == 0]["count"]
    assert summary["c_max"] == counts.max()
    assert summary["mean_regions"] == pytest.approx(counts.mean())


def test_rerun_is_byte_identical_without_recomputing(stage_run, params, monkeypatch) -> None:
    root, _, _ = stage_run
    monkeypatch.chdir(root)
    before = (paths.regions_table("livec", base=root)).read_bytes()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached image was segmented again")

    monkeypatch.setattr(segment, "build_segmenter", fail)
    segment.run("livec", params)
    assert (paths.regions_table("livec", base=root)).read_bytes() == before


def test_interrupted_run_resumes_to_identical_bytes(
    stage_run, params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = (paths.regions_table("livec", base=stage_run[0])).read_bytes()
    write_labels(tmp_path)
    monkeypatch.chdir(tmp_path)
    real = segment.segment_image
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        segment.run("livec", params)
    assert not paths.regions_table("livec").exists()
    cache = paths.stage_cache("segment", "livec")
    with cache.open("ab") as handle:  # a torn line, as left by a kill in mid-write
        handle.write(b'{"image": "1003.JPG", "res')
    monkeypatch.setattr(segment, "segment_image", real)
    segment.run("livec", params)
    assert paths.regions_table("livec").read_bytes() == reference


def test_changed_params_redo_the_cached_images(params, tmp_path, monkeypatch) -> None:
    write_labels(tmp_path)
    monkeypatch.chdir(tmp_path)
    segment.run("livec", params)
    changed = copy.deepcopy(params)
    changed["segment"]["mode"] = "authors"
    changed["segment"]["min_area_fraction"] = 0.02
    table = segment.run("livec", changed)
    assert check_regions_table(table, Threshold(1000, 0.02), mode="authors") == []
    # 2 % of a 500 x 500 image is 5000 pixels: no kept mask is smaller.
    kept = table[(table["kind"] == "mask") & (table["height"] == 500)]
    assert len(kept) and (kept["area"] >= 5000).all()
    summary = json.loads(paths.summary("regions", "livec").read_text())
    assert (summary["mode"], summary["min_area_fraction"]) == ("authors", 0.02)


def test_segmentation_stats(stage_run, params, monkeypatch) -> None:
    root, _, table = stage_run
    monkeypatch.chdir(root)
    stats = segment_stats.run({**params, **one_run(["livec"])})
    written = pd.read_csv(root / "reports" / "tables" / "segmentation_stats.csv")
    assert list(written.columns) == segment_stats.COLUMNS
    assert written.to_dict("records") == [
        {
            "run": "cpu",
            "dataset": "livec",
            "backend": "classical",
            "images": 10,
            "mean_regions": pytest.approx(table[table["region"] == 0]["count"].mean(), abs=1e-5),
            "max_regions": int(table["count"].max()),
            "complement_share": pytest.approx(
                table[table["kind"] == "complement"]["image"].nunique() / 10, abs=1e-5
            ),
            # every image is in the run (sample size 0): the dataset's figures are the same
            "counted_images": 10,
            "mean_regions_dataset": pytest.approx(
                table[table["region"] == 0]["count"].mean(), abs=1e-5
            ),
            "c_max_dataset": int(table["count"].max()),
        }
    ]
    assert len(stats) == 1
    markdown = (root / "reports" / "tables" / "segmentation_stats.md").read_text()
    assert markdown.startswith("| run") and "classical" in markdown


def test_count_all_counts_every_image_of_the_dataset_outside_the_sample(
    stage_run, params, tmp_path, monkeypatch
) -> None:
    full = stage_run[2].groupby("image", sort=False)["count"].first()
    write_labels(tmp_path)
    monkeypatch.chdir(tmp_path)
    sampled = {**params, "sample": {"size": 4, "seed": 0}}
    table = segment.run("livec", sampled)
    assert not paths.region_counts("livec").exists()  # the count_regions stage writes it
    counts = count_regions.run("livec", sampled)
    assert counts.equals(pd.read_csv(paths.region_counts("livec")))
    assert list(counts.columns) == ["image", "count", "in_sample"]
    assert set(counts.image) == set(full.index)  # all ten readable images, broken one skipped
    assert counts.in_sample.sum() == table.image.nunique() <= 4
    assert counts.set_index("image")["count"].to_dict() == full.to_dict()
    summary = json.loads(paths.region_counts_summary("livec").read_text())
    assert summary["c_max_dataset"] == full.max() and summary["counted_images"] == 10
    assert summary["mean_regions_dataset"] == pytest.approx(full.mean())
    assert [s["image"] for s in summary["skipped"]] == ["broken.JPG"]
    assert summary["in_sample"] == table.image.nunique()

    # A second count reads every image's count from the cache; a new sample counts none again.
    store = paths.stage_cache("count_regions", "livec")
    lines = store.read_text().splitlines()
    again = count_regions.run("livec", {**params, "sample": {"size": 3, "seed": 1}})
    assert store.read_text().splitlines()[: len(lines)] == lines
    assert again.set_index("image")["count"].to_dict() == full.to_dict()

    alone = copy.deepcopy(sampled)
    alone["segment"]["count_all"] = False
    count_regions.run("livec", alone)
    assert pd.read_csv(paths.region_counts("livec")).in_sample.all()


def test_count_regions_needs_the_regions_table(params, tmp_path, monkeypatch) -> None:
    write_labels(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DogIQAError, match="regions table not found .run the segment stage"):
        count_regions.run("livec", params)


@pytest.mark.parametrize(
    ("key", "value", "name"),
    [
        ("count_all", "yes", "segment.count_all"),
        ("backend", "sam3", "segment.backend"),
        ("mode", "paper", "segment.mode"),
        ("min_area", 0, "segment.min_area"),
        ("min_area", 10.5, "segment.min_area"),
        ("min_area_fraction", 1.5, "segment.min_area_fraction"),
    ],
)
def test_bad_params_fail_before_any_work(params, tmp_path, monkeypatch, key, value, name) -> None:
    monkeypatch.chdir(tmp_path)  # no labels here: the params check must come first
    bad = copy.deepcopy(params)
    bad["segment"][key] = value
    with pytest.raises(ParamError, match=rf"params: {name}:"):
        segment.run("livec", bad)


def test_missing_labels_and_unknown_datasets(params, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelError, match="labels table not found"):
        segment.run("livec", params)
    unknown = {"runs": {"cpu": {"profile": "cpu", "datasets": ["nope"], "enabled": True}}}
    with pytest.raises(ParamError, match="runs.cpu.datasets"):
        segment_stats.run(unknown)
