"""Uniform and difficult sample selection (seed 003, Sec. 3.3, Eq. 5), compared with the authors'
released lists.

Seed 003 evaluates MLLMs on 150 images per dataset, drawn two ways:

- **uniform**: the released lists (``*_sampled_uniform.txt``) are the images at evenly spaced
  ranks of the MOS, the first and last included; :func:`uniform_by_rank` draws that way;
- **difficult** (Eq. 5): greedily, the image maximising
  ``(q_w(x) - q(x))^2 / (sigma(x)^2 + eps) + lambda * Div(x, selected)``: the squared error of a
  proxy expert model ``q_w`` against the MOS ``q``, normalised by the variance of the ratings
  ``sigma^2`` (uncertain images count less), plus a diversity bonus. The paper sets
  ``lambda = 0.01``, ``eps = 1`` and fuses two expert models with equal weights.

Where the paper's text leaves a choice open, this module follows the authors' code
(github.com/TianheWu/MLLMs-for-IQA, ``sample_selection.py``, ``utils.py``): the MOS and the
rating deviations are min-max scaled to [0, 1] over the dataset, each expert's predictions are
mapped onto the scaled MOS by the 4-parameter logistic before they are averaged, and ``Div`` is
``1 - cos(f(x), mean of the selected features)`` (``cosine_to_mean``; the text says an MSE in
CLIP feature space, available as ``mse_to_mean``).

This study has no CLIP and no SPAQ or KADID images; its proxies are cached predictions of other
models (pyiqa metrics, Q-Bench MLLMs) and its diversity features the Q-Bench logits of every
model (``qbench_logits``), a stand-in named as such in every output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dogiqa import external, io, metrics, paths, schema
from dogiqa.config import get_choice, get_float, get_int, get_list, section
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.paper import write_table

RELEASED_COMMIT = external.MLLMS_FOR_IQA_COMMIT
RELEASED_DIR = external.MLLMS_FOR_IQA_DIR
RELEASED_FOLDERS = {"spaq": "SPAQ", "agiqa": "AGIQA3K", "kadid": "NR_KADID"}
"""Our dataset key -> the folder (and file prefix) of the authors' released lists."""
LISTS = ("uniform", "difficult")
TABLE = "selection_vs_released"


# --- the released files -------------------------------------------------------------------------


def _external(folder: str | Path | None) -> Path:
    """The external files' folder (default: the project's ``data/raw/external``)."""
    return Path(folder) if folder is not None else paths.external_dir()


def released_list(dataset: str, kind: str, folder: str | Path | None = None) -> list[str]:
    """Image names of one released list, in the file's order."""
    path = _released_path(dataset, f"sampled_{kind}", folder)
    frame = _read_columns(path, ["image", "value"])
    return frame.image.tolist()


def released_mos_std(dataset: str, folder: str | Path | None = None) -> pd.DataFrame:
    """Released per-image MOS and standard deviation of the ratings (SPAQ, AGIQA-3k)."""
    return _read_columns(_released_path(dataset, "mos_std", folder), ["image", "mos", "std"])


def kadid_mos_std(raw: str | Path | None = None) -> pd.DataFrame:
    """KADID-10k's MOS with the deviation of its ratings, sqrt of the label file's ``var``
    (the authors released no deviation file for NR-KADID)."""
    path = Path(raw if raw is not None else paths.raw_dir("kadid")) / "dmos.csv"
    if not path.exists():
        raise DogIQAError(f"{paths.show(path)}: not found (run the download stage)")
    frame = pd.read_csv(path)
    if not {"dist_img", "dmos", "var"} <= set(frame.columns):
        raise DogIQAError(f"{paths.show(path)}: expected columns dist_img, dmos, var")
    return pd.DataFrame(
        {"image": frame.dist_img.astype(str), "mos": frame.dmos, "std": np.sqrt(frame["var"])}
    )


def _released_path(dataset: str, suffix: str, folder: str | Path | None) -> Path:
    if dataset not in RELEASED_FOLDERS:
        raise DogIQAError(f"no released lists for {dataset!r}; known: {sorted(RELEASED_FOLDERS)}")
    name = RELEASED_FOLDERS[dataset]
    path = _external(folder) / RELEASED_DIR / name / f"{name}_{suffix}.txt"
    if not path.exists():
        raise DogIQAError(f"{paths.show(path)}: not found (run the download-external stage)")
    return path


