"""The aggregate stage: region scores -> one predicted score per image, for every variant.

Everything here is computed from a run's cached tables (``data/regions/<run>/<ds>.csv``,
``data/scores/<run>/<ds>.csv``); no model is called, so every variant costs nothing to add.

Per image and prompt, with s a region's score (its ``argmax`` level or its ``expected`` level),
a the region's area and c the number of final regions:

- s_global: the score of the whole image (region 0);
- s_local (area): sum(s * a) / sum(a) over the final regions (masks, complement or whole);
  ``area`` is the true pixel count, ``area_authors`` the area as the authors' code assigns it;
- s_local (inner): seed 000's literal <s, a> with a the areas as fractions of the image,
  sum(s * a) / (H * W): equal to the area-weighted mean when the regions partition the image,
  larger when masks overlap (their areas sum to more than H * W), smaller when they leave
  pixels uncovered;
- s_local (no complement): the area-weighted mean over the masks alone (seed 001 Table 5);
- s_local (mean): the plain mean of the region scores;
- s_seg = c * K / c_max, with c_max the largest c over the dataset: every image of it when the
  count_regions stage counted them all (``segment.count_all``, the paper's definition), else
  the run's images (or a fixed value);
- s_seg at the paper's scale (``*_scaled``): c_max = mean(c) * 71 / 7.22, the ratio of the
  paper's SPAQ figures (c_max 71, 7.22 masks on average), so that s_seg averages what it averages
  in the paper (7.22 * K / 71 = 0.71 at K = 7) whatever the segmenter's tail of counts;
- s_float: a classical scorer's continuous score of the whole image on the 1..K scale without
  clipping or levels (the counterpart of a float output asked of an MLLM without a standard).

Classical scorers keep their continuous score, so the level map can be applied again at other K
(``classical_K``): what a run with ``score.K`` = K computes, without measuring anything again
(prompt ids ``<scorer>_k<K>``).

The ``authors_*`` variants match the authors' code exactly when the regions come from
``segment.mode: authors`` (their complement rule); with ``correct`` regions they apply the coded
areas to the correct regions.

Variant names are ``<formula>:<readout>``; prompts other than the main one get ``@<prompt_id>``.
Images of the evaluation set (the run's ``sample`` of the labels) without a prediction are
reported as missing (empty prediction), or scored 1 as the authors' evaluation does
(``missing: authors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dogiqa import config, io, levelmap, paths, schema
from dogiqa.errors import DogIQAError, ParamError

log = logging.getLogger(__name__)

READOUTS = ("argmax", "expected")
MISSING = ("report", "authors")
REGION_COLUMNS = ("image", "region", "kind", "area", "area_authors", "count")
"""The columns of the regions table that the formulas read."""
SIZE_COLUMNS = ("height", "width")
"""The image size, read by the literal inner product alone (NaN without them)."""
SCORE_COLUMNS = ("image", "region", "prompt_id", "K", *READOUTS, "raw")
"""The columns of the scores table that the formulas read."""
AUTHORS_MISSING_SCORE = 1.0
REMAPPED_VARIANTS = ("local_area_sseg", "local_area_sseg_scaled", "local_only_area")
"""The variants computed for scores mapped again to other K (``classical_K``): Table 5's reading
(Table 4 exp 7's aggregation), its s_seg at the paper's scale, and the same without s_seg."""
PAPER_SSEG_RATIO = 71 / 7.22
"""c_max over the mean region count on SPAQ (seed 000, Sec. 4.1: max 71 masks, 7.22 on average)."""


@dataclass(frozen=True)
class Context:
    """What the formulas need besides the per-image features."""

    prompt_id: str
    ensemble: tuple[str, ...]
    c_max: float
    llmiqa_lambda: float
    c_max_scaled: float = float("nan")
    """c_max at the paper's scale: mean region count * PAPER_SSEG_RATIO."""


Formula = Callable[[Mapping[str, pd.DataFrame], Context], pd.Series]


def _s_seg(f: pd.DataFrame, ctx: Context) -> pd.Series:
    return f["count"] * f["K"] / ctx.c_max


def _coded_count(f: pd.DataFrame, ctx: Context) -> pd.Series:
    return 0.1 * f["count"]


def _unit_weight(ctx: Context) -> float:
    return 1.0


@dataclass(frozen=True)
class Variant:
    formula: Formula
    description: str
    ensemble: bool = False
    """True when the variant combines several prompts/models (computed once, not per prompt)."""
    count_term: Callable[[pd.DataFrame, Context], pd.Series] | None = None
    """The formula's term in the region count c (s_seg, or the authors' 0.1 * c), None where it
    has none; the rest of the formula is its quality part."""
    count_label: str = ""
    quality_weight: Callable[[Context], float] = _unit_weight
    """The total weight w of the level scores in the quality part: it lies in [w, w * K], and
    divided by w it reads on the level scale 1..K (:func:`explain`)."""
    classical_only: bool = False
    """True when the variant reads a classical scorer's continuous score (no MLLM has one)."""


def _s_seg_scaled(f: pd.DataFrame, ctx: Context) -> pd.Series:
    return f["count"] * f["K"] / ctx.c_max_scaled


def _per_prompt(formula: Callable[[pd.DataFrame, Context], pd.Series]) -> Formula:
    def run(frames: Mapping[str, pd.DataFrame], ctx: Context) -> pd.Series:
        return formula(frames[ctx.prompt_id], ctx)

    return run


def _llmiqa(frames: Mapping[str, pd.DataFrame], ctx: Context) -> pd.Series:
    members = [frames[p].g + ctx.llmiqa_lambda * frames[p].local_area for p in ctx.ensemble]
    # NaN in any member leaves the image missing (skipna=False): the ensemble is incomplete.
    return pd.concat(members, axis=1).mean(axis=1, skipna=False)


S_SEG = "s_seg = c*K/c_max"
S_SEG_SCALED = "s_seg = c*K/c_max at the paper's scale (c_max = mean count * 71 / 7.22)"
CODED_COUNT = "0.1*c"

VARIANTS: dict[str, Variant] = {
    "paper": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_area) / 2 + _s_seg(f, c)),
        "Dog-IQA paper: (s_global + s_local,area) / 2 + c*K/c_max (Table 4 exp 8)",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "paper_scaled": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_area) / 2 + _s_seg_scaled(f, c)),
        "paper with s_seg at the paper's scale: c_max = mean count * 71 / 7.22",
        count_term=_s_seg_scaled,
        count_label=S_SEG_SCALED,
    ),
    "paper_inner": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_inner) / 2 + _s_seg(f, c)),
        "paper with seed 000's literal s_local = <s, a>, a = region areas / (H*W)",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "no_sseg": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_area) / 2),
        "paper without s_seg: (s_global + s_local,area) / 2",
    ),
    "paper_mean": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_mean) / 2 + _s_seg(f, c)),
        "paper with the plain mean of region scores instead of the area-weighted mean",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "paper_authors_area": Variant(
        _per_prompt(lambda f, c: (f.g + f.local_area_authors) / 2 + _s_seg(f, c)),
        "paper with the region areas as the authors' code assigns them",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "global_only": Variant(
        _per_prompt(lambda f, c: f.g),
        "whole image only: s_global (Table 4 exp 5)",
    ),
    "local_only_area": Variant(
        _per_prompt(lambda f, c: f.local_area),
        "regions only, area-weighted, no s_seg (Table 4 exp 6)",
    ),
    "local_area_sseg": Variant(
        _per_prompt(lambda f, c: f.local_area + _s_seg(f, c)),
        "regions only, area-weighted, with s_seg (Table 4 exp 7; Table 5's printed K=7 row)",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "local_area_sseg_scaled": Variant(
        _per_prompt(lambda f, c: f.local_area + _s_seg_scaled(f, c)),
        "regions only, area-weighted, with s_seg at the paper's scale",
        count_term=_s_seg_scaled,
        count_label=S_SEG_SCALED,
    ),
    "local_mean": Variant(
        _per_prompt(lambda f, c: f.local_mean),
        "regions only, plain mean, no s_seg",
    ),
    "local_mean_sseg": Variant(
        _per_prompt(lambda f, c: f.local_mean + _s_seg(f, c)),
        "regions only, plain mean, with s_seg (Table 4 exp 3)",
        count_term=_s_seg,
        count_label=S_SEG,
    ),
    "local_mean_sseg_scaled": Variant(
        _per_prompt(lambda f, c: f.local_mean + _s_seg_scaled(f, c)),
        "regions only, plain mean, with s_seg at the paper's scale",
        count_term=_s_seg_scaled,
        count_label=S_SEG_SCALED,
    ),
    "global_float": Variant(
        _per_prompt(lambda f, c: f.g_float),
        "whole image, continuous score without levels (classical scorers; seed 001 Table 3 "
        "exp 1 asks an MLLM for a float)",
        classical_only=True,
    ),
    "authors_code": Variant(
        _per_prompt(lambda f, c: f.local_area_authors + _coded_count(f, c) + 0.5 * f.g),
        "authors' released code: s_local (coded areas) + 0.1*c + 0.5*s_global",
        count_term=_coded_count,
        count_label=CODED_COUNT,
        quality_weight=lambda c: 1.5,
    ),
    "authors_code_true_area": Variant(
        _per_prompt(lambda f, c: f.local_area + _coded_count(f, c) + 0.5 * f.g),
        "authors' released code with true region areas",
        count_term=_coded_count,
        count_label=CODED_COUNT,
        quality_weight=lambda c: 1.5,
    ),
    "authors_script": Variant(
        _per_prompt(lambda f, c: f.local_area_authors + _coded_count(f, c) + f.g),
        "authors' analysis script: s_local (coded areas) + 0.1*c + 1.0*s_global",
        count_term=_coded_count,
        count_label=CODED_COUNT,
        quality_weight=lambda c: 2.0,
    ),
    "llmiqa_one": Variant(
        _per_prompt(lambda f, c: f.g + c.llmiqa_lambda * f.local_area),
        "LLM-IQA with one model/prompt: s_global + lambda * s_local,area (seed 001 Table 3 exp 8)",
        quality_weight=lambda c: 1.0 + c.llmiqa_lambda,
    ),
    "llmiqa_one_no_complement": Variant(
        _per_prompt(lambda f, c: f.g + c.llmiqa_lambda * f.local_no_complement),
        "LLM-IQA with one model/prompt, s_local over the masks alone (seed 001 Table 5)",
        quality_weight=lambda c: 1.0 + c.llmiqa_lambda,
    ),
    "llmiqa": Variant(
        _llmiqa,
        "LLM-IQA: mean over the ensemble's prompts/models of s_global + lambda * s_local,area",
        ensemble=True,
        quality_weight=lambda c: 1.0 + c.llmiqa_lambda,
    ),
}
"""A variant is one entry: its formula over the per-image features of :func:`image_features`
(``g``, ``local_area``, ``local_area_authors``, ``local_mean``, ``count``, ``K``), a description,
and, for :func:`explain`, its count term and the weight of its quality part."""


@dataclass(frozen=True)
class AggregateParams:
    variants: tuple[str, ...]
    readouts: tuple[str, ...]
    main: str
    prompt_id: str
    prompt_ids: str | tuple[str, ...]
    ensemble: str | tuple[str, ...]
    llmiqa_lambda: float
    c_max: str | int
    missing: str
    classical_K: tuple[int, ...] = ()


def _name_list(sec: Mapping[str, Any], key: str, allowed: Any = None) -> str | tuple[str, ...]:
    """A param that is 'all' or a non-empty list of names (checked against ``allowed``)."""
    value = config.get(sec, "aggregate", key)
    if value == "all":
        return "all"
    items = config.get_list(sec, "aggregate", key)
    for item in items:
        if not isinstance(item, str) or (allowed is not None and item not in allowed):
            hint = f"; known: {list(allowed)}" if allowed is not None else ""
            raise ParamError(f"aggregate.{key}", f"unknown entry {item!r}{hint}")
    return tuple(items)


def validate_params(params: Mapping[str, Any]) -> AggregateParams:
    """Check the ``aggregate`` section; raise ParamError naming the first bad param."""
    sec = config.section(params, "aggregate")
    variants = _name_list(sec, "variants", VARIANTS)
    variants = tuple(VARIANTS) if variants == "all" else variants
    readouts = _name_list(sec, "readouts", READOUTS)
    readouts = READOUTS if readouts == "all" else readouts
    main = config.get_str(sec, "aggregate", "main")
    computed = {f"{v}:{r}" for v in variants for r in readouts}
    if main not in computed:
        raise ParamError(
            "aggregate.main", f"{main!r} is not among the computed variants {sorted(computed)}"
        )
    c_max = config.get(sec, "aggregate", "c_max")
    if c_max != "dataset":
        c_max = config.get_int(sec, "aggregate", "c_max", minimum=1)
    classical_k = config.get(sec, "aggregate", "classical_K")
    if not isinstance(classical_k, list):
        raise ParamError("aggregate.classical_K", f"must be a list, got {classical_k!r}")
    for k in classical_k:
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ParamError("aggregate.classical_K", f"levels must be integers >= 2, got {k!r}")
    return AggregateParams(
        variants=variants,
        readouts=readouts,
        main=main,
        prompt_id=config.get_str(sec, "aggregate", "prompt_id"),
        prompt_ids=_name_list(sec, "prompt_ids"),
        ensemble=_name_list(sec, "ensemble"),
        llmiqa_lambda=config.get_float(sec, "aggregate", "llmiqa_lambda"),
        c_max=c_max,
        missing=config.get_choice(sec, "aggregate", "missing", MISSING),
        classical_K=tuple(classical_k),
    )


def read_labels(dataset: str, sample: schema.Sample) -> pd.DataFrame:
    """The evaluation set: the labels table's rows in the run's sample (image, mos, ...), label
    order."""
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset), ("image", "path", "mos"))
    return labels[schema.sampled(labels, sample)].reset_index(drop=True)


