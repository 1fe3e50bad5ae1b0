"""Prompting systems as data (seed 003, Sec. 3): psychophysical procedure x prompting strategy.

A system is an entry of ``systems`` in ``resources/prompts.yaml``, named
``<stimulus>_<strategy>``: a single, double or multiple stimulus shown with standard,
in-context (``in_context``) or chain-of-thought (``cot``) prompting. This module turns a system
into chat requests and reads the replies; the backends (``dogiqa.scoring``) only run requests.

- **single stimulus** (the score stage, ``score.system``): one crop per request, answered with a
  level of Dog-IQA's prompt (``score.prompt``). ``single_standard`` *is* Dog-IQA's prompt, byte
  for byte (its scores keep their cache fingerprint). ``single_in_context`` puts exemplar turns
  before it: the same question about an exemplar image, answered with the level of that image's
  MOS. ``single_cot`` asks for a description and then ``Score: <level>``; its readout is
  ``generate`` and the last ``Score:`` is parsed (no level: the authors' fallback, level 1,
  flagged and counted).
- **double stimulus** (the compare stage): images A and B; the answers A, B and same are single
  tokens, read from one forward pass as a three-way distribution (``logits``, by token id as the
  levels are), or parsed from generated text.
- **multiple stimulus** (the compare stage): L numbered images; the generated ranking
  (``Ranking: 3, 1, 4, 2``) must name every image once, and gives the C(L, 2) pairs.

In-context exemplars are drawn by a seeded rule (:func:`choose_exemplars`) from the dataset's
images *outside* the run's sample (``sample`` of params.yaml, the images its stages evaluate), so
an exemplar is never an evaluated image; the human judgement shown with them comes from their MOS.
A run that samples every image (``sample.size: 0``) has no image left to show as an exemplar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dogiqa import cache as result_cache
from dogiqa import io, paths, prompts, schema
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring.base import (
    LevelScores,
    Reply,
    error_scores,
    fallback_scores,
    from_logits,
    one_hot,
    parse_level,
)

STIMULI = ("single", "double", "multiple")
STRATEGIES = ("standard", "in_context", "chain_of_thought")
PLAIN = "single_standard"
"""Dog-IQA's prompt as it is: the score stage's default system."""
LIST_SIZES = (2, 9)
"""Smallest and largest list of the multiple-stimulus method (images numbered 1..L, one digit)."""


@dataclass(frozen=True)
class System:
    """One prompting system as ``resources/prompts.yaml`` defines it."""

    id: str
    stimulus: str
    strategy: str
    readouts: tuple[str, ...]
    """The readouts it allows: ``logits`` (one forward pass) and/or ``generate``."""
    max_new_tokens: int
    user: str | None
    """The question (None: Dog-IQA's prompt as it is)."""
    image: str
    """How one stimulus is shown (``{label}``; the image marker)."""
    labels: tuple[str, ...]
    options: tuple[str, ...]
    """Double stimulus: the answers meaning first better, second better, same."""
    answer: str | None
    """In-context: the exemplar's answer turn."""
    parse: str | None
    """Generate readout: the regular expression whose last match's first group is the answer
    (None: the authors' ``int(text)``)."""

    @property
    def compares(self) -> bool:
        """True for the double and multiple stimulus methods (the compare stage's)."""
        return self.stimulus != "single"


def _system(name: str, spec: Mapping[str, Any]) -> System:
    stimulus, strategy = spec["stimulus"], spec["strategy"]
    if stimulus not in STIMULI or strategy not in STRATEGIES:
        raise DogIQAError(f"prompts.yaml: system {name}: unknown stimulus or strategy")
    return System(
        id=name,
        stimulus=stimulus,
        strategy=strategy,
        readouts=tuple(spec["readouts"]),
        max_new_tokens=int(spec["max_new_tokens"]),
        user=spec.get("user"),
        image=spec.get("image") or prompts.resource_section("image_marker"),
        labels=tuple(str(label) for label in spec.get("labels") or ()),
        options=tuple(str(option) for option in spec.get("options") or ()),
        answer=spec.get("answer"),
        parse=spec.get("parse"),
    )


@cache
def all_systems() -> dict[str, System]:
    """Every prompting system by id, in the file's order."""
    return {name: _system(name, spec) for name, spec in prompts.resource_section("systems").items()}


def system_ids() -> list[str]:
    return list(all_systems())


def get(system_id: str, param: str = "system") -> System:
    try:
        return all_systems()[system_id]
    except KeyError:
        known = system_ids()
        raise ParamError(param, f"unknown prompting system {system_id!r}; known: {known}") from None


# --- exemplars ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemplar:
    """An image shown with its human judgement (in-context prompting)."""

    image: str
    path: str
    """As the labels table lists it (relative to the project root)."""
    mos_norm: float
    """MOS min-max normalised over the label file (higher is better)."""
    digest: str | None
    """The image file's digest: a changed file changes the fingerprint of what it shaped."""


@dataclass(frozen=True)
class Pool:
    """Where a run's in-context exemplars come from: the labelled images of ``dataset`` outside
    the run's ``sample``."""

    dataset: str
    sample: schema.Sample


def choose_exemplars(
    labels: pd.DataFrame, needed: int, seed: int, sample: schema.Sample
) -> tuple[Exemplar, ...]:
    """``needed`` exemplars from the labelled images *outside* the run's sample that have an
    image file. The rule: the pool, sorted by MOS, is cut into ``needed`` strata of (nearly) equal
    size and one image is drawn from each (so the exemplars span the quality range), then the
    draws are shuffled (so their order says nothing about their quality); both with ``seed``."""
    has_file = labels["path"].astype(str).str.strip() != ""
    pool = labels[has_file & ~schema.sampled(labels, sample)]
    if len(pool) < needed:
        raise ParamError(
            "sample.size",
            f"in-context prompting needs {needed} exemplar images outside the evaluated sample, "
            f"the labels table has {len(pool)} (sample.size {sample.size} evaluates the others; "
            "0 evaluates every image)",
        )
    pool = pool.sort_values(["mos_norm", "order"], kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    picks = [int(rng.choice(stratum)) for stratum in np.array_split(np.arange(len(pool)), needed)]
    chosen = pool.iloc[[picks[i] for i in rng.permutation(needed)]]
    return tuple(
        Exemplar(
            str(row.image),
            str(row.path),
            float(row.mos_norm),
            result_cache.file_digest(paths.at(str(row.path))),
        )
        for row in chosen.itertuples()
    )


def exemplar_level(mos_norm: float, k: int) -> int:
    """The level of a normalised MOS on K levels: ``1 + round(mos_norm * (K - 1))`` (seed 000's
    Eq. 1, shifted to the levels 1..K the prompts use; numpy's round half to even)."""
    return 1 + int(np.round(mos_norm * (k - 1)))


@cache
def _exemplar_image(path: str) -> Image.Image:
    return Image.fromarray(load_rgb(paths.at(path)))


# --- requests -----------------------------------------------------------------------------------


@dataclass
class Request:
    """One chat request: turns in the content-parts format (images as ``{"type": "image"}``
    parts) and the images those parts stand for, in order."""

    messages: list[dict[str, Any]]
    images: list[Image.Image]

    def image_parts(self, parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The turns with the n-th image part replaced by ``parts[n]`` (e.g. data URLs)."""
        supply = iter(parts)
        return [
            {
                **turn,
                "content": [
                    dict(next(supply)) if part.get("type") == "image" else dict(part)
                    for part in turn["content"]
                ],
            }
            for turn in self.messages
        ]

    def marker_messages(self, marker: str) -> list[dict[str, str]]:
        """The turns with plain-text content, each image part written as ``marker`` (the
        format of models whose own processor finds the images in the text, e.g. mPLUG-Owl3)."""
        return [
            {
                "role": turn["role"],
                "content": "".join(
                    marker if part.get("type") == "image" else part["text"]
                    for part in turn["content"]
                ),
            }
            for turn in self.messages
        ]


def _text(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


# --- tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A prompting system made concrete: its question (Dog-IQA's prompt for a single stimulus),
    the number of stimuli per request and its exemplars."""

    system: System
    prompt: prompts.Prompt | None
    """Single stimulus: Dog-IQA's prompt, whose levels are the answers."""
    size: int
    """Stimuli per request: 1, 2, or L (multiple stimulus)."""
    exemplars: tuple[Exemplar, ...] | None = ()
    """In-context: ``count * size`` exemplars (grouped by request); None where no dataset was
    named to draw them from."""

    @property
    def id(self) -> str:
        """The scores table's ``prompt_id`` (single stimulus), or the system's id."""
        if self.system.compares:
            return self.system.id
        assert self.prompt is not None
        return self.prompt.id if self.plain else f"{self.prompt.id}+{self.system.id}"

    @property
    def plain(self) -> bool:
        return self.system.id == PLAIN

    @property
    def options(self) -> tuple[str, ...]:
        """The answers a one-token readout reads: the levels, A/B/same, none for a ranking."""
        if self.prompt is not None:
            return tuple(str(level) for level in range(1, self.prompt.K + 1))
        return self.system.options

    @property
    def max_new_tokens(self) -> int:
        return self.system.max_new_tokens

    # --- the conversation ---------------------------------------------------------------------

    def _question(self) -> str:
        system = self.system
        if system.stimulus == "single":
            assert self.prompt is not None
            if system.user is None:
                return self.prompt.user
            levels = ", ".join(self.options)
            return system.user.format(levels=levels)
        labels = system.labels or tuple(str(n) for n in range(1, self.size + 1))
        shown = "".join(system.image.format(label=label) for label in labels)
        return system.user.format(images=shown, count=self.size)

    def _answer(self, group: Sequence[Exemplar]) -> str:
        """The human judgement of one exemplar group, in the answer format of the test."""
        template = self.system.answer or ""
        if self.system.stimulus == "single":
            assert self.prompt is not None
            return template.format(level=exemplar_level(group[0].mos_norm, self.prompt.K))
        if self.system.stimulus == "double":
            first, second = (e.mos_norm for e in group)
            index = 0 if first > second else 1 if second > first else 2
            return template.format(option=self.options[index])
        order = sorted(range(len(group)), key=lambda i: -group[i].mos_norm)
        return template.format(ranking=", ".join(str(i + 1) for i in order))

    def _groups(self) -> list[tuple[Exemplar, ...]]:
        if self.exemplars is None:
            raise DogIQAError(
                f"{self.system.id}: in-context prompting draws its exemplars from a dataset's "
                "images outside the evaluated sample, and no dataset is named here"
            )
        return [
            tuple(self.exemplars[i : i + self.size])
            for i in range(0, len(self.exemplars), self.size)
        ]

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation (images as parts): system turn, exemplar turns, the question."""
        marker, question = prompts.resource_section("image_marker"), self._question()

        def ask() -> dict[str, Any]:
            return {"role": "user", "content": prompts.content_parts(question, marker)}

        system_text = self.prompt.system if self.prompt is not None else None
        turns = [_text("system", system_text)] if system_text else []
        if self.system.strategy == "in_context":
            for group in self._groups():
                turns += [ask(), _text("assistant", self._answer(group))]
        return [*turns, ask()]

    def exemplar_images(self) -> list[Image.Image]:
        """The exemplar images in the order the conversation shows them."""
        if self.system.strategy != "in_context":
            return []
        return [_exemplar_image(e.path) for group in self._groups() for e in group]

    def request(
        self, stimuli: Sequence[Image.Image], exemplar_images: Sequence[Image.Image] | None = None
    ) -> Request:
        """The request for one item: its ``size`` stimuli after the exemplars' images (pass them,
        prepared, as ``exemplar_images``; default: loaded as they are)."""
        if len(stimuli) != self.size:
            raise DogIQAError(f"{self.id}: {len(stimuli)} images for a {self.size}-image request")
        shown = self.exemplar_images() if exemplar_images is None else list(exemplar_images)
        turns = [{**turn, "content": [dict(p) for p in turn["content"]]} for turn in self.messages]
        return Request(turns, [*shown, *stimuli])

    def settings(self) -> dict[str, Any]:
        """What shapes the answers besides the model (JSON-able, for cache fingerprints)."""
        shown = self.exemplars
        exemplars = None if shown is None else [[e.image, e.digest] for e in shown]
        return {
            "system": self.system.id,
            "size": self.size,
            "messages": None if self.exemplars is None else self.messages,
            "exemplars": exemplars,
            "options": list(self.options),
            "parse": self.system.parse,
            "max_new_tokens": self.max_new_tokens,
        }

    # --- reading replies ------------------------------------------------------------------------

    def _last_answer(self, text: str) -> str | None:
        assert self.system.parse is not None
        found = list(re.finditer(self.system.parse, text, flags=re.IGNORECASE))
        return found[-1].group(1) if found else None

    def choice(self, text: str) -> int | None:
        """The answer option (1-based) a generated text names, or None (a fallback)."""
        if self.system.parse is None:
            return parse_level(text, len(self.options))  # the authors' int(text)
        answer = self._last_answer(text)
        if answer is None:
            return None
        if self.prompt is not None:  # a level
            return parse_level(answer, len(self.options))
        folded = [option.casefold() for option in self.options]
        return folded.index(answer.casefold()) + 1 if answer.casefold() in folded else None

    def answer_scores(self, reply: Reply) -> LevelScores:
        """A reply as a distribution over the options (levels, or A/B/same): softmax over the
        option logits, or one-hot at the parsed answer; no answer is the flagged fallback."""
        n = len(self.options)
        if reply.error:
            return error_scores(n, reply.error)
        if reply.logits is not None:
            return from_logits(reply.logits, log_norm=reply.log_norm)
        choice = self.choice(reply.text)
        return fallback_scores(n, reply.text) if choice is None else one_hot(choice, n, reply.text)

    def ranking(self, reply: Reply) -> tuple[int, ...] | None:
        """Multiple stimulus: the stimuli's positions (0-based) from best to worst, or None when
        the reply names no ranking of every image once."""
        if reply.error or self.system.parse is None:
            return None
        answer = self._last_answer(reply.text)
        if answer is None:
            return None
        numbers = [int(n) for n in re.findall(r"\d+", answer)]
        if sorted(numbers) != list(range(1, self.size + 1)):
            return None
        return tuple(n - 1 for n in numbers)


def as_task(item: Task | prompts.Prompt) -> Task:
    """A task as it is, or Dog-IQA's prompt as the single-stimulus standard task."""
    return item if isinstance(item, Task) else Task(get(PLAIN), item, 1)


# --- tasks from params --------------------------------------------------------------------------


def _exemplars(
    system: System, count: int, seed: int, size: int, pool: Pool | None
) -> tuple[Exemplar, ...] | None:
    if system.strategy != "in_context":
        return ()
    if pool is None:
        return None
    labels = io.read_table(schema.LABELS, paths.labels_table(pool.dataset))
    return choose_exemplars(labels, count * size, seed, pool.sample)


def _check_readout(system: System, readout: str, param: str) -> None:
    if readout not in system.readouts:
        raise ParamError(param, f"{system.id} is read by {list(system.readouts)}, not {readout}")


def score_task(section: Mapping[str, Any], pool: Pool | None = None) -> Task:
    """The single-stimulus task of a ``score`` section (``system``, ``prompt``, ``readout``,
    ``exemplars``, ``exemplar_seed``); in-context exemplars drawn from ``pool``."""
    system = get(section.get("system", PLAIN), "score.system")
    if system.compares:
        raise ParamError(
            "score.system",
            f"{system.id} compares images: the compare stage runs it (compare.system)",
        )
    _check_readout(system, section["readout"], "score.readout")
    prompt = prompts.get(section["prompt"])
    if system.strategy == "chain_of_thought" and prompt.system is None:
        raise ParamError(
            "score.prompt",
            f"{system.id} asks for a description first; {prompt.id} asks for the number alone "
            "(use a paper_* prompt, whose standard is in the system turn)",
        )
    count, seed = int(section.get("exemplars", 1)), int(section.get("exemplar_seed", 0))
    return Task(system, prompt, 1, _exemplars(system, count, seed, 1, pool))


def compare_task(section: Mapping[str, Any], pool: Pool | None = None) -> Task:
    """The double- or multiple-stimulus task of a ``compare`` section (``system``, ``readout``,
    ``list_size``, ``exemplars``, ``exemplar_seed``); in-context exemplars drawn from ``pool``."""
    system = get(section["system"], "compare.system")
    if not system.compares:
        raise ParamError(
            "compare.system",
            f"{system.id} scores one image: the score stage runs it (score.system)",
        )
    _check_readout(system, section["readout"], "compare.readout")
    size = 2 if system.stimulus == "double" else int(section["list_size"])
    count, seed = int(section["exemplars"]), int(section["exemplar_seed"])
    return Task(system, None, size, _exemplars(system, count, seed, size, pool))
