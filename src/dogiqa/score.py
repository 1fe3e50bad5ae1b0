"""The score stage: a distribution over the K levels for the whole image and every region crop.

Reads ``data/regions/<ds>.csv`` (segment stage) and ``data/labels/<ds>.csv`` (image paths),
loads each image once, cuts its region crops (``score.crop``: bbox, mask or whole), scores them
with the configured backend (``score.backend``: classical, hf or openai) and writes
``data/scores/<ds>.csv`` (see docs/data_contracts.md) and ``data/scores/<ds>.summary.json``
(images, regions scored, fallbacks, skipped images with their reasons).

Finished images are cached one per line in ``data/cache/score/<ds>.jsonl``; a line is reused
only when the scoring settings and the image's regions are unchanged, so an interrupted run
redoes at most the image in flight and gives the same table as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import config, io, paths, prompts
from dogiqa.crops import CROP_MODES, make_crop
from dogiqa.errors import DogIQAError, ImageError, LabelError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import READOUTS, LevelScores, Scorer, build_scorer, check_section

log = logging.getLogger(__name__)

REGION_COLUMNS = ("image", "region", "kind", "x0", "y0", "x1", "y1", "height", "width", "rle")
# Settings that do not change the scores (throughput, endpoints, credentials).
NEUTRAL_KEYS = {
    "batch_size",
    "concurrency",
    "retries",
    "timeout",
    "base_urls",
    "api_key_env",
    "local_files_only",
}


@dataclass(frozen=True)
class ScoreParams:
    backend: str
    K: int
    prompt_id: str
    """The scores table's ``prompt_id``: the prompt, or the classical scorer's name."""
    crop: str
    readout: str
    section: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Hash of the settings that shape the scores (other backends' settings excluded)."""
        backend = {k: v for k, v in self.section[self.backend].items() if k not in NEUTRAL_KEYS}
        used = {
            "backend": self.backend,
            "K": self.K,
            "prompt_id": self.prompt_id,
            "crop": self.crop,
            "readout": self.readout,
            self.backend: backend,
        }
        if self.backend == "classical":
            used.pop("readout")
        text = json.dumps(used, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def validate_params(params: Mapping[str, Any]) -> ScoreParams:
    """Check the ``score`` section; raise ParamError naming the first bad param."""
    section = config.section(params, "score")
    backend = config.get_choice(section, "score", "backend", ("classical", "hf", "openai"))
    k = config.check_levels("score.K", config.get(section, "score", "K"))
    crop = config.get_choice(section, "score", "crop", CROP_MODES)
    readout = config.get_choice(section, "score", "readout", READOUTS)
    prompt_id = config.get_choice(section, "score", "prompt", prompts.prompt_ids())
    prompt = prompts.get(prompt_id)
    check_section(section)
    if backend == "classical":
        prompt_id = section["classical"]["scorer"]
    elif k != prompt.K:
        raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
    return ScoreParams(backend, k, prompt_id, crop, readout, dict(section))


def _read_regions(dataset: str) -> pd.DataFrame:
    path = paths.regions_table(dataset)
    if not path.exists():
        raise LabelError(f"{path}: regions table not found (run the segment stage first)")
    regions = pd.read_csv(path, dtype={"image": str, "rle": str}, keep_default_na=False)
    missing = [c for c in REGION_COLUMNS if c not in regions.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}")
    return regions


def _image_paths(dataset: str) -> dict[str, str]:
    path = paths.labels_table(dataset)
    if not path.exists():
        raise LabelError(f"{path}: labels table not found (run the download stage first)")
    labels = pd.read_csv(path, dtype={"image": str, "path": str}, keep_default_na=False)
    if not {"image", "path"} <= set(labels.columns):
        raise LabelError(f"{path}: needs the columns image and path")
    return dict(zip(labels["image"], labels["path"], strict=True))


def _regions_hash(group: pd.DataFrame) -> str:
    text = group[list(REGION_COLUMNS)].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score_image(
    scorer: Scorer, image_path: str, regions: pd.DataFrame, crop_mode: str
) -> list[LevelScores]:
    """Scores of every region of one image, in the table's region order."""
    image = load_rgb(image_path)
    records = regions.to_dict("records")
    if crop_mode == "whole":  # every region is the whole image: score it once
        return scorer.score([make_crop(image, records[0], "whole")]) * len(records)
    try:
        crops = [make_crop(image, r, crop_mode) for r in records]
    except DogIQAError as exc:  # the regions do not fit this image file
        raise ImageError(f"{image_path}: {exc}") from None
    return scorer.score(crops)


def _groups(regions: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    for name, group in regions.groupby("image", sort=False):
        yield str(name), group.sort_values("region", kind="stable")


class _LazyScorer:
    """Builds the scorer (loads a model) only when an image needs scoring."""

    def __init__(self, section: Mapping[str, Any]) -> None:
        self.section = section
        self._scorer: Scorer | None = None

    def get(self) -> Scorer:
        if self._scorer is None:
            self._scorer = build_scorer(self.section)
        return self._scorer


def _process(dataset: str, regions: pd.DataFrame, settings: ScoreParams) -> dict[str, Any]:
    image_paths = _image_paths(dataset)
    cache = io.ImageCache(paths.stage_cache("score", dataset))
    groups = list(_groups(regions))
    cached = cache.done()
    done: dict[str, Any] = {}
    for name, group in groups:
        entry = cached.get(name)
        if (
            entry
            and entry.get("fingerprint") == settings.fingerprint
            and entry.get("regions") == _regions_hash(group)
        ):
            done[name] = entry
    scorer = _LazyScorer(settings.section)
    todo = [(n, g) for n, g in groups if n not in done]
    with tqdm(
        total=len(groups),
        initial=len(groups) - len(todo),
        unit="img",
        desc=f"score ({settings.backend}, {settings.prompt_id})",
    ) as bar:
        for name, group in todo:
            result: dict[str, Any] = {
                "fingerprint": settings.fingerprint,
                "regions": _regions_hash(group),
            }
            try:
                image_path = image_paths.get(name, "")
                if not image_path:
                    raise ImageError(f"{name}: no image path in the labels table")
                scores = score_image(scorer.get(), image_path, group, settings.crop)
                result["scores"] = [s.to_json() for s in scores]
            except ImageError as exc:
                log.warning("score: skipping %s: %s", name, exc)
                result["skipped"] = str(exc)
            cache.add(name, result)
            done[name] = result
            bar.update()
    return done


def _table(
    regions: pd.DataFrame, done: Mapping[str, Any], settings: ScoreParams
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name, group in _groups(regions):
        result = done[name]
        if "skipped" in result:
            skipped.append({"image": name, "reason": result["skipped"]})
            continue
        if len(result["scores"]) != len(group):
            raise DogIQAError(f"score cache for {name} does not match its regions")
        for region, data in zip(group["region"], result["scores"], strict=True):
            scores = LevelScores.from_json(data)
            row = {
                "image": name,
                "region": int(region),
                "prompt_id": settings.prompt_id,
                "K": settings.K,
            }
            row.update({f"p{i}": p for i, p in enumerate(scores.probs, start=1)})
            row.update(
                argmax=scores.argmax,
                expected=scores.expected,
                raw=scores.raw,
                fallback=scores.fallback,
            )
            rows.append(row)
    columns = [
        "image",
        "region",
        "prompt_id",
        "K",
        *(f"p{i}" for i in range(1, settings.K + 1)),
        "argmax",
        "expected",
        "raw",
        "fallback",
    ]
    return pd.DataFrame(rows, columns=columns), skipped


def run(dataset: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """Score the dataset's regions; write the scores table and its summary; return the table."""
    settings = validate_params(params)
    regions = _read_regions(dataset)
    done = _process(dataset, regions, settings)
    table, skipped = _table(regions, done, settings)
    summary = {
        "dataset": dataset,
        "backend": settings.backend,
        "prompt_id": settings.prompt_id,
        "K": settings.K,
        "crop": settings.crop,
        "readout": None if settings.backend == "classical" else settings.readout,
        "images": int(regions["image"].nunique()),
        "images_scored": int(table["image"].nunique()),
        "regions_scored": len(table),
        "fallbacks": int(table["fallback"].sum()),
        "skipped": skipped,
    }
    out = paths.scores_table(dataset)
    io.write_csv_atomic(out, table)
    io.write_json_atomic(out.with_name(f"{dataset}.summary.json"), summary)
    log.info(
        "score %s: %d regions of %d images, %d fallbacks, %d skipped -> %s",
        dataset,
        len(table),
        summary["images_scored"],
        summary["fallbacks"],
        len(skipped),
        out,
    )
    return table
