"""Benchmark of the classical metrics: agreement with MOS and cost, for any implementation.

Measures, for each metric of ``dogiqa.scoring.classical.SCORERS`` (whatever ``dogiqa`` is on
the path, so the same script measures two versions of the code):

(a) ``whole_image``: on the LIVE Challenge test images of the local mirror (627 of 1162), the
    Spearman correlation of the metric (sign flipped: lower is better) with MOS, and seconds per
    image;
(b) ``score_stage``: on the first ``--images`` images of the regions table
    ``data/regions/livec.csv`` (run the download and segment stages first), the seconds per
    image of scoring the whole image and every distinct region crop as the score stage does
    (``ClassicalScorer.score``, crops enlarged to the metric's minimum side).

Each timing is one pass after a warm-up call; the machine's other load shows in them, so compare
runs made back to back.

    python benchmarks/classical_metrics.py [--images 50] [--out FILE]
    PYTHONPATH=<other checkout>/src python benchmarks/classical_metrics.py --out other.json

The default FILE is reports/bench/classical_metrics.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.io
from scipy.stats import spearmanr

import dogiqa
from dogiqa import crops, io, paths, schema
from dogiqa.images import load_rgb
from dogiqa.scoring.classical import SCORERS, ClassicalScorer

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()


def livec_test_images() -> pd.DataFrame:
    """Mirrored LIVE Challenge test images with their MOS, in label-file order."""
    labels = MIRROR / "labels"
    names = scipy.io.loadmat(labels / "livec_AllImages_release.mat")["AllImages_release"]
    mos = scipy.io.loadmat(labels / "livec_AllMOS_release.mat")["AllMOS_release"].ravel()
    table = pd.DataFrame({"image": [str(n[0][0]) for n in names], "mos": mos})
    table = table[~table["image"].str.startswith("t")]  # the seven training images
    folder = MIRROR / "livec" / "Images"
    table["path"] = [folder / name for name in table["image"]]
    return table[[p.exists() for p in table["path"]]].reset_index(drop=True)


def whole_image(images: pd.DataFrame) -> dict[str, Any]:
    photos = [load_rgb(path) for path in images["path"]]
    out: dict[str, Any] = {"images": len(photos)}
    for metric, spec in SCORERS.items():
        spec.function(photos[0])  # warm-up: parameter files, imports
        start = time.perf_counter()
        values = np.array([spec.function(photo) for photo in photos])
        seconds = time.perf_counter() - start
        finite = np.isfinite(values)
        out[metric] = {
            "srcc_with_mos": float(spearmanr(-values[finite], images["mos"][finite])[0]),
            "seconds_per_image": seconds / len(photos),
            "not_finite": int((~finite).sum()),
        }
    return out


def score_stage(count: int) -> dict[str, Any]:
    regions = io.read_table(schema.REGIONS, paths.regions_table("livec", base=ROOT))
    labels = io.read_table(schema.LABELS, paths.labels_table("livec", base=ROOT))
    where = dict(zip(labels["image"], labels["path"], strict=True))
    groups = list(crops.image_groups(regions))[:count]
    per_image = []
    for name, group in groups:
        image = load_rgb(paths.at(where[name], base=ROOT))
        per_image.append(crops.region_crops(image, group.to_dict("records"), "bbox")[0])
    total = sum(len(c) for c in per_image)
    out: dict[str, Any] = {"images": len(groups), "crops_per_image": total / len(groups)}
    for metric in SCORERS:
        scorer = ClassicalScorer(metric, 7)
        scorer.score(per_image[0][:1])
        start = time.perf_counter()
        for image_crops in per_image:
            scorer.score(image_crops)
        seconds = time.perf_counter() - start
        out[metric] = {
            "seconds_per_image": seconds / len(groups),
            "seconds_per_crop": seconds / total,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / paths.BENCH / "classical_metrics.json")
    args = parser.parse_args(argv)
    result = {
        "whole_image": whole_image(livec_test_images()),
        "score_stage": score_stage(args.images),
        "settings": {
            # relative to the project root (another checkout: a path from it)
            "code": Path(os.path.relpath(Path(dogiqa.__file__).parent, ROOT)).as_posix(),
            "references": {metric: spec.reference for metric, spec in SCORERS.items()},
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    io.write_json_atomic(args.out, result)
    for metric in SCORERS:
        whole, stage = result["whole_image"][metric], result["score_stage"][metric]
        print(
            f"{metric}: SRCC {whole['srcc_with_mos']:.3f}, {whole['seconds_per_image']:.3f} s per "
            f"image, {stage['seconds_per_image']:.3f} s per image with its crops"
        )
    return result


if __name__ == "__main__":
    main()
