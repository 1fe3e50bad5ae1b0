"""The ``openai`` backend: an OpenAI-compatible chat server, e.g. ``vllm serve MODEL``.

For scale-out over many GPUs: start one server per GPU (or one with tensor parallelism) and list
their URLs in ``score.openai.base_urls``; crops go to them round-robin, ``concurrency`` requests
in flight. Each crop is one chat-completions request with the image as a lossless PNG data URL
(JPEG would add its own distortion to what is being rated), ``max_tokens: 1``,
``temperature: 0``, ``logprobs: true`` and ``top_logprobs: N``.

Scheduling: the score stage hands the scorer its images as a stream
(:meth:`OpenAIScorer.score_stream`); the crops of the next images are sent while earlier ones
are still answered, so ``concurrency`` requests stay in flight across images (an image of 7 crops
does not cap it at 7, and no image waits for the slowest crop of the one before), and every
image's scores come back in table order (:func:`dogiqa.scoring.base.in_flight`). A crop is
prepared (resized, PNG-encoded) in the thread that sends it. The compare stage's requests
(pairs, lists) are kept in flight the same way (:meth:`OpenAIScorer.replies`). Requests go
through the client's generic ``post`` (its retries and errors, the same JSON body as
``chat.completions.create``): the typed method's conversion of the message dictionaries and of
the answer into models more than doubles the client's CPU time per request
(``client_cpu_ms_per_request`` in reports/bench/scaleout.json), which with 32 requests in
flight becomes the limit.

``logits`` readout: the level tokens' log-probabilities among the returned top-N (a level's
value is the larger of its spellings "5" / " 5"; levels outside the top N get probability 0),
softmax over the levels. No level token in the top N is a fallback. Each crop records
``levels_found`` (how many of the K levels were among the top N) and ``level_mass`` (their
next-token probability), so a readout that missed levels shows in the scores table.

Levels are read by token id where the server says which ids they are: vLLM's ``/tokenize`` and
``/detokenize`` endpoints (served beside ``/v1``) find the level tokens of the served model's own
tokenizer, as the hf backend does, and the request asks for ``return_tokens_as_token_ids``
(vLLM's chat-completions extra parameter: tokens come back as ``token_id:N``). A server without
those endpoints is read by token text, decoded from byte-level BPE ("Ġ5" is " 5", as some vLLM
releases return them) and SentencePiece ("▁5") spellings. Restricting the next token with vLLM's
``allowed_token_ids`` would not bring more levels into the answer: vLLM's V1 sampler computes
the returned log-probabilities from the raw logits, before that whitelist applies
(vllm/v1/sample/sampler.py, ``logprobs_mode`` ``raw_logprobs``, the default).

``generate`` readout: the generated token through ``int()``, as the authors' code.

What is asked is a prompting system's task (``dogiqa.systems``): each request's turns are sent
with its image parts, in order, as PNG data URLs (a conversation may show several images, and
exemplar turns: vLLM's V1 engine accepts up to 999 images per prompt unless
``--limit-mm-per-prompt`` says less). The answer options are the task's (the levels, or A / B /
same), found by token id or text as the levels are; a ``generate`` request asks for the task's
``max_new_tokens`` and no log-probabilities.

Crops pass :func:`dogiqa.scoring.prepare_crop` first (vLLM answers HTTP 400 for an aspect ratio
above 200 with Qwen2-VL models). A crop the server rejects (HTTP 400, 413, 422) becomes a flagged
fallback carrying the server's message.

Retries: the ``openai`` client retries connection errors, timeouts, 408/409/429 and 5xx with
exponential backoff (0.5 s doubling, up to 8 s), ``retries`` times. What cannot work (unknown
model, a server that returns no logprobs, an unreachable server) ends in one DogIQAError line.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from dogiqa import config, prompts, systems
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import (
    CropErrors,
    Job,
    LevelScorer,
    LevelScores,
    Reply,
    ScorerBackend,
    T,
    backend_code_version,
    find_option_token_ids,
    first_line,
    in_flight,
    prepare_crop,
    prompt_unit,
)

log = logging.getLogger(__name__)

TOKEN_ID = re.compile(r"token_id:(\d+)")
# A server that rejects one request for what it holds (the image): that crop's own error.
CROP_STATUSES = (400, 413, 422)


class CropRejected(Exception):
    """The server refused the request of one crop (HTTP 400, 413 or 422)."""


def check_params(section: Mapping[str, Any]) -> None:
    prefix = "score.openai"
    urls = config.get_list(section, prefix, "base_urls")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParamError(f"{prefix}.base_urls", f"each must be an http(s) URL, got {url!r}")
    config.get_str(section, prefix, "model")
    key_env = section.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise ParamError(
            f"{prefix}.api_key_env", f"must be a variable name or null, got {key_env!r}"
        )
    config.get_int(section, prefix, "concurrency", minimum=1)
    config.get_int(section, prefix, "retries", minimum=0)
    config.get_float(section, prefix, "timeout", minimum=0.001)
    config.get_int(section, prefix, "top_logprobs", minimum=1, maximum=20)
    config.get_int(section, prefix, "max_pixels", minimum=0)


PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNG sent: every level is lossless, and level 1 encodes a 500 x 500 photo
about four times faster than Pillow's default 6 (``png_encode_ms`` in
reports/bench/scaleout.json); the client encodes every crop it sends."""


