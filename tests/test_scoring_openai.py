"""The openai backend against a local server (real HTTP on 127.0.0.1) that answers in the
chat-completions shape vLLM documents: ``choices[0].logprobs.content[0].top_logprobs``."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dogiqa import prompts
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring import build_scorer, check_section
from dogiqa.scoring.openai_backend import OpenAIScorer, level_logprobs

MODEL = "tiny-vlm"


def peak_level(image: Image.Image) -> int:
    """The fake model's favourite level: brighter images get higher levels (1..9)."""
    return 1 + int(round(np.asarray(image, dtype=float).mean() / 255.0 * 8))


class Gauge:
    """Requests in flight (now and at most), shareable between servers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


class FakeServer:
    """A minimal OpenAI-compatible server: /v1/models and /v1/chat/completions."""

    def __init__(
        self,
        fail_first: int = 0,
        logprobs: bool = True,
        delay: float = 0.0,
        gauge: Gauge | None = None,
    ) -> None:
        self.fail_left = fail_first
        self.logprobs = logprobs
        self.delay = delay
        self.gauge = gauge or Gauge()
        self.bodies: list[dict[str, Any]] = []
        self.images: list[Image.Image] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.bodies.append(body)
            if self.fail_left > 0:
                self.fail_left -= 1
                return 500, {"error": {"message": "boom", "type": "server_error"}}
        parts = body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        with self.lock:
            self.images.append(image.copy())
        peak = peak_level(image)
        tops = [{"token": str(i), "logprob": -1.5 * abs(i - peak) - 0.1} for i in range(1, 10)]
        tops += [{"token": f" {peak}", "logprob": -3.0}, {"token": "The", "logprob": -4.0}]
        tops.sort(key=lambda t: -t["logprob"])
        tops = [{**t, "bytes": list(t["token"].encode())} for t in tops[: body["top_logprobs"]]]
        logprobs = {"content": [{**tops[0], "top_logprobs": tops}]} if self.logprobs else None
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": tops[0]["token"]},
            "finish_reason": "length",
            "logprobs": logprobs,
        }
        return 200, {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                models = {
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "test"}],
                }
                self._send(200, models) if self.path == "/v1/models" else self._send(404, {})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.gauge.enter()
                time.sleep(server.delay)
                try:
                    self._send(*server.completion(body))
                finally:
                    server.gauge.leave()

        return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def crops(n: int = 6) -> list[Image.Image]:
    """Flat crops of increasing brightness and different sizes, plus a textured one."""
    rng = np.random.default_rng(0)
    out = [
        Image.new("RGB", (40 + 7 * i, 30 + 5 * i), (v, v, v))
        for i, v in enumerate(np.linspace(0, 255, n - 1).astype(int))
    ]
    out.append(Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)))
    return out


def scorer(urls: list[str], prompt_id: str = "paper_word_k9", **kwargs: Any) -> OpenAIScorer:
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("timeout", 10.0)
    return OpenAIScorer(urls, MODEL, prompts.get(prompt_id), **kwargs)


def test_level_distribution_from_top_logprobs(server) -> None:
    images = crops()
    results = scorer([server.url]).score(images)
    for image, r in zip(images, results, strict=True):
        assert r.argmax == peak_level(image) and not r.fallback
        assert sum(r.probs) == pytest.approx(1.0)
    body = server.bodies[0]
    assert body["model"] == MODEL and body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    system, user = body["messages"]
    assert system["content"][0]["text"] == prompts.render("paper_word_k9")[0]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    sent = sorted(server.images, key=lambda im: im.size)
    for original, received in zip(sorted(images, key=lambda im: im.size), sent, strict=True):
        assert np.array_equal(np.asarray(original), np.asarray(received))  # lossless PNG


def test_levels_outside_the_top_logprobs_get_zero() -> None:
    values = level_logprobs(
        [
            {"token": "2", "logprob": -0.2},
            {"token": " 2", "logprob": -0.1},
            {"token": "9", "logprob": -0.3},
            {"token": "x", "logprob": -1},
        ],
        3,
    )
    assert values[1] == -0.1 and np.isneginf(values[0]) and np.isneginf(values[2])


def test_a_failed_request_is_retried(server) -> None:
    server.fail_left = 1
    images = crops(3)
    results = scorer([server.url], retries=2).score(images)
    assert [r.argmax for r in results] == [peak_level(im) for im in images]
    assert len(server.bodies) == len(images) + 1  # the HTTP 500 and its retry


def test_persistent_failure_is_one_clear_error(server) -> None:
    server.fail_left = 10
    with pytest.raises(DogIQAError, match="answered HTTP 500: .*boom") as info:
        scorer([server.url], retries=1).score(crops(1))
    assert "\n" not in str(info.value)
    assert len(server.bodies) == 2


def test_concurrency_is_bounded_and_servers_share_the_work() -> None:
    gauge = Gauge()
    first, second = FakeServer(delay=0.15, gauge=gauge), FakeServer(delay=0.15, gauge=gauge)
    try:
        images = crops(8)
        results = scorer([first.url, second.url], concurrency=3).score(images)
        assert [r.argmax for r in results] == [peak_level(im) for im in images]
        assert len(first.bodies) == len(second.bodies) == 4
        assert 2 <= gauge.peak <= 3  # requests overlapped, never more than the bound
    finally:
        first.close()
        second.close()


def test_generate_readout_parses_the_answer(server) -> None:
    images = crops()
    results = scorer([server.url], "authors_word_k7", readout="generate").score(images)
    for image, r in zip(images, results, strict=True):
        peak = peak_level(image)
        assert r.raw == str(peak)
        if peak <= 7:
            assert (r.argmax, r.fallback, r.probs[peak - 1]) == (peak, False, 1.0)
        else:  # "8" or "9" is no level of K = 7: the authors' score 1, flagged
            assert (r.argmax, r.fallback) == (1, True)
    assert any(r.fallback for r in results) and not all(r.fallback for r in results)


def test_server_without_logprobs_is_a_clear_error() -> None:
    fake = FakeServer(logprobs=False)
    try:
        with pytest.raises(DogIQAError, match="returned no top_logprobs"):
            scorer([fake.url]).score(crops(1))
    finally:
        fake.close()


def test_unknown_model_and_unreachable_server(server) -> None:
    wrong = OpenAIScorer([server.url], "other-model", prompts.get("paper_word_k7"), retries=0)
    with pytest.raises(DogIQAError, match="does not serve model 'other-model'"):
        wrong.score(crops(1))
    closed = FakeServer()
    url = closed.url
    closed.close()
    with pytest.raises(DogIQAError, match="cannot reach"):
        scorer([url]).score(crops(1))


def test_params(server) -> None:
    section = {
        "backend": "openai",
        "K": 9,
        "prompt": "paper_word_k9",
        "readout": "logits",
        "openai": {
            "base_urls": [server.url],
            "model": MODEL,
            "api_key_env": None,
            "concurrency": 2,
            "retries": 0,
            "timeout": 5.0,
            "top_logprobs": 5,
            "max_pixels": 0,
        },
    }
    check_section(section)
    results = build_scorer(section).score(crops(2))
    assert len(results) == 2 and server.bodies[-1]["top_logprobs"] == 5
    bad = {**section, "openai": {**section["openai"], "base_urls": ["ftp://x"]}}
    with pytest.raises(ParamError, match="score.openai.base_urls"):
        check_section(bad)
    bad = {**section, "openai": {**section["openai"], "top_logprobs": 50}}
    with pytest.raises(ParamError, match="score.openai.top_logprobs"):
        check_section(bad)
