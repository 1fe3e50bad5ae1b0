"""Runs side by side: params.yaml names them, each has its own outputs and params deps, and the
list DVC iterates over follows the enabled runs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from stage_project import run_cli

from dogiqa import profiles, runs
from dogiqa.config import load_params
from dogiqa.errors import ParamError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = "src/dogiqa/resources/profiles.yaml"


@pytest.fixture
def params() -> dict:
    return load_params(ROOT / "params.yaml")


def test_the_default_enables_the_cpu_run_and_run_datasets_is_current(params) -> None:
    assert [run.name for run in runs.enabled(params)] == ["cpu"]
    assert set(runs.declared(params)) >= {"cpu", "paper", "modern"}
    assert params["run_datasets"] == {
        "cpu-livec": {"run": "cpu", "dataset": "livec", "profile": "cpu"},
        "cpu-agiqa": {"run": "cpu", "dataset": "agiqa", "profile": "cpu"},
    }
    assert params["run_comparisons"] == {}  # no enabled run compares: no compare/rank stage


def test_enable_and_disable_rewrite_run_datasets_keeping_the_file(tmp_path) -> None:
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    original = target.read_text()
    runs.write(target)
    assert target.read_text() == original  # params.yaml is in the written form
    runs.write(target, enable="paper")
    enabled = load_params(target)
    assert [run.name for run in runs.enabled(enabled)] == ["cpu", "paper"]
    assert "paper-kadid" in enabled["run_datasets"]
    assert "# Runs: named configurations" in target.read_text()  # comments kept
    runs.write(target, disable="paper")
    assert target.read_text() == original
    runs.write(target, enable="prompting")  # a run that compares: run_comparisons too
    assert list(load_params(target)["run_comparisons"]) == ["prompting-livec", "prompting-agiqa"]
    runs.write(target, disable="prompting")
    assert target.read_text() == original


def test_a_stale_run_datasets_is_refused_before_any_work(params, tmp_path) -> None:
    stale = copy.deepcopy(params)
    stale["runs"]["paper"]["enabled"] = True  # as `dvc exp run -S runs.paper.enabled=true`
    told = (
        "params: run_datasets: lacks the enabled run(s) paper: DVC takes each run's stages from "
        "run_datasets, which `dvc exp run -S runs...` does not rewrite; run "
        "`python -m dogiqa runs --enable paper` first (it writes run_datasets), then `dvc repro` "
        "or `dvc exp run`"
    )
    with pytest.raises(ParamError) as caught:
        runs.stage_params(stale, "cpu", "livec")
    assert str(caught.value) == told
    with pytest.raises(ParamError, match="run_datasets"):
        profiles.validate_all(stale)
    target = tmp_path / "params.yaml"
    target.write_text(yaml.safe_dump(stale, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    # The per-run stages, and the report stages (what such an exp run reruns when the cpu run
    # is up to date), refuse in that one line before any work: no notebook starts.
    for command in (("segment", "--dataset", "livec"), ("report",)):
        result = run_cli(tmp_path, *command)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"dogiqa {command[0]}: error: {told}"]
    assert not (tmp_path / "reports").exists()
    check = run_cli(tmp_path, "runs", "--check")
    assert check.returncode == 1 and "stale: lacks the enabled run(s) paper" in check.stdout


def test_the_stale_message_names_the_commands_that_mend_it(params) -> None:
    switched = copy.deepcopy(params)
    switched["runs"]["modern"]["enabled"] = True
    switched["runs"]["cpu"]["enabled"] = False
    with pytest.raises(
        ParamError,
        match=r"lacks the enabled run\(s\) modern; lists the "
        r"disabled run\(s\) cpu: .* run `python -m dogiqa runs --enable modern` "
        r"and `python -m dogiqa runs --disable cpu` first",
    ):
        runs.validate_params(switched)
    fewer = copy.deepcopy(params)
    fewer["runs"]["cpu"]["datasets"] = ["livec"]
    with pytest.raises(
        ParamError,
        match=r"differs from the enabled runs' datasets in "
        r"cpu-agiqa: .* run `python -m dogiqa runs --write` first",
    ):
        runs.validate_params(fewer)


def test_a_stage_runs_only_for_an_enabled_run_and_its_datasets(params) -> None:
    with pytest.raises(ParamError, match="'paper' is not an enabled run"):
        runs.stage_params(params, "paper", "livec")
    with pytest.raises(ParamError, match="runs.cpu.datasets: does not list 'spaq'"):
        runs.stage_params(params, "cpu", "spaq")


def test_a_run_sees_the_base_params_changed_by_its_profile_alone(params) -> None:
    assert runs.run_params(params, "cpu") == params  # the cpu profile overrides nothing
    paper = runs.run_params(params, "paper")
    changed = profiles.overrides("paper")
    assert paper["score"]["hf"]["model"] == "mplug-owl3-7b" and paper["sample"]["size"] == 0
    for section in ("segment", "score", "sample", "aggregate", "evaluate"):
        for key in set(params[section]) | set(paper[section]):
            if f"{section}.{key}" not in changed and not isinstance(params[section][key], dict):
                assert paper[section][key] == params[section][key], f"{section}.{key}"


@pytest.mark.parametrize(
    ("entry", "param"),
    [
        ({"Bad-Name": {"profile": "cpu", "datasets": ["livec"], "enabled": True}}, "runs.Bad-Name"),
        ({"x": {"profile": "cpu", "datasets": ["imagenet"], "enabled": True}}, "runs.x.datasets"),
        ({"x": {"profile": "cpu", "datasets": ["livec"], "enabled": "yes"}}, "runs.x.enabled"),
        ({"x": {"profile": "cpu", "datasets": ["livec"], "enabled": False}}, "runs: no run"),
        (
            {"x": {"profile": "cpu", "datasets": ["livec"], "compare": ["spaq"], "enabled": True}},
            "runs.x.compare: must list some of the run's datasets",
        ),
        (
            {"x": {"profile": "cpu", "datasets": ["livec"], "compare": "livec", "enabled": True}},
            "runs.x.compare",
        ),
    ],
)
def test_bad_runs_name_the_param(entry, param) -> None:
    with pytest.raises(ParamError, match=param):
        runs.declared({"runs": entry})


def test_an_unknown_profile_names_the_run(params) -> None:
    params["runs"]["paper"]["profile"] = "imaginary"
    with pytest.raises(ParamError, match="runs.paper.profile: unknown profile 'imaginary'"):
        profiles.validate_all(params)


def _stages(tmp_path: Path, enable: str) -> list:
    """dvc.yaml as DVC resolves it, with the ``enable`` run on too."""
    for name in ("dvc.yaml", "params.yaml", PROFILES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    runs.write(tmp_path / "params.yaml", enable=enable)
    return list(Repo.init(str(tmp_path), no_scm=True).index.stages)


def test_each_runs_stages_write_only_its_folders_and_track_only_its_profile(tmp_path) -> None:
    stages = _stages(tmp_path, enable="paper")
    per_run = {s.name: s for s in stages if "@" in s.name and "-" in s.name.split("@")[1]}
    expected = {
        f"{stage}@{key}"
        for stage in ("segment", "count_regions", "score", "aggregate", "evaluate")
        for key in runs.stage_items(runs.declared(load_params(tmp_path / "params.yaml")))
    }
    assert set(per_run) == expected and any(k.endswith("paper-kadid") for k in per_run)
    outs = [str(out) for stage in stages for out in stage.outs]
    assert len(outs) == len(set(outs)), "two stages write the same file"
    for name, stage in per_run.items():
        run = name.split("@")[1].split("-")[0]
        for out in stage.outs:
            assert f"/{run}/" in str(out), f"{name} writes {out} outside the run's folders"
        tracked = {d.def_path: d.params for d in stage.deps if isinstance(d, ParamsDependency)}
        assert tracked[PROFILES] == [run]  # the run's own profile, not another run's
        assert f"runs.{run}.profile" in tracked["params.yaml"]
        assert "runs" not in tracked["params.yaml"] and "run_datasets" not in tracked["params.yaml"]


def test_only_a_run_that_compares_gets_compare_and_rank_stages(tmp_path) -> None:
    """The default DAG has no compare or rank stage; enabling the prompting run (whose entry
    lists the datasets it compares) adds one of each per compared dataset, writing into the run's
    folders and tracking the run's own profile, which picks the systems."""
    default = [s.name for s in _stages(tmp_path / "default", enable="cpu")]
    assert not [n for n in default if n.startswith(("compare", "rank"))]
    stages = _stages(tmp_path / "prompting", enable="prompting")
    params = load_params(tmp_path / "prompting" / "params.yaml")
    assert params["run_comparisons"] == {
        "prompting-livec": {"run": "prompting", "dataset": "livec", "profile": "prompting"},
        "prompting-agiqa": {"run": "prompting", "dataset": "agiqa", "profile": "prompting"},
    }
    comparing = {s.name: s for s in stages if s.name.startswith(("compare@", "rank@"))}
    assert set(comparing) == {
        f"{stage}@prompting-{ds}" for stage in ("compare", "rank") for ds in ("livec", "agiqa")
    }
    for name, stage in comparing.items():
        assert stage.cmd.endswith(f"--run prompting --dataset {name.split('-')[-1]}")
        assert all("/prompting/" in str(out) for out in stage.outs), name
        tracked = {d.def_path: d.params for d in stage.deps if isinstance(d, ParamsDependency)}
        assert tracked[PROFILES] == ["prompting"]
        assert "runs.prompting.profile" in tracked["params.yaml"]
    seen = runs.run_params(params, "prompting")
    assert (seen["score"]["system"], seen["compare"]["system"]) == (
        "single_in_context",
        "double_standard",
    )
    assert runs.run_params(params, "cpu")["score"]["system"] == "single_standard"


def test_a_stale_run_comparisons_is_refused_naming_the_command(params, tmp_path) -> None:
    stale = copy.deepcopy(params)
    stale["runs"]["cpu"]["compare"] = ["livec"]  # as `dvc exp run -S runs.cpu.compare=[livec]`
    told = (
        "params: run_comparisons: differs from the enabled runs' compare lists in cpu-livec: DVC "
        "takes the compare and rank stages from run_comparisons, which `dvc exp run -S runs...` "
        "does not rewrite; run `python -m dogiqa runs --write` first (it writes run_comparisons),"
        " then `dvc repro` or `dvc exp run`"
    )
    with pytest.raises(ParamError) as caught:
        runs.validate_params(stale)
    assert str(caught.value) == told
    target = tmp_path / "params.yaml"
    target.write_text(yaml.safe_dump(stale, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    result = run_cli(tmp_path, "compare", "--run", "cpu", "--dataset", "livec")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"dogiqa compare: error: {told}"]
    runs.write(target)
    assert runs.comparison_items(runs.validate_params(load_params(target))) == {
        "cpu-livec": {"run": "cpu", "dataset": "livec", "profile": "cpu"}
    }