def data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL (lossless)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def token_text(token: str) -> str:
    """The text of a returned token string: byte-level BPE symbols decoded ("Ġ5" is " 5"),
    SentencePiece's word marker read as a space ("▁5" is " 5"); other strings unchanged."""
    from tokenizers import decoders

    return decoders.ByteLevel().decode([token]).replace("\u2581", " ")


def levels(k: int) -> list[str]:
    return [str(level) for level in range(1, k + 1)]


def token_option(
    token: str, options: Sequence[str], id_options: Mapping[int, int] | None
) -> int | None:
    """The option (1-based) a returned token stands for, or None: ``token_id:N`` through the
    option token ids, any other string through its text (the option alone, spaces aside)."""
    match = TOKEN_ID.fullmatch(token)
    if match:
        return id_options.get(int(match.group(1))) if id_options else None
    text = token_text(token).strip()
    return list(options).index(text) + 1 if text in options else None


def token_level(token: str, k: int, id_levels: Mapping[int, int] | None) -> int | None:
    """The level (1..K) a returned token stands for, or None (the digit alone, spaces aside)."""
    return token_option(token, levels(k), id_levels)


def option_logprobs(
    top_logprobs: Sequence[Mapping[str, Any]],
    options: Sequence[str],
    id_options: Mapping[int, int] | None = None,
) -> np.ndarray:
    """Per option, the largest log-probability among its spellings; -inf when absent."""
    values = np.full(len(options), -np.inf)
    for entry in top_logprobs:
        option = token_option(str(entry["token"]), options, id_options)
        if option is not None:
            values[option - 1] = max(values[option - 1], float(entry["logprob"]))
    return values


def level_logprobs(
    top_logprobs: Sequence[Mapping[str, Any]], k: int, id_levels: Mapping[int, int] | None = None
) -> np.ndarray:
    """Per level 1..K, the largest log-probability among its spellings; -inf when absent."""
    return option_logprobs(top_logprobs, levels(k), id_levels)


