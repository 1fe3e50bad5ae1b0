"""Where each stage reads and writes, relative to the project root (the folder with dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"
LABELS = DATA / "labels"
REGIONS = DATA / "regions"
SCORES = DATA / "scores"
PREDICTIONS = DATA / "predictions"
CACHE = DATA / "cache"
REPORTS = Path("reports")
TABLES = REPORTS / "tables"
FIGURES = REPORTS / "figures"
METRICS = REPORTS / "metrics"
PLOTS = REPORTS / "plots"
BENCH = REPORTS / "bench"


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def labels_table(dataset: str) -> Path:
    return LABELS / f"{dataset}.csv"


def regions_table(dataset: str) -> Path:
    return REGIONS / f"{dataset}.csv"


def scores_table(dataset: str) -> Path:
    return SCORES / f"{dataset}.csv"


def predictions_table(dataset: str) -> Path:
    return PREDICTIONS / f"{dataset}.csv"


def stage_cache(stage: str, dataset: str) -> Path:
    return CACHE / stage / f"{dataset}.jsonl"
