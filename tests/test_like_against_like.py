"""Like against like: a printed cell's `reproduced` value, and so its delta, comes only from a run
in the cell's configuration; every other run is shown in its own `this study: <run>` column, with
no delta. Checked on the rule itself, on tables built from synthetic runs, and on the committed
reports/tables."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dogiqa import paper, paths, results, runs
from dogiqa.config import load_params

ROOT = Path(__file__).resolve().parents[1]
Cell = results.Cell


@pytest.fixture(scope="module")
def base() -> dict:
    return load_params(ROOT / "params.yaml")


def study_run(
    base: dict, profile: str, name: str | None = None, **changes: object
) -> results.StudyRun:
    params = copy.deepcopy(runs.run_params(base, "paper" if profile == "paper" else "cpu"))
    if profile == "modern":
        params = copy.deepcopy(runs.run_params(base, "modern"))
    substitutes = tuple(changes.pop("substitutes", ()))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for parent in parents:
            node = node[parent]
        node[key] = value
    return results.StudyRun(name or profile, profile, ("livec", "agiqa"), params, substitutes)


def test_only_the_papers_configuration_reproduces_a_dog_iqa_cell(base) -> None:
    dog_iqa = Cell("paper")
    assert study_run(base, "paper").reproduces(dog_iqa)
    assert not study_run(base, "cpu").reproduces(dog_iqa)  # classical scorer and segmenter
    assert not study_run(base, "paper", sample__size=200).reproduces(dog_iqa)  # not every image
    assert not study_run(base, "paper", score__K=5, score__prompt="paper_word_k5").reproduces(
        dog_iqa
    )
    assert not study_run(base, "paper", segment__backend="classical").reproduces(dog_iqa)
    assert not study_run(base, "modern").reproduces(dog_iqa)  # another MLLM ...
    stand_in = study_run(base, "modern", substitutes=["mPLUG/mPLUG-Owl3-7B-240728"])
    assert stand_in.reproduces(dog_iqa)  # ... unless its profile states it stands in
    masked = study_run(base, "paper", score__crop="mask")
    assert not masked.reproduces(dog_iqa) and masked.reproduces(Cell("paper", crop="mask"))
    # The whole image alone needs no crop and no segmenter.
    assert masked.reproduces(Cell("global_only", crop=None))
    number = study_run(base, "paper", score__prompt="paper_number_k7")
    assert number.reproduces(Cell("local_area_sseg", standard="number"))
    assert not number.reproduces(dog_iqa)


def test_a_classical_run_sits_beside_the_word_standard_rows_only(base) -> None:
    cpu = study_run(base, "cpu")
    assert cpu.shares_setting(Cell("paper")) and cpu.shares_setting(Cell("global_only", crop=None))
    assert not cpu.shares_setting(Cell("local_area_sseg", standard="number"))
    assert not cpu.shares_setting(Cell("local_area_sseg", crop="mask"))
    # K: the run's own, and those its classical scores are mapped to again (aggregate.classical_K)
    assert cpu.shares_setting(Cell("paper", K=5)) and not cpu.shares_setting(Cell("paper", K=4))
    assert not study_run(base, "cpu", aggregate__classical_K=[]).shares_setting(Cell("paper", K=5))
    assert not study_run(base, "paper").shares_setting(Cell("paper", K=5))  # an MLLM: new prompt
    # a classical scorer's continuous score stands beside the float-output row, not an MLLM's
    assert cpu.shares_setting(Cell("global_float", crop=None, standard="float"))
    assert not study_run(base, "paper").shares_setting(
        Cell("global_float", crop=None, standard="float")
    )
    assert cpu.shares_setting(Cell("llmiqa", ensemble=True))  # three classical scorers
    assert not study_run(base, "paper").shares_setting(Cell("llmiqa", ensemble=True))


def _write_metrics(run: str, dataset: str, values: dict[str, float]) -> None:
    variants = {
        name: {"srcc": value, "plcc": value - 0.01, "n": 10, "missing": 0}
        for name, value in values.items()
    }
    target = paths.metrics_file(dataset, run=run)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"main": "paper:argmax", "variants": variants}))


def test_tables_pair_a_delta_only_with_the_cells_configuration(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for run, value in (("cpu", 0.3), ("paper", 0.8)):
        _write_metrics(run, "agiqa", {"paper:argmax": value, "global_only:argmax": value - 0.1})
    study = [study_run(base, "cpu"), study_run(base, "paper")]
    cells = {"5": Cell("global_only", crop=None), "1": Cell("paper", standard="number")}
    cells |= {"8": Cell("paper")}
    wanted = [(label, "agiqa", cell) for label, cell in cells.items()]
    rows, own = results.cell_values(study, wanted)
    assert set(rows.label) == {"5", "8"} and set(rows.configuration.str[:6]) == {"paper:"}
    assert rows[rows.label == "8"].set_index("metric").reproduced.to_dict() == {
        "srcc": 0.8,
        "plcc": pytest.approx(0.79),
    }
    assert list(own.columns) == ["label", "dataset", "metric", "this study: cpu"]
    assert set(own.label) == {"5", "8"}  # not exp 1: a classical run has no number standard

    printed = pd.DataFrame(
        [
            {"label": label, "dataset": "agiqa", "metric": metric, "paper": 0.7}
            for label in cells
            for metric in ("srcc", "plcc")
        ]
    )
    keys = ["label", "dataset", "metric"]
    table = results.add_run_columns(paper.comparison(printed, rows, keys), own, keys)
    with_delta = table[table.delta.notna()]
    assert len(with_delta) == 4 and with_delta.configuration.str.startswith("paper:").all()
    assert table.loc[table.label == "1", "delta"].isna().all()
    cpu = table.set_index(["label", "metric"])["this study: cpu"]
    assert cpu["8", "srcc"] == 0.3 and pd.isna(cpu["1", "srcc"])

    # Without a run in the paper's configuration no cell has a delta; the CPU run keeps its
    # own column.
    rows, own = results.cell_values(study[:1], wanted)
    table = results.add_run_columns(paper.comparison(printed, rows, keys), own, keys)
    assert table.delta.isna().all() and table["this study: cpu"].notna().sum() == 4


CITED_RUN = re.compile(r"(?:reports/metrics|data/predictions)/([a-z][a-z0-9_]*)/")
CLASSICAL = re.compile(r"classical|felzenszwalb|slic|\bpiqe\b|\bbrisque\b|\bniqe\b", re.I)
CLASSICAL_CELL = re.compile(r"NIQE|BRISQUE|PIQE|BIQI|BLIINDS-II|CLIP-IQA.*", re.I)
"""Printed cells of classical methods, which a classical configuration reproduces."""


def test_committed_tables_pair_no_paper_delta_with_another_configuration(base) -> None:
    study = {run.name: run for run in results.study_runs(base)}
    checked = 0
    for table_path in sorted((ROOT / paths.TABLES).glob("*.csv")):
        table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
        if not {"paper", "delta"} <= set(table.columns):
            continue
        paired = table[(table.paper.str.strip() != "") & (table.delta.str.strip() != "")]
        for row in paired.to_dict("records"):
            checked += 1
            about = " ".join(row.get(c, "") for c in ("configuration", "source", "run", "scorer"))
            if not CLASSICAL_CELL.fullmatch(row.get("method", "")):  # a printed NIQE cell is one
                assert not CLASSICAL.search(about), (table_path.name, row)
            for name in CITED_RUN.findall(about):
                setting = study[name].setting
                assert (setting.family, setting.sample, setting.segmenter) == ("mllm", 0, "sam2")
    assert checked > 0  # the printed cells reproduced from published predictions


def test_the_cpu_runs_results_are_shown_in_their_own_place() -> None:
    table2 = pd.read_csv(ROOT / paths.TABLES / "table2_training_free.csv")
    cpu = table2.loc[table2.method == "Dog-IQA", ["dataset", "this study: cpu", "delta"]]
    assert cpu.dropna(subset=["this study: cpu"]).dataset.tolist() == [
        "livec",
        "livec",
        "agiqa",
        "agiqa",
    ]
    assert cpu.delta.isna().all()
    diffs = pd.read_csv(ROOT / paths.TABLES / "cpu_mixgrained.csv")
    assert (diffs.run == "cpu").any() and diffs.difference.notna().all()
    assert diffs.loc[diffs.run == "cpu", "delta"].isna().all()


def test_a_classical_run_fills_other_k_from_its_scores_mapped_again(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    values = {"local_area_sseg:argmax": 0.3, "local_area_sseg:argmax@piqe_k5": 0.25}
    _write_metrics("cpu", "agiqa", values)
    summary = paths.summary("predictions", "agiqa", run="cpu")
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"prompt_id": "piqe"}))
    wanted = [(str(k), "agiqa", Cell("local_area_sseg", K=k)) for k in (5, 7, 9)]
    rows, own = results.cell_values([study_run(base, "cpu")], wanted)
    assert rows.empty  # a classical run reproduces no printed cell
    cpu = own[own.metric == "srcc"].set_index("label")["this study: cpu"]
    assert cpu.to_dict() == {"5": 0.25, "7": 0.3}  # K = 9 not computed in these metrics
