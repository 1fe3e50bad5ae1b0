"""Runs: named configurations that the image pipeline computes side by side.

``runs`` of params.yaml names each run's profile (``dogiqa.profiles``: overrides of params.yaml,
the one place where a configuration is defined), its datasets and whether it is enabled. An
enabled run's stages (segment, score, aggregate, evaluate) read params.yaml with the profile
applied (:func:`stage_params`) and write into the run's own folders (``dogiqa.paths``), so enabling,
changing or adding a run leaves every other run's outputs alone.

DVC's ``foreach`` iterates over every entry of what it is given and cannot leave the disabled runs
out, so dvc.yaml iterates over ``run_datasets``: one entry per enabled run and dataset, which this
module writes from ``runs`` (``python -m dogiqa runs --write``, or ``--enable NAME``). Every stage
that reads runs refuses a ``run_datasets`` that no longer matches them, naming the command.

Seed 003's compare and rank stages run for the datasets a run lists in ``compare`` (some of its
own; none when absent), with the systems its profile picks (``compare.system``):
``run_comparisons``, written beside ``run_datasets`` by the same command and checked the same
way, has one entry per enabled run and compared dataset, and is empty (so DVC makes neither
stage) unless an enabled run compares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogiqa import config, paths, profiles
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.registry import DATASETS

NAME = re.compile(r"[a-z][a-z0-9_]*")
"""A run name: it names folders and, joined to a dataset by ``-``, DVC stages."""
GENERATED = "run_datasets"
COMPARED = "run_comparisons"
"""The generated list of the compare and rank stages (one entry per run and compared dataset)."""


@dataclass(frozen=True)
class Run:
    name: str
    profile: str
    datasets: tuple[str, ...]
    enabled: bool
    compare: tuple[str, ...] = ()
    """The datasets (some of ``datasets``) whose images the compare and rank stages compare."""

    def stage_key(self, dataset: str) -> str:
        """The key of the run's stages for ``dataset`` in dvc.yaml (``segment@<key>``)."""
        return f"{self.name}-{dataset}"


def _run(name: Any, entry: Any) -> Run:
    where = f"runs.{name}"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ParamError(
            where, "a run name is lowercase letters, digits and _, starting with a letter"
        )
    if not isinstance(entry, dict):
        raise ParamError(where, f"must be a mapping (profile, datasets, enabled), got {entry!r}")
    datasets = config.get_list(entry, where, "datasets")
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ParamError(
            f"{where}.datasets", f"unknown dataset {unknown[0]!r}; known: {sorted(DATASETS)}"
        )
    if len(set(datasets)) != len(datasets):
        raise ParamError(f"{where}.datasets", f"lists a dataset twice: {datasets}")
    compared = config.get_list(entry, where, "compare") if "compare" in entry else []
    outside = [d for d in compared if d not in datasets]
    if outside or len(set(compared)) != len(compared):
        raise ParamError(
            f"{where}.compare",
            f"must list some of the run's datasets {datasets}, each once; got {compared}",
        )
    return Run(
        name=name,
        profile=config.get_str(entry, where, "profile"),
        datasets=tuple(datasets),
        enabled=config.get_bool(entry, where, "enabled"),
        compare=tuple(compared),
    )


def declared(params: Mapping[str, Any]) -> dict[str, Run]:
    """Every run of ``runs`` (enabled or not), checked; ``run_datasets`` is not looked at."""
    section = config.section(params, "runs")
    found = {name: _run(name, entry) for name, entry in section.items()}
    if not any(run.enabled for run in found.values()):
        raise ParamError(
            "runs", "no run is enabled (enable one: python -m dogiqa runs --enable NAME)"
        )
    return found


def stage_items(runs: Mapping[str, Run]) -> dict[str, dict[str, str]]:
    """``run_datasets`` as it follows from ``runs``: per enabled run and dataset, its stage key ->
    run, dataset, profile (what dvc.yaml's per-run stages use)."""
    return {
        run.stage_key(dataset): {"run": run.name, "dataset": dataset, "profile": run.profile}
        for run in runs.values()
        if run.enabled
        for dataset in run.datasets
    }


