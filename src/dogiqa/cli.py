"""Command line: ``python -m dogiqa <command> ...`` (also installed as ``dogiqa``).

Each command is a thin wrapper over a function (``run(...)`` for a stage) of the module named in
:data:`COMMANDS`; ``dogiqa.dvcdeps`` reads the same table to find the code each DVC stage runs.
``--params`` defaults to the project's params.yaml (found from the working directory upwards).
The commands of a run's stages take ``--run NAME`` (default: the CPU run) and work with
params.yaml as that run's profile changes it (``dogiqa.runs``). Errors the user can fix
(``DogIQAError``) are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogiqa import paths, runs
from dogiqa.config import load_params
from dogiqa.errors import DogIQAError


@dataclass(frozen=True)
class Command:
    module: str
    """The module that does the work (its import closure is the command's code)."""
    help: str
    call: Callable[[Any, argparse.Namespace, dict[str, Any]], Any]
    """(module, arguments, params) -> exit status or None."""
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset key, e.g. livec")


def _run_dataset(parser: argparse.ArgumentParser) -> None:
    _dataset(parser)
    parser.add_argument(
        "--run", default=paths.DEFAULT_RUN, help=f"an enabled run (default: {paths.DEFAULT_RUN})"
    )


def _per_dataset(module: Any, args: argparse.Namespace, params: dict[str, Any]) -> Any:
    return module.run(args.dataset, params)


def _per_run(module: Any, args: argparse.Namespace, params: dict[str, Any], **extra: Any) -> Any:
    """A run's stage on one dataset: params.yaml as the run's profile changes it."""
    seen = runs.stage_params(params, args.run, args.dataset)
    return module.run(args.dataset, seen, run_name=args.run, **extra)


def _whole_study(module: Any, args: argparse.Namespace, params: dict[str, Any]) -> Any:
    return module.run(params)


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    _run_dataset(parser)
    parser.add_argument("--shard", help="I or I/N: score only shard I of the N in score.shards")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebook", help="execute only this notebook (name without .ipynb)")


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="fail if run_datasets or run_comparisons is stale"
    )
    mode.add_argument(
        "--write", action="store_true", help="rewrite run_datasets and run_comparisons from runs"
    )
    mode.add_argument(
        "--enable", metavar="NAME", help="enable a run and rewrite the generated lists"
    )
    mode.add_argument(
        "--disable", metavar="NAME", help="disable a run and rewrite the generated lists"
    )


def _profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="cpu, paper or modern")
    parser.add_argument(
        "--write", action="store_true", help="refused: a run applies its profile (runs --enable)"
    )


def _profile(module: Any, args: argparse.Namespace, params: dict[str, Any]) -> None:
    changes = module.overrides(args.name)
    if args.write:
        # Written into params.yaml, a profile would change the base params that every run
        # reads, the cpu run too; a run applies its own profile to them instead.
        raise DogIQAError(
            f"--write is refused: profile {args.name!r} would change the base params of every "
            f"run (the cpu run too); a run applies its profile: {_enable_hint(args)}"
        )
    print(" ".join(module.set_param_args(changes)))


def _enable_hint(args: argparse.Namespace) -> str:
    """The command that switches on the run of profile ``args.name``."""
    try:
        declared = runs.declared(load_params(args.params_file))
    except DogIQAError:
        declared = {}
    named = [run.name for run in declared.values() if run.profile == args.name]
    if named:
        return f"python -m dogiqa runs --enable {named[0]}"
    return "name it in a run of params.yaml (runs), then python -m dogiqa runs --enable RUN"


def _check_params(module: Any, args: argparse.Namespace, params: dict[str, Any]) -> None:
    module.validate_all(params)
    print(f"{paths.show(args.params_file)}: every stage's params are valid")


def _image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="image files")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="the image folder")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dataset", help="write the package's manifest <DATASET>_images.sha256")
    where.add_argument("--output", type=Path, help="write this file instead")


def _dvc_deps_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if dvc.yaml is not up to date")
    mode.add_argument("--write", action="store_true", help="write the code deps into dvc.yaml")


