"""The ``openai`` backend: an OpenAI-compatible chat server, e.g. ``vllm serve MODEL``.

For scale-out over many GPUs: start one server per GPU (or one with tensor parallelism) and list
their URLs in ``score.openai.base_urls``; crops go to them round-robin, at most ``concurrency``
requests in flight. Each crop is one chat-completions request with the image as a lossless PNG
data URL (JPEG would add its own distortion to what is being rated), ``max_tokens: 1``,
``temperature: 0``, ``logprobs: true`` and ``top_logprobs: N``.

``logits`` readout: the level tokens' log-probabilities among the returned top-N (a level's
value is the larger of its spellings "5" / " 5"; levels outside the top N get probability 0),
softmax over the levels. No level token in the top N is a fallback. ``generate`` readout: the
generated token through ``int()``, as the authors' code.

Retries: the ``openai`` client retries connection errors, timeouts, 408/409/429 and 5xx with
exponential backoff (0.5 s doubling, up to 8 s), ``retries`` times. What cannot work (unknown
model, a server that returns no logprobs, an unreachable server) ends in one DogIQAError line.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from dogiqa import config, prompts
from dogiqa.cache import code_version
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import (
    LevelScorer,
    LevelScores,
    ScorerBackend,
    fallback_scores,
    from_logits,
    one_hot,
    parse_level,
    prompt_unit,
    resize_crop,
)

log = logging.getLogger(__name__)


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


def data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def level_logprobs(top_logprobs: Sequence[Mapping[str, Any]], k: int) -> np.ndarray:
    """Per level 1..K, the largest log-probability among its spellings; -inf when absent."""
    values = np.full(k, -np.inf)
    for entry in top_logprobs:
        level = parse_level(str(entry["token"]), k)
        if level is not None and str(entry["token"]).strip() == str(level):
            values[level - 1] = max(values[level - 1], float(entry["logprob"]))
    return values


class OpenAIScorer(LevelScorer):
    """Scores crops through one or more OpenAI-compatible chat-completions servers."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        prompt: prompts.Prompt,
        readout: str = "logits",
        api_key: str | None = None,
        concurrency: int = 8,
        retries: int = 3,
        timeout: float = 120.0,
        top_logprobs: int = 20,
        max_pixels: int = 0,
    ) -> None:
        from openai import OpenAI

        self.base_urls = list(base_urls)
        self.model = model
        self.prompt = prompt
        self.K = prompt.K
        self.name = prompt.id
        self.readout = readout
        self.concurrency = concurrency
        self.top_logprobs = top_logprobs
        self.max_pixels = max_pixels
        self.clients = [
            OpenAI(base_url=url, api_key=api_key or "EMPTY", max_retries=retries, timeout=timeout)
            for url in self.base_urls
        ]
        self._checked: set[int] = set()
        self._lock = threading.Lock()
        self._next = 0

    @classmethod
    def from_params(
        cls, section: Mapping[str, Any], prompt_id: str, k: int, readout: str
    ) -> OpenAIScorer:
        prompt = prompts.get(prompt_id)
        if k != prompt.K:
            raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
        key_env = section.get("api_key_env")
        return cls(
            section["base_urls"],
            section["model"],
            prompt,
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
        """Once per server: the model must be among those it serves."""
        if index in self._checked:
            return
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
        with self._lock:
            self._checked.add(index)

    def _describe(self, index: int, exc: Exception) -> str:
        import openai

        url = self.base_urls[index]
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach {url} ({type(exc).__name__}) after retries"
        if isinstance(exc, openai.APIStatusError):
            return f"server {url} answered HTTP {exc.status_code}: {exc.message}"
        return f"server {url}: {exc}"

    def _messages(self, crop: Image.Image) -> list[dict[str, Any]]:
        part = {"type": "image_url", "image_url": {"url": data_url(crop)}}
        return prompts.chat_messages(self.prompt, part)

    def _request(self, crop: Image.Image) -> tuple[int, Any]:
        import openai

        index, client = self._client()
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=self._messages(crop),
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.top_logprobs,
            )
        except openai.APIError as exc:
            raise DogIQAError(self._describe(index, exc)) from None
        if not response.choices:
            raise DogIQAError(f"server {self.base_urls[index]} returned no choices")
        return index, response.choices[0]

    def score_one(self, crop: Image.Image) -> LevelScores:
        index, choice = self._request(resize_crop(crop, 1, self.max_pixels))
        text = (choice.message.content or "") if choice.message else ""
        if self.readout == "generate":
            level = parse_level(text, self.K)
            return fallback_scores(self.K, text) if level is None else one_hot(level, self.K, text)
        content = choice.logprobs.content if choice.logprobs else None
        if not content or not content[0].top_logprobs:
            raise DogIQAError(
                f"server {self.base_urls[index]} returned no top_logprobs; the logits readout "
                "needs them (vLLM: --max-logprobs >= score.openai.top_logprobs)"
            )
        values = level_logprobs([t.model_dump() for t in content[0].top_logprobs], self.K)
        if not any(math.isfinite(v) for v in values):
            return fallback_scores(self.K)
        return from_logits(values)

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        if len(crops) <= 1 or self.concurrency == 1:
            return [self.score_one(c) for c in crops]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(crops))) as pool:
            return list(pool.map(self.score_one, crops))


NEUTRAL_SETTINGS = ("base_urls", "api_key_env", "concurrency", "retries", "timeout")
"""Settings of ``score.openai`` that do not change the scores (endpoints, credentials,
throughput)."""

BACKEND = ScorerBackend(
    check=check_params,
    units=lambda section: prompt_unit(
        section,
        "openai",
        NEUTRAL_SETTINGS,
        lambda s: OpenAIScorer.from_params(s["openai"], s["prompt"], int(s["K"]), s["readout"]),
        code_version(OpenAIScorer),
    ),
)
