"""The evaluate stage: predictions of every variant against MOS.

Reads ``data/predictions/<ds>.csv`` (and the summaries of the earlier stages for their counts of
skipped images) and writes:

- ``reports/metrics/<ds>.json`` (``dvc metrics``): per variant SRCC, PLCC, PLCC after the
  4-parameter logistic fit, KRCC, bootstrap intervals, n and missing;
- ``reports/plots/<ds>.csv`` (``dvc plots``): image, mos, prediction of the main variant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import aggregate, config, io, metrics, paths
from dogiqa.errors import DogIQAError

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("image", "variant", "prediction", "mos")


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


def metrics_path(dataset: str) -> Path:
    return paths.METRICS / f"{dataset}.json"


def plots_path(dataset: str) -> Path:
    return paths.PLOTS / f"{dataset}.csv"


def skipped_counts(dataset: str) -> dict[str, int]:
    """Images the segment and score stages skipped, from their summary JSONs when present."""
    counts = {}
    for stage, table in (("segment", paths.regions_table), ("score", paths.scores_table)):
        path = table(dataset).with_name(f"{dataset}.summary.json")
        if not path.exists():
            continue
        try:
            skipped = json.loads(path.read_text(encoding="utf-8")).get("skipped", 0)
        except (json.JSONDecodeError, AttributeError):
            raise DogIQAError(f"{path}: not a JSON summary") from None
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


def _main_variant(dataset: str, table: pd.DataFrame) -> str:
    path = aggregate.summary_path(dataset)
    if path.exists():
        main = json.loads(path.read_text(encoding="utf-8")).get("main")
        if main in set(table["variant"]):
            return main
    return str(table["variant"].iloc[0])


def run(dataset: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one dataset's predictions; write the metrics JSON and the plots CSV."""
    p = validate_params(params)
    source = paths.predictions_table(dataset)
    table = io.read_table(
        source, tuple(PREDICTION_COLUMNS), "predictions table", {"image": str, "variant": str}
    )
    if table.empty:
        raise DogIQAError(f"{source}: no predictions")
    main = _main_variant(dataset, table)
    report = {
        "dataset": dataset,
        "main": main,
        "skipped": skipped_counts(dataset),
        "bootstrap_samples": p.bootstrap,
        "confidence": p.confidence,
        "variants": evaluate_table(table, p),
    }
    io.write_json_atomic(metrics_path(dataset), report)
    plot = table[table["variant"] == main].dropna(subset=["prediction"])
    io.write_csv_atomic(plots_path(dataset), plot.loc[:, ["image", "mos", "prediction"]])
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


def load_metrics(dataset: str) -> dict[str, Any] | None:
    """This study's metrics of a dataset (``reports/metrics/<ds>.json``), None before the run."""
    path = metrics_path(dataset)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def load_predictions(dataset: str) -> pd.DataFrame | None:
    """This study's predictions table of a dataset, None before the run."""
    path = paths.predictions_table(dataset)
    return pd.read_csv(path, dtype={"image": str}) if path.exists() else None


def configuration_label(params: Mapping[str, Any]) -> str:
    """A short description of the run's segmenter and scorer, read from params.yaml."""
    segment = params.get("segment", {})
    score = params.get("score", {})
    seg = segment.get("backend", "?")
    if seg == "classical":
        seg = f"classical ({segment.get('classical', {}).get('method', '?')})"
    backend = score.get("backend", "?")
    sub = score.get(backend, {}) if isinstance(score.get(backend), dict) else {}
    scorer = sub.get("scorer") or sub.get("model") or backend
    return f"{seg} segmentation + {scorer} scoring, K={score.get('K', '?')}"


def is_paper_configuration(params: Mapping[str, Any]) -> bool:
    """True for SAM 2 regions scored by an MLLM on every image: the paper's setting."""
    segment = params.get("segment", {}).get("backend")
    score = params.get("score", {}).get("backend")
    subset = params.get("download", {}).get("subset_size")
    return segment == "sam2" and score in ("hf", "openai") and subset == 0
