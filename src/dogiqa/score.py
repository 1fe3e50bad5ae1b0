"""The score stage: a distribution over the K levels for the whole image and every region crop.

Reads ``data/regions/<run>/<ds>.csv`` (segment stage) and ``data/labels/<ds>.csv`` (image paths),
loads each image once, cuts its distinct region crops (``dogiqa.crops``, ``score.crop``: bbox,
mask or whole), measures them with each scorer of the configured backend (``dogiqa.scoring``)
and writes ``data/scores/<run>/<ds>.csv`` (see docs/data_contracts.md) and its summary (images,
regions scored, scorer calls, fallbacks, skipped images with their reasons).

An MLLM backend asks a single-stimulus prompting system (``score.system``, ``dogiqa.systems``):
Dog-IQA's prompt as it is (``single_standard``), with in-context exemplars drawn from the
dataset's images outside the run's sample, or chain-of-thought; the scores table names the
prompt and, for the latter two, the system (``paper_word_k7+single_cot``).

A backend may run several scorers (``score.classical.scorer`` lists metrics): each region then
gets one row per scorer (``prompt_id`` = the scorer's id) in the listed order, from one pass over
the images. With a shard (``dogiqa.sharding``) only that shard's images are scored, into the
shard's own outputs.

Finished images are cached one per line (``dogiqa.cache``; a shard keeps its own file) with each
scorer's measured values keyed by the fingerprint of the settings that shape them. Every score
cache of the dataset is consulted, so an interrupted run, a re-sharded run, one that adds a
scorer, or one that changes only what is applied after the measurement (K for a classical
metric) measures only what no cache holds, and gives the same table as an uninterrupted run.
Cached values are reused only while the image's regions and the bytes of its file stay the same
(a skipped image is retried once its file changes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from dogiqa import cache, config, crops, io, paths, prompts, schema, sharding, systems
from dogiqa.errors import DogIQAError, ImageError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import BACKENDS, READOUTS, LevelScores, Scorer, ScorerUnit, check_section
from dogiqa.scoring.base import POOL_KEY

log = logging.getLogger(__name__)

CROP_COLUMNS = ("image", "region", "kind", "x0", "y0", "x1", "y1", "height", "width", "rle")
"""The region columns an image's crops depend on (their hash keys the cache)."""


@dataclass(frozen=True)
class ScoreParams:
    backend: str
    K: int
    crop: str
    readout: str | None
    """``score.readout``; None for a backend without readouts (classical)."""
    system: str
    """``score.system``: the prompting system (``single_standard`` for classical scorers)."""
    units: tuple[ScorerUnit, ...]
    """The scorers, main one first; their ids are the scores table's ``prompt_id`` values."""
    shards: int
    """N, the number of shards in ``score.shards``."""

    @property
    def prompt_ids(self) -> tuple[str, ...]:
        return tuple(unit.id for unit in self.units)

    @property
    def prompt_id(self) -> str:
        """The main prompt id (the first scorer listed)."""
        return self.units[0].id

    @cached_property
    def fingerprints(self) -> dict[str, str]:
        """Per prompt id, a hash of what shapes its cached values (crop mode included)."""
        return {
            unit.id: cache.fingerprint(
                {"backend": self.backend, "crop": self.crop, "unit": unit.settings}
            )
            for unit in self.units
        }


def validate_params(params: Mapping[str, Any], dataset: str | None = None) -> ScoreParams:
    """Check the ``score`` section; raise ParamError naming the first bad param. With
    ``dataset``, an in-context system's exemplars are drawn from its labels table (the images
    outside the run's ``sample``)."""
    section = config.section(params, "score")
    backend = config.get_choice(section, "score", "backend", BACKENDS)
    k = config.check_levels("score.K", config.get(section, "score", "K"))
    crop = config.get_choice(section, "score", "crop", crops.CROP_MODES)
    readout = config.get_choice(section, "score", "readout", READOUTS)
    config.get_choice(section, "score", "prompt", prompts.prompt_ids())
    system = config.get_choice(section, "score", "system", systems.system_ids())
    config.get_int(section, "score", "exemplars", minimum=1)
    config.get_int(section, "score", "exemplar_seed", minimum=0)
    shards = sharding.shard_count(section)
    chosen = check_section(section)
    if not chosen.readout and system != systems.PLAIN:  # a classical metric has no prompt
        raise ParamError("score.system", f"{system} prompts an MLLM; backend {backend} has none")
    in_context = systems.get(system, "score.system").strategy == "in_context"
    # Only an in-context system reads the run's sample (its exemplars lie outside it).
    pool = systems.Pool(dataset, schema.sample_params(params)) if in_context and dataset else None
    units = tuple(chosen.units({**section, POOL_KEY: pool}))
    readout = readout if chosen.readout else None
    return ScoreParams(backend, k, crop, readout, system, units, shards)


