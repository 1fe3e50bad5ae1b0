"""Benchmark of the pipeline in its default CPU configuration (params.yaml as it stands).

Measures, in one run, in temporary copies of the project (the local data mirror as source):

(a) ``stages``: the wall time of each per-dataset stage (download, segment, score, aggregate,
    evaluate), each run as a user runs it (``python -m dogiqa <stage> --dataset livec``, a
    fresh process with empty caches), for 50, 100 and 200 LIVE Challenge images, and the peak
    RSS of each stage process (``ru_maxrss`` from ``os.wait4``): the score stage streams images,
    so its peak stays about flat as the image count grows;
(b) ``dvc_repro``: a full ``dvc repro`` of a fresh copy, then ``dvc repro`` again after changing
    only an aggregation param, with the stages each run ran and the proof that no
    segmentation or scoring ran again (stage list, regions/scores tables and caches unchanged);
    ``aggregation_rerun_over_full_run`` is the ratio of the two. Each run is two calls,
    ``dvc repro evaluate`` (the data stages up to the metrics) and then ``dvc repro`` (the
    rest: reports, tables), so that both the whole ratio and the data stages' ratio come from the
    same runs; afterwards each stage the rerun ran is timed alone, to show where its time goes;
(c) ``model_calls``: calls per image and prompt measured from the 200-image tables (scores
    rows per image and prompt = 1 + regions; ``scorer_calls`` = distinct crops actually
    scored), against the count the authors' implementation makes on the same regions;
(d) ``classical_scorers``: per-image cost of each classical scorer (whole image and region
    crops, as the score stage cuts them) on the 50-image LIVE Challenge subset.

    python benchmarks/pipeline.py [--sizes 50 100 200] [--out reports/bench/pipeline.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()

from dogiqa import crops as region_crops  # noqa: E402
from dogiqa import io, paths, runs  # noqa: E402
from dogiqa.images import load_rgb  # noqa: E402
from dogiqa.scoring.classical import SCORERS, ClassicalScorer  # noqa: E402

DATASET = "livec"
STAGES = ("download", "segment", "count_regions", "score", "aggregate", "evaluate")
AGGREGATION_CHANGE = ("aggregate", "llmiqa_lambda", 0.5)
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore")
PROJECT_FOLDERS = ("src", "notebooks", ".dvc")


def default_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def environment(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(src), DOGIQA_MIRROR=str(MIRROR), DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_measured(args: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a command to completion: wall seconds, peak RSS (MiB) and its output."""
    log = cwd / f".bench.{time.monotonic_ns()}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    log.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "output": output}


# --- (a) stages at growing sizes ----------------------------------------------------------------


def measure_stages(size: int, root: Path) -> dict[str, Any]:
    """Run every per-dataset stage once on ``size`` images in a fresh project ``root``."""
    params = default_params()
    params["runs"] = {paths.DEFAULT_RUN: {"profile": "cpu", "datasets": [DATASET], "enabled": True}}
    params["run_datasets"] = runs.stage_items(runs.declared(params))
    params["sample"]["size"] = size
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = environment(ROOT / "src")
    out: dict[str, Any] = {"seconds": {}, "peak_rss_mib": {}}
    for stage in STAGES:
        args = [sys.executable, "-m", "dogiqa", stage, "--dataset", DATASET]
        result = run_measured(args, root, env)
        out["seconds"][stage] = result["seconds"]
        out["peak_rss_mib"][stage] = result["peak_rss_mib"]
    regions = pd.read_csv(paths.regions_table(DATASET, base=root), keep_default_na=False)
    out["images"] = int(regions["image"].nunique())
    out["regions"] = len(regions)
    return out


# --- (b) dvc repro: full run, then an aggregation change ----------------------------------------


def copy_project(target: Path) -> None:
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, target / name)
    for folder in PROJECT_FOLDERS:
        shutil.copytree(
            ROOT / folder,
            target / folder,
            ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp", "*.egg-info"),
        )


