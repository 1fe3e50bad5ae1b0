"""The evaluate stage: metrics JSON (dvc metrics) and plots CSV from a predictions table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dogiqa import evaluate, paths
from dogiqa.errors import DogIQAError, ParamError

PARAMS = {
    "evaluate": {"bootstrap_samples": 200, "seed": 0, "confidence": 0.95, "logistic": True},
    "aggregate": {"main": "paper:argmax"},
}


def _params(main: str = "paper:argmax", **evaluate_changes) -> dict:
    return {
        "evaluate": {**PARAMS["evaluate"], **evaluate_changes},
        "aggregate": {"main": main},
    }


def _predictions(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 100, n)
    images = [f"{i}.jpg" for i in range(n)]
    good = mos / 20 + rng.normal(0, 0.5, n)
    noisy = rng.normal(0, 1, n)
    good[:3] = np.nan
    return pd.concat(
        [
            pd.DataFrame(
                {"image": images, "variant": "paper:argmax", "prediction": good, "mos": mos}
            ),
            pd.DataFrame(
                {"image": images, "variant": "noise:argmax", "prediction": noisy, "mos": mos}
            ),
        ],
        ignore_index=True,
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = paths.predictions_table("toy")
    path.parent.mkdir(parents=True)
    _predictions().to_csv(path, index=False)
    return tmp_path


def test_metrics_json_per_variant_with_counts(project):
    for stage, table in (("segment", paths.regions_table), ("score", paths.scores_table)):
        summary = table("toy").with_name("toy.summary.json")
        summary.parent.mkdir(parents=True, exist_ok=True)
        skipped = [{"image": "x.jpg", "reason": "truncated"}] if stage == "segment" else 2
        summary.write_text(json.dumps({"skipped": skipped}))
    evaluate.run("toy", PARAMS)
    report = json.loads(paths.metrics_file("toy").read_text())
    assert report["skipped"] == {"segment": 1, "score": 2}
    assert set(report["variants"]) == {"paper:argmax", "noise:argmax"}
    main = report["variants"]["paper:argmax"]
    assert main["n"] == 37 and main["missing"] == 3
    assert main["srcc"] > 0.8
    assert main["srcc_ci"][0] < main["srcc"] < main["srcc_ci"][1]
    assert {"plcc", "plcc_logistic", "krcc", "plcc_ci"} <= set(main)
    assert abs(report["variants"]["noise:argmax"]["srcc"]) < 0.4


def test_the_dvc_metric_is_the_main_variants_headline(project):
    """dvc metrics (and dvc exp show) read the headline file: the main variant's SRCC, PLCC,
    their intervals and n, not the full variant table."""
    evaluate.run("toy", PARAMS)
    full = json.loads(paths.metrics_file("toy").read_text())
    headline = json.loads(paths.headline_file("toy").read_text())
    main = full["variants"]["paper:argmax"]
    assert headline == {
        "n": main["n"],
        "srcc": main["srcc"],
        "srcc_ci_low": main["srcc_ci"][0],
        "srcc_ci_high": main["srcc_ci"][1],
        "plcc": main["plcc"],
        "plcc_ci_low": main["plcc_ci"][0],
        "plcc_ci_high": main["plcc_ci"][1],
    }
    assert paths.show(paths.headline_file("toy", run="some_run")) == (
        "reports/metrics/some_run/toy.headline.json"
    )  # each run has its own folder


def test_plots_csv_holds_the_main_variant_of_params(project):
    # The aggregate stage's summary naming another variant does not matter.
    paths.summary("predictions", "toy").write_text(json.dumps({"main": "paper:argmax"}))
    evaluate.run("toy", _params(main="noise:argmax"))
    plot = pd.read_csv(paths.plot_file("toy"))
    assert list(plot.columns) == ["image", "mos", "prediction"]
    assert len(plot) == 40  # the noise variant has no missing predictions
    report = json.loads(paths.metrics_file("toy").read_text())
    assert report["main"] == "noise:argmax"


def test_plot_drops_missing_predictions_of_the_main_variant(project):
    evaluate.run("toy", PARAMS)
    plot = pd.read_csv(paths.plot_file("toy"))
    assert len(plot) == 37 and plot.prediction.notna().all()


def test_a_main_variant_absent_from_the_table_is_one_clear_error(project):
    with pytest.raises(DogIQAError, match=r"no variant 'paper:expected' \(aggregate.main\)"):
        evaluate.run("toy", _params(main="paper:expected"))


def test_rerun_is_byte_identical(project):
    evaluate.run("toy", PARAMS)
    first = paths.metrics_file("toy").read_bytes()
    evaluate.run("toy", PARAMS)
    assert paths.metrics_file("toy").read_bytes() == first


@pytest.mark.parametrize(
    ("key", "value"),
    [("bootstrap_samples", -1), ("seed", "x"), ("confidence", 1.5), ("logistic", "yes")],
)
def test_bad_params_name_the_param(tmp_path, monkeypatch, key, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match=f"evaluate.{key}"):
        evaluate.run("toy", _params(**{key: value}))


def test_missing_predictions_table_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DogIQAError, match="predictions table not found"):
        evaluate.run("toy", PARAMS)


def test_a_run_of_four_images_is_evaluated_with_one_line_on_the_logistic(
    tmp_path, monkeypatch, caplog
):
    """A tiny sample (here 4 images) gets its metrics, no plcc_logistic, and one warning line
    saying why; before, scipy's fit raised for 3 images and fitted 4 exactly (PLCC 1)."""
    monkeypatch.chdir(tmp_path)
    path = paths.predictions_table("toy")
    path.parent.mkdir(parents=True)
    four = {"prediction": [1.0, 2.5, 2.0, 4.0], "mos": [10.0, 30.0, 20.0, 50.0]}
    images = [f"{i}.jpg" for i in range(4)]
    pd.DataFrame({"image": images, "variant": "paper:argmax", **four}).to_csv(path, index=False)
    with caplog.at_level("WARNING", logger="dogiqa.evaluate"):
        report = evaluate.run("toy", PARAMS)
    main = report["variants"]["paper:argmax"]
    assert main["plcc_logistic"] is None and main["srcc"] == pytest.approx(1.0)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "evaluate cpu/toy: paper:argmax: logistic fit needs more than 4 images, got 4: "
        "no plcc_logistic"
    ]
