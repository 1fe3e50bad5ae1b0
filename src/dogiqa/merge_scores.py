"""Merge the score shards of a dataset into ``data/scores/<run>/<ds>.csv`` and its summary.

Reads the N shard outputs of a run (``data/scores/<run>/shards/<ds>/<I>.csv`` and
``<I>.summary.json``, N from ``score.shards``, see ``dogiqa.sharding``) and the regions table,
checks that every shard is the one the current regions table and score params call for (its
images, its settings), and writes the scores table and summary exactly as a single run of the
score stage writes them: rows in the regions table's image order, cells copied as text, counts
summed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dogiqa import io, paths, score, sharding
from dogiqa.errors import DogIQAError

log = logging.getLogger(__name__)

COUNTS = ("images", "images_scored", "regions_scored", "scorer_calls", "fallbacks", "errors")
"""Summary counts that the merged summary sums over the shards."""
LISTS = ("fallbacks_by_prompt", "skipped")
"""Summary entries that it joins."""


def _read_shard(
    dataset: str,
    shard: sharding.Shard,
    images: list[str],
    expected: Mapping[str, Any],
    run_name: str,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One shard's table (as text) and summary, checked against what it should hold."""
    table_path = sharding.table_path(dataset, shard.index, run=run_name)
    summary_path = sharding.summary_path(dataset, shard.index, run=run_name)
    for path in (table_path, summary_path):
        if not path.exists():
            raise DogIQAError(
                f"{paths.show(path)}: output of shard {shard} not found (run: python -m "
                f"dogiqa score --run {run_name} --dataset {dataset} --shard {shard})"
            )
    summary = io.read_json(summary_path, "shard summary")
    shown = paths.show(summary_path)
    absent = [k for k in (*COUNTS, *LISTS) if k not in summary]
    if absent:  # e.g. written before the summary counted errors
        raise DogIQAError(
            f"{shown}: shard summary lacks {', '.join(absent)} (written by another version of "
            f"the score stage: rerun shard {shard})"
        )
    if summary.get("shard") != str(shard):
        raise DogIQAError(
            f"{shown}: holds shard {summary.get('shard')!r}, not {shard} (stale output "
            "of another shard count: rerun the shard)"
        )
    changed = [k for k, v in expected.items() if summary.get(k) != v]
    if changed:
        raise DogIQAError(
            f"{shown}: scored with other settings ({', '.join(changed)}) than the "
            f"current score params: rerun shard {shard}"
        )
    mine = shard.select(images)
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)  # cells kept as text
    listed = set(table["image"]) | {s["image"] for s in summary["skipped"]}
    if summary["images"] != len(mine) or not listed <= set(mine):
        raise DogIQAError(
            f"{paths.show(table_path)}: images differ from shard {shard} of the current regions "
            "table (stale output: rerun the shard)"
        )
    return table, summary


def merge(
    tables: list[pd.DataFrame], summaries: list[dict[str, Any]], images: list[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The single-run table and summary from the shards' (same settings, disjoint images)."""
    position = {name: i for i, name in enumerate(images)}
    table = pd.concat(tables, ignore_index=True)
    order = table["image"].map(position).to_numpy()
    table = table.iloc[order.argsort(kind="stable")].reset_index(drop=True)
    summary = {k: v for k, v in summaries[0].items() if k != "shard"}
    for key in COUNTS:
        summary[key] = sum(int(s[key]) for s in summaries)
    summary["fallbacks_by_prompt"] = {
        p: sum(int(s["fallbacks_by_prompt"][p]) for s in summaries) for p in summary["prompt_ids"]
    }
    skipped = [entry for s in summaries for entry in s["skipped"]]
    summary["skipped"] = sorted(skipped, key=lambda entry: position[entry["image"]])
    return table, summary


def run(dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    """Join the N shards of ``dataset`` in a run; write the scores table and summary; return
    the table."""
    settings = score.validate_params(params)
    regions = score.read_regions(dataset, run_name)
    images = list(dict.fromkeys(regions["image"]))
    expected = score.settings_summary(settings)
    parts = [
        _read_shard(dataset, sharding.Shard(i, settings.shards), images, expected, run_name)
        for i in range(settings.shards)
    ]
    tables = [t for t, _ in parts]
    if any(list(t.columns) != score.columns(settings.K) for t in tables):
        raise DogIQAError(f"{dataset}: shard tables do not have the scores table's columns")
    table, summary = merge(tables, [s for _, s in parts], images)
    out = paths.scores_table(dataset, run=run_name)
    io.write_csv_atomic(out, table)  # the shards' cells, copied as text
    io.write_json_atomic(paths.summary("scores", dataset, run=run_name), summary)
    log.info(
        "merge-scores %s: %d shards, %d rows -> %s",
        dataset,
        len(parts),
        len(table),
        paths.show(out),
    )
    return table