def fingerprint_files(root: Path) -> dict[str, str]:
    """SHA-256 of the segment and score outputs and caches (to show they are left alone)."""
    found = {}
    for folder in (
        paths.REGIONS,
        paths.SCORES,
        paths.CACHE / "segment",
        paths.CACHE / "count_regions",
        paths.CACHE / "score",
    ):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[path.relative_to(root).as_posix()] = digest
    return found


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def repro_twice(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """``dvc repro evaluate`` then ``dvc repro``: seconds of each and the stages that ran."""
    dvc = [sys.executable, "-m", "dvc", "repro"]
    data = run_measured([*dvc, "evaluate"], root, env)
    rest = run_measured(dvc, root, env)
    return {
        "seconds": {
            "data_stages": data["seconds"],
            "rest": rest["seconds"],
            "total": data["seconds"] + rest["seconds"],
        },
        "stages": ran_stages(data["output"]) + ran_stages(rest["output"]),
    }


def measure_repro(root: Path) -> dict[str, Any]:
    copy_project(root)
    env = environment(root / "src")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    full = repro_twice(root, env)
    before = fingerprint_files(root)
    section, key, value = AGGREGATION_CHANGE
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    old = params[section][key]
    text = (root / "params.yaml").read_text(encoding="utf-8")
    line = re.compile(rf"^(  {key}:) .*$", re.MULTILINE)
    (root / "params.yaml").write_text(line.sub(rf"\g<1> {value}", text, count=1))
    changed = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert changed[section][key] == value and changed[section] | {key: old} == params[section]
    rerun = repro_twice(root, env)
    after = fingerprint_files(root)
    single = [sys.executable, "-m", "dvc", "repro", "--single-item", "--force"]
    each = {
        stage: run_measured([*single, stage], root, env)["seconds"] for stage in rerun["stages"]
    }
    heavy = [s for s in rerun["stages"] if s.split("@")[0] in ("download", "segment", "score")]
    return {
        "changed_param": f"{section}.{key}: {old} -> {value}",
        "datasets": [d for run in runs.enabled(params) for d in run.datasets],
        "images_per_dataset": params["sample"]["size"],
        "full_run": full,
        "rerun": rerun,
        "rerun_stages_seconds_each": each,
        "rerun_stages_seconds_each_note": "measured after the rerun, one `dvc repro --single-item "
        "--force <stage>` per stage that the rerun ran (dvc's own start-up included in each)",
        "segment_or_score_reran": bool(heavy),
        "segment_and_score_files_unchanged": before == after,
        "segment_and_score_files_checked": len(before),
    }


# --- (c) model calls per image ------------------------------------------------------------------


def model_calls(root: Path) -> dict[str, Any]:
    regions = pd.read_csv(paths.regions_table(DATASET, base=root), keep_default_na=False)
    scores = pd.read_csv(paths.scores_table(DATASET, base=root), keep_default_na=False)
    summary = json.loads((root / paths.SCORES / f"{DATASET}.summary.json").read_text())
    images = scores["image"].nunique()
    prompts = scores["prompt_id"].nunique()
    per_image = regions.groupby("image", sort=False)["count"].first()
    authors_calls = float((1 + per_image.loc[scores["image"].unique()]).mean())
    return {
        "images": int(images),
        "prompts": int(prompts),
        "ours_rows_per_image_per_prompt": len(scores) / images / prompts,
        "ours_calls_per_image_per_prompt": int(summary["scorer_calls"]) / images / prompts,
        "authors_calls_per_image_per_prompt": authors_calls,
        "ours_image_loads_per_image": 1,
        "authors_image_loads_per_image_per_prompt": 2,
        "ours_formula": (
            "per prompt (or classical scorer): one call per distinct crop among the whole image "
            "and its c final regions, <= 1 + c (a region whose crop is the whole image is not "
            "scored twice), one forward pass each (logits readout); one image load serves every "
            "scorer of a run; every aggregation variant is computed from these scores with no "
            "further call"
        ),
        "authors_formula": (
            "per prompt / K variant: 1 generate call on the whole image (global script) + c "
            "generate calls, one per final mask including the complement (local script), i.e. "
            "1 + c with c = count in the regions table; the global and local scripts each load "
            "the image: 2 loads per image and variant"
        ),
    }


# --- (d) classical scorers ----------------------------------------------------------------------


def classical_costs(root: Path) -> dict[str, Any]:
    """Seconds per image of each classical scorer on the images of ``root``'s regions table."""
    regions = pd.read_csv(paths.regions_table(DATASET, base=root), keep_default_na=False)
    labels = pd.read_csv(paths.labels_table(DATASET, base=root), keep_default_na=False)
    where = dict(zip(labels["image"], labels["path"], strict=True))
    groups = list(region_crops.image_groups(regions))
    crops = []
    for name, group in groups:
        image = load_rgb(root / where[name])
        crops.append(region_crops.region_crops(image, group.to_dict("records"), "bbox")[0])
    count = sum(len(c) for c in crops)
    out: dict[str, Any] = {"images": len(groups), "crops_per_image": count / len(groups)}
    for metric, spec in SCORERS.items():
        scorer = ClassicalScorer(metric, 7)
        start = time.perf_counter()
        scorer.score(crops[0][:1])  # first call: model files, imports
        first = time.perf_counter() - start
        start = time.perf_counter()
        for image_crops in crops:
            scorer.score(image_crops)
        seconds = time.perf_counter() - start
        enlarged = sum(min(c.size) < spec.min_side for image in crops for c in image)
        out[metric] = {
            "seconds": seconds,
            "seconds_per_image": seconds / len(groups),
            "seconds_per_crop": seconds / count,
            "first_call_seconds": first,
            "min_side": spec.min_side,
            "crops_enlarged_share": enlarged / count,
        }
    base = out["piqe"]["seconds"]
    for metric in SCORERS:
        out[metric]["relative_to_piqe"] = out[metric]["seconds"] / base
    return out


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--out", type=Path, default=ROOT / paths.BENCH / "pipeline.json")
    args = parser.parse_args(argv)
    params = default_params()
    result: dict[str, Any] = {"stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"images-{size}"
            root.mkdir()
            result["stages"][str(size)] = measure_stages(size, root)
            print(f"{size} images: {result['stages'][str(size)]['seconds']}", flush=True)
        smallest, largest = (Path(tmp) / f"images-{n}" for n in (min(args.sizes), max(args.sizes)))
        result["model_calls"] = model_calls(largest)
        result["classical_scorers"] = classical_costs(smallest)
        repro = Path(tmp) / "repro"
        repro.mkdir()
        result["dvc_repro"] = measure_repro(repro)
    low, high = (result["stages"][str(n)] for n in (min(args.sizes), max(args.sizes)))
    result["growth"] = {
        "images": f"{max(args.sizes)} over {min(args.sizes)}",
        "seconds": {s: high["seconds"][s] / low["seconds"][s] for s in low["seconds"]},
        "score_peak_rss": high["peak_rss_mib"]["score"] / low["peak_rss_mib"]["score"],
    }
    full, rerun = result["dvc_repro"]["full_run"], result["dvc_repro"]["rerun"]
    result["aggregation_rerun_over_full_run"] = rerun["seconds"]["total"] / full["seconds"]["total"]
    result["aggregation_rerun_over_full_run_data_stages"] = (
        rerun["seconds"]["data_stages"] / full["seconds"]["data_stages"]
    )
    result["settings"] = {
        "dataset": DATASET,
        "sizes": args.sizes,
        "segment": {"backend": params["segment"]["backend"], "mode": params["segment"]["mode"]},
        "score": {
            "backend": params["score"]["backend"],
            "scorer": params["score"]["classical"]["scorer"],
            "crop": params["score"]["crop"],
        },
        "download_note": "download copies and verifies every mirrored image of the dataset, "
        "whatever the subset size",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    io.write_json_atomic(args.out, result)
    print(
        f"aggregation rerun / full run: {result['aggregation_rerun_over_full_run']:.3f} "
        f"(data stages {result['aggregation_rerun_over_full_run_data_stages']:.3f}) -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