COMMANDS: dict[str, Command] = {
    "download": Command(
        "dogiqa.download", "fetch, verify and normalise one dataset", _per_dataset, _dataset
    ),
    "download-external": Command(
        "dogiqa.download",
        "fetch the cached outputs of other models",
        lambda m, a, p: m.run_external(p),
    ),
    "upper-bound": Command(
        "dogiqa.upper_bound", "Table 1: the upper bound of K-level scoring", _whole_study
    ),
    "segment": Command(
        "dogiqa.segment", "cut each image into regions (Algorithm 1)", _per_run, _run_dataset
    ),
    "count-regions": Command(
        "dogiqa.count_regions",
        "count the regions of every image of the dataset (c_max of s_seg)",
        _per_run,
        _run_dataset,
    ),
    "segment-stats": Command(
        "dogiqa.segment_stats", "segmentation statistics over all datasets", _whole_study
    ),
    "score": Command(
        "dogiqa.score",
        "score the whole image and every region crop",
        lambda m, a, p: _per_run(m, a, p, shard=a.shard),
        _score_arguments,
    ),
    "merge-scores": Command(
        "dogiqa.merge_scores",
        "join a dataset's score shards into its scores table",
        _per_run,
        _run_dataset,
    ),
    "aggregate": Command(
        "dogiqa.aggregate", "combine region scores into predictions", _per_run, _run_dataset
    ),
    "evaluate": Command(
        "dogiqa.evaluate", "SRCC/PLCC/KRCC of predictions against MOS", _per_run, _run_dataset
    ),
    "compare": Command(
        "dogiqa.compare",
        "compare or rank images with an MLLM (seed 003's double and multiple stimulus)",
        _per_run,
        _run_dataset,
    ),
    "rank": Command(
        "dogiqa.rank",
        "scores from the comparisons (Thurstone, Bradley-Terry), evaluated against MOS",
        _per_run,
        _run_dataset,
    ),
    "select": Command(
        "dogiqa.selection",
        "uniform and difficult sample selection, compared with seed 003's released lists",
        _whole_study,
    ),
    "evaluate-external": Command(
        "dogiqa.evaluate_external", "metrics of the cached outputs of other models", _whole_study
    ),
    "report": Command(
        "dogiqa.report",
        "execute the notebooks into reports/",
        lambda m, a, p: m.run(p, only=a.notebook),
        _report_arguments,
    ),
    "runs": Command(
        "dogiqa.runs",
        "list the runs; --enable/--disable NAME or --write rewrite run_datasets, run_comparisons",
        lambda m, a, p: m.main(
            a.params_file, p, check=a.check, write=a.write, enable=a.enable, disable=a.disable
        ),
        _runs_arguments,
    ),
    "profile": Command(
        "dogiqa.profiles",
        "print (or --write) the params of a named configuration",
        _profile,
        _profile_arguments,
    ),
    "check-params": Command(
        "dogiqa.profiles", "check every stage's params, do nothing", _check_params
    ),
    "score-image": Command(
        "dogiqa.score_image",
        "score image files and show their regions",
        lambda m, a, p: m.run(a.paths, *m.configuration(a.params), as_json=a.json),
        _image_arguments,
    ),
    "make-manifest": Command(
        "dogiqa.download",
        "write the SHA-256 manifest of an image folder (a dataset's images)",
        lambda m, a, p: m.make_manifest(a.folder, a.dataset, a.output),
        _manifest_arguments,
    ),
    "dvc-deps": Command(
        "dogiqa.dvcdeps",
        "check (or --write) the code deps of every stage in dvc.yaml",
        lambda m, a, p: m.main(check=a.check, write=a.write),
        _dvc_deps_arguments,
    ),
    "site": Command(
        "dogiqa.site",
        "the executed notebooks, tables and benchmarks as a website in reports/site",
        _whole_study,
    ),
}
"""Command name -> what runs it. dvc.yaml's stages call these commands."""

NO_PARAMS = ("profile", "dvc-deps", "make-manifest", "score-image")
"""Commands that do not read the project's params file (score-image works outside a project,
with the packaged default configuration)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dogiqa", description="Dog-IQA study: run a pipeline stage or score images."
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (default: params.yaml of the project root)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.arguments(commands.add_parser(name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.params_file = args.params if args.params is not None else paths.params_file()
    command = COMMANDS[args.command]
    try:
        params = {} if args.command in NO_PARAMS else load_params(args.params_file)
        result = command.call(importlib.import_module(command.module), args, params)
    except DogIQAError as exc:
        print(f"dogiqa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dogiqa {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0
