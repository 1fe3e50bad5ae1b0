"""``dogiqa score-image PATH...``: segment and score image files, show regions and final scores.

Uses the segmenter (``segment``), scorer (``score``) and main aggregation variant
(``aggregate.main``) of params.yaml, so a file is scored exactly as the pipeline scores a dataset
image. s_seg needs c_max, a dataset-level number: ``aggregate.c_max`` when it is an integer,
otherwise the c_max recorded by the aggregate stage for the study's datasets, otherwise the largest
region count among the files given (each such choice is printed).

An unreadable file gives one ``ImageError`` line on stderr; the other files are still scored and
the command exits with status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dogiqa import aggregate, paths, results, score, segment
from dogiqa.crops import make_crop
from dogiqa.errors import ImageError
from dogiqa.images import load_rgb
from dogiqa.scoring import LevelScores, Scorer
from dogiqa.segmentation import Segmenter, algorithm1, build_segmenter

REGION_FIELDS = ("region", "kind", "x0", "y0", "x1", "y1", "area", "area_authors", "count")


@dataclass
class ImageResult:
    path: str
    height: int
    width: int
    regions: list[dict[str, Any]]
    """Region rows (Algorithm 1) with their level scores."""
    score: float | None = None


class Pipeline:
    """The configured segmenter and scorer, built on first use (models load once)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.seg = segment.validate_params(params)
        self.sco = score.validate_params(params)
        self.agg = aggregate.validate_params(params)
        self._segmenter: Segmenter | None = None
        self._scorer: Scorer | None = None

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = build_segmenter(self.seg.section)
        return self._segmenter

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self.sco.units[0].build()
        return self._scorer

    def regions(self, image: np.ndarray) -> list[dict[str, Any]]:
        height, width = image.shape[:2]
        t = self.seg.threshold.for_image(height, width)
        return algorithm1.region_rows(self.segmenter.masks(image), height, width, t, self.seg.mode)

    def scores(self, image: np.ndarray, rows: list[dict[str, Any]]) -> list[LevelScores]:
        if self.sco.crop == "whole":  # every region is the whole image: score it once
            return self.scorer.score([make_crop(image, rows[0], "whole")]) * len(rows)
        return self.scorer.score([make_crop(image, row, self.sco.crop) for row in rows])

    def process(self, path: Path) -> ImageResult:
        image = load_rgb(path)
        rows = self.regions(image)
        scores = self.scores(image, rows)
        regions = [
            {field: row[field] for field in REGION_FIELDS}
            | {
                "argmax": s.argmax,
                "expected": s.expected,
                "probs": list(s.probs),
                "fallback": s.fallback,
            }
            for row, s in zip(rows, scores, strict=True)
        ]
        return ImageResult(str(path), image.shape[0], image.shape[1], regions)


def recorded_c_max(params: Mapping[str, Any]) -> tuple[int | None, str]:
    """c_max from params, else from the aggregate summaries of the default run's datasets (the
    run whose configuration is params.yaml as it is)."""
    value = params["aggregate"]["c_max"]
    if value != "dataset":
        return int(value), "aggregate.c_max"
    found = []
    default_run = params.get("runs", {}).get(paths.DEFAULT_RUN, {})
    for dataset in default_run.get("datasets", []):
        summary = results.load_summary("predictions", dataset)
        if summary is not None:
            found.append(
                (float(summary["c_max"]), paths.show(paths.summary("predictions", dataset)))
            )
    if not found:
        return None, ""
    best, path = max(found)
    return int(best), path


def final_scores(results: Sequence[ImageResult], pipe: Pipeline, c_max: int) -> list[float]:
    """The main variant of each image, through the same code as the aggregate stage."""
    regions, scores = [], []
    for key, result in enumerate(results):  # keyed by position: a file may be given twice
        for region in result.regions:
            regions.append({"image": str(key), **{f: region[f] for f in REGION_FIELDS}})
            scores.append(
                {
                    "image": str(key),
                    "region": region["region"],
                    "prompt_id": pipe.sco.prompt_id,
                    "K": pipe.sco.K,
                    "argmax": region["argmax"],
                    "expected": region["expected"],
                }
            )
    agg = pipe.agg
    base, readout = agg.main.split(":")
    settings = aggregate.AggregateParams(
        variants=(base,),
        readouts=(readout,),
        main=agg.main,
        prompt_id="auto",
        prompt_ids=(pipe.sco.prompt_id,),
        ensemble=(pipe.sco.prompt_id,),
        llmiqa_lambda=agg.llmiqa_lambda,
        c_max=c_max,
        missing="report",
    )
    images = pd.Index([str(key) for key in range(len(results))], name="image")
    predictions, _ = aggregate.compute(
        pd.DataFrame(regions), pd.DataFrame(scores), images, settings
    )
    return [float(value) for value in predictions[agg.main]]


def _table(result: ImageResult) -> str:
    frame = pd.DataFrame(result.regions)
    frame["bbox"] = [f"{r['x0']},{r['y0']},{r['x1']},{r['y1']}" for r in result.regions]
    frame["share"] = frame["area"] / (result.height * result.width)
    columns = ["region", "kind", "bbox", "area", "share", "argmax", "expected", "fallback"]
    return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _print_text(result: ImageResult, pipe: Pipeline, c_note: str) -> None:
    count = result.regions[0]["count"]
    print(
        f"{result.path}: {result.width}x{result.height}, {count} regions "
        f"({pipe.seg.backend} segmentation, {pipe.sco.prompt_id} scoring, K={pipe.sco.K})"
    )
    print(_table(result))
    final = "n/a" if result.score is None else f"{result.score:.4f}"
    print(f"final score ({pipe.agg.main}): {final}  [{c_note}]\n")


def _c_max(results: Sequence[ImageResult], params: Mapping[str, Any]) -> tuple[int, str]:
    c_max, origin = recorded_c_max(params)
    if c_max is None:
        return max(r.regions[0]["count"] for r in results), "largest region count of these files"
    return c_max, origin


def run(files: Sequence[str | Path], params: Mapping[str, Any], as_json: bool = False) -> int:
    """Score each file; print a table per image (or one JSON list); return 1 if any failed."""
    pipe = Pipeline(params)  # validates every params section it uses before any work
    results: list[ImageResult] = []
    failures: list[dict[str, str]] = []
    for path in map(Path, files):
        try:
            results.append(pipe.process(path))
        except ImageError as exc:
            print(f"dogiqa score-image: error: {exc}", file=sys.stderr)
            failures.append({"path": str(path), "error": str(exc)})
    c_max, origin = _c_max(results, params) if results else (None, "")
    if results:
        values = final_scores(results, pipe, c_max)
        for result, value in zip(results, values, strict=True):
            result.score = None if np.isnan(value) else value
    if as_json:
        payload = [
            {
                "path": r.path,
                "height": r.height,
                "width": r.width,
                "variant": pipe.agg.main,
                "score": r.score,
                "c_max": c_max,
                "c_max_from": origin,
                "regions": r.regions,
            }
            for r in results
        ]
        print(json.dumps(payload + failures, indent=2))
    else:
        for result in results:
            _print_text(result, pipe, f"c_max = {c_max}, from {origin}")
    return 1 if failures else 0
