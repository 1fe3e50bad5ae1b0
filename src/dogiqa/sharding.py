"""Sharding the score stage: N machines or GPUs each score a disjoint share of a dataset.

Shard I of N takes every N-th image of the regions table, starting with the I-th (round-robin
in label order): deterministic, disjoint, together covering every image, and balanced to within
one image. N is the length of ``score.shards`` (``[0]``: one shard, no sharding;
``[0, 1, 2, 3]``: four). Shard I of a run writes ``data/scores/<run>/shards/<ds>/<I>.csv`` and
``<I>.summary.json`` and keeps its own cache,
``data/cache/score/<run>/<ds>.shard-<I>-of-<N>.jsonl``; ``dogiqa.merge_scores`` joins the shards
into ``data/scores/<run>/<ds>.csv``, byte-identical to a single run. docs/scaleout.md shows
the DVC form (a matrix over dataset x shard, then a merge per dataset) and how to run shards on
separate machines.

Commands (without ``--shard``, ``score`` runs the whole dataset):

    python -m dogiqa score --run paper --dataset livec --shard 2      # or --shard 2/4
    python -m dogiqa merge-scores --run paper --dataset livec
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogiqa import paths
from dogiqa.errors import DogIQAError, ParamError

SHARDS = "shards"
"""The shards' folder below a run's scores folder."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, images: Sequence[str]) -> list[str]:
        """This shard's images among ``images`` (in their order)."""
        return list(images)[self.index :: self.count]


def shard_count(section: Mapping[str, Any]) -> int:
    """N from ``score.shards``, which must be the list [0, 1, ..., N-1]."""
    ids = section.get("shards", [0])
    if (
        not isinstance(ids, list)
        or not ids
        or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)
        or ids != list(range(len(ids)))
    ):
        raise ParamError("score.shards", f"must be the list [0, 1, ..., N-1], got {ids!r}")
    return len(ids)


def parse(text: str, count: int) -> Shard:
    """``I`` or ``I/N`` (N must equal the length of ``score.shards``) as a Shard."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+)\s*)?", str(text))
    if match is None:
        raise DogIQAError(f"--shard: expected I or I/N (e.g. 2/4), got {text!r}")
    index = int(match.group(1))
    if match.group(2) is not None and int(match.group(2)) != count:
        raise ParamError(
            "score.shards",
            f"lists {count} shard(s) but --shard {text} asks for {match.group(2)}",
        )
    if index >= count:
        raise ParamError("score.shards", f"has no shard {index} (shards 0..{count - 1})")
    return Shard(index, count)


def _shard_file(dataset: str, index: int, suffix: str, run: str) -> Path:
    return paths.at(paths.SCORES / run / SHARDS / dataset / f"{index}{suffix}")


def table_path(dataset: str, index: int, *, run: str = paths.DEFAULT_RUN) -> Path:
    return _shard_file(dataset, index, ".csv", run)


def summary_path(dataset: str, index: int, *, run: str = paths.DEFAULT_RUN) -> Path:
    return _shard_file(dataset, index, ".summary.json", run)


def cache_path(dataset: str, shard: Shard | None, *, run: str = paths.DEFAULT_RUN) -> Path:
    """The cache a run writes to: one per shard, so that shards may run side by side."""
    if shard is None:
        return paths.stage_cache("score", dataset, run=run)
    name = f"{dataset}.shard-{shard.index}-of-{shard.count}"
    return paths.stage_cache("score", name, run=run)


def cache_paths(dataset: str, *, run: str = paths.DEFAULT_RUN) -> list[Path]:
    """Every score cache of ``dataset`` in a run (the whole-dataset one and those of any
    shards)."""
    whole = paths.stage_cache("score", dataset, run=run)
    shards = sorted(whole.parent.glob(f"{dataset}.shard-*-of-*.jsonl"))
    return ([whole] if whole.exists() else []) + shards
