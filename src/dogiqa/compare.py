"""The compare stage: seed 003's double and multiple stimulus methods on a dataset's images.

A run's stage (``--run NAME``, ``dogiqa.runs``): the run's profile picks the system and the model
like any other param. Reads ``data/labels/<ds>.csv`` and the images, draws the design (which
images meet: ``dogiqa.comparisons``), asks an MLLM (``compare.backend``, with the model of
``score.hf`` or ``score.openai``) the prompting system ``compare.system`` (``dogiqa.systems``) for
every trial, and writes ``data/comparisons/<run>/<ds>.csv`` and its summary
(docs/data_contracts.md):

- double stimulus: one row per pair, the three-way distribution over A (the first image is
  better), B (the second) and same, read from one forward pass (``logits``) or parsed from the
  generated text (``generate``; chain-of-thought);
- multiple stimulus: the generated ranking of L images, one row per pair of the list (its
  C(L, 2) pairs, in the order the images were shown), the better one's credit 1.

A reply that names no answer (no A / B / same, no ranking of every image once) is a flagged
fallback: its rows carry no outcome, and the rank stage leaves them out (the authors' code drew a
random answer instead). The rank stage turns the table into scores and metrics.

The compared images are whole images of the run's sample (``sample``: the images its other
stages evaluate; ``compare.images`` of them, 0 for all), never in-context exemplars, which come
from the images outside it. Trials are cached one per line with the reply (``dogiqa.cache``,
``data/cache/compare/<run>/``), keyed by their images' names and bytes and by the
fingerprint of what shapes the answers (model settings, the system's texts and exemplars, the
readout, the code): an interrupted run asks only what no cache line holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from dogiqa import cache, comparisons, config, io, paths, schema, systems
from dogiqa.errors import DogIQAError, ImageError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import BACKENDS, READOUTS, backend, subsection
from dogiqa.scoring.base import Reply, backend_code_version

log = logging.getLogger(__name__)

DESIGNS: dict[tuple[str, str], Callable[[int, CompareParams, np.random.Generator], np.ndarray]] = {
    ("double", "per_image"): lambda n, p, rng: comparisons.per_item_pairs(
        n, p.pairs_per_image, rng
    ),
    ("double", "uniform"): lambda n, p, rng: comparisons.uniform_pairs(n, p.trials, rng),
    ("double", "all"): lambda n, p, rng: comparisons.all_pairs(n),
    ("multiple", "per_image"): lambda n, p, rng: comparisons.per_item_lists(
        n, p.task.size, p.lists_per_image, rng
    ),
    ("multiple", "uniform"): lambda n, p, rng: comparisons.random_lists(
        n, p.task.size, p.trials, rng
    ),
}
"""(stimulus, ``compare.design``) -> the trials: rows of image indices, shown in that order."""
DESIGN_NAMES = ("per_image", "uniform", "all")
OUTCOMES = {1: 1.0, 2: 0.0, 3: 0.5}
"""Double stimulus: the first image's credit for answer A, B, same (Eq. 1's counts)."""
CHUNK = 64
"""Trials asked between two cache appends: a killed run asks at most these again."""


@dataclass(frozen=True)
class CompareParams:
    backend: str
    task: systems.Task
    readout: str
    design: str
    pairs_per_image: int
    lists_per_image: int
    trials: int
    images: int
    seed: int
    sample: schema.Sample
    """The run's sample: the images compared (and, outside it, the exemplar pool)."""
    score: Mapping[str, Any]
    """The ``score`` section: the model settings of ``score.<backend>``."""

    @property
    def fingerprint(self) -> str:
        """A hash of what shapes the replies: the model's settings, the system's texts and
        exemplars, the readout, and the code that builds and runs the requests (the backend's
        module and every module it imports, ``dogiqa.systems`` among them, as the score
        stage's cache key: :func:`dogiqa.scoring.base.backend_code_version`)."""
        chosen = backend(self.backend)
        assert chosen.ask_settings is not None
        return cache.fingerprint(
            {
                "backend": self.backend,
                "model": chosen.ask_settings(self.score),
                "task": self.task.settings(),
                "readout": self.readout,
                "code": backend_code_version(BACKENDS[self.backend]),
            }
        )


