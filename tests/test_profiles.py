"""Named configurations are params changes only, and every stage accepts them."""

from __future__ import annotations

import shutil

import pytest
import yaml

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


def test_write_keeps_comments_and_changes_only_the_keys(project_root, tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(project_root / "params.yaml", target)
    profiles.write(target, {"score.K": 5, "score.prompt": "paper_word_k5"})
    text = target.read_text()
    assert "# Parameters of the Dog-IQA study" in text
    written = yaml.safe_load(text)
    assert written["score"]["K"] == 5 and written["score"]["prompt"] == "paper_word_k5"
    original = load_params(project_root / "params.yaml")
    written["score"]["K"] = original["score"]["K"]
    written["score"]["prompt"] = original["score"]["prompt"]
    assert written == original


def test_check_catches_a_bad_value_in_any_stage(project_root):
    params = load_params(project_root / "params.yaml")
    params["evaluate"]["bootstrap_samples"] = -5
    with pytest.raises(ParamError, match="evaluate.bootstrap_samples"):
        profiles.validate_all(params)
