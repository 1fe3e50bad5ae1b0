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

Images flow through the scorers as a stream in table order (``dogiqa.scoring.measure_stream``):
a backend may work across images (the ``openai`` backend keeps its requests in flight across
them, the ``hf`` backend batches requests of similar token counts from several images; either
way one request per crop, as the prompting system builds it), and every image's result comes
back, and is cached, in table order. Every image of the run passes every scorer
that any image needs, those it need not measure with no crops, so that a scorer grouping images
groups them as an uninterrupted run does.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from dogiqa import cache, config, crops, io, paths, prompts, schema, sharding, systems
from dogiqa.errors import DogIQAError, ImageError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import (
    BACKENDS,
    READOUTS,
    LevelScores,
    ScorerUnit,
    check_section,
    measure_stream,
)
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


@dataclass
class _Todo:
    name: str
    group: pd.DataFrame
    path: str
    """The image file, absolute (empty when the labels table has no path)."""
    key: dict[str, Any]
    """What the image's cache entries must match: its regions and its file's bytes."""
    cached: dict[str, Any]
    missing: tuple[str, ...] = ()
    """The prompt ids whose values this run measures (none for a cached or skipped image)."""
    crops: list[Image.Image] = field(default_factory=list)
    """The image's distinct crops, while it is being measured."""
    index: list[int] = field(default_factory=list)
    """Per region, its crop in ``crops``."""
    measured: dict[str, list[Any]] = field(default_factory=dict)
    """Per prompt id of ``missing``, the value of every region."""
    skipped: str | None = None
    """Why the image could not be measured (unreadable file, regions of another size)."""

    def needs(self, prompt_id: str) -> bool:
        """Whether this run measures the image's crops with the scorer of ``prompt_id``."""
        return prompt_id in self.missing and self.skipped is None


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
    items: list[_Todo] = []
    todo: list[_Todo] = []
    for name, group in crops.image_groups(regions):
        listed = image_paths.get(name, "")
        path = str(paths.at(listed)) if listed else ""
        key = {"regions": _regions_hash(group), "file": cache.file_digest(path)}
        item = _Todo(name, group, path, key, {})
        item.cached, skipped = _lookup(name, key, sources)
        items.append(item)
        if all(fp in item.cached for fp in fingerprints.values()):
            results[name] = {"values": {p: item.cached[fp] for p, fp in fingerprints.items()}}
        elif skipped is not None:
            results[name] = {"skipped": skipped}
        else:
            item.missing = tuple(p for p, fp in fingerprints.items() if fp not in item.cached)
            todo.append(item)
    where = f"{dataset} shard {shard}" if shard else dataset
    log.info(
        "score %s: %d images, %d cached, %d to score",
        where,
        len(results) + len(todo),
        len(results),
        len(todo),
    )
    with tqdm(
        total=len(results) + len(todo),
        initial=len(results),
        unit="img",
        desc=f"score ({settings.backend}, {', '.join(settings.prompt_ids)})",
    ) as bar:
        for item in _measured(items, settings):
            if not item.missing:
                continue
            results[item.name], line = _result(item, settings)
            store.add(item.name, line)
            item.crops, item.measured = [], {}  # done: let the pixels go
            bar.update()
    return results


def _measured(items: Sequence[_Todo], settings: ScoreParams) -> Iterator[_Todo]:
    """``items`` in their order, each with its missing values measured. An image's crops are
    cut when the first scorer asks for it; each scorer that any image needs (its model is built
    when the stream starts) sees every image, in order."""
    stream: Iterator[_Todo] = (_cut(item, settings.crop) for item in items)
    for unit in settings.units:
        if any(unit.id in item.missing for item in items):
            stream = _measure_unit(unit, stream)
    return stream


def _cut(item: _Todo, crop_mode: str) -> _Todo:
    """The image's distinct crops (``item.crops``), or why it is skipped (``item.skipped``)."""
    if not item.missing:
        return item
    try:
        if not item.path:
            raise ImageError(f"{item.name}: no image path in the labels table")
        image = load_rgb(item.path)
        records = item.group.to_dict("records")
        try:
            item.crops, item.index = crops.region_crops(image, records, crop_mode)
        except ImageError as exc:
            raise ImageError(f"{paths.show(item.path)}: {exc}") from None
    except ImageError as exc:
        log.warning("score: skipping %s: %s", item.name, exc)
        item.skipped = str(exc)
    return item


def _measure_unit(unit: ScorerUnit, stream: Iterable[_Todo]) -> Iterator[_Todo]:
    """The images of ``stream``, in order, with the values of ``unit``'s scorer measured where
    it is missing."""
    scorer = unit.build()
    jobs = ((item, item.crops if item.needs(unit.id) else []) for item in stream)
    for item, values in measure_stream(scorer, jobs):
        if item.needs(unit.id):
            item.measured[unit.id] = [values[i] for i in item.index]
        yield item


def _result(item: _Todo, settings: ScoreParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the image's result, its cache line)."""
    if item.skipped is not None:
        return {"skipped": item.skipped}, {**item.key, "skipped": item.skipped}
    fingerprints = settings.fingerprints
    values = dict(item.cached)
    for prompt_id, measured in item.measured.items():
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
