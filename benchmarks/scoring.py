"""Benchmark of the hf scoring readouts on the tiny random-weight Qwen2.5-VL (CPU, fp32).

Measures, in one run and on the same real crops (LIVE Challenge photos from the mirror):

(a) ``logits_vs_generate_speedup``: time of the ``generate`` readout (greedy decoding of one
    token, then ``int()``) over the time of the ``logits`` readout (one forward pass, level
    logits), both called once per crop as the authors' code calls its model;
(b) ``batched_vs_sequential_speedup``: time of the logits readout one crop at a time over the
    time with all crops in left-padded batches;
(c) ``padding_per_token_before`` / ``_after``: padding tokens per real token in the batches of
    the logits readout over the distinct crops of real photos, segmented and cut as the score
    stage does (benchmarks/photos.py), ``batch_size`` 8: before, each image's crops batched in
    their order (the score stage's batches before it streamed images); after, the crops of
    ``lookahead`` (16) images sorted by token count and batched (what the stage runs now), both
    read from the attention masks of the processor's outputs (not timed: the tiny model's time
    hardly grows with its input's length). A padded batch is as long as its longest crop, so
    padding grows with the spread of token counts: the tiny model is measured with its
    processor's pixel limits set to Qwen2.5-VL-7B-Instruct's own (min 3136, max 12845056 px,
    and ``score.hf.max_pixels``: a 500 x 500 photo is 324 image tokens), and, under
    ``padding_by_processor``, with the 1-16 image tokens of the tests' tiny processor too.

Each configuration runs ``--repeats`` times after a warm-up, interleaved so that slow phases of
the machine hit all of them alike. Ratios use the fastest run of each configuration (the run
least disturbed by other load, as ``timeit`` advises); medians and every run are kept too. A
tiny random-weight model measures the pipeline's overhead structure, not the speed of a real
7B model.

    python benchmarks/scoring.py [--crops 16] [--batch-size 8] [--repeats 15] [--threads 1]
                                 [--images 32] [--lookahead 16]
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

from photos import segmented  # noqa: E402
from tiny_models import build_qwen25vl  # noqa: E402

from dogiqa import io, paths  # noqa: E402
from dogiqa.images import load_rgb  # noqa: E402
from dogiqa.scoring import measure_stream  # noqa: E402
from dogiqa.scoring.hf import HFScorer  # noqa: E402

MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
PHOTOS = ("1000.JPG", "1013.JPG", "1024.JPG", "1113.JPG")
PROMPT = "paper_word_k7"
QWEN_PIXELS = (3136, 12845056)
"""Qwen2.5-VL-7B-Instruct's processor limits (its preprocessor_config.json: min_pixels,
max_pixels)."""
MAX_PIXELS = 1003520
"""``score.hf.max_pixels`` of params.yaml: crops above it are shrunk first (1280 tokens)."""


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


def scorer(
    model: Path, readout: str, batch_size: int, lookahead: int = 1, max_pixels: int = 0
) -> HFScorer:
    section = {
        "model": str(model),
        "revision": None,
        "trust_remote_code": False,
        "dtype": "float32",
        "device": "cpu",
        "batch_size": batch_size,
        "lookahead": lookahead,
        "max_pixels": max_pixels,
        "min_side": 28,
        "local_files_only": True,
    }
    return HFScorer.from_params(section, PROMPT, 7, readout)


def in_order(s: HFScorer, images: list[list[Image.Image]]) -> None:
    """Each image's crops in batches of ``batch_size`` in their order (one call per batch)."""
    for crops in images:
        for start in range(0, len(crops), s.batch_size):
            s.score(crops[start : start + s.batch_size])


def grouped(s: HFScorer, images: list[list[Image.Image]]) -> None:
    for _ in measure_stream(s, enumerate(images)):
        pass


def padding(
    model: Path, images: list[list[Image.Image]], batch_size: int, lookahead: int
) -> dict[str, Any]:
    """Padding tokens per real token of the two batchings of ``images``' crops."""
    s = scorer(model, "logits", batch_size, lookahead, MAX_PIXELS)
    masks: list[torch.Tensor] = []
    inputs = s.adapter.inputs

    def recorded(requests: Any) -> Any:
        batch = inputs(requests)
        masks.append(batch["attention_mask"])
        return batch

    s.adapter.inputs = recorded
    runs = {"per_image": in_order, "grouped": grouped}
    out: dict[str, Any] = {}
    for name, run in runs.items():
        masks.clear()
        run(s, images)
        pad = sum(int((m == 0).sum()) for m in masks)
        real = sum(int(m.sum()) for m in masks)
        out[name] = {"padding_per_token": pad / real, "padding": pad, "real": real}
        out[name]["batches"] = len(masks)
    return out


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
    parser.add_argument("--images", type=int, default=32, help="photos for (c)")
    parser.add_argument("--lookahead", type=int, default=16)
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
        photos = segmented(args.images)
        real_limits = build_qwen25vl(Path(tmp) / "qwen2_5_vl_7b_pixels", pixels=QWEN_PIXELS)
        by_processor = {
            "qwen2.5-vl-7b_pixel_limits": padding(
                real_limits, photos, args.batch_size, args.lookahead
            ),
            "tests_tiny_processor": padding(model, photos, args.batch_size, args.lookahead),
        }
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    main_padding = by_processor["qwen2.5-vl-7b_pixel_limits"]
    result = {
        "logits_vs_generate_speedup": best["generate_per_crop"] / best["logits_per_crop"],
        "batched_vs_sequential_speedup": best["logits_per_crop"] / best["logits_batched"],
        "padding_per_token_before": main_padding["per_image"]["padding_per_token"],
        "padding_per_token_after": main_padding["grouped"]["padding_per_token"],
        "padding_by_processor": by_processor,
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
            "padding_images": args.images,
            "padding_crops": sum(len(c) for c in photos),
            "padding_crop_source": "livec photos in name order, segmented with params.yaml "
            "(bbox crops)",
            "lookahead": args.lookahead,
            "max_pixels": MAX_PIXELS,
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
        f"batched vs sequential: {result['batched_vs_sequential_speedup']:.2f}x, padding per "
        f"token {result['padding_per_token_before']:.3f} -> "
        f"{result['padding_per_token_after']:.3f} -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
