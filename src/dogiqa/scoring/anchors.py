"""Data anchors of the classical scorers' level map: which values are level K and level 1.

A classical metric gives a continuous score; the score stage maps it linearly to a level position
between the metric's ``best`` (level K) and ``worst`` (level 1) values, clipping outside. Those
two values are data, stored in ``resources/classical_anchors.yaml`` and recomputed by

    python -m dogiqa.scoring.anchors [--per-dataset 200] [--seed 0]

How they are computed, and why:

- **Which images.** Real images that the default run does not evaluate: per pipeline dataset
  (LIVE Challenge and AGIQA-3k), a seeded draw of ``--per-dataset`` images among those with an
  image file that are *not* in the default (CPU) run's sample (its ``sample.size``/``seed``,
  ``dogiqa.schema.sampled``; the image paths come from ``data/labels/<ds>.csv``, so run the
  download stage first). No MOS is read: the anchors come from the metric's own values, so they
  carry no information about the human scores that the study correlates with. Equal counts per
  dataset keep one dataset's scale from dominating the shared map.
- **Which values.** Everything the score stage scores on those images: the whole image and each
  region crop (default segmentation of ``params.yaml``, ``bbox`` crops, enlarged to the scorer's
  minimum side as the scorer does). Region crops score worse than whole images (NIQE: median
  about 7.7 against 4.3), so anchors from whole images alone would clip many crops to level 1,
  and anchors from the pooled values (mostly crops) would clip the best whole images to level K.
- **Which percentiles.** Per kind (whole images, region crops) the 1st and 99th percentiles;
  ``best`` is the lower of the two 1st percentiles and ``worst`` the higher of the two 99th: the
  K levels split that range into equal parts and about 1% of each kind, at most, clips at each
  end. The extremes (0th/100th) would let one outlier (a flat crop, NIQE 40+) squeeze every
  other value into a few levels; the hand-set ranges used before (BRISQUE and PIQE 0..100, NIQE
  5..50) left much of the scale empty.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dogiqa.schema import Sample

PERCENTILES = (1.0, 99.0)
DATASETS = ("livec", "agiqa")

log = logging.getLogger(__name__)


def load() -> dict[str, dict[str, Any]]:
    """Per metric: ``best`` and ``worst`` (and how they were computed), as the scorers use them."""
    from dogiqa.scoring.classical import load_anchors

    return load_anchors()


def anchor_images(dataset: str, count: int, seed: int, sample: Sample) -> pd.DataFrame:
    """``count`` images of ``dataset`` with a file that are not in the run's ``sample``."""
    from dogiqa import io, paths, schema

    labels = io.read_table(schema.LABELS, paths.labels_table(dataset))
    chosen = ~schema.sampled(labels, sample) & (labels["path"].str.strip() != "")
    held_out = labels[chosen].sort_values("order", kind="stable")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(held_out), size=min(count, len(held_out)), replace=False))
    return held_out.iloc[picked].reset_index(drop=True)


def metric_values(images: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Each metric on each image and region crop: columns image, kind, metric, value."""
    from dogiqa import crops, paths, segment
    from dogiqa.images import load_rgb
    from dogiqa.scoring.classical import SCORERS, ClassicalScorer
    from dogiqa.segmentation import build_segmenter

    settings = segment.validate_params(params)
    segmenter = build_segmenter(settings.section)
    scorers = {metric: ClassicalScorer(metric, 7) for metric in SCORERS}
    rows = []
    for number, (name, listed) in enumerate(zip(images["image"], images["path"], strict=True)):
        path = paths.at(listed)
        regions = segment.segment_image(segmenter, path, settings)
        distinct, _ = crops.region_crops(load_rgb(path), regions, "bbox")
        kinds = ["global"] + ["region"] * (len(distinct) - 1)  # the first crop: the whole image
        for metric, scorer in scorers.items():
            for kind, crop in zip(kinds, distinct, strict=True):
                rows.append((name, kind, metric, scorer.raw_score(crop)))
        if number % 50 == 49:
            log.info("%d of %d images", number + 1, len(images))
    return pd.DataFrame(rows, columns=["image", "kind", "metric", "value"])


def summarise(values: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per metric: the anchors (the widest of the per-kind P1..P99 ranges) and the per-kind
    percentiles they come from."""
    low, high = PERCENTILES
    out: dict[str, dict[str, Any]] = {}
    for metric, group in values.groupby("metric", sort=True):
        finite = group[np.isfinite(group["value"])]
        per_kind = {
            str(kind): [float(v) for v in np.percentile(part["value"], [low, 50, high])]
            for kind, part in finite.groupby("kind", sort=True)
        }
        out[str(metric)] = {
            "best": round(min(p[0] for p in per_kind.values()), 4),
            "worst": round(max(p[2] for p in per_kind.values()), 4),
            "values": len(finite),
            "not_finite": int(len(group) - len(finite)),
            "p1_median_p99_by_kind": {
                kind: [round(v, 4) for v in p] for kind, p in per_kind.items()
            },
        }
    return out


def write(path: Path, metrics: dict[str, Any], images: dict[str, pd.DataFrame], args: Any) -> None:
    names = {ds: sorted(table["image"]) for ds, table in images.items()}
    digest = hashlib.sha256(yaml.safe_dump(names).encode()).hexdigest()
    document = {
        "about": (
            "Anchors of the classical scorers' level map (dogiqa.scoring.anchors explains the "
            "choice): over held-out images, best = the lower of the 1st percentiles of whole "
            "images and of bbox region crops, worst = the higher of their 99th percentiles. "
            "Regenerate with: python -m dogiqa.scoring.anchors"
        ),
        "computed": {
            "date": date.today().isoformat(),
            "command": f"python -m dogiqa.scoring.anchors --per-dataset {args.per_dataset} "
            f"--seed {args.seed}",
            "percentiles": list(PERCENTILES),
            "held_out_from": "the default run's sample (runs.cpu: sample.size, sample.seed)",
            "segment": "params.yaml segment section at the time (classical backend)",
            "crop": "bbox",
            "images_sha256": digest,
        },
        "metrics": metrics,
        "images": names,
    }
    text = yaml.safe_dump(document, sort_keys=False, width=100, default_flow_style=None)
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    from dogiqa import config, paths, runs, schema
    from dogiqa.scoring import classical

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-dataset", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", type=Path, help="params file (default: the project's)")
    default_out = Path(str(resources.files("dogiqa.resources") / classical.ANCHORS_FILE))
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--values", type=Path, help="also write every metric value (CSV) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = runs.run_params(config.load_params(args.params), paths.DEFAULT_RUN)
    sample = schema.sample_params(params)
    images = {ds: anchor_images(ds, args.per_dataset, args.seed, sample) for ds in DATASETS}
    values = pd.concat(
        [metric_values(table, params).assign(dataset=ds) for ds, table in images.items()]
    )
    if args.values:
        values.to_csv(args.values, index=False)
    metrics = summarise(values)
    write(args.out, metrics, images, args)
    for metric, anchor in metrics.items():
        log.info("%s: best %.4f, worst %.4f", metric, anchor["best"], anchor["worst"])
    log.info("-> %s", args.out)


if __name__ == "__main__":
    main()
