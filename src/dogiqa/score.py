"""The score stage: a distribution over the K levels for the whole image and every region crop.

Reads ``data/regions/<ds>.csv`` (segment stage) and ``data/labels/<ds>.csv`` (image paths),
loads each image once, cuts its region crops (``score.crop``: bbox, mask or whole), scores them
with the configured backend (``score.backend``: classical, hf or openai) and writes
``data/scores/<ds>.csv`` (see docs/data_contracts.md) and ``data/scores/<ds>.summary.json``
(images, regions scored, scorer calls, fallbacks, skipped images with their reasons).

``score.classical.scorer`` may list several classical scorers: each region then gets one row per
scorer (``prompt_id`` = the scorer's name), in the listed order, from one pass over the images.
Regions whose crops are identical (a region whose bounding box is the whole image, in ``bbox``
mode, is the whole image again) are scored once. With a shard (``dogiqa.sharding``) only that
shard's images are scored, into the shard's own outputs.

Finished images are cached one per line in ``data/cache/score/<ds>.jsonl`` (a shard: its own
file), with the scores of each scoring configuration (a hash of the settings that shape the
scores) for the image's regions; every score cache of the dataset is consulted, so an
interrupted run, a re-sharded run or one that adds a scorer computes only what no cache holds,
and gives the same table as an uninterrupted run. A skipped image is retried when its file
changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from dogiqa import config, io, paths, prompts, sharding
from dogiqa.crops import CROP_MODES, make_crop
from dogiqa.errors import DogIQAError, ImageError, LabelError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import (
    BACKENDS,
    READOUTS,
    TABLE_FIELDS,
    LevelScores,
    Scorer,
    build_scorer,
    check_section,
)

log = logging.getLogger(__name__)

REGION_COLUMNS = ("image", "region", "kind", "x0", "y0", "x1", "y1", "height", "width", "rle")
# Settings that do not change the scores (throughput, endpoints, credentials). hf.batch_size is
# not among them: padding a batch changes bf16 logits.
NEUTRAL_KEYS = {
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
    prompt_ids: tuple[str, ...]
    """The scores table's ``prompt_id`` values: the prompt, or each classical scorer's name."""
    crop: str
    readout: str
    sections: Mapping[str, dict[str, Any]]
    """Per prompt id, the ``score`` section that builds its scorer (one classical scorer each)."""
    shards: int
    """N, the number of shards in ``score.shards``."""

    @property
    def prompt_id(self) -> str:
        """The main prompt id (the first scorer listed)."""
        return self.prompt_ids[0]

    @property
    def section(self) -> dict[str, Any]:
        """The ``score`` section of the main scorer."""
        return self.sections[self.prompt_id]

    @property
    def fingerprints(self) -> dict[str, str]:
        """Per prompt id, a hash of the settings that shape its scores."""
        return {prompt_id: self._fingerprint(prompt_id) for prompt_id in self.prompt_ids}

    def _fingerprint(self, prompt_id: str) -> str:
        section = self.sections[prompt_id]
        backend = {k: v for k, v in section[self.backend].items() if k not in NEUTRAL_KEYS}
        used = {
            "backend": self.backend,
            "K": self.K,
            "prompt_id": prompt_id,
            "crop": self.crop,
            "readout": self.readout,
            self.backend: backend,
        }
        if self.backend == "classical":
            used.pop("readout")
        text = json.dumps(used, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _classical_sections(section: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One ``score`` section per listed classical scorer (a name or a list of names)."""
    sub = section.get("classical")
    if not isinstance(sub, Mapping):
        raise ParamError("score.classical", "missing subsection (or not a mapping)")
    value = config.get(sub, "score.classical", "scorer")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise ParamError(
            "score.classical.scorer",
            f"must be a scorer name or a non-empty list of names, got {value!r}",
        )
    sections: dict[str, dict[str, Any]] = {}
    for name in names:
        unit = {**section, "classical": {**sub, "scorer": name}}
        check_section(unit)  # an unknown scorer names score.classical.scorer
        if name in sections:
            raise ParamError("score.classical.scorer", f"lists {name!r} twice")
        sections[name] = unit
    return sections


