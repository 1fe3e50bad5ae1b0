"""``dogiqa warm`` (make repro, before dvc repro): the segment and score caches filled by processes
side by side give the stages the tables of a cold run, and leave no shard tables behind."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from stage_project import ROOT, fixture_images, study_params, write_labels, write_params

from dogiqa import paths, score, segment, sharding, warm


def test_only_cpu_backends_run_side_by_side() -> None:
    params = study_params()
    assert warm.jobs_for(params, cores=2) == 2
    assert warm.jobs_for(params, cores=1) == 1
    for stage, backend in (("score", "hf"), ("score", "openai"), ("segment", "sam2")):
        other = copy.deepcopy(params)
        other[stage]["backend"] = backend
        assert warm.jobs_for(other, cores=8) == 1
    assert warm.jobs_for(study_params(score__shards=[0, 1]), cores=8) == 1  # the user's shards


def _project(root: Path) -> dict:
    images = [p for p in fixture_images() if "distorted" not in p.name]
    write_labels(root, [(p.name, str(p)) for p in images])
    params = study_params(datasets=["livec"])
    write_params(root, params)
    return params


def test_warm_caches_give_the_tables_of_a_cold_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    cold, warmed = tmp_path / "cold", tmp_path / "warm"
    for root in (cold, warmed):
        root.mkdir()
    params = _project(cold)
    monkeypatch.chdir(cold)
    segment.run("livec", params)
    score.run("livec", params)
    _project(warmed)
    monkeypatch.chdir(warmed)
    assert warm.run(params, warmed / "params.yaml", cores=2) == 0
    assert paths.stage_cache("segment", "livec").exists()
    assert sharding.cache_paths("livec")  # the shards' caches
    assert not list((warmed / sharding.SHARDS_DIR).rglob("*.csv"))  # no shard tables left
    calls = {"n": 0}
    real = segment.segment_image

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_image", counted)
    segment.run("livec", params)
    score.run("livec", params)
    assert calls["n"] == 0  # every image came from the caches
    for kind in ("regions", "scores"):
        made = paths.stage_file(kind, "livec", base=warmed).read_bytes()
        assert made == paths.stage_file(kind, "livec", base=cold).read_bytes(), kind


def test_nothing_to_do_on_one_core(tmp_path, monkeypatch, capsys) -> None:
    params = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert warm.run(params, tmp_path / "params.yaml", cores=1) == 0
    assert "nothing to run side by side" in capsys.readouterr().out
    assert not (tmp_path / "data" / "cache").exists()


@pytest.mark.parametrize("stage", ["segment", "score"])
def test_a_failing_stage_is_one_line_and_leaves_it_to_dvc(stage, tmp_path, monkeypatch, capsys):
    params = _project(tmp_path)
    broken = copy.deepcopy(params)
    broken["datasets"] = ["livec", "agiqa"]  # agiqa has no labels table here
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    monkeypatch.chdir(tmp_path)
    assert warm.run(broken, tmp_path / "params.yaml", cores=2) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"warm: {stage} --dataset agiqa") for line in err)