def _classical_metric(prompt_id: str) -> str | None:
    """The classical metric a prompt id names (``piqe``, ``piqe_k5``), or None (an MLLM prompt)."""
    metric = prompt_id.rsplit("_k", 1)[0]
    return metric if metric in levelmap.load_anchors() else None


def float_scores(scores: pd.DataFrame) -> pd.Series:
    """A classical scorer's continuous score on the 1..K scale, unclipped: its level map
    (``dogiqa.levelmap``) without the clip and without levels. NaN for an MLLM's rows (its raw
    text is no continuous score)."""
    out = pd.Series(np.nan, index=scores.index)
    for prompt_id, rows in scores.groupby("prompt_id", sort=False):
        metric = _classical_metric(str(prompt_id))
        if metric is None:
            continue
        anchor = levelmap.load_anchors()[metric]
        raw = pd.to_numeric(rows["raw"], errors="coerce")
        out[rows.index] = [
            levelmap.position(v, anchor["best"], anchor["worst"], k, clip=False)
            for v, k in zip(raw, rows["K"], strict=True)
        ]
    return out


def requantized(scores: pd.DataFrame, prompt_id: str, levels: tuple[int, ...]) -> pd.DataFrame:
    """A classical scorer's rows mapped again to each K of ``levels`` (prompt id
    ``<scorer>_k<K>``): what the score stage writes with ``score.K`` = K, from the cached
    continuous score. Empty when ``prompt_id`` is no classical scorer."""
    metric = _classical_metric(prompt_id)
    if metric is None or not levels:
        return scores.iloc[:0]
    rows = scores[scores.prompt_id == prompt_id]
    raw = pd.to_numeric(rows["raw"], errors="coerce")
    parts = []
    for k in levels:
        mapped = [levelmap.levels(v, metric, k) for v in raw]
        parts.append(
            rows.assign(
                prompt_id=f"{prompt_id}_k{k}",
                K=k,
                argmax=[m[0] for m in mapped],
                expected=[m[1] for m in mapped],
            )
        )
    return pd.concat(parts, ignore_index=True)


