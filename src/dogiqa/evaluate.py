"""The evaluate stage: predictions of every variant against MOS.

Reads ``data/predictions/<ds>.csv`` (and the summaries of the segment and score stages for their
counts of skipped images) and writes:

- ``reports/metrics/<ds>.json`` (``dvc metrics``): per variant SRCC, PLCC, PLCC after the
  4-parameter logistic fit, KRCC, bootstrap intervals, n and missing;
- ``reports/plots/<ds>.csv`` (``dvc plots``): image, mos, prediction of the main variant.

The main (headline) variant is ``aggregate.main`` of params.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import config, io, metrics, paths, schema
from dogiqa.errors import DogIQAError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int
    seed: int
    confidence: float
    logistic: bool


def validate_params(params: Mapping[str, Any]) -> EvaluateParams:
    sec = config.section(params, "evaluate")
    confidence = config.get_float(sec, "evaluate", "confidence", minimum=0.5, maximum=0.999)
    return EvaluateParams(
        bootstrap=config.get_int(sec, "evaluate", "bootstrap_samples", minimum=0),
        seed=config.get_int(sec, "evaluate", "seed", minimum=0),
        confidence=confidence,
        logistic=config.get_bool(sec, "evaluate", "logistic"),
    )


def main_variant(params: Mapping[str, Any]) -> str:
    """The headline variant, ``aggregate.main``."""
    return config.get_str(config.section(params, "aggregate"), "aggregate", "main")


def skipped_counts(dataset: str) -> dict[str, int]:
    """Images the segment and score stages skipped, from their summaries when present."""
    counts = {}
    for stage, kind in (("segment", "regions"), ("score", "scores")):
        path = paths.summary(kind, dataset)
        if not path.exists():
            continue
        skipped = io.read_json(path, f"{stage} summary").get("skipped", 0)
        counts[stage] = skipped if isinstance(skipped, int) else len(skipped)
    return counts


def evaluate_table(table: pd.DataFrame, p: EvaluateParams) -> dict[str, dict[str, Any]]:
    """Metrics of every variant of a long predictions table, in the table's variant order."""
    results = {}
    variants = list(dict.fromkeys(table["variant"]))
    for name in tqdm(variants, desc="evaluate", unit="variant"):
        rows = table[table["variant"] == name]
        results[name] = metrics.evaluate(
            rows["prediction"].to_numpy(float),
            rows["mos"].to_numpy(float),
            bootstrap=p.bootstrap,
            seed=p.seed,
            logistic=p.logistic,
            level=p.confidence,
        )
    return results


def run(dataset: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one dataset's predictions; write the metrics JSON and the plots CSV."""
    p = validate_params(params)
    main = main_variant(params)
    source = paths.predictions_table(dataset)
    table = io.read_table(schema.PREDICTIONS, source)
    if table.empty:
        raise DogIQAError(f"{paths.show(source)}: no predictions")
    if main not in set(table["variant"]):
        raise DogIQAError(
            f"{paths.show(source)}: no variant {main!r} (aggregate.main); rerun the aggregate stage"
        )
    report = {
        "dataset": dataset,
        "main": main,
        "skipped": skipped_counts(dataset),
        "bootstrap_samples": p.bootstrap,
        "confidence": p.confidence,
        "variants": evaluate_table(table, p),
    }
    io.write_json_atomic(paths.metrics_file(dataset), report)
    plot = table[table["variant"] == main].dropna(subset=["prediction"])
    io.write_csv_atomic(paths.plot_file(dataset), plot.loc[:, ["image", "mos", "prediction"]])
    headline = report["variants"][main]
    log.info(
        "evaluate %s: %s SRCC %s PLCC %s (n=%d)",
        dataset,
        main,
        headline["srcc"],
        headline["plcc"],
        headline["n"],
    )
    return report
