"""The evaluate_external stage: metrics of the external predictions, computed from the mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stage_project import one_run

from dogiqa import cli, download, evaluate_external, external, paths
from dogiqa.errors import DogIQAError, ParamError

BOOTSTRAP = 50
PARAMS = {
    "evaluate": {"bootstrap_samples": BOOTSTRAP, "seed": 0, "confidence": 0.95, "logistic": True}
}
LABELLED = ["spaq", "koniq", "livec", "agiqa", "kadid"]


def _build_labels(mirror: Path) -> None:
    """data/labels/<ds>.csv of every dataset, from the mirror's label files only: the run's
    datasets name another dataset, so that the download stage fetches no images."""
    for key in LABELLED:
        other = "spaq" if key != "spaq" else "koniq"
        params = {
            **one_run([other]),
            "download": {"datasets": LABELLED, "mirror": str(mirror), "livec_images": "all"},
        }
        download.run(key, params)


@pytest.fixture(scope="module")
def project(mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("external_project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv(download.MIRROR_ENV, str(mirror))
        _build_labels(mirror)
        external.EXTERNAL_DIR.parent.mkdir(parents=True, exist_ok=True)
        external.EXTERNAL_DIR.symlink_to(mirror / "external", target_is_directory=True)
        table = evaluate_external.run(PARAMS)
        yield root, table


@pytest.fixture(scope="module")
def table(project) -> pd.DataFrame:
    return project[1]


@pytest.mark.slow
def test_authors_livec_reproduces_over_all_1169_images(table):
    row = evaluate_external.select(table, "authors", "dogiqa_authors", "livec")
    assert (row.labels, row.n, row.missing, row.extra) == (1169, 1169, 0, 0)
    assert row.srcc == pytest.approx(0.704, abs=0.002)
    assert row.plcc == pytest.approx(0.703, abs=0.002)
    assert row.srcc_ci_low < row.srcc < row.srcc_ci_high
    assert row.plcc_ci_low < row.plcc < row.plcc_ci_high
    assert row.bootstrap_samples == BOOTSTRAP
    assert row.file == "data/raw/external/dogiqa_authors/livec_global_only_7word.json"
    test = evaluate_external.select(table, "authors", "dogiqa_authors", "livec", "test")
    assert (test.labels, test.n) == (1162, 1162)
    assert test.srcc != row.srcc


@pytest.mark.slow
def test_qbench_rows_for_every_model_dataset_and_temperature(table):
    qbench = table[table.source == "qbench"]
    assert qbench.model.nunique() == 15 == len(external.QBENCH_MODELS)
    # One PLCC definition: every Q-Bench row at Q-Bench's temperature, 100.
    assert set(qbench.temperature) == {100.0} and len(qbench) == 75
    assert set(zip(qbench.model, qbench.dataset, strict=True)) == {
        (m, d) for m in external.QBENCH_MODELS for d in LABELLED
    }
    assert (qbench.bootstrap_samples == 0).all() and qbench.srcc_ci_low.isna().all()
    assert qbench.srcc.notna().all() and qbench.plcc.notna().all()
    # Q-Bench's leaderboard prints 0.385 / 0.389 for CLIP ViT-L/14 on SPAQ
    clip = evaluate_external.select(table, "qbench", "clip_vit_l14", "spaq", temperature=100.0)
    assert (clip.srcc, clip.plcc) == pytest.approx((0.385, 0.389), abs=0.001)
    assert clip.n == 11125
    t5 = qbench[qbench.model == "instructblip_t5"]
    assert t5.reader_note.str.contains("logit_high").all()
    repeated = qbench.duplicates_dropped > 0
    assert set(qbench[repeated].model) == {"instructblip_vicuna"}
    assert qbench[repeated].reader_note.str.contains("identical repeated entries dropped").all()
    plain = ~qbench.model.isin(["instructblip_t5", "instructblip_vicuna"])
    assert (qbench[plain].reader_note == "").all()


@pytest.mark.slow
def test_pyiqa_niqe_livec_on_the_test_images(table):
    niqe = evaluate_external.select(table, "pyiqa", "niqe", "livec")
    assert (niqe.labels, niqe.n, niqe.missing) == (1169, 1162, 7)
    assert niqe.srcc == pytest.approx(0.450, abs=0.002)
    assert niqe.plcc == pytest.approx(0.479, abs=0.002)
    assert niqe.display_name == "NIQE"
    pyiqa = table[table.source == "pyiqa"]
    assert len(pyiqa) == len(external.PYIQA_METRICS) * len(external.PYIQA_DATASETS)


@pytest.mark.slow
def test_csv_round_trips_exactly_and_markdown_is_written(project):
    root, table = project
    loaded = evaluate_external.load(paths.table(evaluate_external.NAME, base=root))
    assert list(loaded.columns) == evaluate_external.COLUMNS
    for column in ("srcc", "plcc", "plcc_logistic", "krcc", "srcc_ci_low", "temperature"):
        np.testing.assert_array_equal(
            loaded[column].to_numpy(float), table[column].to_numpy(float), strict=True
        )
    assert (loaded.n.to_numpy() == table.n.to_numpy()).all()
    markdown = paths.table(evaluate_external.NAME, ".md", base=root).read_text().splitlines()
    assert markdown[0].split("|")[1].strip() == "source"
    assert len(markdown) == len(table) + 2


@pytest.mark.slow
def test_one_file_serially_equals_its_rows_from_the_process_pool(project, mirror):
    root, table = project
    labels = pd.read_csv(paths.labels_table("livec", base=root), dtype={"image": str})
    task = evaluate_external.Task("pyiqa", "clipiqa", "livec", labels[["image", "mos"]])
    p = evaluate_external.validate_params(PARAMS)
    rows = evaluate_external.evaluate_file(task, mirror / "external", p)
    again = evaluate_external.evaluate_file(task, mirror / "external", p)
    assert rows == again  # seeded bootstrap: deterministic
    pooled = evaluate_external.select(table, "pyiqa", "clipiqa", "livec")
    for key in ("n", "srcc", "plcc", "srcc_ci_low", "srcc_ci_high", "plcc_ci_high"):
        assert rows[0][key] == pooled[key]


@pytest.mark.parametrize(
    ("key", "value"),
    [("bootstrap_samples", -1), ("confidence", 1.5), ("seed", "zero"), ("logistic", "yes")],
)
def test_bad_params_fail_before_any_work(tmp_path, monkeypatch, key, value):
    monkeypatch.chdir(tmp_path)  # no labels, no external files: validation comes first
    params = {"evaluate": {**PARAMS["evaluate"], key: value}}
    with pytest.raises(ParamError, match=f"evaluate.{key}"):
        evaluate_external.run(params)
    assert not paths.table(evaluate_external.NAME).exists()


def test_missing_external_files_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DogIQAError, match="run the download stage") as info:
        evaluate_external.run(PARAMS)
    assert "\n" not in str(info.value)
    with pytest.raises(DogIQAError, match="evaluate-external"):
        evaluate_external.load()


def test_qbench_file_gives_one_row_at_qbench_temperature(mirror):
    """One PLCC definition for Q-Bench scores: the leaderboard's temperature (100), nothing else."""
    import scipy.io

    data = mirror / "livec" / "Data"
    names = scipy.io.loadmat(data / "AllImages_release.mat")["AllImages_release"]
    mos = scipy.io.loadmat(data / "AllMOS_release.mat")["AllMOS_release"]
    labels = pd.DataFrame(
        {"image": [str(cell[0][0]) for cell in names], "mos": np.asarray(mos, float).ravel()}
    )
    task = evaluate_external.Task("qbench", "clip_vit_l14", "livec", labels)
    point = evaluate_external.validate_params({**PARAMS, "evaluate": {**PARAMS["evaluate"]}})
    rows = evaluate_external.evaluate_file(task, mirror / "external", point)
    assert [row["temperature"] for row in rows] == [100.0]
    # Q-Bench's leaderboard prints 0.307 / 0.308 for CLIP ViT-L/14 on LIVE Challenge.
    assert (rows[0]["srcc"], rows[0]["plcc"]) == pytest.approx((0.307, 0.308), abs=0.001)


def test_select_refuses_absent_or_ambiguous_rows():
    rows = pd.DataFrame(
        {
            "source": ["qbench", "qbench"],
            "model": ["m", "m"],
            "dataset": ["livec", "livec"],
            "images": ["all", "all"],
            "temperature": [100.0, 1.0],
        }
    )
    assert evaluate_external.select(rows, "qbench", "m", "livec", temperature=1.0).temperature == 1
    with pytest.raises(DogIQAError, match="2 rows"):
        evaluate_external.select(rows, "qbench", "m", "livec")
    with pytest.raises(DogIQAError, match="0 rows"):
        evaluate_external.select(rows, "pyiqa", "m", "livec")


def test_cli_has_the_stage():
    args = cli.build_parser().parse_args(["evaluate-external"])
    assert args.command == "evaluate-external" and not hasattr(args, "dataset")