def image_features(regions: pd.DataFrame, scores: pd.DataFrame, readout: str) -> pd.DataFrame:
    """Per image (one prompt's scores): g, g_float, local_area, local_area_authors, local_inner,
    local_no_complement, local_mean, count, K.

    A value is NaN when a region it needs has no score (that image's prediction is missing).
    """
    columns = ["image", "region", "K", readout]
    sized = [c for c in SIZE_COLUMNS if c in regions]
    merged = regions.loc[:, [*REGION_COLUMNS, *sized]].merge(
        scores.loc[:, columns]
        .assign(s_float=float_scores(scores) if "raw" in scores else np.nan)
        .rename(columns={readout: "s"}),
        on=["image", "region"],
        how="left",
    )
    glob = merged[merged.kind == "global"].groupby("image", sort=False)["s"].first()
    glob_float = merged[merged.kind == "global"].groupby("image", sort=False)["s_float"].first()
    # A coded complement area can be negative when masks overlap (segment.mode: correct keeps
    # that complement by its true area); such a region gets no weight in the coded weighting.
    local = merged[merged.kind.isin(schema.LOCAL_KINDS)].assign(
        area_authors=lambda d: d.area_authors.clip(lower=0)
    )
    masks_only = local.kind != "complement"
    local = local.assign(
        sa=lambda d: d.s * d.area,
        sb=lambda d: d.s * d.area_authors,
        sm=lambda d: d.sa.where(masks_only, 0.0),
        am=lambda d: d.area.where(masks_only, 0),
    )
    grouped = local.groupby("image", sort=False)
    incomplete = local["s"].isna().groupby(local["image"], sort=False).any()
    sums = grouped[["sa", "sb", "sm", "area", "area_authors", "am"]].sum()
    pixels = (
        grouped["height"].first() * grouped["width"].first()
        if len(sized) == len(SIZE_COLUMNS)
        else pd.Series(np.nan, index=sums.index)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        features = pd.DataFrame(
            {
                "g": glob,
                "g_float": glob_float,
                "local_area": sums.sa / sums.area.where(sums.area > 0),
                "local_area_authors": sums.sb / sums.area_authors.where(sums.area_authors > 0),
                "local_inner": sums.sa / pixels,
                "local_no_complement": sums.sm / sums.am.where(sums.am > 0),
                "local_mean": grouped["s"].mean(),
                "count": merged.groupby("image", sort=False)["count"].first(),
                "K": merged.groupby("image", sort=False)["K"].max(),
            }
        )
    local_cols = [
        "local_area",
        "local_area_authors",
        "local_inner",
        "local_no_complement",
        "local_mean",
    ]
    features.loc[incomplete.reindex(features.index, fill_value=True), local_cols] = np.nan
    return features


def _prompt_lists(p: AggregateParams, available: list[str]) -> tuple[str, list[str], list[str]]:
    """Resolve the main prompt, the per-prompt list and the ensemble against the scores table."""
    if not available:
        raise DogIQAError("the scores table has no rows")
    main = available[0] if p.prompt_id == "auto" else p.prompt_id
    if main not in available:
        raise ParamError("aggregate.prompt_id", f"{main!r} not in the scores table {available}")
    chosen = {}
    for key, value in (("prompt_ids", p.prompt_ids), ("ensemble", p.ensemble)):
        items = available if value == "all" else list(value)
        unknown = [i for i in items if i not in available]
        if unknown:
            raise ParamError(f"aggregate.{key}", f"{unknown} not in the scores table {available}")
        chosen[key] = items
    per_prompt = [main] + [i for i in chosen["prompt_ids"] if i != main]
    return main, per_prompt, chosen["ensemble"]


def variant_name(base: str, readout: str, prompt_id: str | None = None) -> str:
    return f"{base}:{readout}" + (f"@{prompt_id}" if prompt_id else "")


def region_count_facts(regions: pd.DataFrame, counts: pd.DataFrame | None) -> dict[str, Any]:
    """c_max and the mean count over the counted images (``counts``: every image of the dataset
    when the segment stage counted them all), else over the regions table's images."""
    per_image = regions.groupby("image", sort=False)["count"].first()
    population = per_image if counts is None or counts.empty else counts["count"]
    return {
        "c_max_dataset": float(population.max()),
        "mean_count": float(population.mean()),
        "counted_images": len(population),
        "c_max_sample": float(per_image.max()),
        "mean_count_sample": float(per_image.mean()),
    }


def compute(
    regions: pd.DataFrame,
    scores: pd.DataFrame,
    images: pd.Index,
    p: AggregateParams,
    counts: pd.DataFrame | None = None,
) -> tuple[dict[str, pd.Series], dict[str, Any]]:
    """Every requested variant as a Series over ``images`` (NaN = missing) and run facts.

    ``counts`` (image, count) are the region counts that c_max is taken over; without them,
    the regions table's own images."""
    available = list(dict.fromkeys(scores["prompt_id"]))
    main, per_prompt, ensemble = _prompt_lists(p, available)
    extra = requantized(scores, main, tuple(k for k in p.classical_K if k != scores.K.max()))
    scores = pd.concat([scores, extra], ignore_index=True) if len(extra) else scores
    remapped = list(dict.fromkeys(extra["prompt_id"])) if len(extra) else []
    count_facts = region_count_facts(regions, counts)
    c_max = count_facts["c_max_dataset"] if p.c_max == "dataset" else float(p.c_max)
    if not np.isfinite(c_max) or c_max <= 0:
        raise DogIQAError("no regions to aggregate (c_max undefined)")
    c_max_scaled = count_facts["mean_count"] * PAPER_SSEG_RATIO
    needed = sorted(set(per_prompt) | set(ensemble) | set(remapped))
    predictions: dict[str, pd.Series] = {}
    for readout in p.readouts:
        frames = {
            pid: image_features(regions, scores[scores.prompt_id == pid], readout).reindex(images)
            for pid in needed
        }
        for base in p.variants:
            variant = VARIANTS[base]
            targets = [None] if variant.ensemble else list(per_prompt)
            targets += remapped if base in REMAPPED_VARIANTS else []
            if variant.classical_only:
                targets = [pid for pid in targets if _classical_metric(pid or main) is not None]
            for pid in targets:
                ctx = Context(pid or main, tuple(ensemble), c_max, p.llmiqa_lambda, c_max_scaled)
                name = variant_name(base, readout, pid if pid not in (None, main) else None)
                predictions[name] = variant.formula(frames, ctx).reindex(images).astype(float)
    facts = {
        "prompt_id": main,
        "prompt_ids": per_prompt,
        # The main scorer mapped again to other K (aggregate.classical_K), named like prompts.
        "remapped_prompt_ids": remapped,
        "ensemble": ensemble,
        "c_max": c_max,
        "c_max_scaled": round(c_max_scaled, 6),
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in count_facts.items()},
    }
    return predictions, facts