def read_regions(dataset: str, run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    return io.read_table(schema.REGIONS, paths.regions_table(dataset, run=run_name))


def _image_paths(dataset: str) -> dict[str, str]:
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset), ("image", "path"))
    return dict(zip(labels["image"], labels["path"], strict=True))


def _regions_hash(group: pd.DataFrame) -> str:
    text = group[list(CROP_COLUMNS)].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_regions(
    image: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    crop_mode: str,
    scorers: Mapping[str, Scorer],
) -> dict[str, list[Any]]:
    """Per scorer, the measured value of every region, in the given region order."""
    distinct, index = crops.region_crops(image, records, crop_mode)
    out = {}
    for name, scorer in scorers.items():
        values = scorer.measure(distinct)
        out[name] = [values[i] for i in index]
    return out


# --- cache ----------------------------------------------------------------------------------


def _lookup(
    name: str, key: Mapping[str, Any], sources: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """Cached values of ``name`` per fingerprint, and a skip reason, from the entries made for
    the same regions of the same image bytes (``key``)."""
    values: dict[str, Any] = {}
    skipped = None
    for source in sources:
        entry = source.get(name)
        if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in key.items()):
            continue
        for fingerprint, cached in entry.get("scores", {}).items():
            values.setdefault(fingerprint, cached)
        if skipped is None and "skipped" in entry:
            skipped = entry["skipped"]
    return values, skipped


class _LazyScorers:
    """Builds each scorer (loads a model) only when an image needs it."""

    def __init__(self, units: Sequence[ScorerUnit]) -> None:
        self.units = {unit.id: unit for unit in units}
        self._built: dict[str, Scorer] = {}

    def get(self, ids: Sequence[str]) -> dict[str, Scorer]:
        for unit_id in ids:
            if unit_id not in self._built:
                self._built[unit_id] = self.units[unit_id].build()
        return {unit_id: self._built[unit_id] for unit_id in ids}


@dataclass
class _Todo:
    name: str
    group: pd.DataFrame
    path: str
    """The image file, absolute (empty when the labels table has no path)."""
    key: dict[str, Any]
    """What the image's cache entries must match: its regions and its file's bytes."""
    cached: dict[str, Any]


def _process(
    dataset: str,
    regions: pd.DataFrame,
    settings: ScoreParams,
    shard: sharding.Shard | None,
    run_name: str,
) -> dict[str, Any]:
    """Per image: ``{"values": {prompt_id: [value per region]}}`` or ``{"skipped": reason}``."""
    image_paths = _image_paths(dataset)
    own = sharding.cache_path(dataset, shard, run=run_name)
    store = cache.ImageCache(own)
    others = [p for p in sharding.cache_paths(dataset, run=run_name) if p != own]
    sources = [store.done(), *(cache.read_only(p) for p in others)]
    fingerprints = settings.fingerprints
    results: dict[str, Any] = {}
    todo: list[_Todo] = []
    for name, group in crops.image_groups(regions):
        listed = image_paths.get(name, "")
        path = str(paths.at(listed)) if listed else ""
        key = {"regions": _regions_hash(group), "file": cache.file_digest(path)}
        item = _Todo(name, group, path, key, {})
        item.cached, skipped = _lookup(name, key, sources)
        if all(fp in item.cached for fp in fingerprints.values()):
            results[name] = {"values": {p: item.cached[fp] for p, fp in fingerprints.items()}}
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
    scorers = _LazyScorers(settings.units)
    with tqdm(
        total=len(results) + len(todo),
        initial=len(results),
        unit="img",
        desc=f"score ({settings.backend}, {', '.join(settings.prompt_ids)})",
    ) as bar:
        for item in todo:
            results[item.name], line = _score_one(item, settings, scorers)
            store.add(item.name, line)
            bar.update()
    return results