def comparison_items(runs: Mapping[str, Run]) -> dict[str, dict[str, str]]:
    """``run_comparisons`` as it follows from ``runs``: per enabled run and dataset it compares,
    its stage key -> run, dataset, profile (what the compare and rank stages use)."""
    return {
        run.stage_key(dataset): {"run": run.name, "dataset": dataset, "profile": run.profile}
        for run in runs.values()
        if run.enabled
        for dataset in run.compare
    }


def stale_comparisons(params: Mapping[str, Any], found: Mapping[str, Run]) -> str | None:
    """Why ``run_comparisons`` does not follow from the enabled runs' ``compare`` lists, and the
    command that mends it (None when it is current; absent counts as empty)."""
    expected = comparison_items(found)
    listed = params.get(COMPARED)
    listed = {} if listed is None else listed
    if listed == expected:
        return None
    differ = [
        str(k) for k in dict.fromkeys([*expected, *listed]) if expected.get(k) != listed.get(k)
    ]
    return (
        f"differs from the enabled runs' compare lists in {', '.join(differ)}: DVC takes the "
        f"compare and rank stages from {COMPARED}, which `dvc exp run -S runs...` does not "
        f"rewrite; run `python -m dogiqa runs --write` first (it writes {COMPARED}), then "
        "`dvc repro` or `dvc exp run`"
    )


def stale(params: Mapping[str, Any], found: Mapping[str, Run]) -> str | None:
    """Why ``run_datasets`` does not follow from ``runs``, and the commands that mend it (None
    when it is current). DVC builds the per-run stages from ``run_datasets`` before any stage
    runs, so ``dvc exp run -S runs.NAME.enabled=true`` alone leaves it stale: only the ``runs``
    command rewrites it."""
    expected = stage_items(found)
    listed = params.get(GENERATED)
    if listed == expected:
        return None
    listed = listed if isinstance(listed, dict) else {}

    def run_of(key: Any) -> str:
        return str(key).split("-")[0]  # a run name has no "-" (NAME)

    listed_runs = list(dict.fromkeys(run_of(k) for k in listed))
    to_enable = [
        n for n in dict.fromkeys(e["run"] for e in expected.values()) if n not in listed_runs
    ]
    to_disable = [n for n in listed_runs if n in found and not found[n].enabled]
    switched = set(to_enable) | set(to_disable)
    rest = [k for k in (*expected, *listed) if expected.get(k) != listed.get(k)]
    rest = [k for k in dict.fromkeys(rest) if run_of(k) not in switched]
    why, fixes = [], []
    if to_enable:
        why.append(f"lacks the enabled run(s) {', '.join(to_enable)}")
        fixes += [f"--enable {n}" for n in to_enable]
    if to_disable:
        why.append(f"lists the disabled run(s) {', '.join(to_disable)}")
        fixes += [f"--disable {n}" for n in to_disable]
    if rest or not fixes:
        why.append(f"differs from the enabled runs' datasets in {', '.join(map(str, rest))}")
        fixes.append("--write")
    commands = " and ".join(f"`python -m dogiqa runs {fix}`" for fix in fixes)
    return (
        f"{'; '.join(why)}: DVC takes each run's stages from run_datasets, which `dvc exp run "
        f"-S runs...` does not rewrite; run {commands} first (it writes run_datasets), then "
        f"`dvc repro` or `dvc exp run`"
    )


def validate_params(params: Mapping[str, Any]) -> dict[str, Run]:
    """Every run, checked, and ``run_datasets`` and ``run_comparisons`` checked against them."""
    found = declared(params)
    reason = stale(params, found)
    if reason:
        raise ParamError(GENERATED, reason)
    reason = stale_comparisons(params, found)
    if reason:
        raise ParamError(COMPARED, reason)
    return found


def enabled(params: Mapping[str, Any]) -> list[Run]:
    """The enabled runs, in the order params.yaml lists them."""
    return [run for run in validate_params(params).values() if run.enabled]


def image_datasets(params: Mapping[str, Any]) -> list[str]:
    """The datasets whose images some enabled run processes, in order of first mention."""
    return list(dict.fromkeys(d for run in enabled(params) for d in run.datasets))


