"""``dogiqa warm``: fill the per-image caches of the two long stages on every core, before
``dvc repro``.

DVC runs one stage at a time, and segment and score take most of a CPU run. Both keep a per-image
cache keyed by everything that changes a result (``dogiqa.cache``): an image found there is read,
not computed again. ``make repro`` runs this command first: the segment stages of the pipeline's
datasets run side by side, then the score stages, each dataset's images split into shards
(``dogiqa.sharding``, whose caches every later run of the dataset consults); then ``dvc repro``
runs every stage as always, and segment and score find their images in the caches. What the
pipeline writes is what ``dvc repro`` alone writes; the shards' own tables are removed.

Only the CPU backends run side by side (a model on a GPU is not loaded twice); with any other, on
one core, or where params.yaml already shards the score stage, this command does nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dogiqa import paths, sharding

SIDE_BY_SIDE = {"segment": ("classical",), "score": ("classical",)}
"""Stage -> the backends whose runs may share the machine (CPU-only, nothing loaded twice)."""


def jobs_for(params: Mapping[str, Any], cores: int | None = None) -> int:
    """Processes to run at once: the cores, or 1 where a chosen backend must run alone."""
    chosen = {stage: params.get(stage, {}).get("backend") for stage in SIDE_BY_SIDE}
    if any(backend not in SIDE_BY_SIDE[stage] for stage, backend in chosen.items()):
        return 1
    if params["score"].get("shards", [0]) != [0]:  # the pipeline's own shards: leave them be
        return 1
    return max(1, cores if cores is not None else (os.cpu_count() or 1))


def _command(params_file: Path, *words: str) -> list[str]:
    return [sys.executable, "-m", "dogiqa", "--params", str(params_file), *words]


def _run_all(commands: Sequence[list[str]], jobs: int) -> list[str]:
    """Run ``commands`` ``jobs`` at a time; return one line per failure (its last stderr line)."""

    def one(command: list[str]) -> str | None:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return None
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"{' '.join(command[command.index('--params') + 2 :])}: {last}"

    with ThreadPoolExecutor(jobs) as pool:
        return [line for line in pool.map(one, commands) if line is not None]


def run(params: Mapping[str, Any], params_file: Path, cores: int | None = None) -> int:
    """Warm the caches of the datasets' segment and score stages; print what was done."""
    datasets = list(params.get("datasets", []))
    jobs = jobs_for(params, cores)
    if jobs == 1 or not datasets:
        print("warm: nothing to run side by side (one core, or a backend that runs alone)")
        return 0
    started = time.monotonic()
    failures = _run_all([_command(params_file, "segment", "--dataset", d) for d in datasets], jobs)
    segmented = time.monotonic()
    # Score with the images of each dataset split into `jobs` shards (round-robin), all at once.
    sharded = json.loads(json.dumps(params))
    sharded["score"]["shards"] = list(range(jobs))
    with tempfile.TemporaryDirectory() as folder:
        shard_params = Path(folder) / "params.yaml"
        shard_params.write_text(json.dumps(sharded), encoding="utf-8")  # JSON is YAML
        commands = [
            _command(shard_params, "score", "--dataset", d, "--shard", f"{i}/{jobs}")
            for d in datasets
            for i in range(jobs)
        ]
        failures += _run_all(commands, jobs)
    for dataset in datasets:  # the shards' tables: dvc repro writes the dataset's own
        for index in range(jobs):
            sharding.table_path(dataset, index).unlink(missing_ok=True)
            sharding.summary_path(dataset, index).unlink(missing_ok=True)
    scored = time.monotonic()
    print(
        f"warm: {len(datasets)} dataset(s), {jobs} processes: segment {segmented - started:.0f} s, "
        f"score {scored - segmented:.0f} s (caches in {paths.show(paths.at(paths.CACHE))})"
    )
    for line in failures:  # dvc repro runs the stage again and stops there with its one line
        print(f"warm: {line}", file=sys.stderr)
    return 0