def validate_params(params: Mapping[str, Any], dataset: str | None = None) -> CompareParams:
    """Check the ``compare`` section and the model's ``score.<backend>``; ParamError names the
    first bad param. With ``dataset``, in-context exemplars are drawn from its labels (the images
    outside the run's ``sample``). Which runs compare which datasets is ``runs``' business."""
    section = config.section(params, "compare")
    name = config.get_choice(section, "compare", "backend", BACKENDS)
    config.get_choice(section, "compare", "readout", READOUTS)
    config.get_int(section, "compare", "list_size", *systems.LIST_SIZES)
    config.get_int(section, "compare", "exemplars", minimum=1)
    config.get_int(section, "compare", "exemplar_seed", minimum=0)
    design = config.get_choice(section, "compare", "design", DESIGN_NAMES)
    sample = schema.sample_params(params)
    task = systems.compare_task(section, None if dataset is None else systems.Pool(dataset, sample))
    if (task.system.stimulus, design) not in DESIGNS:
        raise ParamError("compare.design", f"{design} is for the double stimulus method only")
    score = config.section(params, "score")
    chosen = backend(name)
    if chosen.ask is None:
        raise ParamError("compare.backend", f"{name} cannot compare images (hf or openai)")
    chosen.check(subsection(score, name))
    return CompareParams(
        backend=name,
        task=task,
        readout=section["readout"],
        design=design,
        pairs_per_image=config.get_int(section, "compare", "pairs_per_image", minimum=1),
        lists_per_image=config.get_int(section, "compare", "lists_per_image", minimum=1),
        trials=config.get_int(section, "compare", "trials", minimum=1),
        images=config.get_int(section, "compare", "images", minimum=0),
        seed=config.get_int(section, "compare", "seed", minimum=0),
        sample=sample,
        score=score,
    )


# --- the design --------------------------------------------------------------------------------


def compared_images(
    labels: pd.DataFrame, p: CompareParams, rng: np.random.Generator
) -> pd.DataFrame:
    """The evaluated images (the run's sample) to compare, in label order: all, or a seeded
    subset of ``compare.images``."""
    evaluated = schema.stage_images(labels, p.sample)
    if 0 < p.images < len(evaluated):
        keep = np.sort(rng.choice(len(evaluated), size=p.images, replace=False))
        evaluated = evaluated.iloc[keep].reset_index(drop=True)
    if len(evaluated) < p.task.size:
        raise DogIQAError(
            f"{len(evaluated)} evaluated images, fewer than the {p.task.size} a trial shows"
        )
    return evaluated


def draw_trials(n_images: int, p: CompareParams, rng: np.random.Generator) -> np.ndarray:
    return DESIGNS[(p.task.system.stimulus, p.design)](n_images, p, rng)


# --- asking ------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _image(path: str) -> Image.Image:
    """A whole image (the designs show each image in several trials)."""
    return Image.fromarray(load_rgb(paths.at(path)))


def _trial_key(names: Sequence[str], digests: Mapping[str, str | None]) -> str:
    return "|".join(f"{name}#{digests[name]}" for name in names)


@dataclass
class _Asked:
    replies: dict[int, Reply]
    skipped: dict[str, str]


def ask_trials(
    dataset: str,
    p: CompareParams,
    names: list[str],
    files: list[str],
    trials: np.ndarray,
    run_name: str = paths.DEFAULT_RUN,
) -> _Asked:
    """The reply to every trial, from the run's cache or from the model (built only when
    needed)."""
    digests = {name: cache.file_digest(paths.at(f)) for name, f in zip(names, files, strict=True)}
    keys = [_trial_key([names[i] for i in trial], digests) for trial in trials]
    store = cache.ImageCache(paths.stage_cache("compare", dataset, run=run_name))
    done = store.done()
    fingerprint = p.fingerprint
    asked = _Asked({}, {})
    todo: dict[str, list[int]] = {}  # a trial drawn twice is asked once (greedy: one answer)
    for number, key in enumerate(keys):
        cached = done.get(key, {}).get(fingerprint)
        if cached is not None:
            asked.replies[number] = Reply.from_json(cached)
        else:
            todo.setdefault(key, []).append(number)
    log.info(
        "compare %s: %d trials of %d images, %d distinct to ask",
        dataset,
        len(keys),
        len(names),
        len(todo),
    )
    model = None
    pending = list(todo)
    with tqdm(total=len(pending), unit="trial", desc=f"compare ({p.task.id})") as bar:
        for start in range(0, len(pending), CHUNK):
            chunk, stimuli = [], []
            for key in pending[start : start + CHUNK]:
                shown = _load(trials[todo[key][0]], names, files, asked.skipped)
                if shown is not None:
                    chunk.append(key)
                    stimuli.append(shown)
            if chunk:
                if model is None:
                    chosen = backend(p.backend)
                    assert chosen.ask is not None
                    model = chosen.ask(p.score, p.task, p.readout)
                replies = model.replies(model.requests(stimuli))
                for key, reply in zip(chunk, replies, strict=True):
                    for number in todo[key]:
                        asked.replies[number] = reply
                    store.add(key, {**done.get(key, {}), fingerprint: reply.to_json()})
            bar.update(len(pending[start : start + CHUNK]))
    return asked


def _load(
    trial: Sequence[int], names: list[str], files: list[str], skipped: dict[str, str]
) -> list[Image.Image] | None:
    """The trial's images, or None when one cannot be read (recorded in ``skipped``)."""
    shown = []
    for index in trial:
        name = names[index]
        if name in skipped:
            return None
        try:
            shown.append(_image(files[index]))
        except ImageError as exc:
            log.warning("compare: skipping the trials of %s: %s", name, exc)
            skipped[name] = str(exc)
            return None
    return shown


