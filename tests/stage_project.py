"""Small projects for stage-level tests: a labels table of real LIVE Challenge images from the
local mirror (or of the in-repo fixture images), the study's params with a few changes, and the
CLI run as a real subprocess."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from dogiqa import paths, runs

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
LIVEC_IMAGES = MIRROR / "livec" / "Images"
FIXTURE_IMAGES = ROOT / "tests" / "fixtures" / "data" / "images"


def real_images(count: int, start: int = 0) -> list[Path]:
    """``count`` LIVE Challenge photos of the mirror, in name order (the test is skipped, saying
    why, where the mirror is absent)."""
    if not LIVEC_IMAGES.is_dir():
        pytest.skip(f"needs the local data mirror, not found at {MIRROR} (set DOGIQA_MIRROR)")
    return sorted(LIVEC_IMAGES.glob("*.JPG"))[start : start + count]


def fixture_images() -> list[Path]:
    """The in-repo generated scenes (tests/fixtures/make_fixtures.py), in name order: scene1.png
    (320 x 240), scene1_distorted.jpg, scene2.jpg (288 x 216), scene3.bmp (240 x 200)."""
    return sorted(FIXTURE_IMAGES.iterdir())


def write_labels(root: Path, images: list[tuple[str, str]], dataset: str = "livec") -> Path:
    """A labels table listing ``(name, path)`` rows."""
    table = pd.DataFrame(
        [
            {"image": name, "path": path, "mos": 50.0 + i, "mos_norm": 0.5, "order": i}
            for i, (name, path) in enumerate(images)
        ]
    )
    out = paths.labels_table(dataset, base=root)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return out


def one_run(
    datasets: list[str],
    name: str = paths.DEFAULT_RUN,
    profile: str = "cpu",
    compare: list[str] | None = None,
) -> dict:
    """``runs``, ``run_datasets`` and ``run_comparisons`` of a study whose one run ``name``
    covers ``datasets`` (and compares those of ``compare``)."""
    entry = {"profile": profile, "datasets": list(datasets), "enabled": True}
    declared = {name: {**entry, "compare": list(compare)} if compare else entry}
    found = runs.declared({"runs": declared})
    return {
        "runs": declared,
        "run_datasets": runs.stage_items(found),
        "run_comparisons": runs.comparison_items(found),
    }


def study_params(datasets: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    """params.yaml with ``section__key__subkey=value`` changes; ``datasets``: the default run
    covers these (and is the only run).

    The classical scorer is PIQE alone (the fastest) unless a change says otherwise, so that
    tests do not depend on which scorers the study's default lists.
    """
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    params["score"]["classical"]["scorer"] = "piqe"
    if datasets is not None:
        params.update(one_run(datasets))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        section = params
        for parent in parents:
            section = section[parent]
        section[key] = value
    return params


def write_params(root: Path, params: dict[str, Any]) -> Path:
    out = root / "params.yaml"
    out.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return out


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env["DOGIQA_MIRROR"] = str(MIRROR)
    return env


def cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_cli(cwd: Path, *args: str, module: str = "dogiqa") -> subprocess.CompletedProcess:
    """``python -m dogiqa ARGS`` in ``cwd``, as a user runs it."""
    return subprocess.run(
        cli(module, *args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300
    )
