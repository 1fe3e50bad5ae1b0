"""Named configurations (cpu, paper, modern) as overrides of params.yaml, and a check of all params.

A run (``dogiqa.runs``) names its profile; ``python -m dogiqa profile NAME`` prints a profile as
``-S key=value`` arguments (for a ``dvc exp run`` that changes the base params itself).
"""

from __future__ import annotations

import copy
import importlib
import json
from importlib import resources
from typing import Any

import yaml

from dogiqa.errors import DogIQAError, ParamError

STAGE_MODULES = (
    "download",
    "upper_bound",
    "segment",
    "score",
    "aggregate",
    "evaluate",
    "segment_stats",
    "selection",
    "compare",
    "rank",
    "report",
    "site",
)


def load_profiles() -> dict[str, Any]:
    text = resources.files("dogiqa.resources").joinpath("profiles.yaml").read_text()
    return yaml.safe_load(text)


def overrides(name: str) -> dict[str, Any]:
    profiles = load_profiles()
    if name not in profiles:
        raise DogIQAError(f"unknown profile {name!r}; known: {sorted(profiles)}")
    return profiles[name]["overrides"]


def apply(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with dotted-key ``changes`` set (the keys must already exist)."""
    result = copy.deepcopy(params)
    for dotted, value in changes.items():
        node = result
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise DogIQAError(f"profile key {dotted!r}: params.yaml has no section {key!r}")
            node = node[key]
        if leaf not in node:
            raise DogIQAError(f"profile key {dotted!r}: params.yaml has no such key")
        node[leaf] = value
    return result


def set_param_args(changes: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values in YAML flow style)."""
    args = []
    for dotted, value in changes.items():
        text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
        args += ["-S", f"{dotted}={text}"]
    return args


def validate_all(params: dict[str, Any]) -> None:
    """Run every stage's parameter check, on params.yaml as every run (enabled or not) sees it;
    the first bad value raises ParamError naming it."""
    from dogiqa import runs

    runs.validate_params(params)
    for name, run in runs.declared(params).items():
        seen = runs.run_params(params, name)
        try:
            for module in STAGE_MODULES:
                importlib.import_module(f"dogiqa.{module}").validate_params(seen)
        except ParamError as exc:
            if not overrides(run.profile):
                raise
            raise ParamError(
                exc.param, f"{exc.problem} (run {name}, profile {run.profile})"
            ) from None