def explain(
    regions: pd.DataFrame, scores: pd.DataFrame, images: pd.Index, p: AggregateParams
) -> pd.DataFrame:
    """The main variant of each image in its parts, for a reader: ``final`` (the prediction),
    ``count_term`` (its term in the region count, 0 where it has none), ``quality`` (the rest
    divided by its level weight: on the level scale 1..K) and the range ``low``..``high`` that
    ``final`` can take (quality 1..K, count 1..c_max)."""
    base, readout = p.main.split(":")
    predictions, facts = compute(regions, scores, images, p)
    ctx = Context(
        facts["prompt_id"],
        tuple(facts["ensemble"]),
        facts["c_max"],
        p.llmiqa_lambda,
        facts["c_max_scaled"],
    )
    main = scores[scores.prompt_id == ctx.prompt_id]
    frame = image_features(regions, main, readout).reindex(images)
    variant = VARIANTS[base]
    weight = variant.quality_weight(ctx)

    def count_term(counts: pd.Series) -> pd.Series:
        if variant.count_term is None:
            return pd.Series(0.0, index=counts.index)
        return variant.count_term(pd.DataFrame({"count": counts, "K": frame["K"]}), ctx)

    final = predictions[p.main]
    counted = count_term(frame["count"])
    ones = pd.Series(1.0, index=images)
    return pd.DataFrame(
        {
            "final": final,
            "quality": (final - counted) / weight,
            "count_term": counted,
            "low": weight + count_term(ones),
            "high": weight * frame["K"] + count_term(ones * ctx.c_max),
            "c_max": ctx.c_max,
            "weight": weight,
        },
        index=images,
    )


