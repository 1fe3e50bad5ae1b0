"""Benchmark of the hf scoring readouts on the tiny random-weight Qwen2.5-VL (CPU, fp32).

Measures, in one run and on the same real crops (LIVE Challenge photos from the mirror):

(a) ``logits_vs_generate_speedup``: time of the ``generate`` readout (greedy decoding of one
    token, then ``int()``) over the time of the ``logits`` readout (one forward pass, level
    logits), both called once per crop as the authors' code calls its model;
(b) ``batched_vs_sequential_speedup``: time of the logits readout one crop at a time over the
    time with all crops in left-padded batches.

Each configuration runs ``--repeats`` times after a warm-up, interleaved so that slow phases of
the machine hit all of them alike. Ratios use the fastest run of each configuration (the run
least disturbed by other load, as ``timeit`` advises); medians and every run are kept too. A
tiny random-weight model measures the pipeline's overhead structure, not the speed of a real
7B model.

    python benchmarks/scoring.py [--crops 16] [--batch-size 8] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builder lives with the tests

from tiny_models import build_qwen25vl  # noqa: E402

from dogiqa import io, paths  # noqa: E402
from dogiqa.images import load_rgb  # noqa: E402
from dogiqa.scoring.hf import HFScorer  # noqa: E402

MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
PHOTOS = ("1000.JPG", "1013.JPG", "1024.JPG", "1113.JPG")
PROMPT = "paper_word_k7"


def real_crops(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` crops of 60-200 px sides at seeded positions in real photos."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(load_rgb(MIRROR / "livec" / "Images" / p)) for p in PHOTOS]
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = (int(v) for v in rng.integers(60, 201, 2))
        x0 = int(rng.integers(0, photo.width - w))
        y0 = int(rng.integers(0, photo.height - h))
        crops.append(photo.crop((x0, y0, x0 + w, y0 + h)))
    return crops


def scorer(model: Path, readout: str, batch_size: int) -> HFScorer:
    section = {
        "model": str(model),
        "revision": None,
        "trust_remote_code": False,
        "dtype": "float32",
        "device": "cpu",
        "batch_size": batch_size,
        "max_pixels": 0,
        "min_side": 28,
        "local_files_only": True,
    }
    return HFScorer.from_params(section, PROMPT, 7, readout)


def measure(
    configs: dict[str, HFScorer], crops: list[Image.Image], repeats: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in configs}
    for s in configs.values():  # warm-up
        s.score(crops)
    for _ in range(repeats):
        for name, s in configs.items():
            start = time.perf_counter()
            s.score(crops)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / paths.BENCH / "scoring.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    crops = real_crops(args.crops)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_qwen25vl(Path(tmp) / "qwen2_5_vl")
        configs = {
            "logits_per_crop": scorer(model, "logits", 1),
            "generate_per_crop": scorer(model, "generate", 1),
            "logits_batched": scorer(model, "logits", args.batch_size),
        }
        times = measure(configs, crops, args.repeats)
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "logits_vs_generate_speedup": best["generate_per_crop"] / best["logits_per_crop"],
        "batched_vs_sequential_speedup": best["logits_per_crop"] / best["logits_batched"],
        "median_ratios": {
            "logits_vs_generate": median["generate_per_crop"] / median["logits_per_crop"],
            "batched_vs_sequential": median["logits_per_crop"] / median["logits_batched"],
        },
        "best_seconds": best,
        "median_seconds": median,
        "seconds": times,
        "settings": {
            "model": "tiny random-weight Qwen2.5-VL (tests/tiny_models.py), fp32, CPU",
            "prompt": PROMPT,
            "crops": args.crops,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "crop_source": f"livec {', '.join(PHOTOS)}",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "note": "random weights: these timings show the overhead of each readout, not the speed "
        "of a real model",
    }
    io.write_json_atomic(args.out, result)
    print(
        f"logits vs generate: {result['logits_vs_generate_speedup']:.2f}x, "
        f"batched vs sequential: {result['batched_vs_sequential_speedup']:.2f}x -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
