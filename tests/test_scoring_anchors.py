"""The data anchors of the classical level map: held-out images, percentiles, the shipped file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dogiqa import download, runs, schema
from dogiqa.scoring import anchors
from dogiqa.scoring.classical import SCORERS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DEFAULT_SAMPLE = schema.sample_params(runs.run_params(PARAMS, "cpu"))


@pytest.fixture(scope="module")
def default_labels(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The download stage with the default params (from the mirror) in a scratch project."""
    root = tmp_path_factory.mktemp("labels")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"]["mirror"] = str(mirror)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("DOGIQA_MIRROR", raising=False)
        for dataset in anchors.DATASETS:
            download.run(dataset, params)
    return root


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load((ROOT / "src/dogiqa/resources/classical_anchors.yaml").read_text())


def test_anchor_images_are_held_out_from_the_default_run(default_labels, shipped, monkeypatch):
    monkeypatch.chdir(default_labels)
    command = shipped["computed"]["command"].split()
    count, seed = (int(command[command.index(flag) + 1]) for flag in ("--per-dataset", "--seed"))
    for dataset in anchors.DATASETS:
        labels = pd.read_csv(f"data/labels/{dataset}.csv", keep_default_na=False)
        evaluated = set(labels.loc[schema.sampled(labels, DEFAULT_SAMPLE), "image"])
        assert len(evaluated) == 200
        listed = shipped["images"][dataset]
        assert len(listed) == count == 200
        assert not evaluated & set(listed)
        # The same draw again: the list is what the command selects.
        drawn = anchors.anchor_images(dataset, count, seed, DEFAULT_SAMPLE)
        assert sorted(drawn["image"]) == listed


def test_anchor_images_skip_the_sample_and_missing_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = pd.DataFrame(
        {
            "image": [f"{i}.jpg" for i in range(10)],
            "path": ["" if i == 3 else f"img/{i}.jpg" for i in range(10)],
            "mos": 1.0,
            "mos_norm": 0.5,
            "order": range(10),
        }
    )
    Path("data/labels").mkdir(parents=True)
    table.to_csv("data/labels/livec.csv", index=False)
    sample = schema.Sample(size=4, seed=0)
    in_sample = set(table.loc[schema.sampled(table, sample), "image"])
    assert len(in_sample) == 4 and "3.jpg" not in in_sample
    everything = anchors.anchor_images("livec", 50, seed=0, sample=sample)
    expected = [f"{i}.jpg" for i in range(10) if i != 3 and f"{i}.jpg" not in in_sample]
    assert list(everything["image"]) == expected
    two = anchors.anchor_images("livec", 2, seed=0, sample=sample)
    assert len(two) == 2 and set(two["image"]) <= set(everything["image"])
    assert two.equals(anchors.anchor_images("livec", 2, seed=0, sample=sample))


def test_anchors_span_the_central_98_percent_of_each_kind() -> None:
    """Whole images score better than crops: best comes from them, worst from the crops."""
    rng = np.random.default_rng(0)
    whole, crops = rng.normal(4, 1, 100), rng.normal(8, 2, 700)
    values = pd.DataFrame(
        {
            "image": "x",
            "kind": ["global"] * 100 + ["region"] * 700 + ["region"],
            "metric": "niqe",
            "value": [*whole, *crops, np.nan],
        }
    )
    summary = anchors.summarise(values)["niqe"]
    assert summary["best"] == pytest.approx(np.percentile(whole, 1), abs=1e-4)
    assert summary["worst"] == pytest.approx(np.percentile(crops, 99), abs=1e-4)
    assert summary["values"] == 800 and summary["not_finite"] == 1
    assert summary["p1_median_p99_by_kind"]["global"][1] == pytest.approx(np.median(whole), 1e-3)


def test_shipped_anchors_are_what_the_scorers_use(shipped) -> None:
    assert set(shipped["metrics"]) == set(SCORERS)
    for metric, spec in SCORERS.items():
        entry = shipped["metrics"][metric]
        assert (spec.best, spec.worst) == (entry["best"], entry["worst"])
        kinds = entry["p1_median_p99_by_kind"]
        assert spec.best == min(p1 for p1, _, _ in kinds.values())
        assert spec.worst == max(p99 for _, _, p99 in kinds.values())
    assert shipped["computed"]["percentiles"] == [1.0, 99.0]
