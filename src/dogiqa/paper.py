"""The seed papers' printed tables (``resources/paper_tables.yaml``) as data frames.

Every paper value in the reports comes from here, so a reader can trace it to a table of a cited
paper. Tables are returned in long form: one row per (table row, dataset, metric).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dogiqa import io, paths

METRICS = ("srcc", "plcc")


@cache
def load() -> dict[str, Any]:
    """The whole resource file (sources, tables, figure notes)."""
    text = resources.files("dogiqa").joinpath("resources/paper_tables.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def table_info(name: str) -> dict[str, Any]:
    """Title, citation, note, datasets and attribute columns of one table (without its rows)."""
    tables = load()["tables"]
    if name not in tables:
        raise KeyError(f"unknown paper table {name!r}; known: {sorted(tables)}")
    return {key: value for key, value in tables[name].items() if key != "rows"}


def long_table(name: str) -> pd.DataFrame:
    """Columns: label, <attrs...>, dataset, metric, paper, cite."""
    info = table_info(name)
    attrs = info.get("attrs", [])
    records = []
    for row in load()["tables"][name]["rows"]:
        for dataset, pair in row["values"].items():
            for metric, value in zip(METRICS, pair, strict=True):
                record = {"label": str(row["label"])}
                record |= {attr: row.get(attr) for attr in attrs}
                record |= {
                    "dataset": dataset,
                    "metric": metric,
                    "paper": float(value),
                    "cite": row.get("cite", info["cite"]),
                }
                records.append(record)
    return pd.DataFrame.from_records(records)


@cache
def _values_by_key(name: str) -> dict[tuple[str, str, str], list[float]]:
    """Printed values of one table by (label, dataset, metric); a list, to detect duplicates."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for row in long_table(name).itertuples(index=False):
        found.setdefault((row.label, row.dataset, row.metric), []).append(row.paper)
    return found


def value(name: str, label: str, dataset: str, metric: str) -> float:
    """One printed value, e.g. ``value("llmiqa_table3", "6", "livec", "srcc")``."""
    hits = _values_by_key(name).get((label, dataset, metric), [])
    if len(hits) != 1:
        raise KeyError(f"{name}: no single value for {label!r}, {dataset!r}, {metric!r}")
    return float(hits[0])


COMPARISON_TAIL = ["paper", "reproduced", "delta", "source"]
"""The last columns of every comparison table in reports/tables/."""


def comparison(paper_rows: pd.DataFrame, reproduced: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Printed values beside reproduced ones: paper rows first (in printed order), then rows that
    only the reproduction has (extra rows). ``reproduced`` holds ``keys``, ``reproduced`` and
    ``source``; ``delta`` = reproduced - paper (empty when either is)."""
    extra_cols = [c for c in reproduced.columns if c not in keys]
    merged = paper_rows.merge(reproduced, on=keys, how="left")
    known = paper_rows[keys].drop_duplicates()
    extras = reproduced.merge(known, on=keys, how="left", indicator=True)
    extras = extras[extras["_merge"] == "left_only"].drop(columns="_merge")
    table = pd.concat([merged, extras], ignore_index=True)
    for column in ["paper", *extra_cols]:
        if column not in table.columns:
            table[column] = None
    table["paper"] = table["paper"].astype(float)
    table["reproduced"] = table["reproduced"].astype(float)
    table["delta"] = table["reproduced"] - table["paper"]
    leading = [c for c in table.columns if c not in COMPARISON_TAIL]
    return table[leading + COMPARISON_TAIL]


def write_table(table: pd.DataFrame, name: str, folder: str | Path | None = None) -> Path:
    """Write ``<folder>/<name>.csv`` and its Markdown twin ``<name>.md`` (3 decimals)."""
    folder = Path(folder) if folder is not None else paths.at(paths.TABLES)
    target = folder / f"{name}.csv"
    io.write_csv_atomic(target, table)
    cells = table.astype(object).where(table.notna(), None)  # empty cells, not "nan"
    markdown = cells.to_markdown(index=False, floatfmt=".3f", missingval="")
    io.write_text_atomic(folder / f"{name}.md", markdown + "\n")
    return target