def server_root(base_url: str) -> str:
    """Where vLLM serves /tokenize and /detokenize: the base URL without its /v1."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def server_option_ids(
    base_url: str, model: str, options: Sequence[str], timeout: float, api_key: str | None = None
) -> dict[int, int] | None:
    """Option token id -> option (1-based: a level, or A / B / same), from the server's own
    tokenizer (vLLM's /tokenize and /detokenize); None when the server has no such endpoints."""
    import httpx

    root = server_root(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=timeout, headers=headers) as http:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = http.post(root + path, json={"model": model, **body})
            answer.raise_for_status()
            return answer.json()

        def encode(text: str) -> list[int]:
            return list(post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"])

        def decode(token: int) -> str:
            return str(post("/detokenize", {"tokens": [token]})["prompt"])

        try:
            found = find_option_token_ids(options, encode, decode)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
    return {token: option for option, ids in enumerate(found, start=1) for token in ids}


class OpenAIScorer(LevelScorer):
    """Asks a prompting system's task through one or more OpenAI-compatible chat-completions
    servers (Dog-IQA's prompt alone stands for its single-stimulus standard task)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        prompt: systems.Task | prompts.Prompt,
        readout: str = "logits",
        api_key: str | None = None,
        concurrency: int = 8,
        retries: int = 3,
        timeout: float = 120.0,
        top_logprobs: int = 20,
        max_pixels: int = 0,
    ) -> None:
        from openai import OpenAI

        self.api_key = api_key
        self.timeout = timeout
        self.base_urls = list(base_urls)
        self.model = model
        self.task = systems.as_task(prompt)
        self.prompt = self.task.prompt
        self.K = len(self.task.options)
        self.name = self.task.id
        self.readout = readout
        self.concurrency = concurrency
        self.top_logprobs = top_logprobs
        self.max_pixels = max_pixels
        self.clients = [
            OpenAI(base_url=url, api_key=api_key or "EMPTY", max_retries=retries, timeout=timeout)
            for url in self.base_urls
        ]
        self._checked: set[int] = set()
        self._level_ids: dict[int, dict[int, int] | None] = {}
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._next = 0
        stage = "compare" if self.task.system.compares else "score"
        item = "request" if self.task.system.compares else "crop"
        self.errors = CropErrors(self.K, f"{stage} ({self.name})", flagged=Reply.failed, item=item)
        self._exemplars: list[Image.Image] | None = None
        self._exemplar_lock = threading.Lock()

    @classmethod
    def from_params(
        cls, section: Mapping[str, Any], prompt_id: str, k: int, readout: str
    ) -> OpenAIScorer:
        """Dog-IQA's prompt ``prompt_id`` (single-stimulus standard), ``score.openai`` settings."""
        prompt = prompts.get(prompt_id)
        if k != prompt.K:
            raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
        return cls.from_task(section, systems.as_task(prompt), readout)

    @classmethod
    def from_task(
        cls, section: Mapping[str, Any], task: systems.Task, readout: str
    ) -> OpenAIScorer:
        """The servers of ``score.openai`` (``section``) asking ``task``."""
        key_env = section.get("api_key_env")
        return cls(
            section["base_urls"],
            section["model"],
            task,
            readout,
            api_key=os.environ.get(key_env) if key_env else None,
            concurrency=section["concurrency"],
            retries=section["retries"],
            timeout=float(section["timeout"]),
            top_logprobs=section["top_logprobs"],
            max_pixels=section["max_pixels"],
        )

    def _client(self) -> tuple[int, Any]:
        with self._lock:
            index = self._next % len(self.clients)
            self._next += 1
        self._check_model(index)
        return index, self.clients[index]

    def _check_model(self, index: int) -> None:
        """Once per server: the model must be among those it serves; and where the server says
        which token ids the levels are, those ids."""
        if index in self._checked:
            return
        with self._check_lock:  # the first requests arrive together, from several threads
            if index not in self._checked:
                self._check_server(index)

    def _check_server(self, index: int) -> None:
        import openai

        try:
            served = [m.id for m in self.clients[index].models.list()]
        except openai.APIError as exc:
            raise DogIQAError(self._describe(index, exc)) from None
        if self.model not in served:
            raise DogIQAError(
                f"server {self.base_urls[index]} does not serve model "
                f"{self.model!r} (it serves {served})"
            )
        ids = None
        if self.readout == "logits":
            url = self.base_urls[index]
            ids = server_option_ids(url, self.model, self.task.options, self.timeout, self.api_key)
            if ids is None:
                log.info("score: %s has no /tokenize; levels are read by token text", url)
        with self._lock:
            self._level_ids[index] = ids
            self._checked.add(index)

    def _describe(self, index: int, exc: Exception) -> str:
        import openai

        url = self.base_urls[index]
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach {url} ({type(exc).__name__}) after retries"
        if isinstance(exc, openai.APIStatusError):
            return f"server {url} answered HTTP {exc.status_code}: {exc.message}"
        return f"server {url}: {exc}"

    def _messages(self, request: systems.Request) -> list[dict[str, Any]]:
        parts = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in request.images]
        return request.image_parts(parts)

    def body(self, request: systems.Request) -> dict[str, Any]:
        """The chat-completions request body of one request: the next token's log-probabilities
        (``logits``), or up to the task's ``max_new_tokens`` of text (``generate``)."""
        if self.readout == "logits":
            asked: dict[str, Any] = {
                "max_tokens": 1,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        else:
            asked = {"max_tokens": self.task.max_new_tokens}
        return {
            "model": self.model,
            "messages": self._messages(request),
            "temperature": 0.0,
            **asked,
        }

    def prepare(self, crop: Image.Image) -> dict[str, Any]:
        """The request body of one crop (brought within every model's limits first)."""
        return self.body(self.requests([[crop]])[0])

    def _request(self, body: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        """(the server's index, the answer's first choice) for one request body."""
        import openai

        index, client = self._client()
        if self._level_ids.get(index):  # vLLM's extra parameter: tokens as token_id:N
            body = {**body, "return_tokens_as_token_ids": True}
        try:
            response = client.post("/chat/completions", cast_to=object, body=body)
        except openai.APIStatusError as exc:
            if exc.status_code in CROP_STATUSES:
                raise CropRejected(self._describe(index, exc)) from None
            raise DogIQAError(self._describe(index, exc)) from None
        except openai.APIError as exc:
            raise DogIQAError(self._describe(index, exc)) from None
        choices = response.get("choices") if isinstance(response, Mapping) else None
        if not choices or not isinstance(choices[0], Mapping):
            raise DogIQAError(f"server {self.base_urls[index]} returned no choices")
        return index, choices[0]

    def _read(self, index: int, choice: Mapping[str, Any]) -> Reply:
        """The reply in a choice of the chat-completions answer (as JSON)."""
        text = str((choice.get("message") or {}).get("content") or "")
        if self.readout == "generate":
            return Reply(text=text)
        content = (choice.get("logprobs") or {}).get("content")
        if not content or not content[0].get("top_logprobs"):
            raise DogIQAError(
                f"server {self.base_urls[index]} returned no top_logprobs; the logits readout "
                "needs them (vLLM: --max-logprobs >= score.openai.top_logprobs)"
            )
        first = content[0]
        entries = [{"token": first["token"], "logprob": first["logprob"]}]  # the chosen token
        entries += first["top_logprobs"]
        values = option_logprobs(entries, self.task.options, self._level_ids.get(index))
        return Reply(tuple(float(v) for v in values), 0.0)  # log-probabilities: normaliser 1

    def _send(self, request: systems.Request) -> Reply:
        """The server's reply to one request (its images PNG-encoded here, in the sending
        thread)."""
        try:
            return self._read(*self._request(self.body(request)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DogIQAError(
                f"server answer not in the chat-completions shape ({first_line(exc)})"
            ) from None

    def requests(self, items: Sequence[Sequence[Image.Image]]) -> list[systems.Request]:
        """One request per item (its stimuli), every image prepared (the exemplars' once)."""
        exemplars = self._exemplar_images()
        return [self.task.request([self._prepare(im) for im in item], exemplars) for item in items]

    def _exemplar_images(self) -> list[Image.Image]:
        with self._exemplar_lock:  # requests are built in the sending threads
            if self._exemplars is None:
                self._exemplars = [self._prepare(im) for im in self.task.exemplar_images()]
            return self._exemplars

    def _prepare(self, image: Image.Image) -> Image.Image:
        return prepare_crop(image, 1, self.max_pixels)

    def reply_one(self, request: systems.Request) -> Reply:
        return self.errors.call(lambda batch: [self._send(batch[0])], [request])[0]

    def replies(self, requests: Sequence[systems.Request]) -> list[Reply]:
        """The server's reply to every request, in their order, ``concurrency`` in flight; a
        request the server rejects gets a reply carrying the error."""
        [(_, out)] = in_flight([(None, requests)], self.reply_one, self.concurrency, len(requests))
        return out

    def score_one(self, crop: Image.Image) -> LevelScores:
        """One crop's request, built (crop prepared) and sent in the calling thread."""
        return self.task.answer_scores(self.reply_one(self.requests([[crop]])[0]))

    def score_stream(self, jobs: Iterable[Job[T]]) -> Iterator[tuple[T, list[LevelScores]]]:
        """Per image, in order, with ``concurrency`` requests in flight across images; at most
        twice as many crops held at once."""
        self._exemplar_images()  # read once, before the threads start
        return in_flight(jobs, self.score_one, self.concurrency, 2 * self.concurrency)


NEUTRAL_SETTINGS = ("base_urls", "api_key_env", "concurrency", "retries", "timeout")
"""Settings of ``score.openai`` that do not change the scores (endpoints, credentials,
throughput)."""


def model_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """``score.openai`` of a ``score`` section as it shapes the answers (fingerprints)."""
    return {k: v for k, v in section["openai"].items() if k not in NEUTRAL_SETTINGS}


BACKEND = ScorerBackend(
    check=check_params,
    units=lambda section: prompt_unit(
        section,
        "openai",
        NEUTRAL_SETTINGS,
        lambda s, task: OpenAIScorer.from_task(s["openai"], task, s["readout"]),
        backend_code_version(__name__),
    ),
    ask=lambda section, task, readout: OpenAIScorer.from_task(section["openai"], task, readout),
    ask_settings=model_settings,
)
