"""The segment stage: each image of a run's sample of a dataset -> its regions (Algorithm 1).

Reads ``data/labels/<ds>.csv`` (the run's sample of the images with an image file,
``dogiqa.schema.stage_images``), segments each image with the configured backend
(``dogiqa.segmentation``), checks the result (``algorithm1.check_regions_table``) and writes
``data/regions/<run>/<ds>.csv`` (see docs/data_contracts.md) and its summary (counts, skipped
images with their reasons, c_max, mean regions per image). The count_regions stage
(``dogiqa.count_regions``) counts the regions of the dataset's other images with the same
settings (``segment.count_all``). Finished images are cached one per line
(``dogiqa.cache``), so an interrupted run resumes where it stopped; cache lines made with other
segment params (or another version of the segmenter or of Algorithm 1) are redone, and so is an
image whose file changed (one skipped as unreadable is retried then).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import cache, config, io, paths, schema
from dogiqa.errors import DogIQAError, ImageError, ParamError
from dogiqa.images import load_rgb
from dogiqa.segmentation import (
    SEGMENTERS,
    Segmenter,
    algorithm1,
    backend,
    backend_settings,
    build_segmenter,
)

log = logging.getLogger(__name__)

COLUMNS = list(schema.REGIONS.columns)


@dataclass(frozen=True)
class SegmentParams:
    backend: str
    mode: str
    threshold: algorithm1.Threshold
    section: dict[str, Any]
    sample: schema.Sample
    """The run's images (``sample``); not part of the fingerprint: it picks images, not results."""
    count_all: bool = True
    """The count_regions stage also counts the images outside the sample (not part of the
    fingerprint: it picks images, not results)."""

    @cached_property
    def fingerprint(self) -> str:
        """Hash of what shapes the regions: this stage's settings, the backend's settings that
        change its masks, and the code of the backend and of Algorithm 1."""
        used = {k: v for k, v in self.section.items() if k not in (*SEGMENTERS, "count_all")}
        chosen = backend(self.backend)
        masks = chosen.result_settings(self.section[self.backend])
        code = cache.code_version(algorithm1, chosen.build)
        return cache.fingerprint({**used, self.backend: masks, "code": code})


def validate_params(params: Mapping[str, Any]) -> SegmentParams:
    """Check the ``segment`` and ``sample`` sections; raise ParamError naming the first bad
    param."""
    sample = schema.sample_params(params)
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
        sample=sample,
        count_all=config.get_bool(section, "segment", "count_all"),
    )


def sample_images(dataset: str, sample: schema.Sample) -> pd.DataFrame:
    """Rows of the labels table that the run's image stages process, in label order."""
    columns = ("image", "path", "order")
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset), columns)
    return schema.stage_images(labels, sample)


def segment_image(
    segmenter: Segmenter, image_path: str | Path, settings: SegmentParams
) -> list[dict[str, Any]]:
    """The regions-table rows of one image (without ``image`` and ``backend``)."""
    image = load_rgb(image_path)
    height, width = image.shape[:2]
    masks = segmenter.masks(image)
    t = settings.threshold.for_image(height, width)
    return algorithm1.region_rows(masks, height, width, t, settings.mode)


def _reusable(entry: Mapping[str, Any], settings: SegmentParams, digest: str | None) -> bool:
    """A cached result still valid: made from the same image bytes, and either regions made with
    these settings or a skip (a file that failed to load is retried once it changes)."""
    if entry.get("file") != digest:
        return False
    return "skipped" in entry or entry.get("fingerprint") == settings.fingerprint


def _process(
    dataset: str, images: pd.DataFrame, store: cache.ImageCache, settings: SegmentParams
) -> dict[str, Any]:
    cached = store.done()
    files = {
        name: paths.at(path) for name, path in zip(images["image"], images["path"], strict=True)
    }
    digests = {name: cache.file_digest(path) for name, path in files.items()}
    done = {
        name: cached[name]
        for name in files
        if name in cached and _reusable(cached[name], settings, digests[name])
    }
    todo = [name for name in images["image"] if name not in done]
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
        for name in todo:
            if segmenter is None:
                segmenter = build_segmenter(settings.section)  # loads models once, if needed
            try:
                result: dict[str, Any] = {"rows": segment_image(segmenter, files[name], settings)}
            except ImageError as exc:
                log.warning("segment: skipping %s: %s", name, exc)
                result = {"skipped": str(exc)}
            result.update(fingerprint=settings.fingerprint, file=digests[name])
            store.add(name, result)
            done[name] = result
            bar.update()
    return done


def _tables(
    images: pd.DataFrame, done: Mapping[str, Any], backend_name: str
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in images["image"]:
        result = done[name]
        if "skipped" in result:
            skipped.append({"image": name, "reason": result["skipped"]})
            continue
        rows += [{**row, "image": name, "backend": backend_name} for row in result["rows"]]
    return pd.DataFrame(rows, columns=COLUMNS), skipped


def check(table: pd.DataFrame, settings: SegmentParams) -> None:
    """Refuse a regions table that breaks its contract (Algorithm 1's invariants)."""
    problems = algorithm1.check_regions_table(table, settings.threshold, settings.mode)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DogIQAError(f"regions table fails its check: {problems[0]}{more}")


def run(dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    """Segment the run's sample of the dataset; write the regions table and its summary (in the
    run's folders); return the table."""
    settings = validate_params(params)
    images = sample_images(dataset, settings.sample)
    store = cache.ImageCache(paths.stage_cache("segment", dataset, run=run_name))
    done = _process(dataset, images, store, settings)
    table, skipped = _tables(images, done, settings.backend)
    check(table, settings)
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
    out = paths.regions_table(dataset, run=run_name)
    io.write_table(schema.REGIONS, out, table)
    io.write_json_atomic(paths.summary("regions", dataset, run=run_name), summary)
    log.info(
        "segment %s: %d images, %d skipped -> %s",
        dataset,
        len(images),
        len(skipped),
        paths.show(out),
    )
    return table
