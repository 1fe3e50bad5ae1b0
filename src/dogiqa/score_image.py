"""``dogiqa score-image PATH...``: segment and score image files, show regions and final scores.

Works from any folder. The configuration is ``--params FILE`` when given, else the params.yaml of
the project folder around the working directory, else the packaged default configuration
(``resources/default_params.yaml``: the study's CPU configuration); its segmenter (``segment``),
scorer (``score``) and main aggregation variant (``aggregate.main``) score a file exactly as the
pipeline scores a dataset image.

The output gives the main variant in its parts: the quality part on the level scale 1..K (the
word standard's name of the nearest level beside it), the term in the region count (s_seg =
c * K / c_max for the paper's formula) and the final score with the range it can take. s_seg
needs c_max, a number measured over a dataset: ``aggregate.c_max`` when it is an integer, else the
c_max recorded by the study's aggregate stage in the project folder, else the chosen segmenter's
default (the classical segmenter's region cap; the paper's 71 for SAM 2). Where it came from is
printed, as is the configuration.

An unreadable file gives one ``ImageError`` line on stderr; the other files are still scored and
the command exits with status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dogiqa import aggregate, config, paths, prompts, results, score, segment
from dogiqa.crops import make_crop
from dogiqa.errors import ImageError
from dogiqa.images import load_rgb
from dogiqa.scoring import LevelScores, Scorer
from dogiqa.segmentation import Segmenter, algorithm1, build_segmenter, default_c_max

REGION_FIELDS = ("region", "kind", "x0", "y0", "x1", "y1", "area", "area_authors", "count")


DEFAULT_PARAMS = "default_params.yaml"
"""The packaged default configuration, in ``dogiqa.resources``."""
SCALE_NOTE = (
    "higher is better; the final score ranks images (the study judges it by its SRCC and PLCC "
    "with human MOS), it is not a MOS"
)


@dataclass
class ImageResult:
    path: str
    height: int
    width: int
    regions: list[dict[str, Any]]
    """Region rows (Algorithm 1) with their level scores."""
    score: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    """The main variant's parts (``aggregate.explain``): quality, count_term, low, high."""


def configuration(params_file: Path | None) -> tuple[dict[str, Any], str]:
    """The params to score with and where they come from: ``--params``, else the project's
    params.yaml (found from the working directory upwards), else the packaged default."""
    if params_file is not None:
        return config.load_params(params_file), f"--params {params_file}"
    project = paths.params_file()
    if (paths.root() / paths.MARKER).is_file() and project.is_file():
        return config.load_params(project), f"params.yaml of the project at {paths.root()}"
    text = (resources.files("dogiqa.resources") / DEFAULT_PARAMS).read_text(encoding="utf-8")
    where = f"dogiqa/resources/{DEFAULT_PARAMS}"
    return yaml.safe_load(text), f"the packaged default configuration ({where})"


