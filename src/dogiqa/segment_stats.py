"""Segmentation statistics per run, dataset and backend, from the regions tables.

Writes ``reports/tables/segmentation_stats.csv`` and its Markdown twin ``.md`` with columns:
``run``, ``dataset``, ``backend``, ``images`` (segmented images), ``mean_regions`` (mean count c
per image), ``max_regions`` (the largest c among them), ``complement_share`` (share of images that
have a complement region), and over every counted image of the dataset (the count_regions
stage's table; the run's images without it): ``counted_images``, ``mean_regions_dataset`` and
``c_max_dataset`` (c_max as the paper defines it), for every enabled run and its datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from dogiqa import io, paths, runs, schema

COLUMNS = [
    "run",
    "dataset",
    "backend",
    "images",
    "mean_regions",
    "max_regions",
    "complement_share",
    "counted_images",
    "mean_regions_dataset",
    "c_max_dataset",
]
OUTPUT = "segmentation_stats"
"""The output table's name (``reports/tables/segmentation_stats.csv``)."""


def dataset_stats(
    dataset: str, regions: pd.DataFrame, counts: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """One statistics row per backend found in a dataset's regions table; ``counts`` (image,
    count) are the dataset's counted images (the regions table's own without them)."""
    rows = []
    for backend, table in regions.groupby("backend", sort=True):
        per_image = table.groupby("image", sort=False).agg(
            count=("count", "first"),
            complement=("kind", lambda kinds: bool((kinds == "complement").any())),
        )
        rows.append(
            {
                "dataset": dataset,
                "backend": backend,
                "images": len(per_image),
                "mean_regions": float(per_image["count"].mean()),
                "max_regions": int(per_image["count"].max()),
                "complement_share": float(per_image["complement"].mean()),
            }
        )
        population = per_image["count"] if counts is None else counts["count"]
        rows[-1].update(
            {
                "counted_images": len(population),
                "mean_regions_dataset": float(population.mean()),
                "c_max_dataset": int(population.max()),
            }
        )
    return rows


def validate_params(params: Mapping[str, Any]) -> list[runs.Run]:
    """The enabled runs (``runs``, ``run_datasets``); ParamError names a bad one."""
    return runs.enabled(params)


def run(params: Mapping[str, Any]) -> pd.DataFrame:
    """Statistics over the regions tables of every enabled run; writes CSV and Markdown."""
    rows: list[dict[str, Any]] = []
    for study_run in validate_params(params):
        for dataset in study_run.datasets:
            columns = ("image", "kind", "count", "backend")
            path = paths.regions_table(dataset, run=study_run.name)
            regions = io.read_table(schema.REGIONS, path, columns)
            counted = paths.region_counts(dataset, run=study_run.name)
            counts = io.read_table(schema.REGION_COUNTS, counted) if counted.exists() else None
            stats = dataset_stats(dataset, regions, counts)
            rows += [{"run": study_run.name, **row} for row in stats]
    stats = pd.DataFrame(rows, columns=COLUMNS)
    io.write_csv_atomic(paths.table(OUTPUT), stats)
    markdown = stats.to_markdown(index=False, floatfmt=".3f")
    io.write_text_atomic(paths.table(OUTPUT, ".md"), markdown + "\n")
    return stats
