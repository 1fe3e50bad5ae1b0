"""Command line: ``python -m dogiqa <stage> ...`` (also installed as ``dogiqa``).

Each stage command is a thin wrapper over a library function ``run(...)`` in the stage's module.
Errors the user can fix (``DogIQAError``) are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dogiqa.config import load_params
from dogiqa.errors import DogIQAError


def _per_dataset(module: str) -> Callable[[argparse.Namespace], Any]:
    def call(args: argparse.Namespace) -> Any:
        stage = importlib.import_module(f"dogiqa.{module}")
        return stage.run(args.dataset, load_params(args.params))

    return call


def _whole_study(module: str) -> Callable[[argparse.Namespace], Any]:
    def call(args: argparse.Namespace) -> Any:
        stage = importlib.import_module(f"dogiqa.{module}")
        return stage.run(load_params(args.params))

    return call


def _score(args: argparse.Namespace) -> Any:
    from dogiqa import score

    return score.run(args.dataset, load_params(args.params), shard=args.shard)


def _report(args: argparse.Namespace) -> Any:
    from dogiqa import report

    return report.run(load_params(args.params), only=args.notebook)


def _whole_study_fn(module: str, function: str) -> Callable[[argparse.Namespace], Any]:
    def call(args: argparse.Namespace) -> Any:
        stage = importlib.import_module(f"dogiqa.{module}")
        return getattr(stage, function)(load_params(args.params))

    return call


def _profile(args: argparse.Namespace) -> Any:
    from dogiqa import profiles

    changes = profiles.overrides(args.name)
    if args.write:
        profiles.write(args.params, changes)
        print(f"{args.params}: applied profile {args.name!r} ({len(changes)} keys)")
    else:
        print(" ".join(profiles.set_param_args(changes)))


def _check_params(args: argparse.Namespace) -> Any:
    from dogiqa import profiles

    profiles.validate_all(load_params(args.params))
    print(f"{args.params}: every stage's params are valid")


def _score_image(args: argparse.Namespace) -> Any:
    from dogiqa import score_image

    return score_image.run(args.paths, load_params(args.params), as_json=args.json)


STAGES: dict[str, tuple[str, Callable[[argparse.Namespace], Any], bool]] = {
    # name: (help, handler, takes --dataset)
    "download": ("fetch, verify and normalise one dataset", _per_dataset("download"), True),
    "download-external": (
        "fetch the cached outputs of other models",
        _whole_study_fn("download", "run_external"),
        False,
    ),
    "upper-bound": (
        "Table 1: the upper bound of K-level scoring",
        _whole_study("upper_bound"),
        False,
    ),
    "segment": ("cut each image into regions (Algorithm 1)", _per_dataset("segment"), True),
    "segment-stats": (
        "segmentation statistics over all datasets",
        _whole_study("segment_stats"),
        False,
    ),
    "merge-scores": (
        "join a dataset's score shards into its scores table",
        _per_dataset("merge_scores"),
        True,
    ),
    "aggregate": ("combine region scores into predictions", _per_dataset("aggregate"), True),
    "evaluate": ("SRCC/PLCC/KRCC of predictions against MOS", _per_dataset("evaluate"), True),
    "select": (
        "uniform and difficult sample selection, compared with seed 003's released lists",
        _whole_study("selection"),
        False,
    ),
    "evaluate-external": (
        "metrics of the cached outputs of other models",
        _whole_study("evaluate_external"),
        False,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dogiqa", description="Dog-IQA study: run a pipeline stage or score images."
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, handler, per_dataset) in STAGES.items():
        sub = commands.add_parser(name, help=help_text)
        if per_dataset:
            sub.add_argument("--dataset", required=True, help="dataset key, e.g. livec")
        sub.set_defaults(handler=handler)
    score = commands.add_parser("score", help="score the whole image and every region crop")
    score.add_argument("--dataset", required=True, help="dataset key, e.g. livec")
    score.add_argument(
        "--shard", help="I or I/N: score only shard I of the N listed in score.shards"
    )
    score.set_defaults(handler=_score)
    report = commands.add_parser("report", help="execute the notebooks into reports/")
    report.add_argument("--notebook", help="execute only this notebook (name without .ipynb)")
    report.set_defaults(handler=_report)
    profile = commands.add_parser(
        "profile", help="print (or --write) the params of a named configuration"
    )
    profile.add_argument("name", help="paper or modern")
    profile.add_argument("--write", action="store_true", help="apply it to the params file")
    profile.set_defaults(handler=_profile)
    check = commands.add_parser("check-params", help="check every stage's params, do nothing")
    check.set_defaults(handler=_check_params)
    image = commands.add_parser("score-image", help="score image files and show their regions")
    image.add_argument("paths", nargs="+", type=Path, help="image files")
    image.add_argument("--json", action="store_true", help="print JSON instead of a table")
    image.set_defaults(handler=_score_image)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        result = args.handler(args)
    except DogIQAError as exc:
        print(f"dogiqa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dogiqa {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0
