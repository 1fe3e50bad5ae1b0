"""Named configurations are params changes only, and every stage accepts them."""

from __future__ import annotations

import shutil

import pytest
from stage_project import run_cli

from dogiqa import profiles
from dogiqa.config import load_params
from dogiqa.errors import DogIQAError, ParamError


def test_default_params_are_valid(project_root):
    profiles.validate_all(load_params(project_root / "params.yaml"))


@pytest.mark.parametrize("name", ["paper", "modern"])
def test_profiles_pass_every_stage_check(project_root, name):
    params = profiles.apply(load_params(project_root / "params.yaml"), profiles.overrides(name))
    profiles.validate_all(params)
    assert params["score"]["backend"] == "hf" and params["segment"]["backend"] == "sam2"


def test_paper_profile_selects_the_authors_configuration():
    changes = profiles.overrides("paper")
    assert changes["score.hf.model"] == "mplug-owl3-7b"
    assert changes["score.prompt"] == "authors_word_k7"
    assert changes["segment.mode"] == "authors"


def test_set_param_args_for_dvc_exp_run():
    args = profiles.set_param_args({"datasets": ["livec", "agiqa"], "score.K": 5})
    assert args == ["-S", 'datasets=["livec","agiqa"]', "-S", "score.K=5"]


def test_unknown_keys_and_profiles_are_refused(project_root):
    params = load_params(project_root / "params.yaml")
    with pytest.raises(DogIQAError, match="no such key"):
        profiles.apply(params, {"score.temperature": 0.1})
    with pytest.raises(DogIQAError, match="unknown profile"):
        profiles.overrides("imaginary")


def test_profile_write_is_refused_pointing_to_the_run(project_root, tmp_path):
    """Written into params.yaml, a profile would change the base params that the cpu run reads
    too: the command refuses in one line naming the run command and leaves the file alone."""
    target = tmp_path / "params.yaml"
    shutil.copy(project_root / "params.yaml", target)
    before = target.read_bytes()
    result = run_cli(tmp_path, "--params", str(target), "profile", "paper", "--write")
    assert result.returncode == 2 and target.read_bytes() == before
    assert result.stderr.splitlines() == [
        "dogiqa profile: error: --write is refused: profile 'paper' would change the base params "
        "of every run (the cpu run too); a run applies its profile: "
        "python -m dogiqa runs --enable paper"
    ]
    printed = run_cli(tmp_path, "--params", str(target), "profile", "paper")
    assert printed.returncode == 0 and "-S score.hf.model=mplug-owl3-7b" in printed.stdout


def test_check_catches_a_bad_value_in_any_stage(project_root):
    params = load_params(project_root / "params.yaml")
    params["evaluate"]["bootstrap_samples"] = -5
    with pytest.raises(ParamError, match="evaluate.bootstrap_samples"):
        profiles.validate_all(params)
