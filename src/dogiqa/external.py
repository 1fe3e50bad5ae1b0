"""Cached outputs of other people's runs, read as inputs: real model predictions with no GPU.

Three public sources, each laid out below one folder (``data/raw/external`` after the download
stage; the local mirror's ``external/`` has the same layout):

- ``dogiqa_authors/livec_global_only_7word.json``: the Dog-IQA authors' mPLUG-Owl3 scores of the
  whole image (7-word standard, integers 1-7) for all 1169 LIVE Challenge images, a JSON list of
  ``{"name", "score"}`` (github.com/sjtuzzq/Dog-IQA @138203b, ``results/livec-test.json``).
- ``qbench/<model>/<dataset>.json``: Q-Bench's per-image logits of 15 MLLMs (and CLIP) for the
  words "good" and "poor", concatenated JSON objects with no separators
  (github.com/Q-Future/Q-Bench, ``leaderboards/IQA_outputs``).
- ``pyiqa_predictions/{LIVEC,SPAQ}/<metric>.csv``: per-image predictions of pyiqa metrics, two
  columns (prediction, ground-truth MOS) in label-file order, without image names
  (github.com/Dniaaa/GMC, ``data/LIVEC`` and ``data/SPAQ``).
- ``mllms_for_iqa/{SPAQ,AGIQA3K,NR_KADID}/``: seed 003's released 150-image uniform and difficult
  lists, and per-image MOS with rating deviations for SPAQ and AGIQA-3k
  (github.com/TianheWu/MLLMs-for-IQA @b9036ca, ``data/``); read by :mod:`dogiqa.selection`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.special import expit

from dogiqa import paths
from dogiqa.errors import DogIQAError
from dogiqa.registry import Resource

EXTERNAL_DIR = paths.RAW / "external"
"""Where the download stage puts the external files (the ``external`` resources' root),
relative to the project root (``paths.external_dir()`` is the absolute folder)."""

DOGIQA_COMMIT = "138203b66ff8b728ddcb591643169a9b785d50bb"
AUTHORS_LIVEC = "dogiqa_authors/livec_global_only_7word.json"
QBENCH_DIR = "qbench"
PYIQA_DIR = "pyiqa_predictions"
MLLMS_FOR_IQA_DIR = "mllms_for_iqa"
MLLMS_FOR_IQA_COMMIT = "b9036ca"

SOURCES = {
    "dogiqa_authors": (
        f"Dog-IQA authors' mPLUG-Owl3 whole-image scores, github.com/sjtuzzq/Dog-IQA "
        f"@{DOGIQA_COMMIT[:7]} results/livec-test.json"
    ),
    "qbench": "Q-Bench per-image logits, github.com/Q-Future/Q-Bench leaderboards/IQA_outputs",
    "pyiqa": "pyiqa predictions, github.com/Dniaaa/GMC data/{LIVEC,SPAQ}",
    "mllms_for_iqa": (
        "seed 003's released lists, github.com/TianheWu/MLLMs-for-IQA "
        f"@{MLLMS_FOR_IQA_COMMIT} data/"
    ),
}

EXTERNAL_RESOURCES: dict[str, Resource] = {
    "dogiqa_authors_livec": Resource(
        dest=AUTHORS_LIVEC,
        mirror=f"external/{AUTHORS_LIVEC}",
        url=(
            "https://raw.githubusercontent.com/sjtuzzq/Dog-IQA/"
            f"{DOGIQA_COMMIT}/results/livec-test.json"
        ),
        sha256="717167686d495d730de68d9f8f76527a575d80ac89611341c67a58290b9058f9",
    ),
    "qbench": Resource(
        dest=QBENCH_DIR,
        mirror=f"external/{QBENCH_DIR}",
        manifest="external_qbench.sha256",
        manual=(
            "copy leaderboards/IQA_outputs/<model>/{koniq,spaq,livec,agi,kadid}.json of the 15 "
            "models listed in the manifest from https://github.com/Q-Future/Q-Bench to "
            "data/raw/external/qbench/<model>/"
        ),
    ),
    "pyiqa_predictions": Resource(
        dest=PYIQA_DIR,
        mirror=f"external/{PYIQA_DIR}",
        manifest="external_pyiqa_predictions.sha256",
        manual=(
            "copy data/LIVEC/*.csv and data/SPAQ/*.csv (the metrics listed in the manifest) from "
            "https://github.com/Dniaaa/GMC to data/raw/external/pyiqa_predictions/{LIVEC,SPAQ}/"
        ),
    ),
    "mllms_for_iqa": Resource(
        dest=MLLMS_FOR_IQA_DIR,
        mirror=f"external/{MLLMS_FOR_IQA_DIR}",
        manifest="external_mllms_for_iqa.sha256",
        manual=(
            "copy data/{SPAQ,AGIQA3K,NR_KADID}/*.txt (the files listed in the manifest) of "
            f"https://github.com/TianheWu/MLLMs-for-IQA at commit {MLLMS_FOR_IQA_COMMIT} to "
            "data/raw/external/mllms_for_iqa/{SPAQ,AGIQA3K,NR_KADID}/"
        ),
    ),
}
"""Registry entries of the external files; ``dest`` is below ``data/raw/external/``."""

QBENCH_DATASETS = {
    "koniq": "koniq",
    "spaq": "spaq",
    "livec": "livec",
    "agiqa": "agi",
    "kadid": "kadid",
}
"""Our dataset key -> Q-Bench's file name."""

QBENCH_MODELS = {
    "clip_vit_l14": "CLIP ViT-L/14 (not an MLLM)",
    "idefics": "IDEFICS",
    "instructblip_t5": "InstructBLIP (Flan-T5)",
    "instructblip_vicuna": "InstructBLIP (Vicuna)",
    "internlm_xcomposer_vl": "InternLM-XComposer-VL",
    "kosmos_2": "Kosmos-2",
    "llama_adapter_v2": "LLaMA-Adapter-V2",
    "llava_v1": "LLaVA-v1",
    "llava_v1.5": "LLaVA-v1.5",
    "minigpt4_13b": "MiniGPT-4 (13B)",
    "mplug_owl": "mPLUG-Owl",
    "otter_v1": "Otter-v1",
    "qwen-vl": "Qwen-VL",
    "shikra": "Shikra",
    "visualglm": "VisualGLM",
}
"""Q-Bench's model folders and a readable name for each."""

QBENCH_LOGITS = {"instructblip_t5": ("logit_high", "logit_low")}
"""Models whose Q-Bench evaluation reads another pair of logits (as in Q-Bench's eval.ipynb)."""

QBENCH_TEMPERATURE = 100.0
"""Q-Bench's eval.ipynb divides both logits by 100 before the softmax. The score is monotone in
logit_good - logit_poor at any temperature, so SRCC does not depend on it (except that at
temperature 1 large logit gaps saturate to exactly 1.0 and tie); PLCC does."""

PYIQA_DATASETS = {"livec": "LIVEC", "spaq": "SPAQ"}
PYIQA_METRICS = {
    "niqe": "NIQE",
    "clipiqa": "CLIP-IQA",
    "clipiqa+": "CLIP-IQA+",
    "qalign": "Q-Align",
    "qualiclip": "QualiCLIP",
    "qualiclip+": "QualiCLIP+",
    "topiq_nr": "TOPIQ-NR",
}
"""pyiqa metric files and their names in the papers' tables. NIQE is stored negated (higher is
better), so its correlations with MOS are positive."""

TRAINING_SETS = "external_training_sets.yaml"
"""The trained external models' training sets, each with its source (``dogiqa/resources``)."""


@dataclass(frozen=True)
class TrainingSet:
    """What one trained external model saw in training, and where that is stated."""

    trained_on: tuple[str, ...]
    source: str


def training_sets() -> dict[str, TrainingSet]:
    """pyiqa metric name -> its training set, from ``resources/external_training_sets.yaml``."""
    text = resources.files("dogiqa").joinpath(f"resources/{TRAINING_SETS}").read_text("utf-8")
    return {
        name: TrainingSet(tuple(entry["trained_on"]), " ".join(entry["source"].split()))
        for name, entry in yaml.safe_load(text)["models"].items()
    }


def in_domain(metric: str, dataset: str) -> bool:
    """Whether ``metric`` was trained on ``dataset``: its result there is not cross-dataset.

    Unknown metrics raise: a trained model whose training set is not recorded cannot be placed."""
    known = training_sets()
    if metric not in known:
        raise DogIQAError(f"no training set recorded for {metric!r} (see {TRAINING_SETS})")
    return dataset in known[metric].trained_on


LIVEC_TRAINING = tuple(f"t{i}.bmp" for i in range(1, 8))
"""LIVE Challenge's 7 training images; the 1162-image test set is the label file without them."""


@dataclass
class ExternalScores:
    """Per-image scores from one external file."""

    frame: pd.DataFrame
    """At least ``image`` and ``score``; more columns depending on the source."""
    source: str
    """Where the scores come from (repository and path)."""
    duplicates: int = 0
    """Repeated image entries dropped (identical repeats; the first is kept)."""
    notes: list[str] = field(default_factory=list)


def _folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else paths.external_dir()


def _require(path: Path) -> Path:
    if not path.exists():
        raise DogIQAError(f"external file not found: {paths.show(path)} (run the download stage)")
    return path


def read_authors_livec(folder: str | Path | None = None) -> ExternalScores:
    """The authors' whole-image mPLUG-Owl3 LIVE Challenge scores: columns image, score."""
    path = _require(_folder(folder) / AUTHORS_LIVEC)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        frame = pd.DataFrame.from_records(records)[["name", "score"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DogIQAError(f"{path}: not a JSON list of {{name, score}} ({exc})") from None
    frame = frame.rename(columns={"name": "image"}).astype({"image": str, "score": float})
    return _dedupe(ExternalScores(frame, SOURCES["dogiqa_authors"]), path)


def parse_concatenated_json(text: str) -> list[dict]:
    """JSON objects written back to back (``{...}{...}``), with or without whitespace between;
    a JSON list among them contributes its items (a few Q-Bench files are one plain list)."""
    decoder = json.JSONDecoder()
    objects: list[dict] = []
    index, end = 0, len(text)
    while True:
        while index < end and text[index].isspace():
            index += 1
        if index >= end:
            return objects
        obj, index = decoder.raw_decode(text, index)
        objects.extend(obj if isinstance(obj, list) else [obj])


def qbench_models(folder: str | Path | None = None) -> list[str]:
    """Model folders present under ``qbench/``, sorted."""
    root = _require(_folder(folder) / QBENCH_DIR)
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def qbench_score(good: np.ndarray, poor: np.ndarray, temperature: float) -> np.ndarray:
    """softmax([good, poor] / T)[0] = sigmoid((good - poor) / T)."""
    return expit((np.asarray(good, float) - np.asarray(poor, float)) / temperature)


def read_qbench(
    model: str,
    dataset: str,
    folder: str | Path | None = None,
    temperature: float = QBENCH_TEMPERATURE,
) -> ExternalScores:
    """One model's Q-Bench logits on one dataset: image, logit_good, logit_poor, gt_score, score."""
    if dataset not in QBENCH_DATASETS:
        raise DogIQAError(f"Q-Bench has no {dataset!r}; known: {sorted(QBENCH_DATASETS)}")
    path = _require(_folder(folder) / QBENCH_DIR / model / f"{QBENCH_DATASETS[dataset]}.json")
    good_key, poor_key = QBENCH_LOGITS.get(model, ("logit_good", "logit_poor"))
    try:
        records = parse_concatenated_json(path.read_text(encoding="utf-8"))
        frame = pd.DataFrame(
            {
                "image": [str(r["img_path"]) for r in records],
                "logit_good": [float(r[good_key]) for r in records],
                "logit_poor": [float(r[poor_key]) for r in records],
                "gt_score": [float(r["gt_score"]) for r in records],
            }
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DogIQAError(f"{path}: unexpected Q-Bench record ({exc})") from None
    frame["image"] = frame["image"].map(lambda p: Path(p).name)
    frame["score"] = qbench_score(frame.logit_good, frame.logit_poor, temperature)
    scores = ExternalScores(frame, f"{SOURCES['qbench']}/{model}/{path.name}")
    if (good_key, poor_key) != ("logit_good", "logit_poor"):
        scores.notes.append(f"{model}: score from {good_key}/{poor_key}, as Q-Bench evaluates it")
    return _dedupe(scores, path)


def _dedupe(scores: ExternalScores, path: Path) -> ExternalScores:
    """Drop repeated images (keeping the first); refuse repeats that disagree."""
    frame = scores.frame
    repeated = frame.duplicated("image", keep="first")
    if not repeated.any():
        return scores
    value_cols = [c for c in frame.columns if c != "image"]
    conflicting = (
        frame[frame.duplicated("image", keep=False)].groupby("image")[value_cols].nunique()
    )
    if (conflicting > 1).any(axis=None):
        bad = conflicting[(conflicting > 1).any(axis=1)].index[:3].tolist()
        raise DogIQAError(f"{path}: repeated images with different values, e.g. {bad}")
    scores.frame = frame[~repeated].reset_index(drop=True)
    scores.duplicates = int(repeated.sum())
    names = frame.image[repeated].tolist()[:3]
    scores.notes.append(f"{scores.duplicates} identical repeated entries dropped, e.g. {names}")
    return scores


def read_pyiqa(
    dataset: str,
    metric: str,
    folder: str | Path | None = None,
    labels: pd.DataFrame | None = None,
) -> ExternalScores:
    """pyiqa predictions: columns score, gt_score (and image when ``labels`` are given).

    The file has no names, only label-file order. With ``labels`` (columns image, mos, in
    label-file order) the rows are named by position (LIVE Challenge: the 1162 test images,
    i.e. the label file without t1-t7), and every ground-truth value is checked against the MOS.
    """
    if dataset not in PYIQA_DATASETS:
        raise DogIQAError(f"no pyiqa predictions for {dataset!r}; known: {sorted(PYIQA_DATASETS)}")
    path = _require(_folder(folder) / PYIQA_DIR / PYIQA_DATASETS[dataset] / f"{metric}.csv")
    raw = pd.read_csv(path)
    if raw.shape[1] != 2:
        raise DogIQAError(
            f"{path}: expected 2 columns (prediction, ground truth), got {raw.shape[1]}"
        )
    frame = pd.DataFrame(
        {"score": raw.iloc[:, 0].astype(float), "gt_score": raw.iloc[:, 1].astype(float)}
    )
    scores = ExternalScores(frame, f"{SOURCES['pyiqa']}/{PYIQA_DATASETS[dataset]}/{path.name}")
    if labels is not None:
        scores.frame = _name_by_label_order(frame, labels, path)
    return scores


def _name_by_label_order(frame: pd.DataFrame, labels: pd.DataFrame, path: Path) -> pd.DataFrame:
    rows = labels
    if len(frame) != len(labels):
        rows = labels[~labels.image.isin(LIVEC_TRAINING)]
    if len(frame) != len(rows):
        raise DogIQAError(
            f"{path}: {len(frame)} predictions do not match the {len(labels)} labels "
            f"(nor {len(rows)} without the LIVE Challenge training images)"
        )
    mos = rows.mos.to_numpy(float)
    truth = frame["gt_score"].to_numpy()
    if not np.allclose(truth, mos, rtol=1e-5, atol=1e-4):
        worst = float(np.max(np.abs(truth - mos)))
        raise DogIQAError(f"{path}: ground-truth column differs from the MOS (max {worst:.4g})")
    return frame.assign(image=rows.image.to_numpy()).loc[:, ["image", "score", "gt_score"]]


def match_labels(scores: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Join external scores to labels by image name (then by file stem, as the authors' code).

    Returns the labels' rows (image, mos, score; score NaN where no prediction) in label order,
    and counts: labels, matched, missing (labels without a score), extra (scores without a label).
    """
    lookup = dict(zip(scores.image, scores.score, strict=True))
    by_stem = {Path(name).stem: value for name, value in lookup.items()}
    matched = [lookup.get(name, by_stem.get(Path(name).stem, np.nan)) for name in labels.image]
    joined = labels[["image", "mos"]].assign(score=np.asarray(matched, float))
    label_names = set(labels.image) | {Path(n).stem for n in labels.image}
    extra = sum(1 for n in lookup if n not in label_names and Path(n).stem not in label_names)
    counts = {
        "labels": len(labels),
        "matched": int(joined.score.notna().sum()),
        "missing": int(joined.score.isna().sum()),
        "extra": extra,
    }
    return joined.reset_index(drop=True), counts
