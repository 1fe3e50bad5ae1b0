"""The rank stage: the compare stage's answers as scores, evaluated against MOS.

A run's stage (``--run NAME``). Reads ``data/comparisons/<run>/<ds>.csv`` and the labels, fills
the preference matrix of Eq. 1 with every answered pair (fallbacks left out) and recovers one
score per image with each method of ``rank.methods`` (``dogiqa.comparisons``: Thurstone Case V
MAP of Eq. 2, Thurstone-Mosteller least squares, Bradley-Terry). Each method runs on two
readings of the answers:

- ``outcome``: the answer itself, the first image's credit 1 (A), 0 (B) or 1/2 (same), as the
  paper counts preferences;
- ``expected``: the first image's expected credit under the answer distribution,
  p(A) + p(same) / 2 (the ``logits`` readout; equal to ``outcome`` for parsed answers).

Writes the predictions (``data/comparisons/<run>/<ds>.predictions.csv``, the predictions table's
columns, variant ``<method>:<reading>``) and their metrics, computed as the evaluate stage
computes every variant's (``reports/comparisons/<run>/<ds>.json``: SRCC, PLCC, KRCC, bootstrap
intervals, with ``rank.main`` as the headline). An image that no answered pair shows has no
score (a missing prediction, counted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dogiqa import comparisons, config, evaluate, io, paths, schema
from dogiqa.errors import DogIQAError, ParamError

log = logging.getLogger(__name__)

READINGS = ("outcome", "expected")
"""The comparisons table's columns that give the first image's credit."""


@dataclass(frozen=True)
class RankParams:
    methods: tuple[str, ...]
    main: str
    evaluate: evaluate.EvaluateParams


def validate_params(params: Mapping[str, Any]) -> RankParams:
    section = config.section(params, "rank")
    methods = config.get_list(section, "rank", "methods")
    for method in methods:
        if method not in comparisons.AGGREGATORS:
            raise ParamError(
                "rank.methods", f"unknown {method!r}; known: {list(comparisons.AGGREGATORS)}"
            )
    main = config.get_str(section, "rank", "main")
    method, _, reading = main.partition(":")
    if method not in methods or reading not in READINGS:
        raise ParamError(
            "rank.main",
            f"must be <method>:<reading> with a method of rank.methods and a "
            f"reading of {list(READINGS)}, got {main!r}",
        )
    return RankParams(tuple(methods), main, evaluate.validate_params(params))


def variant_name(method: str, reading: str) -> str:
    return f"{method}:{reading}"


def scores(frame: pd.DataFrame, images: list[str], reading: str, method: str) -> dict[str, float]:
    """One score per image that an answered pair shows (higher is better)."""
    answered = frame[~frame["fallback"]]
    shown = [name for name in images if name in set(answered["first"]) | set(answered["second"])]
    if len(shown) < 2:
        return {}
    index = {name: number for number, name in enumerate(shown)}
    pairs = np.column_stack([answered["first"].map(index), answered["second"].map(index)])
    matrix = comparisons.preference_matrix(len(shown), pairs, answered[reading].to_numpy(float))
    values = comparisons.aggregate(matrix, method)
    return dict(zip(shown, (float(v) for v in values), strict=True))


def predictions(frame: pd.DataFrame, labels: pd.DataFrame, p: RankParams) -> pd.DataFrame:
    """Every method and reading's score of every compared image (label order), with its MOS."""
    mos = labels.set_index("image")["mos"]
    compared = set(frame["first"]) | set(frame["second"])
    images = [name for name in labels["image"] if name in compared]
    rows = []
    for reading in READINGS:
        for method in p.methods:
            found = scores(frame, images, reading, method)
            rows += [
                {
                    "image": name,
                    "variant": variant_name(method, reading),
                    "prediction": found.get(name, np.nan),
                    "mos": float(mos[name]),
                }
                for name in images
            ]
    return pd.DataFrame(rows, columns=list(schema.PREDICTIONS.columns))


def run(
    dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN
) -> dict[str, Any]:
    """Scores from the dataset's comparisons of a run; write the predictions and their metrics
    in the run's folders."""
    p = validate_params(params)
    source = paths.comparisons_table(dataset, run=run_name)
    frame = io.read_table(schema.COMPARISONS, source)
    if frame.empty:
        raise DogIQAError(f"{paths.show(source)}: no comparisons")
    summary = io.read_json(paths.summary("comparisons", dataset, run=run_name), "compare summary")
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset), ("image", "mos"))
    unknown = (set(frame["first"]) | set(frame["second"])) - set(labels["image"])
    if unknown:
        raise DogIQAError(f"{dataset}: compared images not in the labels: {sorted(unknown)[:3]}")
    table = predictions(frame, labels, p)
    io.write_table(schema.PREDICTIONS, paths.comparison_predictions(dataset, run=run_name), table)
    report = {
        "dataset": dataset,
        "run": run_name,
        "system": summary.get("system"),
        "readout": summary.get("readout"),
        "main": p.main,
        "images": int(table["image"].nunique()),
        "pairs": len(frame),
        "answered": int((~frame["fallback"]).sum()),
        "bootstrap_samples": p.evaluate.bootstrap,
        "confidence": p.evaluate.confidence,
        "variants": evaluate.evaluate_table(table, p.evaluate),
    }
    out = paths.comparison_metrics(dataset, run=run_name)
    io.write_json_atomic(out, report)
    headline = report["variants"][p.main]
    log.info(
        "rank %s: %s SRCC %s (n=%d) from %d answered pairs -> %s",
        dataset,
        p.main,
        headline["srcc"],
        headline["n"],
        report["answered"],
        paths.show(out),
    )
    return report
