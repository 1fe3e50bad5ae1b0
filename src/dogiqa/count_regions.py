"""The count_regions stage: Algorithm 1's region count c of every image of a dataset.

The paper takes c_max of s_seg = c * K / c_max over the entire dataset, not over a run's sample.
This stage reads the run's regions table (``data/regions/<run>/<ds>.csv``, the segment stage:
the counts of the run's images) and, with ``segment.count_all``, segments every other image of
the dataset with the same settings to count its regions (the count alone, no masks kept). It
writes ``data/regions/<run>/<ds>.counts.csv`` (image, count, in_sample) and its summary
(counted images, images that could not be read, c_max and the mean count over the counted
ones), which ``aggregate`` and ``segment_stats`` read.

Counting a whole dataset is the longest step of the CPU configuration (the classical segmenter
takes about 0.1 s an image, SAM 2 its full pass), and its result is small: both outputs are kept
in git (``cache: false`` in dvc.yaml), so a clone with the same images and params has them and
DVC does not count again. Counts are cached per image (``dogiqa.cache``), keyed, as the segment
stage's regions are, by the segment settings and the bytes of the image file: an interrupted
count resumes, and a new sample counts only the images it leaves out that no earlier count
holds (those the old sample had).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import cache, io, paths, schema
from dogiqa.errors import ImageError
from dogiqa.images import load_rgb
from dogiqa.segment import SegmentParams, sample_images, validate_params
from dogiqa.segmentation import Segmenter, algorithm1, build_segmenter

log = logging.getLogger(__name__)


def count_image(segmenter: Segmenter, image_path: str, settings: SegmentParams) -> int:
    """Algorithm 1's region count c of one image (what its regions table rows would say)."""
    image = load_rgb(image_path)
    height, width = image.shape[:2]
    t = settings.threshold.for_image(height, width)
    return len(algorithm1.select_regions(segmenter.masks(image), height, width, t, settings.mode))


def dataset_images(dataset: str) -> pd.DataFrame:
    """Every image of the dataset with an image file (the population of c_max), label order."""
    return sample_images(dataset, schema.Sample(size=0, seed=0))


def count_images(
    images: pd.DataFrame, settings: SegmentParams, store: cache.ImageCache
) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Region counts of ``images`` (columns image, path), from the cache where it holds them,
    and the images that could not be read, with the reason."""
    cached = store.done()
    counts: dict[str, int] = {}
    skipped: list[dict[str, str]] = []
    todo = []
    for name, listed in zip(images["image"], images["path"], strict=True):
        digest = cache.file_digest(paths.at(listed))
        entry = cached.get(name, {})
        if entry.get("file") != digest or entry.get("fingerprint") != settings.fingerprint:
            todo.append((name, listed, digest))
        elif "count" in entry:
            counts[name] = int(entry["count"])
        else:
            skipped.append({"image": name, "reason": entry.get("skipped", "")})
    log.info("count_regions: %d images, %d cached", len(images), len(images) - len(todo))
    segmenter: Segmenter | None = None
    for name, listed, digest in tqdm(todo, unit="img", desc="count regions"):
        segmenter = segmenter or build_segmenter(settings.section)  # models load once
        try:
            result: dict[str, Any] = {"count": count_image(segmenter, paths.at(listed), settings)}
            counts[name] = result["count"]
        except ImageError as exc:
            log.warning("count_regions: skipping %s: %s", name, exc)
            result = {"skipped": str(exc)}
            skipped.append({"image": name, "reason": str(exc)})
        store.add(name, {**result, "fingerprint": settings.fingerprint, "file": digest})
    return counts, skipped


def region_counts(
    dataset: str, regions: pd.DataFrame, settings: SegmentParams, run_name: str
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Per image of the dataset (of the run's images alone without ``count_all``): its region
    count and whether it is in the run's sample (columns image, count, in_sample); and the
    images outside the sample that could not be read."""
    sampled = regions.loc[regions["region"] == 0, ["image", "count"]].assign(in_sample=True)
    if not settings.count_all:
        return sampled.reset_index(drop=True), []
    everything = dataset_images(dataset)
    rest = everything[~everything["image"].isin(sampled["image"])]
    store = cache.ImageCache(paths.stage_cache("count_regions", dataset, run=run_name))
    counted, skipped = count_images(rest, settings, store)
    # label order, as the run's images come in the regions table
    others = pd.DataFrame(
        {"image": list(counted), "count": list(counted.values()), "in_sample": False}
    )
    return pd.concat([sampled, others], ignore_index=True), skipped


def summarise(
    dataset: str,
    settings: SegmentParams,
    population: pd.DataFrame,
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    counts = population["count"]
    return {
        "dataset": dataset,
        "backend": settings.backend,
        "count_all": settings.count_all,
        "counted_images": len(population),
        "in_sample": int(population["in_sample"].sum()),
        "skipped": skipped,
        "c_max_dataset": algorithm1.c_max(counts),
        "mean_regions_dataset": round(float(counts.mean()), 6) if len(counts) else None,
    }


def run(dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    """Count the regions of the dataset's images (the run's from its regions table); write the
    counts table and its summary in the run's folder; return the table."""
    settings = validate_params(params)
    columns = ("image", "region", "count")
    regions = io.read_table(schema.REGIONS, paths.regions_table(dataset, run=run_name), columns)
    population, skipped = region_counts(dataset, regions, settings, run_name)
    out = paths.region_counts(dataset, run=run_name)
    io.write_table(schema.REGION_COUNTS, out, population)
    summary = summarise(dataset, settings, population, skipped)
    io.write_json_atomic(paths.region_counts_summary(dataset, run=run_name), summary)
    log.info(
        "count_regions %s: %d images counted (%d in the run's sample), %d skipped, c_max %s -> %s",
        dataset,
        len(population),
        summary["in_sample"],
        len(skipped),
        summary["c_max_dataset"],
        paths.show(out),
    )
    return population
