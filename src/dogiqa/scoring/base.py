"""What every scorer backend shares: the level scores of a crop, and the backend registry.

Every backend (an HF transformers model, an OpenAI-compatible server, a classical NR-IQA
metric) yields one :class:`LevelScores` per crop, so the scores table has one shape whatever
made it. A backend is one entry of :data:`BACKENDS`: the module whose ``BACKEND``
(:class:`ScorerBackend`) checks its params and lists its scorers (:class:`ScorerUnit`), each
with the settings that shape its cached values. Modules are imported only when chosen: the
classical path never imports torch.

A scorer's ``measure`` gives, per crop, the JSON value the score stage caches; its unit's
``levels`` turns that value into level scores. For an MLLM the value is the level scores
themselves (they depend on K and the prompt); for a classical metric it is the raw metric value,
which depends on neither, so an ablation over K maps cached values again instead of rescoring.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from dogiqa import prompts
from dogiqa.errors import ParamError

BACKENDS: dict[str, str] = {
    "classical": "dogiqa.scoring.classical",
    "hf": "dogiqa.scoring.hf",
    "openai": "dogiqa.scoring.openai_backend",
}
"""``score.backend`` -> the module that defines its ``BACKEND``."""
READOUTS = ("logits", "generate")


@dataclass(frozen=True)
class LevelScores:
    """The score of one crop over levels 1..K."""

    probs: tuple[float, ...]
    """Probability of each level 1..K (sums to 1)."""
    argmax: int
    """The most probable level (1..K); ties go to the lower level."""
    expected: float
    """sum(i * p_i): the expected level."""
    raw: str
    """Generated text (generate mode), the continuous classical score, or empty."""
    fallback: bool
    """True when no level could be read; the crop then scores level 1 (the authors' rule)."""

    @property
    def K(self) -> int:  # noqa: N802 (the paper's symbol)
        return len(self.probs)

    def to_json(self) -> dict[str, Any]:
        return {
            "probs": list(self.probs),
            "argmax": self.argmax,
            "expected": self.expected,
            "raw": self.raw,
            "fallback": self.fallback,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LevelScores:
        return cls(
            tuple(float(p) for p in data["probs"]),
            int(data["argmax"]),
            float(data["expected"]),
            str(data["raw"]),
            bool(data["fallback"]),
        )


def from_probs(probs: Sequence[float], raw: str = "", fallback: bool = False) -> LevelScores:
    """Scores from a probability vector (renormalised to sum exactly to 1 in float64)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"not a probability vector: {probs!r}")
    p = p / p.sum()
    levels = np.arange(1, p.size + 1)
    return LevelScores(
        tuple(float(v) for v in p), int(np.argmax(p)) + 1, float(np.dot(levels, p)), raw, fallback
    )


def from_logits(logits: Sequence[float], raw: str = "") -> LevelScores:
    """Scores from the K level logits: softmax over the levels only (-inf: probability 0)."""
    z = np.asarray(logits, dtype=np.float64)
    if np.any(np.isnan(z)) or np.any(z == np.inf) or not np.any(np.isfinite(z)):
        return fallback_scores(len(z), raw)
    e = np.exp(z - z.max())
    return from_probs(e / e.sum(), raw)


def one_hot(level: int, k: int, raw: str = "", fallback: bool = False) -> LevelScores:
    probs = np.zeros(k)
    probs[level - 1] = 1.0
    return from_probs(probs, raw, fallback)


def fallback_scores(k: int, raw: str = "") -> LevelScores:
    """The authors' rule when no level can be read: level 1, flagged."""
    return one_hot(1, k, raw, fallback=True)


def from_position(position: float, k: int, raw: str = "") -> LevelScores:
    """A continuous level position in [1, K] as a distribution over the two nearest levels.

    Linear interpolation: position 3.25 gives p3 = 0.75, p4 = 0.25, so ``expected`` equals the
    position exactly and ``argmax`` is the nearest level (ties to the lower).
    """
    if not math.isfinite(position):
        return fallback_scores(k, raw)
    pos = min(max(float(position), 1.0), float(k))
    low = min(int(math.floor(pos)), k - 1)
    frac = pos - low
    probs = np.zeros(k)
    probs[low - 1] = 1.0 - frac
    probs[low] = frac
    scores = from_probs(probs, raw)
    return LevelScores(scores.probs, scores.argmax, pos, raw, False)


def parse_level(text: str, k: int) -> int | None:
    """The authors' reading of a generated answer: ``int(text)``; None when that fails or the
    number is outside 1..K (both score 1 as fallbacks)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 1 <= value <= k else None


def resize_crop(image: Image.Image, min_side: int = 1, max_pixels: int = 0) -> Image.Image:
    """``image`` in RGB, enlarged (bicubic, aspect kept) until its shorter side is ``min_side``,
    or shrunk until it has at most ``max_pixels`` pixels (0: no cap); otherwise unchanged."""
    image = image.convert("RGB")
    width, height = image.size
    scale = 1.0
    if min(width, height) < min_side:
        scale = min_side / min(width, height)
    elif max_pixels and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    if scale == 1.0:
        return image
    rounder = math.ceil if scale > 1 else math.floor
    size = (max(1, rounder(width * scale)), max(1, rounder(height * scale)))
    if scale > 1:
        size = (max(size[0], min_side), max(size[1], min_side))
    return image.resize(size, Image.Resampling.BICUBIC)


class Scorer(Protocol):
    K: int
    name: str
    """The scores table's ``prompt_id`` value (a prompt id, or a classical scorer's name)."""

    def score(self, crops: list[Image.Image]) -> list[LevelScores]: ...

    def measure(self, crops: list[Image.Image]) -> list[Any]:
        """Per crop, the JSON value the score cache keeps (its unit's ``levels`` reads it)."""
        ...


class LevelScorer:
    """For scorers whose cached value is the level scores themselves (the MLLM backends)."""

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        raise NotImplementedError

    def measure(self, crops: list[Image.Image]) -> list[Any]:
        return [s.to_json() for s in self.score(crops)]


@dataclass(frozen=True)
class ScorerUnit:
    """One scorer of a run: the rows of one ``prompt_id`` in the scores table."""

    id: str
    """The scores table's ``prompt_id``: the prompt, or a classical metric's name."""
    settings: Mapping[str, Any]
    """What shapes its cached values (JSON-able): the cache fingerprint."""
    build: Callable[[], Scorer]
    """The scorer (loads a model): called only when a crop needs scoring."""
    levels: Callable[[Any], LevelScores]
    """A cached value -> the crop's level scores (no model needed)."""


@dataclass(frozen=True)
class ScorerBackend:
    """A ``score.backend``: its params check and its scorers."""

    check: Callable[[Mapping[str, Any]], None]
    """Check the backend's subsection ``score.<backend>``; ParamError names the param."""
    units: Callable[[Mapping[str, Any]], list[ScorerUnit]]
    """The scorers the ``score`` section asks for (subsection checked), main one first."""
    readout: bool = True
    """Whether ``score.readout`` applies (MLLM readouts)."""


def backend(name: str) -> ScorerBackend:
    """The registered backend ``name`` (its module is imported here)."""
    return importlib.import_module(BACKENDS[name]).BACKEND


def subsection(section: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    sub = section.get(name)
    if not isinstance(sub, Mapping):
        raise ParamError(f"score.{name}", "missing subsection (or not a mapping)")
    return sub


def check_prompt_levels(section: Mapping[str, Any]) -> prompts.Prompt:
    """The prompt of ``score.prompt``, which must have ``score.K`` levels (MLLM backends)."""
    prompt = prompts.get(section["prompt"])
    if int(section["K"]) != prompt.K:
        raise ParamError(
            "score.prompt", f"{prompt.id} has K={prompt.K} but score.K is {section['K']}"
        )
    return prompt


def prompt_unit(
    section: Mapping[str, Any],
    name: str,
    neutral: Sequence[str],
    build: Callable[[Mapping[str, Any]], Scorer],
    code: str,
) -> list[ScorerUnit]:
    """The one scorer of an MLLM backend ``name``: its scores depend on K, the prompt's text, the
    readout, the backend's ``code`` version and every setting of ``score.<name>`` except the
    ``neutral`` ones (throughput, endpoints, credentials)."""
    prompt = check_prompt_levels(section)
    sub = subsection(section, name)
    settings = {
        "K": int(section["K"]),
        "prompt": [prompt.id, prompt.system, prompt.user],
        "readout": section["readout"],
        "code": code,
        name: {k: v for k, v in sub.items() if k not in neutral},
    }
    return [ScorerUnit(prompt.id, settings, lambda: build(section), LevelScores.from_json)]