def _long_table(
    predictions: dict[str, pd.Series], labels: pd.DataFrame, missing: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    mos = labels.set_index("image")["mos"]
    parts, missing_counts = [], {}
    for name, series in predictions.items():
        missing_counts[name] = int(series.isna().sum())
        if missing == "authors":
            series = series.fillna(AUTHORS_MISSING_SCORE)
        parts.append(
            pd.DataFrame(
                {
                    "image": series.index,
                    "variant": name,
                    "prediction": series.to_numpy(),
                    "mos": mos.reindex(series.index).to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True), missing_counts


def run(dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    """Aggregate one dataset of a run; write the predictions table and its summary (in the run's
    folders); return the table."""
    p = validate_params(params)
    labels = read_labels(dataset, schema.sample_params(params))
    regions_path = paths.regions_table(dataset, run=run_name)
    regions = io.read_table(schema.REGIONS, regions_path, (*REGION_COLUMNS, *SIZE_COLUMNS))
    scores = io.read_table(schema.SCORES, paths.scores_table(dataset, run=run_name), SCORE_COLUMNS)
    images = pd.Index(labels["image"], name="image")
    counts_path = paths.region_counts(dataset, run=run_name)
    # Written by the segment stage; absent for regions made before it counted (c_max then comes
    # from the regions table's images).
    counts = io.read_table(schema.REGION_COUNTS, counts_path) if counts_path.exists() else None
    predictions, facts = compute(regions, scores, images, p, counts)
    table, missing_counts = _long_table(predictions, labels, p.missing)
    main_missing = predictions[p.main].index[predictions[p.main].isna()]
    summary = {
        "dataset": dataset,
        "images": len(images),
        "main": p.main,
        "variants": list(predictions),
        "missing_policy": p.missing,
        "missing": missing_counts,
        "missing_main_images": main_missing.tolist(),
        "without_regions": int((~images.isin(regions["image"])).sum()),
        "without_scores": int((~images.isin(scores["image"])).sum()),
        **facts,
    }
    io.write_table(schema.PREDICTIONS, paths.predictions_table(dataset, run=run_name), table)
    io.write_json_atomic(paths.summary("predictions", dataset, run=run_name), summary)
    log.info(
        "aggregate %s: %d images x %d variants, %d missing (main)",
        dataset,
        len(images),
        len(predictions),
        len(main_missing),
    )
    return table