class Pipeline:
    """The configured segmenter and scorer, built on first use (models load once)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        # The files given are the images: no run's sample picks among them.
        self.seg = segment.validate_params({**params, "sample": {"size": 0, "seed": 0}})
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
    return int(best), f"the study's run ({path})"


def choose_c_max(results: Sequence[ImageResult], params: Mapping[str, Any]) -> tuple[int, str]:
    """c_max and where it comes from: params or a recorded run, else the segmenter's default,
    else (a segmenter without one) the largest region count among these files."""
    c_max, origin = recorded_c_max(params)
    if c_max is not None:
        return c_max, origin
    default = default_c_max(params["segment"])
    if default is not None:
        return default
    return max(r.regions[0]["count"] for r in results), "the largest region count of these files"


def explain(results: Sequence[ImageResult], pipe: Pipeline, c_max: int) -> pd.DataFrame:
    """The main variant of each image in its parts (``aggregate.explain``), through the same code
    as the aggregate stage; one row per file, in order."""
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
    return aggregate.explain(pd.DataFrame(regions), pd.DataFrame(scores), images, settings)


def _table(result: ImageResult) -> str:
    frame = pd.DataFrame(result.regions)
    frame["bbox"] = [f"{r['x0']},{r['y0']},{r['x1']},{r['y1']}" for r in result.regions]
    frame["share"] = frame["area"] / (result.height * result.width)
    columns = ["region", "kind", "bbox", "area", "share", "argmax", "expected", "fallback"]
    return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def level_name(position: float, k: int) -> str:
    """``nearest level 6: Excellent`` for a position on the level scale 1..K."""
    level = int(np.clip(np.floor(position + 0.5), 1, k))
    words = prompts.level_words(k)
    return f"nearest level {level}" + (f": {words[level - 1]}" if words else "")


def summary_lines(result: ImageResult, pipe: Pipeline, c_max: int) -> list[str]:
    """The quality part, the count term and the final score, each with its scale."""
    k, main = pipe.sco.K, pipe.agg.main
    variant = aggregate.VARIANTS[main.split(":")[0]]
    if result.score is None:
        return [f"final score ({main}): n/a (a region has no score)"]
    parts = result.parts
    weight = parts["weight"]
    count = result.regions[0]["count"]
    quality = (
        f"quality part: {parts['quality']:.2f} on the level scale 1..{k} "
        f"({level_name(parts['quality'], k)})"
    )
    lines = [quality]
    total = "quality part" if weight == 1 else f"{weight:g} x quality part"
    if variant.count_term is not None:
        low_count, high_count = parts["low"] - weight, parts["high"] - weight * k
        lines.append(
            f"{variant.count_label}: {parts['count_term']:.2f} (c = {count} regions, "
            f"c_max = {c_max:g}; range {low_count:.2f}..{high_count:.2f} for 1..{c_max:g} "
            "regions)"
        )
        total += f" + {variant.count_label.split(' = ')[0]}"
    lines.append(
        f"final score ({main}): {result.score:.2f} = {total} "
        f"(range {parts['low']:.2f}..{parts['high']:.2f})"
    )
    return lines


def _print_text(result: ImageResult, pipe: Pipeline, c_max: int) -> None:
    count = result.regions[0]["count"]
    print(
        f"{result.path}: {result.width}x{result.height}, {count} regions "
        f"({pipe.seg.backend} segmentation, {pipe.sco.prompt_id} scoring, K={pipe.sco.K})"
    )
    print(_table(result))
    for line in summary_lines(result, pipe, c_max):
        print(f"  {line}")
    print()


def run(
    files: Sequence[str | Path],
    params: Mapping[str, Any],
    source: str = "params",
    as_json: bool = False,
) -> int:
    """Score each file; print a table per image (or one JSON list); return 1 if any failed.
    ``source`` says where ``params`` come from (printed)."""
    pipe = Pipeline(params)  # validates every params section it uses before any work
    results: list[ImageResult] = []
    failures: list[dict[str, str]] = []
    for path in map(Path, files):
        try:
            results.append(pipe.process(path))
        except ImageError as exc:
            print(f"dogiqa score-image: error: {exc}", file=sys.stderr)
            failures.append({"path": str(path), "error": str(exc)})
    c_max, origin = choose_c_max(results, params) if results else (None, "")
    if results:
        parts = explain(results, pipe, c_max)
        for result, (_, row) in zip(results, parts.iterrows(), strict=True):
            result.score = None if np.isnan(row["final"]) else float(row["final"])
            result.parts = {name: float(value) for name, value in row.items()}
    if as_json:
        payload = [
            {
                "path": r.path,
                "height": r.height,
                "width": r.width,
                "variant": pipe.agg.main,
                "score": r.score,
                "quality": r.parts.get("quality"),
                "level_scale": [1, pipe.sco.K],
                "count_term": r.parts.get("count_term"),
                "count_term_formula": aggregate.VARIANTS[pipe.agg.main.split(":")[0]].count_label
                or None,
                "score_range": [r.parts.get("low"), r.parts.get("high")],
                "c_max": c_max,
                "c_max_from": origin,
                "configuration": source,
                "regions": r.regions,
            }
            for r in results
        ]
        print(json.dumps(payload + failures, indent=2))
    else:
        for result in results:
            _print_text(result, pipe, c_max)
        if results:
            print(f"configuration: {source}")
            print(f"c_max = {c_max:g}, from {origin}")
            print(f"scale: {SCALE_NOTE}")
    return 1 if failures else 0
