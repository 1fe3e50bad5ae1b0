"""The printed ablation tables' rows mapped to aggregation variants, and the s_seg scale table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dogiqa import ablations, aggregate, paper, paths, results, runs
from dogiqa.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_every_mapped_cell_names_a_computed_variant() -> None:
    tables = (
        ablations.TABLE4_CELLS,
        ablations.LLMIQA_TABLE3_CELLS,
        ablations.TABLE5_CELLS,
        ablations.LLMIQA_TABLE5_CELLS,
    )
    for cells in tables:
        assert all(cell.variant in aggregate.VARIANTS for cell in cells.values())
    for _, _, *variants in ablations.SSEG_CELLS:
        assert all(variant in aggregate.VARIANTS for variant in variants)
    # what a classical run computes at the K it maps its scores to again
    for table, _, *variants in ablations.SSEG_CELLS:
        assert table != "5" or set(variants) <= set(aggregate.REMAPPED_VARIANTS)
    assert ablations.TABLE5_VARIANT in aggregate.REMAPPED_VARIANTS


@pytest.mark.parametrize("metric", ["srcc", "plcc"])
def test_table5_rows_are_read_as_table4_exp7_which_the_printed_spaq_values_equal(metric) -> None:
    k7 = paper.value("table5", "7", "spaq", metric)
    assert k7 == paper.value("table4", "7", "spaq", metric)
    assert k7 != paper.value("table4", "8", "spaq", metric)
    assert ablations.TABLE5_CELLS["7"] == results.Cell("local_area_sseg", K=7)
    assert ablations.TABLE4_CELLS["7"].variant == ablations.TABLE5_CELLS["7"].variant
    assert {cell.K for cell in ablations.TABLE5_CELLS.values()} == {3, 5, 7, 9}
    assert "neither" in paper.table_info("table5")["note"]  # AGIQA-3k matches no row of Table 4


def test_llmiqa_rows_map_to_one_model_and_to_the_float_output() -> None:
    cells = ablations.LLMIQA_TABLE3_CELLS
    assert cells["8"].variant == "llmiqa_one" and cells["9"].variant == "llmiqa"
    assert cells["1"] == results.Cell("global_float", crop=None, standard="float")
    t5 = ablations.LLMIQA_TABLE5_CELLS
    assert t5["No Complement"].variant == "llmiqa_one_no_complement"
    assert t5["Our Setting"] == cells["8"]
    # "Our Setting" is exp 8 as printed
    for key in ("spaq", "agiqa", "livec"):
        for metric in ("srcc", "plcc"):
            assert paper.value("llmiqa_table5", "Our Setting", key, metric) == paper.value(
                "llmiqa_table3", "8", key, metric
            )
    listed = set(ablations.REASONS["LLM-IQA 5"]) | set(t5)
    assert listed == set(paper.long_table("llmiqa_table5").label)


def test_sseg_scale_table_shows_three_readings_of_each_s_seg_cell(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    base = load_params(ROOT / "params.yaml")
    params = copy.deepcopy(runs.run_params(base, "cpu"))
    params["aggregate"]["classical_K"] = [5]
    run = results.StudyRun("cpu", "cpu", ("livec",), params)
    names = {}
    for index, (_, row, *variants) in enumerate(ablations.SSEG_CELLS):
        suffix = "@piqe_k5" if row == "5" else ""
        for offset, variant in enumerate(variants):
            names[f"{variant}:argmax{suffix}"] = 0.1 * offset + 0.01 * index
    target = paths.metrics_file("livec", run="cpu")
    target.parent.mkdir(parents=True)
    metrics = {n: {"srcc": v, "plcc": v, "n": 10, "missing": 0} for n, v in names.items()}
    target.write_text(json.dumps({"main": "paper:argmax", "variants": metrics}))
    facts = {"prompt_id": "piqe", "c_max": 10.0, "c_max_sample": 10.0, "c_max_scaled": 64.0}
    summary = paths.summary("predictions", "livec", run="cpu")
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({**facts, "mean_count": 6.4}))
    table = ablations.sseg_scale_table([run], metrics=("srcc",))
    # Table 4 exps 3, 7, 8 and Table 5 at K = 5 (mapped again) and K = 7; not K = 3 or 9
    assert list(zip(table.table, table.row, strict=True)) == [
        ("4", "3"),
        ("4", "7"),
        ("4", "8"),
        ("5", "5"),
        ("5", "7"),
    ]
    exp8 = table[(table.table == "4") & (table.row == "8")].iloc[0]
    assert exp8[list(ablations.SSEG_READINGS)].tolist() == pytest.approx([0.02, 0.12, 0.22])
    assert exp8.mean_count == 6.4 and exp8.mean_s_seg == pytest.approx(6.4 * 7 / 10)
    assert exp8.mean_s_seg_scaled == pytest.approx(6.4 * 7 / 64)
    k5 = table[(table.table == "5") & (table.row == "5")].iloc[0]
    assert k5.mean_s_seg == pytest.approx(6.4 * 5 / 10)
