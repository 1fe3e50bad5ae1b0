"""The evaluate stage: predictions of every variant against MOS.

Reads a run's ``data/predictions/<run>/<ds>.csv`` (and the summaries of the segment and score
stages for their counts of skipped images) and writes, in the run's folders:

- ``reports/metrics/<run>/<ds>.json``: per variant SRCC, PLCC, PLCC after the 4-parameter
  logistic fit, KRCC, bootstrap intervals, n and missing (what the notebooks read);
- ``reports/metrics/<run>/<ds>.headline.json`` (``dvc metrics``): the main variant's SRCC, PLCC,
  their intervals and n, so that ``dvc exp show`` compares experiments on a few columns;
- ``reports/plots/<run>/<ds>.csv`` (``dvc plots``): image, mos, prediction of the main variant.

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


HEADLINE_METRICS = ("srcc", "plcc")


def skipped_counts(dataset: str, run_name: str = paths.DEFAULT_RUN) -> dict[str, int]:
    """Images the segment and score stages skipped, from their summaries when present."""
    counts = {}
    for stage, kind in (("segment", "regions"), ("score", "scores")):
        path = paths.summary(kind, dataset, run=run_name)
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


def headline(result: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one variant that ``dvc metrics`` and ``dvc exp show`` list: n, SRCC and
    PLCC with their bootstrap intervals (None without bootstrap)."""
    out: dict[str, Any] = {"n": result["n"]}
    for metric in HEADLINE_METRICS:
        low, high = result.get(f"{metric}_ci") or (None, None)
        out.update({metric: result[metric], f"{metric}_ci_low": low, f"{metric}_ci_high": high})
    return out


def run(
    dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN
) -> dict[str, Any]:
    """Evaluate one dataset's predictions of a run; write the metrics JSON, the headline JSON and
    the plots CSV."""
    p = validate_params(params)
    main = main_variant(params)
    source = paths.predictions_table(dataset, run=run_name)
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
        "skipped": skipped_counts(dataset, run_name),
        "bootstrap_samples": p.bootstrap,
        "confidence": p.confidence,
        "variants": evaluate_table(table, p),
    }
    io.write_json_atomic(paths.metrics_file(dataset, run=run_name), report)
    main_result = report["variants"][main]
    io.write_json_atomic(paths.headline_file(dataset, run=run_name), headline(main_result))
    plot = table[table["variant"] == main].dropna(subset=["prediction"])
    plot_path = paths.plot_file(dataset, run=run_name)
    io.write_csv_atomic(plot_path, plot.loc[:, ["image", "mos", "prediction"]])
    log.info(
        "evaluate %s/%s: %s SRCC %s PLCC %s (n=%d)",
        run_name,
        dataset,
        main,
        main_result["srcc"],
        main_result["plcc"],
        main_result["n"],
    )
    if main_result["note"]:  # e.g. too few images for the logistic fit: one line, no traceback
        log.warning("evaluate %s/%s: %s: %s", run_name, dataset, main, main_result["note"])
    return report