# --- the table ---------------------------------------------------------------------------------


def _empty(number: int, first: str, second: str, reply: Reply) -> dict[str, Any]:
    return {
        "trial": number,
        "first": first,
        "second": second,
        "p_first": np.nan,
        "p_second": np.nan,
        "p_same": np.nan,
        "outcome": np.nan,
        "expected": np.nan,
        "answer": "",
        "raw": reply.text,
        "fallback": True,
        "answer_mass": np.nan,
        "answers_found": None,
        "error": reply.error,
    }


def pair_rows(task: systems.Task, number: int, shown: Sequence[str], reply: Reply) -> list[dict]:
    """Double stimulus: the trial's row (A = the first image shown)."""
    scores = task.answer_scores(reply)
    row = _empty(number, shown[0], shown[1], reply)
    row.update(
        answer_mass=np.nan if scores.level_mass is None else scores.level_mass,
        answers_found=scores.levels_found,
        error=scores.error,
    )
    if scores.fallback:
        return [row]
    first, second, same = scores.probs
    row.update(
        p_first=first,
        p_second=second,
        p_same=same,
        outcome=OUTCOMES[scores.argmax],
        expected=first + 0.5 * same,
        answer=task.options[scores.argmax - 1],
        fallback=False,
    )
    return [row]


def list_rows(task: systems.Task, number: int, shown: Sequence[str], reply: Reply) -> list[dict]:
    """Multiple stimulus: the C(L, 2) pairs of the list in the order shown; the better image's
    credit 1 by the parsed ranking."""
    ranking = task.ranking(reply)
    rows = []
    for a, b in combinations(range(len(shown)), 2):
        row = _empty(number, shown[a], shown[b], reply)
        if ranking is not None:
            outcome = 1.0 if ranking.index(a) < ranking.index(b) else 0.0
            row.update(
                p_first=outcome,
                p_second=1.0 - outcome,
                p_same=0.0,
                outcome=outcome,
                expected=outcome,
                answer=", ".join(str(position + 1) for position in ranking),
                fallback=False,
            )
        rows.append(row)
    return rows


ROWS = {"double": pair_rows, "multiple": list_rows}
"""Stimulus -> the rows of one trial's reply."""


def table(
    task: systems.Task, names: list[str], trials: np.ndarray, replies: Mapping[int, Reply]
) -> pd.DataFrame:
    rows_of = ROWS[task.system.stimulus]
    rows = [
        row
        for number, trial in enumerate(trials)
        if number in replies
        for row in rows_of(task, number, [names[i] for i in trial], replies[number])
    ]
    frame = pd.DataFrame(rows, columns=list(schema.COMPARISONS.columns))
    return frame.astype({"answers_found": "Int64", "fallback": bool})


def summarise(
    dataset: str, p: CompareParams, names: list[str], frame: pd.DataFrame, asked: _Asked
) -> dict[str, Any]:
    trials = frame.drop_duplicates("trial")
    return {
        "dataset": dataset,
        "backend": p.backend,
        "system": p.task.system.id,
        "readout": p.readout,
        "design": p.design,
        "images_per_trial": p.task.size,
        "images": len(names),
        "trials": len(trials),
        "pairs": len(frame),
        "fallbacks": int(trials["fallback"].sum()),
        "errors": int((trials["error"] != "").sum()),
        "exemplars": [e.image for e in p.task.exemplars or ()],
        "skipped": [{"image": k, "reason": v} for k, v in asked.skipped.items()],
    }


def run(dataset: str, params: Mapping[str, Any], run_name: str = paths.DEFAULT_RUN) -> pd.DataFrame:
    """Compare the dataset's images of a run; write the comparisons table and its summary in the
    run's folders."""
    p = validate_params(params, dataset)
    labels = io.read_table(schema.LABELS, paths.labels_table(dataset))
    rng = np.random.default_rng(p.seed)
    chosen = compared_images(labels, p, rng)
    names, files = chosen["image"].tolist(), chosen["path"].tolist()
    exemplars = {e.image for e in p.task.exemplars or ()}
    if exemplars & set(names):  # by construction never: exemplars lie outside the sample
        raise DogIQAError(f"exemplars among the compared images: {sorted(exemplars & set(names))}")
    trials = draw_trials(len(names), p, rng)
    asked = ask_trials(dataset, p, names, files, trials, run_name)
    frame = table(p.task, names, trials, asked.replies)
    summary = {"run": run_name, **summarise(dataset, p, names, frame, asked)}
    out = paths.comparisons_table(dataset, run=run_name)
    io.write_table(schema.COMPARISONS, out, frame)
    io.write_json_atomic(paths.summary("comparisons", dataset, run=run_name), summary)
    log.info(
        "compare %s: %d trials (%s, %s), %d fallbacks -> %s",
        dataset,
        summary["trials"],
        p.task.system.id,
        p.readout,
        summary["fallbacks"],
        paths.show(out),
    )
    return frame