def run_params(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """params.yaml as run ``name`` sees it: its profile's overrides applied."""
    found = declared(params)
    if name not in found:
        raise ParamError("runs", f"has no run {name!r}; runs: {sorted(found)}")
    run = found[name]
    try:
        return profiles.apply(dict(params), profiles.overrides(run.profile))
    except DogIQAError as exc:
        raise ParamError(f"runs.{name}.profile", str(exc)) from None


def stage_params(params: Mapping[str, Any], name: str, dataset: str) -> dict[str, Any]:
    """The params a stage of run ``name`` on ``dataset`` works with, after checking that the run
    is enabled, lists the dataset and that ``run_datasets`` is current."""
    found = validate_params(params)
    run = found.get(name)
    if run is None or not run.enabled:
        enabled_names = [r.name for r in found.values() if r.enabled]
        raise ParamError("runs", f"{name!r} is not an enabled run (enabled: {enabled_names})")
    if dataset not in run.datasets:
        raise ParamError(f"runs.{name}.datasets", f"does not list {dataset!r}")
    return run_params(params, name)


# --- the runs command ----------------------------------------------------------------------


def _flow(entries: dict[str, dict[str, str]]) -> Any:
    """``run_datasets`` with one line per entry, as params.yaml writes it."""
    from ruamel.yaml.comments import CommentedMap

    out = CommentedMap()
    for key, entry in entries.items():
        line = CommentedMap(entry)
        line.fa.set_flow_style()
        out[key] = line
    return out


def _null_representer() -> Any:
    """ruamel's round-trip representer writing None as ``null``, as params.yaml spells it (the
    class is derived, so ruamel's own stays as other writers expect it)."""
    from ruamel.yaml.representer import RoundTripRepresenter

    class NullRepresenter(RoundTripRepresenter):
        pass

    NullRepresenter.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return NullRepresenter


def write(path: Path, enable: str | None = None, disable: str | None = None) -> dict[str, Run]:
    """Switch a run on or off (optional) and rewrite ``run_datasets`` and ``run_comparisons`` in
    the params file at ``path``, keeping its comments; return the runs."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    yaml_rt.Representer = _null_representer()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096
    document = yaml_rt.load(path.read_text(encoding="utf-8"))
    section = document.get("runs") if isinstance(document, dict) else None
    for name, value in ((enable, True), (disable, False)):
        if name is None:
            continue
        if not isinstance(section, dict) or name not in section:
            raise ParamError("runs", f"has no run {name!r}")
        section[name]["enabled"] = value
    found = declared(document)
    document[GENERATED] = _flow(stage_items(found))
    document[COMPARED] = _flow(comparison_items(found))
    with path.open("w", encoding="utf-8") as handle:
        yaml_rt.dump(document, handle)
    return found


def describe(found: Mapping[str, Run]) -> list[str]:
    lines = []
    for run in found.values():
        state = "enabled" if run.enabled else "disabled"
        metrics = paths.show(paths.metrics_file("<ds>", run=run.name))
        lines.append(
            f"{run.name}: profile {run.profile}, {state}, datasets {', '.join(run.datasets)}"
            f"{', compares ' + ', '.join(run.compare) if run.compare else ''} -> {metrics}"
        )
    return lines


def main(path: Path, params: Mapping[str, Any], **switches: Any) -> int:
    """The ``runs`` command: list the runs; ``write``/``enable``/``disable`` rewrite
    ``run_datasets`` and ``run_comparisons``; ``check`` fails when one is stale."""
    if switches.get("write") or switches.get("enable") or switches.get("disable"):
        found = write(path, switches.get("enable"), switches.get("disable"))
        print(f"{paths.show(path)}: {GENERATED} and {COMPARED} written for the enabled runs")
    else:
        found = declared(params)
        reasons = {GENERATED: stale(params, found), COMPARED: stale_comparisons(params, found)}
        for key, reason in reasons.items():
            if reason:
                print(f"{paths.show(path)}: {key} is stale: {reason}")
        if switches.get("check") and any(reasons.values()):
            return 1
    print("\n".join(describe(found)))
    return 0
