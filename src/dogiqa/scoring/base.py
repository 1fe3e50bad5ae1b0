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

What the MLLM backends share lives here too: :func:`prepare_crop` brings every crop within the
limits of every model's processor before any processor sees it, :func:`find_option_token_ids`
finds the answer tokens (the levels, or a prompting system's answer words) from a tokenizer's
encode/decode, and :class:`CropErrors` turns an error raised for one crop into a flagged fallback
while an error that means the setup is wrong (out of memory, missing files, wrong environment)
stops the stage with one line.

The seam between a prompting system and a backend is a request and its :class:`Reply`: the
system (``dogiqa.systems``) builds one chat request per item (a crop, a pair, a list of images),
the backend runs the requests (batched, or concurrently against servers) and returns, per
request, the logits of the system's answer tokens from one forward pass, or the generated text;
the system reads the reply (levels, comparison, ranking).

Scheduling: the score stage hands a scorer the crops of many images at once as a stream of jobs
(:func:`measure_stream`: one job per image, results back in the jobs' order), so that a backend
can work across images: the ``openai`` backend keeps its requests in flight across images
(:func:`in_flight`), the ``hf`` backend batches requests of similar token counts from several
images. A scorer without a stream of its own measures job by job. The compare stage's requests
(pairs, lists) go through the same machinery.

Cached MLLM scores are keyed by :func:`backend_code_version`: the source of the backend's module
and of every module of the package it imports, this one and the prompting systems' included.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from dogiqa import crops, prompts, schema
from dogiqa.cache import files_version
from dogiqa.errors import DogIQAError, ParamError

log = logging.getLogger(__name__)

T = TypeVar("T")
"""A job's tag: what the caller gets back with the job's results (the score stage's image)."""
Item = TypeVar("Item")
Result = TypeVar("Result")
Job = tuple[T, Sequence[Image.Image]]
"""One image's crops for one scorer, with its tag."""

BACKENDS: dict[str, str] = {
    "classical": "dogiqa.scoring.classical",
    "hf": "dogiqa.scoring.hf",
    "openai": "dogiqa.scoring.openai_backend",
}
"""``score.backend`` -> the module that defines its ``BACKEND``."""
READOUTS = ("logits", "generate")
# Qwen2-VL's processor refuses an aspect ratio above 200 (``smart_resize`` in transformers'
# models/qwen2_vl/image_processing_qwen2_vl.py) and vLLM answers such a request with HTTP 400;
# crops are padded to at most 50, well inside that, for every MLLM backend.
MAX_ASPECT = 50.0


@dataclass(frozen=True)
class Reply:
    """What a model answered to one request, before the prompting system reads it."""

    logits: tuple[float, ...] | None = None
    """``logits`` readout: per answer option (its more probable spelling), the fp32 logit (hf) or
    log-probability (openai; -inf where not among the returned ones); None for ``generate``."""
    log_norm: float | None = None
    """The log-normaliser of those logits over the whole vocabulary (0 for log-probabilities)."""
    text: str = ""
    """``generate`` readout: the generated text."""
    error: str = ""
    """One line when the model, processor or server failed for this request."""

    @classmethod
    def failed(cls, error: str) -> Reply:
        return cls(error=error)

    def to_json(self) -> dict[str, Any]:
        logits = None if self.logits is None else [_json_float(v) for v in self.logits]
        return {"logits": logits, "log_norm": self.log_norm, "text": self.text, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reply:
        logits = data.get("logits")
        norm = data.get("log_norm")
        return cls(
            None if logits is None else tuple(float(v) for v in logits),
            None if norm is None else float(norm),
            str(data.get("text", "")),
            str(data.get("error", "")),
        )


def _json_float(value: float) -> float | str:
    """A logit for a JSON line (strict JSON has no infinity: -inf is written as a string)."""
    return value if math.isfinite(value) else str(value)


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
    level_mass: float | None = None
    """Next-token probability on the level tokens the readout read (logits readout of an MLLM;
    None where not measured: classical scorers, generate readout)."""
    levels_found: int | None = None
    """How many of the K levels the readout found (an OpenAI-compatible server returns only its
    top log-probabilities); None where not measured."""
    error: str = ""
    """One line when the model or processor raised for this crop (then ``fallback`` is true)."""

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
            "level_mass": self.level_mass,
            "levels_found": self.levels_found,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LevelScores:
        mass, found = data.get("level_mass"), data.get("levels_found")
        return cls(
            tuple(float(p) for p in data["probs"]),
            int(data["argmax"]),
            float(data["expected"]),
            str(data["raw"]),
            bool(data["fallback"]),
            None if mass is None else float(mass),
            None if found is None else int(found),
            str(data.get("error", "")),
        )

    def table_fields(self) -> dict[str, Any]:
        """This score's cells of the scores table (``schema.SCORE_FIELDS``)."""
        return {name: getattr(self, name) for name in schema.SCORE_FIELDS}


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


def from_logits(
    logits: Sequence[float], raw: str = "", log_norm: float | None = None
) -> LevelScores:
    """Scores from the K level logits: softmax over the levels only (-inf: probability 0).

    ``log_norm``, the log of the normaliser over the whole vocabulary (0 for log-probabilities),
    gives ``level_mass``, the next-token probability on the levels; ``levels_found`` counts the
    finite logits."""
    z = np.asarray(logits, dtype=np.float64)
    found = int(np.isfinite(z).sum())
    if np.any(np.isnan(z)) or np.any(z == np.inf) or not np.any(np.isfinite(z)):
        scores = fallback_scores(len(z), raw)
        return replace(scores, levels_found=found, level_mass=None if log_norm is None else 0.0)
    top = z.max()
    e = np.exp(z - top)
    mass = None
    if log_norm is not None:
        mass = float(min(1.0, math.exp(top + math.log(e.sum()) - log_norm)))
    return replace(from_probs(e / e.sum(), raw), level_mass=mass, levels_found=found)


def one_hot(level: int, k: int, raw: str = "", fallback: bool = False) -> LevelScores:
    probs = np.zeros(k)
    probs[level - 1] = 1.0
    return from_probs(probs, raw, fallback)


def fallback_scores(k: int, raw: str = "") -> LevelScores:
    """The authors' rule when no level can be read: level 1, flagged."""
    return one_hot(1, k, raw, fallback=True)


def error_scores(k: int, error: str) -> LevelScores:
    """A crop whose model or processor call raised: the authors' fallback, with the error."""
    return replace(fallback_scores(k), error=error)


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


def prepare_crop(image: Image.Image, min_side: int = 1, max_pixels: int = 0) -> Image.Image:
    """A crop every MLLM processor accepts: padded to an aspect ratio of at most ``MAX_ASPECT``
    (a 1500 x 6 region is no error), then resized as :func:`resize_crop` does."""
    return resize_crop(crops.pad_to_aspect(image.convert("RGB"), MAX_ASPECT), min_side, max_pixels)


def find_option_token_ids(
    options: Sequence[str],
    encode: Callable[[str], list[int]],
    decode: Callable[[int], str],
    lookup: Callable[[str], int | None] | None = None,
    what: str = "answer",
) -> list[list[int]]:
    """Single-token spellings of each answer option (a level digit, or an answer word such as
    "A" or "same"): the bare text, and the text with a leading space where the vocabulary has one
    token for it, found from how the tokenizer encodes the text alone and after a word, with and
    without a space (``encode`` without special tokens; ``decode`` of one token id; ``lookup``,
    where given, the vocabulary entry of the text). A token counts when it decodes to the text,
    spaces aside."""
    found_ids: list[list[int]] = []
    for option in options:
        found: list[int] = []
        candidates = [lookup(option)] if lookup is not None else []
        for text in (option, " " + option, "x" + option, "x " + option):
            encoded = encode(text)
            candidates.append(encoded[-1] if encoded else None)
        for token in candidates:
            if token is None or token in found:
                continue
            if decode(token).strip() == option:
                found.append(int(token))
        if not found:
            raise DogIQAError(f"the model's tokenizer has no single token for {what} {option}")
        found_ids.append(found)
    return found_ids


def find_level_token_ids(
    k: int,
    encode: Callable[[str], list[int]],
    decode: Callable[[int], str],
    lookup: Callable[[str], int | None] | None = None,
) -> list[list[int]]:
    """Single-token spellings of each level 1..K (:func:`find_option_token_ids` of the digits)."""
    levels = [str(level) for level in range(1, k + 1)]
    return find_option_token_ids(levels, encode, decode, lookup, what="level")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (one line, whatever the exception says)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def setup_problem(exc: BaseException) -> str | None:
    """What is wrong with the setup when ``exc`` means that (it would recur for every crop), or
    None for an error that belongs to one crop (a processor or model refusing that input)."""
    text = first_line(exc)
    if isinstance(exc, DogIQAError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({text}); lower the batch size or max_pixels, or use a larger device"
    if isinstance(exc, ImportError):
        return f"the environment lacks a module the model needs ({text})"
    if isinstance(exc, OSError):
        return f"a file the model needs is missing or unreadable ({text})"
    if isinstance(exc, AttributeError | TypeError | NotImplementedError):
        # e.g. remote code written for another transformers release (a removed method, a
        # keyword the installed signature lacks): every crop would fail alike.
        return f"the model's code does not run in this environment ({text})"
    return None


class CropErrors:
    """Per-crop error policy of a scorer: ``call(fn, crops)`` returns ``fn(crops)``, or, when
    that raises an error of one crop, scores each crop alone and flags the failing ones as
    fallbacks carrying the error. Setup errors stop the stage with one DogIQAError line, and so
    does a run whose first ``limit`` crops all fail (a broken setup that raises ordinary
    errors). The items may be any requests; ``flagged`` makes the result of a failed one from
    its error line (default: the level scores of a flagged fallback, K levels)."""

    def __init__(
        self,
        k: int,
        what: str,
        limit: int = 8,
        flagged: Callable[[str], Any] | None = None,
        item: str = "crop",
    ) -> None:
        self.k = k
        self.what = what
        self.limit = limit
        self.flagged = flagged or (lambda line: error_scores(k, line))
        self.item = item
        self.errors = 0
        self.successes = 0
        self._lock = threading.Lock()  # the openai backend scores crops in threads

    def call(self, fn: Callable[[list[Any]], list[Any]], batch: list[Any]) -> list[Any]:
        try:
            out = fn(batch)
        except Exception as exc:  # classified right here: setup error or this crop's
            self._stop_if_setup(exc)
            if len(batch) > 1:  # find the crop that fails; the others score normally
                return [score for crop in batch for score in self.call(fn, [crop])]
            return [self._flag(exc)]
        with self._lock:
            self.successes += len(out)
        return out

    def _stop_if_setup(self, exc: BaseException) -> None:
        problem = setup_problem(exc)
        if problem is not None:
            raise DogIQAError(f"{self.what}: {problem}") from None

    def _flag(self, exc: BaseException) -> Any:
        line = first_line(exc)
        with self._lock:
            self.errors += 1
            hopeless = self.successes == 0 and self.errors >= self.limit
        if hopeless:
            raise DogIQAError(
                f"{self.what}: the first {self.errors} {self.item}s all failed, so the setup is "
                f"wrong rather than the {self.item}s (last: {line})"
            ) from None
        log.warning("%s: a %s failed and is a flagged fallback: %s", self.what, self.item, line)
        return self.flagged(line)


class Scorer(Protocol):
    K: int
    name: str
    """The scores table's ``prompt_id`` value (a prompt id, or a classical scorer's name)."""

    def score(self, crops: list[Image.Image]) -> list[LevelScores]: ...

    def measure(self, crops: list[Image.Image]) -> list[Any]:
        """Per crop, the JSON value the score cache keeps (its unit's ``levels`` reads it)."""
        ...


class LevelScorer:
    """For scorers whose cached value is the level scores themselves (the MLLM backends).

    A subclass defines ``score`` (one call per image) or ``score_stream`` (jobs of many images,
    which it may schedule together); each of the two is derived from the other."""

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        [(_, scores)] = list(self.score_stream([(None, crops)]))
        return scores

    def score_stream(self, jobs: Iterable[Job[T]]) -> Iterator[tuple[T, list[LevelScores]]]:
        """Per job, in the jobs' order, the level scores of its crops."""
        for tag, job_crops in jobs:
            yield tag, self.score(list(job_crops)) if job_crops else []

    def measure(self, crops: list[Image.Image]) -> list[Any]:
        return [s.to_json() for s in self.score(crops)]

    def measure_stream(self, jobs: Iterable[Job[T]]) -> Iterator[tuple[T, list[Any]]]:
        for tag, scores in self.score_stream(jobs):
            yield tag, [s.to_json() for s in scores]


def measure_stream(scorer: Scorer, jobs: Iterable[Job[T]]) -> Iterator[tuple[T, list[Any]]]:
    """Per job, in the jobs' order, the values ``scorer.measure`` gives its crops: through the
    scorer's own ``measure_stream`` where it has one (it may read ahead and work across jobs),
    otherwise job by job. A job without crops gets an empty list."""
    own = getattr(scorer, "measure_stream", None)
    if callable(own):
        return own(jobs)
    return ((tag, scorer.measure(list(found)) if found else []) for tag, found in jobs)


def in_flight(
    jobs: Iterable[tuple[T, Sequence[Item]]],
    work: Callable[[Item], Result],
    workers: int,
    hold: int,
) -> Iterator[tuple[T, list[Result]]]:
    """Per job, in the jobs' order, ``work`` of each of its items, run in ``workers`` threads
    across jobs: the items of later jobs start while an earlier job still waits, so ``workers``
    calls stay busy whatever the size of a job. Jobs are read ahead until ``hold`` items are
    held (started, queued, or done behind an unfinished earlier job), which bounds memory; a
    job is always taken whole. A call that raises stops the stream with its error at once (calls
    not yet started are cancelled)."""
    pending: deque[tuple[T, list[Future[Result]]]] = deque()
    unfinished: set[Future[Result]] = set()
    held = 0

    def finished() -> Iterator[tuple[T, list[Result]]]:
        nonlocal held
        while pending and all(f.done() for f in pending[0][1]):
            tag, futures = pending.popleft()
            held -= len(futures)
            yield tag, [f.result() for f in futures]

    def settle() -> None:
        nonlocal unfinished
        done, unfinished = wait(unfinished, return_when=FIRST_COMPLETED)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dogiqa-score")
    try:
        for tag, items in jobs:
            futures = [pool.submit(work, item) for item in items]
            pending.append((tag, futures))
            unfinished.update(futures)
            held += len(futures)
            yield from finished()
            while held >= hold and unfinished:
                settle()
                yield from finished()
        while pending:
            if unfinished:
                settle()
            yield from finished()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
    ask: Callable[[Mapping[str, Any], Any, str], Any] | None = None
    """MLLM backends: (the ``score`` section, a ``dogiqa.systems.Task``, the readout) -> the
    model asking that task (``requests``, ``replies``): the compare stage's way to a model."""
    ask_settings: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    """MLLM backends: the settings of ``score.<backend>`` that shape the answers (JSON-able, as
    the score stage's fingerprint records them), from the ``score`` section."""


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


BOOKKEEPING_MODULES = (
    "dogiqa.cache",
    "dogiqa.config",
    "dogiqa.dvcdeps",
    "dogiqa.errors",
    "dogiqa.paths",
)
"""Modules a backend imports that never touch a score (params checks, cache keys, file
locations, error types): a change there keeps cached scores."""


@functools.cache
def backend_code_files(module: str) -> tuple[Path, ...]:
    """The source files that shape a backend's scores: its module and every module of the
    package it imports, transitively (this one, the crop preparation, the prompts' code, the
    prompting systems' requests and readers in ``dogiqa.systems``, ...), found as dvc.yaml's code
    deps are (:mod:`dogiqa.dvcdeps`), following imports only (not the backend registry's names
    of the other backends) and without :data:`BOOKKEEPING_MODULES`. The prompt's and the
    system's own texts are settings of their own, so the prompts file is not among them."""
    from dogiqa import dvcdeps

    modules = dvcdeps.closure([module], within="dogiqa", names=False, skip=BOOKKEEPING_MODULES)
    return tuple(sorted(dvcdeps.module_file(m) for m in modules))


def backend_code_version(module: str) -> str:
    """A short hash of :func:`backend_code_files`: scores cached by other code are not reused."""
    return files_version(backend_code_files(module))


POOL_KEY = "exemplar_pool"
"""Not a param: the score stage adds a ``dogiqa.systems.Pool`` (the dataset it scores, the run's
sample) to the ``score`` section it hands to the backend, so that an in-context system draws its
exemplars from that dataset's images outside the sample."""


def prompt_unit(
    section: Mapping[str, Any],
    name: str,
    neutral: Sequence[str],
    build: Callable[[Mapping[str, Any], Any], Scorer],
    code: str,
    resolve: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
) -> list[ScorerUnit]:
    """The one scorer of an MLLM backend ``name``: its scores depend on K, the prompt's text, the
    readout, the backend's ``code`` version and every setting of ``score.<name>`` except the
    ``neutral`` ones (throughput, endpoints, credentials), as ``resolve`` gives them (a backend
    resolves a setting such as ``auto`` to the value it runs with), and on the prompting system
    (``score.system``: its texts and exemplars) where that is not Dog-IQA's prompt as it is.
    ``build(section, task)`` makes the scorer of the system's task."""
    from dogiqa import systems

    prompt = check_prompt_levels(section)
    task = systems.score_task(section, section.get(POOL_KEY))
    sub = resolve(subsection(section, name))
    settings = {
        "K": int(section["K"]),
        "prompt": [prompt.id, prompt.system, prompt.user],
        "readout": section["readout"],
        "code": code,
        name: {k: v for k, v in sub.items() if k not in neutral},
    }
    if not task.plain:  # Dog-IQA's prompt as it is: the settings it always had
        settings["system"] = task.settings()
    return [ScorerUnit(task.id, settings, lambda: build(section, task), LevelScores.from_json)]