def validate_params(params: Mapping[str, Any]) -> ScoreParams:
    """Check the ``score`` section; raise ParamError naming the first bad param."""
    section = config.section(params, "score")
    backend = config.get_choice(section, "score", "backend", BACKENDS)
    k = config.check_levels("score.K", config.get(section, "score", "K"))
    crop = config.get_choice(section, "score", "crop", CROP_MODES)
    readout = config.get_choice(section, "score", "readout", READOUTS)
    prompt_id = config.get_choice(section, "score", "prompt", prompts.prompt_ids())
    prompt = prompts.get(prompt_id)
    shards = sharding.shard_count(section)
    if backend == "classical":
        sections = _classical_sections(section)
    else:
        check_section(section)
        if k != prompt.K:
            raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
        sections = {prompt_id: dict(section)}
    return ScoreParams(backend, k, tuple(sections), crop, readout, sections, shards)


def read_regions(dataset: str) -> pd.DataFrame:
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
    missing = [c for c in ("image", "path") if c not in labels.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}")
    return dict(zip(labels["image"], labels["path"], strict=True))


def _regions_hash(group: pd.DataFrame) -> str:
    text = group[list(REGION_COLUMNS)].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_groups(regions: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(image, its regions in region order), images in table order."""
    for name, group in regions.groupby("image", sort=False):
        yield str(name), group.sort_values("region", kind="stable")


# --- crops ----------------------------------------------------------------------------------


def crop_key(region: Mapping[str, Any], height: int, width: int, crop_mode: str) -> tuple:
    """Regions with equal keys have pixel-identical crops."""
    if region["kind"] == "global" or crop_mode == "whole":
        return (0, 0, width, height)
    box = tuple(int(region[k]) for k in ("x0", "y0", "x1", "y1"))
    return (*box, str(region["rle"])) if crop_mode == "mask" else box


def region_crops(
    image: np.ndarray, records: Sequence[Mapping[str, Any]], crop_mode: str
) -> tuple[list[Image.Image], list[int]]:
    """The distinct crops of an image's regions, and each region's index into them."""
    height, width = image.shape[:2]
    first: dict[tuple, int] = {}
    crops: list[Image.Image] = []
    index: list[int] = []
    for region in records:
        if (int(region["height"]), int(region["width"])) != (height, width):
            raise ImageError(
                f"region {region['region']} records size {region['height']}x{region['width']}"
                f" but the image is {height}x{width}"
            )
        key = crop_key(region, height, width, crop_mode)
        if key not in first:
            first[key] = len(crops)
            try:
                crops.append(make_crop(image, region, crop_mode))
            except DogIQAError as exc:  # the regions do not fit this image file
                raise ImageError(str(exc)) from None
        index.append(first[key])
    return crops, index


def score_regions(
    image: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    crop_mode: str,
    scorers: Mapping[str, Scorer],
) -> dict[str, list[LevelScores]]:
    """Per scorer, the scores of every region, in the given region order."""
    crops, index = region_crops(image, records, crop_mode)
    out = {}
    for name, scorer in scorers.items():
        scores = scorer.score(crops)
        out[name] = [scores[i] for i in index]
    return out


def scorer_calls(regions: pd.DataFrame, crop_mode: str) -> int:
    """Crops a scorer scores for ``regions`` (distinct crops per image, summed)."""
    total = 0
    for _, group in image_groups(regions):
        height, width = int(group["height"].iloc[0]), int(group["width"].iloc[0])
        records = group.to_dict("records")
        total += len({crop_key(r, height, width, crop_mode) for r in records})
    return total


# --- cache ----------------------------------------------------------------------------------


def _file_state(path: str) -> list[int] | None:
    """Size and modification time of an image file (None when absent): a skip is reused only
    while the file stays as it was."""
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _normalise(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    if "fingerprint" in entry:  # the format of one configuration per line
        scores = {entry["fingerprint"]: entry["scores"]} if "scores" in entry else {}
        return {"regions": entry.get("regions"), "scores": scores}
    return entry


def _read_only(path: Path) -> dict[str, Any]:
    """The complete lines of another run's cache; that run may still be writing, so a torn last
    line is ignored (never truncated)."""
    records: dict[str, Any] = {}
    try:
        raw = path.read_bytes()
    except OSError:
        return records
    for line in raw.split(b"\n")[:-1]:
        try:
            entry = json.loads(line)
            records[entry["image"]] = entry["result"]
        except (ValueError, KeyError, TypeError):
            continue
    return records


def _lookup(
    name: str, regions_hash: str, state: list[int] | None, sources: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """Cached scores of ``name`` per configuration hash, and a still valid skip reason."""
    scores: dict[str, Any] = {}
    skipped = None
    for source in sources:
        entry = source.get(name)
        if not entry:
            continue
        entry = _normalise(entry)
        if entry.get("regions") != regions_hash:
            continue
        for fingerprint, values in entry.get("scores", {}).items():
            scores.setdefault(fingerprint, values)
        if skipped is None and "skipped" in entry and entry.get("file") == state:
            skipped = entry["skipped"]
    return scores, skipped


class _LazyScorers:
    """Builds each scorer (loads a model) only when an image needs it."""

    def __init__(self, sections: Mapping[str, Mapping[str, Any]]) -> None:
        self.sections = sections
        self._built: dict[str, Scorer] = {}

    def get(self, names: Sequence[str]) -> dict[str, Scorer]:
        for name in names:
            if name not in self._built:
                self._built[name] = build_scorer(self.sections[name])
        return {name: self._built[name] for name in names}


@dataclass
class _Todo:
    name: str
    group: pd.DataFrame
    regions_hash: str
    path: str
    state: list[int] | None
    cached: dict[str, Any]


def _process(
    dataset: str, regions: pd.DataFrame, settings: ScoreParams, shard: sharding.Shard | None
) -> dict[str, Any]:
    """Per image: ``{"scores": {prompt_id: [scores as JSON]}}`` or ``{"skipped": reason}``."""
    image_paths = _image_paths(dataset)
    own = sharding.cache_path(dataset, shard)
    cache = io.ImageCache(own)
    others = [p for p in sharding.cache_paths(dataset) if p != own]
    sources = [cache.done(), *(_read_only(p) for p in others)]
    fingerprints = settings.fingerprints
    results: dict[str, Any] = {}
    todo: list[_Todo] = []
    for name, group in image_groups(regions):
        path = image_paths.get(name, "")
        item = _Todo(name, group, _regions_hash(group), path, _file_state(path), {})
        item.cached, skipped = _lookup(name, item.regions_hash, item.state, sources)
        if all(fp in item.cached for fp in fingerprints.values()):
            results[name] = {"scores": {p: item.cached[fp] for p, fp in fingerprints.items()}}
        elif skipped is not None:
            results[name] = {"skipped": skipped}
        else:
            todo.append(item)
    where = f"{dataset} shard {shard}" if shard else dataset
    log.info(
        "score %s: %d images, %d cached, %d to score",
        where,
        len(results) + len(todo),
        len(results),
        len(todo),
    )
    scorers = _LazyScorers(settings.sections)
    with tqdm(
        total=len(results) + len(todo),
        initial=len(results),
        unit="img",
        desc=f"score ({settings.backend}, {', '.join(settings.prompt_ids)})",
    ) as bar:
        for item in todo:
            results[item.name], line = _score_one(item, settings, scorers)
            cache.add(item.name, line)
            bar.update()
    return results


def _score_one(
    item: _Todo, settings: ScoreParams, scorers: _LazyScorers
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the image's result, its cache line)."""
    fingerprints = settings.fingerprints
    missing = [p for p, fp in fingerprints.items() if fp not in item.cached]
    try:
        if not item.path:
            raise ImageError(f"{item.name}: no image path in the labels table")
        image = load_rgb(item.path)
        try:
            computed = score_regions(
                image, item.group.to_dict("records"), settings.crop, scorers.get(missing)
            )
        except ImageError as exc:
            raise ImageError(f"{item.path}: {exc}") from None
    except ImageError as exc:
        log.warning("score: skipping %s: %s", item.name, exc)
        line = {"regions": item.regions_hash, "skipped": str(exc), "file": item.state}
        return {"skipped": str(exc)}, line
    scores = dict(item.cached)
    for prompt_id, values in computed.items():
        scores[fingerprints[prompt_id]] = [s.to_json() for s in values]
    result = {"scores": {p: scores[fp] for p, fp in fingerprints.items()}}
    return result, {"regions": item.regions_hash, "scores": scores}


# --- outputs ----------------------------------------------------------------------------------


def columns(k: int) -> list[str]:
    return [
        "image",
        "region",
        "prompt_id",
        "K",
        *(f"p{i}" for i in range(1, k + 1)),
        *TABLE_FIELDS,
    ]


def _row(image: str, region: int, prompt_id: str, k: int, scores: LevelScores) -> dict[str, Any]:
    row: dict[str, Any] = {"image": image, "region": region, "prompt_id": prompt_id, "K": k}
    row.update({f"p{i}": p for i, p in enumerate(scores.probs, start=1)})
    row.update(scores.table_fields())
    return row


def _table(
    regions: pd.DataFrame, results: Mapping[str, Any], settings: ScoreParams
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The scores table (image, region, prompt order) and the skipped images."""
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name, group in image_groups(regions):
        result = results[name]
        if "skipped" in result:
            skipped.append({"image": name, "reason": result["skipped"]})
            continue
        per_prompt = {
            p: [LevelScores.from_json(d) for d in result["scores"][p]] for p in settings.prompt_ids
        }
        if any(len(values) != len(group) for values in per_prompt.values()):
            raise DogIQAError(f"score cache for {name} does not match its regions")
        for position, region in enumerate(group["region"]):
            for prompt_id in settings.prompt_ids:
                scores = per_prompt[prompt_id][position]
                rows.append(_row(name, int(region), prompt_id, settings.K, scores))
    table = pd.DataFrame(rows, columns=columns(settings.K)).astype({"levels_found": "Int64"})
    return table, skipped


def settings_summary(settings: ScoreParams) -> dict[str, Any]:
    """The summary's description of the scoring settings."""
    return {
        "backend": settings.backend,
        "prompt_id": settings.prompt_id,
        "prompt_ids": list(settings.prompt_ids),
        "K": settings.K,
        "crop": settings.crop,
        "readout": None if settings.backend == "classical" else settings.readout,
    }


def summarise(
    dataset: str,
    settings: ScoreParams,
    regions: pd.DataFrame,
    table: pd.DataFrame,
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    scored = regions[~regions["image"].isin([s["image"] for s in skipped])]
    return {
        "dataset": dataset,
        **settings_summary(settings),
        "images": int(regions["image"].nunique()),
        "images_scored": int(table["image"].nunique()),
        "regions_scored": len(table) // len(settings.prompt_ids),
        "scorer_calls": scorer_calls(scored, settings.crop) * len(settings.prompt_ids),
        "fallbacks": int(table["fallback"].sum()),
        "fallbacks_by_prompt": {
            p: int(table.loc[table["prompt_id"] == p, "fallback"].sum())
            for p in settings.prompt_ids
        },
        "errors": int((table["error"] != "").sum()),
        "skipped": skipped,
    }


def run(
    dataset: str, params: Mapping[str, Any], shard: str | sharding.Shard | None = None
) -> pd.DataFrame:
    """Score the dataset's regions (or one shard's); write the scores table and its summary
    (the shard's own outputs for a shard); return the table."""
    settings = validate_params(params)
    chosen = None if shard is None else sharding.parse(str(shard), settings.shards)
    regions = read_regions(dataset)
    if chosen is not None:
        mine = chosen.select(list(dict.fromkeys(regions["image"])))
        regions = regions[regions["image"].isin(mine)]
    results = _process(dataset, regions, settings, chosen)
    table, skipped = _table(regions, results, settings)
    summary = summarise(dataset, settings, regions, table, skipped)
    if chosen is None:
        out = paths.scores_table(dataset)
        summary_out = out.with_name(f"{dataset}.summary.json")
    else:
        summary["shard"] = str(chosen)
        out = sharding.table_path(dataset, chosen.index)
        summary_out = sharding.summary_path(dataset, chosen.index)
    io.write_csv_atomic(out, table)
    io.write_json_atomic(summary_out, summary)
    log.info(
        "score %s: %d regions of %d images x %d scorer(s), %d fallbacks, %d skipped -> %s",
        dataset if chosen is None else f"{dataset} shard {chosen}",
        summary["regions_scored"],
        summary["images_scored"],
        len(settings.prompt_ids),
        summary["fallbacks"],
        len(skipped),
        out,
    )
    return table