def _read_columns(path: Path, names: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(path, sep=r"\s+", header=None, dtype={0: str})
    if frame.shape[1] != len(names):
        raise DogIQAError(
            f"{paths.show(path)}: expected {len(names)} columns, got {frame.shape[1]}"
        )
    frame.columns = names
    return frame


def pool(dataset: str, folder: str | Path | None = None) -> pd.DataFrame:
    """Every image of the dataset with its MOS and rating deviation: image, mos, std."""
    if dataset == "kadid":
        return kadid_mos_std()
    return released_mos_std(dataset, folder)


# --- proxies and features -----------------------------------------------------------------------


def predictor(spec: str, dataset: str, folder: str | Path | None = None) -> pd.Series:
    """Cached predictions of one model, by image: ``pyiqa:<metric>`` or ``qbench:<model>``."""
    source, _, name = spec.partition(":")
    if source == "pyiqa":
        labels = io.read_table(schema.LABELS, paths.labels_table(dataset), ("image", "mos"))
        frame = external.read_pyiqa(dataset, name, folder, labels=labels).frame
    elif source == "qbench":
        frame = external.read_qbench(name, dataset, folder).frame
    else:
        raise DogIQAError(f"unknown predictor {spec!r}: expected pyiqa:<metric> or qbench:<model>")
    return frame.set_index("image").score.rename(spec)


def logistic_to(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``prediction`` mapped onto ``target``'s scale by the 4-parameter logistic (the authors'
    ``fit_curve``); a fit that fails falls back to a least-squares line."""
    params, _ = metrics.fit_logistic(prediction, target)
    if params is not None:
        return metrics.logistic4(prediction, *params)
    slope, intercept = np.polyfit(prediction, target, 1)
    return slope * prediction + intercept


def fuse(predictions: pd.DataFrame, target: np.ndarray) -> np.ndarray:
    """Equal-weight fusion of the columns, each first mapped onto ``target`` by the logistic."""
    mapped = [logistic_to(target, predictions[c].to_numpy(float)) for c in predictions.columns]
    return np.mean(mapped, axis=0)


def qbench_logits(images: pd.Series, dataset: str, folder: str | Path | None) -> np.ndarray:
    """Per image, the Q-Bench logits (good, poor) of every model, z-scored per column; images a
    model did not answer get 0 (the column mean) there."""
    columns = []
    for model in external.qbench_models(folder):
        frame = external.read_qbench(model, dataset, folder).frame.set_index("image")
        for column in ("logit_good", "logit_poor"):
            values = frame[column].reindex(images).to_numpy(float)
            spread = np.nanstd(values) or 1.0
            columns.append(np.nan_to_num((values - np.nanmean(values)) / spread))
    return np.column_stack(columns)


FEATURES: dict[str, Callable[[pd.Series, str, Path | None], np.ndarray | None]] = {
    "qbench_logits": qbench_logits,
    "none": lambda images, dataset, folder: None,
}
"""Diversity feature spaces available here (the paper's is CLIP ViT-B/32's visual encoder)."""


# --- Eq. 5 ------------------------------------------------------------------------------------


def minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, float)
    return (values - values.min()) / (np.ptp(values) or 1.0)


def difficulty(proxy: np.ndarray, mos: np.ndarray, std: np.ndarray, eps: float) -> np.ndarray:
    """The first term of Eq. 5: squared proxy error over (rating variance + eps)."""
    return (np.asarray(proxy) - np.asarray(mos)) ** 2 / (np.asarray(std) ** 2 + eps)


def _cosine_to_mean(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1) * (np.linalg.norm(mean) or 1.0)
    return 1.0 - features @ mean / np.where(norms == 0, 1.0, norms)


def _mse_to_mean(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.mean((features - mean) ** 2, axis=1)


DIVERSITY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine_to_mean": _cosine_to_mean,
    "mse_to_mean": _mse_to_mean,
}
"""Div(x, S) from the features of x and the mean feature of the selected set S."""


def select_difficult(
    hardness: np.ndarray,
    size: int,
    features: np.ndarray | None = None,
    lam: float = 0.01,
    diversity: str = "cosine_to_mean",
) -> np.ndarray:
    """Greedy Eq. 5: indices in the order picked. With no features (or ``lam = 0``) this is
    the ``size`` largest ``hardness`` values. Before the first pick Div is 0 for every image."""
    hardness = np.asarray(hardness, float)
    if not 0 < size <= len(hardness):
        raise DogIQAError(f"cannot select {size} of {len(hardness)} images")
    if features is None or lam == 0:
        return np.argsort(-hardness, kind="stable")[:size]
    if diversity not in DIVERSITY:
        raise DogIQAError(f"unknown diversity {diversity!r}; known: {sorted(DIVERSITY)}")
    spread = DIVERSITY[diversity]
    chosen: list[int] = []
    total = np.zeros(features.shape[1])
    value = hardness.copy()
    for _ in range(size):
        pick = int(np.argmax(value))
        chosen.append(pick)
        total += features[pick]
        value = hardness + lam * spread(features, total / len(chosen))
        value[chosen] = -np.inf
    return np.asarray(chosen)


def uniform_by_rank(mos: np.ndarray, size: int) -> np.ndarray:
    """Indices of the images at ``size`` evenly spaced MOS ranks, lowest and highest included
    (ties in file order)."""
    mos = np.asarray(mos, float)
    if not 0 < size <= len(mos):
        raise DogIQAError(f"cannot select {size} of {len(mos)} images")
    order = np.argsort(mos, kind="stable")
    return order[np.round(np.linspace(0, len(mos) - 1, size)).astype(int)]


# --- the stage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionParams:
    datasets: list[str]
    size: int
    lam: float
    eps: float
    diversity: str
    features: str
    proxy: dict[str, list[str]]


def validate_params(params: Mapping[str, Any]) -> SelectionParams:
    sec = section(params, "selection")
    datasets = get_list(sec, "selection", "datasets")
    unknown = [d for d in datasets if d not in RELEASED_FOLDERS]
    if unknown:
        raise ParamError(
            "selection.datasets",
            f"no released lists for {unknown[0]!r}; known: {sorted(RELEASED_FOLDERS)}",
        )
    proxy = section(sec, "proxy") if isinstance(sec.get("proxy"), dict) else None
    if proxy is None:
        raise ParamError("selection.proxy", "must map each dataset to a list of predictors")
    for dataset in datasets:
        specs = get_list(proxy, "selection.proxy", dataset)
        bad = [s for s in specs if not isinstance(s, str) or s.split(":")[0] not in PROXY_SOURCES]
        if bad:
            raise ParamError(
                f"selection.proxy.{dataset}", f"{bad[0]!r} is not pyiqa:<metric> or qbench:<model>"
            )
    return SelectionParams(
        datasets=datasets,
        size=get_int(sec, "selection", "size", minimum=1),
        lam=get_float(sec, "selection", "lambda", minimum=0.0),
        eps=get_float(sec, "selection", "epsilon", minimum=0.0),
        diversity=get_choice(sec, "selection", "diversity", DIVERSITY),
        features=get_choice(sec, "selection", "features", FEATURES),
        proxy={d: list(proxy[d]) for d in datasets},
    )


PROXY_SOURCES = ("pyiqa", "qbench")


def select(dataset: str, p: SelectionParams, folder: Path | None = None) -> pd.DataFrame:
    """The dataset's pool with this study's and the released selections.

    Columns: image, mos, std (native), mos01 and std01 (min-max scaled, as the authors' code),
    the proxy members and their fusion ``proxy`` (on mos01), ``difficulty`` (Eq. 5's first
    term), ``uniform`` / ``difficult`` (this study: 1-based pick order, 0 = not selected), and
    ``released_uniform`` / ``released_difficult`` (position in the released file, 0 = absent).
    """
    frame = pool(dataset, folder).reset_index(drop=True)
    frame["mos01"], frame["std01"] = minmax(frame.mos), minmax(frame["std"])
    members = pd.DataFrame({s: predictor(s, dataset, folder) for s in p.proxy[dataset]})
    members = members.reindex(frame.image)
    complete = members.notna().all(axis=1).to_numpy()
    if complete.sum() < p.size:
        raise DogIQAError(
            f"{dataset}: only {complete.sum()} images have every proxy prediction "
            f"({', '.join(p.proxy[dataset])}); {p.size} are to be selected"
        )
    frame = frame[complete].reset_index(drop=True)
    members = members[complete].reset_index(drop=True)
    for spec in members.columns:
        frame[spec] = members[spec].to_numpy()
    frame["proxy"] = fuse(members, frame.mos01.to_numpy())
    frame["difficulty"] = difficulty(frame.proxy, frame.mos01, frame.std01, p.eps)
    features = FEATURES[p.features](frame.image, dataset, folder)
    picks = {
        "uniform": uniform_by_rank(frame.mos.to_numpy(), p.size),
        "difficult": select_difficult(
            frame.difficulty.to_numpy(), p.size, features, p.lam, p.diversity
        ),
    }
    for kind, order in picks.items():
        column = np.zeros(len(frame), dtype=int)
        column[order] = np.arange(1, len(order) + 1)
        frame[kind] = column
        position = {name: k + 1 for k, name in enumerate(released_list(dataset, kind, folder))}
        frame[f"released_{kind}"] = frame.image.map(position).fillna(0).astype(int)
    return frame


def _distribution(values: pd.Series, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_mean": values.mean(),
        f"{prefix}_median": values.median(),
        f"{prefix}_sd": values.std(),
    }


def compare(frame: pd.DataFrame, dataset: str, p: SelectionParams) -> list[dict[str, Any]]:
    """Rows of the comparison table for one dataset: per list, the released and this study's
    selection side by side (overlap, MOS and deviation distributions, proxy difficulty)."""
    rows = []
    for kind in LISTS:
        ours = frame[frame[kind] > 0]
        theirs = frame[frame[f"released_{kind}"] > 0]
        for selection, part in (("released", theirs), ("this study", ours)):
            row: dict[str, Any] = {
                "dataset": dataset,
                "list": kind,
                "selection": selection,
                "images": len(part),
                "overlap_with_released": len(set(part.image) & set(theirs.image)),
                "overlap_by_chance": len(ours) * len(theirs) / len(frame),
                # images of tied MOS are interchangeable for a rank rule: count equal values too
                "same_mos_as_released": sum(
                    (Counter(part.mos.round(9)) & Counter(theirs.mos.round(9))).values()
                ),
            }
            row |= _distribution(part.mos01, "mos01")
            row |= _distribution(part.std01, "std01")
            row["difficulty_mean"] = part.difficulty.mean()
            row["proxy_srcc"] = metrics.srcc(part.proxy.to_numpy(), part.mos.to_numpy())
            row["ks_mos_vs_released"] = stats.ks_2samp(part.mos01, theirs.mos01).statistic
            row["ks_std_vs_released"] = stats.ks_2samp(part.std01, theirs.std01).statistic
            row["proxy"] = " + ".join(p.proxy[dataset])
            row["rule"] = (
                _rule(kind, p)
                if selection == "this study"
                else (f"released list, github.com/TianheWu/MLLMs-for-IQA @{RELEASED_COMMIT}")
            )
            rows.append(row)
    return rows


def _rule(kind: str, p: SelectionParams) -> str:
    if kind == "uniform":
        return f"{p.size} evenly spaced MOS ranks"
    return (
        f"Eq. 5, lambda={p.lam:g}, eps={p.eps:g}, Div={p.diversity} on {p.features} "
        "(stand-in for CLIP features)"
    )


def selection_table(dataset: str) -> Path:
    return paths.stage_file("selections", dataset)


def run(params: Mapping[str, Any]) -> pd.DataFrame:
    p = validate_params(params)
    rows = []
    for dataset in p.datasets:
        frame = select(dataset, p)
        io.write_table(schema.SELECTIONS, selection_table(dataset), frame, float_format="%.10g")
        rows += compare(frame, dataset, p)
        ours = frame[frame.difficult > 0]
        print(
            f"{dataset}: {len(frame)} images, difficult overlap with released "
            f"{int((ours.released_difficult > 0).sum())}/{p.size}, uniform overlap "
            f"{int(((frame.uniform > 0) & (frame.released_uniform > 0)).sum())}/{p.size}"
        )
    table = pd.DataFrame(rows)
    write_table(table, TABLE)
    return table


def load(dataset: str) -> pd.DataFrame:
    """A dataset's selections table (the select stage's output)."""
    return io.read_table(schema.SELECTIONS, selection_table(dataset))
