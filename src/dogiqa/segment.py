"""The segment stage: each image of a dataset's subset -> its regions (Algorithm 1).

Reads ``data/labels/<ds>.csv`` (rows with ``in_subset`` true and an image path), segments each
image with the configured backend, and writes ``data/regions/<ds>.csv`` (see
docs/data_contracts.md) and ``data/regions/<ds>.summary.json`` (counts, skipped images with
their reasons, c_max, mean regions per image). Finished images are cached one per line, so an
interrupted run resumes where it stopped; cache lines made with other segment params are redone,
and an image skipped as unreadable is retried once its file changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import config, io, paths
from dogiqa.errors import ImageError, LabelError, ParamError
from dogiqa.images import load_rgb
from dogiqa.segmentation import (
    Segmenter,
    algorithm1,
    backend_settings,
    build_segmenter,
    sam2_backend,
)

log = logging.getLogger(__name__)

COLUMNS = [
    "image",
    "region",
    "kind",
    "x0",
    "y0",
    "x1",
    "y1",
    "area",
    "area_authors",
    "height",
    "width",
    "count",
    "rle",
    "backend",
]
LABEL_COLUMNS = ("image", "path", "in_subset", "order")


@dataclass(frozen=True)
class SegmentParams:
    backend: str
    mode: str
    threshold: algorithm1.Threshold
    section: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Hash of the settings that shape the regions (other backends' settings excluded)."""
        used = {k: v for k, v in self.section.items() if k not in ("classical", "sam2")}
        backend = dict(self.section[self.backend])
        if self.backend == "sam2":
            backend = sam2_backend.fingerprint_fields(backend)
        text = json.dumps({**used, self.backend: backend}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def validate_params(params: Mapping[str, Any]) -> SegmentParams:
    """Check the ``segment`` section; raise ParamError naming the first bad param."""
    section = config.section(params, "segment")
    backend_settings(section)  # validates backend and its subsection
    mode = config.get_choice(section, "segment", "mode", algorithm1.MODES)
    min_area = config.get_int(section, "segment", "min_area", minimum=1)
    fraction = config.get_float(section, "segment", "min_area_fraction", minimum=0.0)
    if fraction >= 1.0:
        raise ParamError("segment.min_area_fraction", f"must be < 1, got {fraction}")
    return SegmentParams(
        backend=section["backend"],
        mode=mode,
        threshold=algorithm1.Threshold(pixels=min_area, fraction=fraction),
        section=dict(section),
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not pd.isna(value)


def subset_images(dataset: str) -> pd.DataFrame:
    """Rows of the labels table that the image stages process, in label order."""
    path = paths.labels_table(dataset)
    if not path.exists():
        raise LabelError(f"{path}: labels table not found (run the download stage first)")
    labels = pd.read_csv(path, dtype={"image": str, "path": str}, keep_default_na=False)
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}")
    chosen = labels[labels["in_subset"].map(_truthy) & (labels["path"].str.strip() != "")]
    return chosen.sort_values("order", kind="stable").reset_index(drop=True)


def segment_image(
    segmenter: Segmenter, image_path: str | Path, settings: SegmentParams
) -> list[dict[str, Any]]:
    """The regions-table rows of one image (without ``image`` and ``backend``)."""
    image = load_rgb(image_path)
    height, width = image.shape[:2]
    masks = segmenter.masks(image)
    t = settings.threshold.for_image(height, width)
    return algorithm1.region_rows(masks, height, width, t, settings.mode)


def _file_state(path: str) -> list[int] | None:
    """Size and modification time of an image file (None when absent): a skip is reused only
    while the file stays as it was."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _reusable(entry: Mapping[str, Any], settings: SegmentParams, path: str) -> bool:
    """A cached result still valid: regions made with these params, or a skip of an unchanged
    file (a file that failed to load is retried once it changes)."""
    if "skipped" in entry:
        return "file" in entry and entry["file"] == _file_state(path)
    return entry.get("fingerprint") == settings.fingerprint


def _process(
    dataset: str, images: pd.DataFrame, cache: io.ImageCache, settings: SegmentParams
) -> dict[str, Any]:
    cached = cache.done()
    done = {
        name: cached[name]
        for name, path in zip(images["image"], images["path"], strict=True)
        if name in cached and _reusable(cached[name], settings, path)
    }
    todo = images[~images["image"].isin(done)]
    log.info(
        "segment %s: %d images, %d cached, %d to segment",
        dataset,
        len(images),
        len(done),
        len(todo),
    )
    segmenter: Segmenter | None = None
    with tqdm(
        total=len(images),
        initial=len(images) - len(todo),
        unit="img",
        desc=f"segment ({settings.backend})",
    ) as bar:
        for name, image_path in zip(todo["image"], todo["path"], strict=True):
            if segmenter is None:
                segmenter = build_segmenter(settings.section)  # loads models once, if needed
            try:
                result = {"rows": segment_image(segmenter, image_path, settings)}
            except ImageError as exc:
                log.warning("segment: skipping %s: %s", name, exc)
                result = {"skipped": str(exc), "file": _file_state(image_path)}
            result["fingerprint"] = settings.fingerprint
            cache.add(name, result)
            done[name] = result
            bar.update()
    return done


def _tables(
    images: pd.DataFrame, done: Mapping[str, Any], backend: str
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in images["image"]:
        result = done[name]
        if "skipped" in result:
            skipped.append({"image": name, "reason": result["skipped"]})
            continue
        rows += [{**row, "image": name, "backend": backend} for row in result["rows"]]
    return pd.DataFrame(rows, columns=COLUMNS), skipped


def run(dataset: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """Segment the dataset's subset; write the regions table and its summary; return the table."""
    settings = validate_params(params)
    images = subset_images(dataset)
    cache = io.ImageCache(paths.stage_cache("segment", dataset))
    done = _process(dataset, images, cache, settings)
    table, skipped = _tables(images, done, settings.backend)
    counts = table.loc[table["region"] == 0, "count"]
    summary = {
        "dataset": dataset,
        "backend": settings.backend,
        "mode": settings.mode,
        "min_area": settings.threshold.pixels,
        "min_area_fraction": settings.threshold.fraction,
        "images": len(images),
        "processed": len(images) - len(skipped),
        "skipped": skipped,
        "c_max": algorithm1.c_max(counts),
        "mean_regions": round(float(counts.mean()), 6) if len(counts) else None,
    }
    out = paths.regions_table(dataset)
    io.write_csv_atomic(out, table)
    io.write_json_atomic(out.with_name(f"{dataset}.summary.json"), summary)
    log.info("segment %s: %d images, %d skipped -> %s", dataset, len(images), len(skipped), out)
    return table