def _score_one(
    item: _Todo, settings: ScoreParams, scorers: _LazyScorers
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the image's result, its cache line)."""
    fingerprints = settings.fingerprints
    missing = [p for p, fp in fingerprints.items() if fp not in item.cached]
    shown = paths.show(item.path)
    try:
        if not item.path:
            raise ImageError(f"{item.name}: no image path in the labels table")
        image = load_rgb(item.path)
        try:
            computed = measure_regions(
                image, item.group.to_dict("records"), settings.crop, scorers.get(missing)
            )
        except ImageError as exc:
            raise ImageError(f"{shown}: {exc}") from None
    except ImageError as exc:
        log.warning("score: skipping %s: %s", item.name, exc)
        return {"skipped": str(exc)}, {**item.key, "skipped": str(exc)}
    values = dict(item.cached)
    for prompt_id, measured in computed.items():
        values[fingerprints[prompt_id]] = measured
    result = {"values": {p: values[fp] for p, fp in fingerprints.items()}}
    return result, {**item.key, "scores": values}


# --- outputs ----------------------------------------------------------------------------------


def columns(k: int) -> list[str]:
    return schema.score_columns(k)


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
    for name, group in crops.image_groups(regions):
        result = results[name]
        if "skipped" in result:
            skipped.append({"image": name, "reason": result["skipped"]})
            continue
        per_prompt = {u.id: [u.levels(v) for v in result["values"][u.id]] for u in settings.units}
        if any(len(values) != len(group) for values in per_prompt.values()):
            raise DogIQAError(f"score cache for {name} does not match its regions")
        for position, region in enumerate(group["region"]):
            for prompt_id in settings.prompt_ids:
                scores = per_prompt[prompt_id][position]
                rows.append(_row(name, int(region), prompt_id, settings.K, scores))
    table = pd.DataFrame(rows, columns=columns(settings.K)).astype({"levels_found": "Int64"})
    return table, skipped


def settings_summary(settings: ScoreParams) -> dict[str, Any]:
    """The summary's description of the scoring settings (the prompting system for an MLLM
    backend; a classical scorer has none)."""
    described = {
        "backend": settings.backend,
        "prompt_id": settings.prompt_id,
        "prompt_ids": list(settings.prompt_ids),
        "K": settings.K,
        "crop": settings.crop,
        "readout": settings.readout,
    }
    return described if settings.readout is None else {**described, "system": settings.system}


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
        "scorer_calls": crops.distinct_crops(scored, settings.crop) * len(settings.prompt_ids),
        "fallbacks": int(table["fallback"].sum()),
        "fallbacks_by_prompt": {
            p: int(table.loc[table["prompt_id"] == p, "fallback"].sum())
            for p in settings.prompt_ids
        },
        "errors": int((table["error"] != "").sum()),
        "skipped": skipped,
    }


def run(
    dataset: str,
    params: Mapping[str, Any],
    shard: str | sharding.Shard | None = None,
    run_name: str = paths.DEFAULT_RUN,
) -> pd.DataFrame:
    """Score the dataset's regions (or one shard's) of a run; write the scores table and its
    summary (the shard's own outputs for a shard) in the run's folders; return the table."""
    settings = validate_params(params, dataset)
    chosen = None if shard is None else sharding.parse(str(shard), settings.shards)
    regions = read_regions(dataset, run_name)
    if chosen is not None:
        mine = chosen.select(list(dict.fromkeys(regions["image"])))
        regions = regions[regions["image"].isin(mine)]
    results = _process(dataset, regions, settings, chosen, run_name)
    table, skipped = _table(regions, results, settings)
    summary = summarise(dataset, settings, regions, table, skipped)
    if chosen is None:
        out = paths.scores_table(dataset, run=run_name)
        summary_out = paths.summary("scores", dataset, run=run_name)
    else:
        summary["shard"] = str(chosen)
        out = sharding.table_path(dataset, chosen.index, run=run_name)
        summary_out = sharding.summary_path(dataset, chosen.index, run=run_name)
    io.write_table(schema.SCORES, out, table)
    io.write_json_atomic(summary_out, summary)
    log.info(
        "score %s: %d regions of %d images x %d scorer(s), %d fallbacks, %d skipped -> %s",
        dataset if chosen is None else f"{dataset} shard {chosen}",
        summary["regions_scored"],
        summary["images_scored"],
        len(settings.prompt_ids),
        summary["fallbacks"],
        len(skipped),
        paths.show(out),
    )
    return table
