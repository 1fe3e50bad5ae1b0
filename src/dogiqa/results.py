"""This study's results as the report notebooks read them: metrics, predictions, summaries, and
a description of the run's configuration.

Each loader returns None when the run has not produced the file yet, so a notebook can say so
instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from dogiqa import config, io, paths, schema


def study_params() -> dict[str, Any]:
    """params.yaml of the project."""
    return config.load_params(paths.params_file())


def load_metrics(dataset: str) -> dict[str, Any] | None:
    """This study's metrics of a dataset (``reports/metrics/<ds>.json``), None before the run."""
    path = paths.metrics_file(dataset)
    return io.read_json(path, "metrics") if path.exists() else None


def load_predictions(dataset: str) -> pd.DataFrame | None:
    """This study's predictions table of a dataset, None before the run."""
    path = paths.predictions_table(dataset)
    return io.read_table(schema.PREDICTIONS, path) if path.exists() else None


def load_summary(kind: str, dataset: str) -> dict[str, Any] | None:
    """A stage's summary of a dataset (kind: labels, regions, scores, predictions), or None."""
    path = paths.summary(kind, dataset)
    return io.read_json(path, f"{kind} summary") if path.exists() else None


def metrics_source(dataset: str) -> str:
    """The metrics file as the report tables cite it (relative to the project root)."""
    return paths.show(paths.metrics_file(dataset))


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
