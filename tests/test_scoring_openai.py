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


class Listener(ThreadingHTTPServer):
    """http.server's threading server with a listen backlog for many requests at once (its
    default, 5, makes connection number 6 and up wait for a SYN retransmission)."""

    request_queue_size = 128
    daemon_threads = True


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
        self.httpd = Listener(("127.0.0.1", 0), self._handler())
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
        shown = body.get("top_logprobs") or 1  # a generate request asks for no logprobs
        tops = [{**t, "bytes": list(t["token"].encode())} for t in tops[:shown]]
        asked = self.logprobs and body.get("logprobs")
        logprobs = {"content": [{**tops[0], "top_logprobs": tops}]} if asked else None
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
                    self._send(*server.route(self.path, body))
                finally:
                    server.gauge.leave()

        return Handler

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/chat/completions":
            return self.completion(body)
        return 404, {"detail": "Not Found"}


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


class SlowFirstServer(FakeServer):
    """Answers the first request it gets after ``wait`` seconds, every other one at once."""

    def __init__(self, wait: float) -> None:
        super().__init__()
        self.wait = wait
        self.started = 0
        self.answered_meanwhile = 0

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            first = not self.started
            self.started += 1
        if first:
            time.sleep(self.wait)
            self.answered_meanwhile = len(self.bodies)
        return super().completion(body)


def test_a_stream_of_images_comes_back_in_order() -> None:
    """Images of one and two crops, the first one answered last: the later images' requests go
    out while it waits, and every image gets its own crops' scores, in the order given."""
    fake = SlowFirstServer(wait=0.5)
    try:
        images = crops(6)
        jobs = [("first", images[:1]), ("pair", images[1:3]), ("one", images[3:4])]
        jobs += [("last", images[4:6])]
        streamed = list(scorer([fake.url], concurrency=4).score_stream(jobs))
        assert [tag for tag, _ in streamed] == ["first", "pair", "one", "last"]
        for (_, given), (_, scores) in zip(jobs, streamed, strict=True):
            assert [s.argmax for s in scores] == [peak_level(im) for im in given]
        assert fake.answered_meanwhile == 5  # the other images did not wait for the first
    finally:
        fake.close()


def test_a_prompting_system_s_requests_stream_across_images() -> None:
    """A prompting system's requests (chain-of-thought: its own question, its token budget) go
    through the same stream: later images are sent while the first waits, results in order,
    each reply read by the system (an answer without ``Score:`` is its flagged fallback)."""
    from dogiqa import systems

    cot = systems.Task(systems.get("single_cot"), prompts.get("paper_word_k7"), 1)
    fake = SlowFirstServer(wait=0.5)
    try:
        images = crops(6)
        jobs = [("first", images[:1]), ("pair", images[1:3]), ("rest", images[3:6])]
        asking = OpenAIScorer([fake.url], MODEL, cot, "generate", concurrency=4, retries=0)
        streamed = list(asking.score_stream(jobs))
        assert [tag for tag, _ in streamed] == ["first", "pair", "rest"]
        for (_, given), (_, scores) in zip(jobs, streamed, strict=True):
            assert [(s.raw, s.fallback) for s in scores] == [
                (str(peak_level(im)), True) for im in given
            ]
        assert fake.answered_meanwhile == 5  # the other images did not wait for the first
        question = cot.messages[-1]["content"][-1]["text"]
        for body in fake.bodies:
            assert body["max_tokens"] == cot.max_new_tokens and "logprobs" not in body
            assert body["messages"][-1]["content"][-1]["text"] == question
    finally:
        fake.close()


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


# --- crops every server accepts --------------------------------------------------------------


class QwenLimitServer(FakeServer):
    """Answers HTTP 400 where vLLM serving a Qwen2-VL model does: its processor's
    ``smart_resize`` (transformers models/qwen2_vl/image_processing_qwen2_vl.py) raises for an
    aspect ratio above 200, and vLLM returns that as a bad request. ``refuse`` picks images it
    rejects for other reasons."""

    def __init__(self, refuse: Any = None, **kwargs: Any) -> None:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        self.smart_resize = smart_resize
        self.refuse = refuse or (lambda image: False)
        super().__init__(**kwargs)

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        try:
            self.smart_resize(image.height, image.width)
            if self.refuse(image):
                raise ValueError("image refused")
        except ValueError as exc:
            return 400, {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}}
        return super().completion(body)


def test_thin_crops_are_padded_before_they_are_sent() -> None:
    fake = QwenLimitServer()
    try:
        stripes = [Image.new("RGB", (1500, 6), "white"), Image.new("RGB", (6, 1500), "gray")]
        results = scorer([fake.url]).score(stripes)
        assert all(not r.fallback and not r.error for r in results)
        assert all(max(im.size) / min(im.size) <= 50 for im in fake.images)
    finally:
        fake.close()


def test_a_crop_the_server_rejects_is_a_flagged_fallback() -> None:
    fake = QwenLimitServer(refuse=lambda image: image.size == (54, 40))
    try:
        images = crops(4)  # 40 x 30, 47 x 35, 54 x 40 and a 70 x 50 texture
        results = scorer([fake.url]).score(images)
        assert [bool(r.error) for r in results] == [False, False, True, False]
        assert results[2].fallback and results[2].argmax == 1
        assert "HTTP 400" in results[2].error and "image refused" in results[2].error
    finally:
        fake.close()


# --- levels read by token id, against a tiny model's own logits ---------------------------------


class TinyModelServer(FakeServer):
    """A loopback OpenAI-compatible server that answers from a tiny random-weight model's own
    next-token logits, the way vLLM's chat completions do: ``top_logprobs`` from the
    log-softmax over the whole vocabulary; tokens as ``token_id:N`` when the request sets
    ``return_tokens_as_token_ids`` (vLLM's extra parameter), else as the vocabulary's byte-level
    strings ("Ġ8", as some vLLM releases return them); ``/tokenize`` and ``/detokenize`` beside
    /v1 (vLLM's tokenizer endpoints) when ``endpoints``."""

    def __init__(self, folder: Any, prompt_id: str, endpoints: bool) -> None:
        from dogiqa.scoring.hf import HFScorer

        section = {
            "model": str(folder),
            "revision": None,
            "trust_remote_code": False,
            "dtype": "float32",
            "device": "cpu",
            "batch_size": 1,
            "max_pixels": 0,
            "min_side": 28,
            "local_files_only": True,
        }
        self.model = HFScorer.from_params(section, prompt_id, prompts.get(prompt_id).K, "logits")
        self.tokenizer = self.model.adapter.tokenizer
        self.endpoints = endpoints
        super().__init__()

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.endpoints and path == "/tokenize":
            ids = self.tokenizer.encode(body["prompt"], add_special_tokens=False)
            return 200, {"count": len(ids), "max_model_len": 4096, "tokens": ids}
        if self.endpoints and path == "/detokenize":
            return 200, {"prompt": self.tokenizer.decode(body["tokens"])}
        return super().route(path, body)

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import torch

        with self.lock:
            self.bodies.append(body)
        parts = body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        adapter = self.model.adapter
        with self.lock, torch.inference_mode():
            request = self.model.task.request([image])  # as received: prepared by the client
            out = adapter.model(**adapter.inputs([request]), use_cache=False)
        logprobs = torch.log_softmax(out.logits[0, -1].double(), dim=0)
        values, ids = torch.topk(logprobs, body["top_logprobs"])
        as_ids = body.get("return_tokens_as_token_ids")

        def name(token: int) -> str:
            return f"token_id:{token}" if as_ids else self.tokenizer.convert_ids_to_tokens(token)

        tops = [
            {"token": name(int(i)), "logprob": float(v)} for v, i in zip(values, ids, strict=True)
        ]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": self.tokenizer.decode([int(ids[0])])},
            "finish_reason": "length",
            "logprobs": {"content": [{**tops[0], "top_logprobs": tops}]},
        }
        return 200, {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [choice],
        }


def level_heavy(folder: Any) -> Any:
    """The tiny model with the level tokens' head rows moved toward the final hidden state of
    the scoring prompt, so that, as in a real VLM after this prompt, the levels take most of the
    next-token probability and all of them are among the top 20 (with random weights most of
    them are not)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from dogiqa.scoring.hf import level_token_ids

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    text = prompts.render_chat(processor, "paper_word_k7")
    grey = Image.new("RGB", (64, 64), "gray")
    inputs = processor(text=[text], images=[grey], return_tensors="pt")
    head = model.get_output_embeddings()
    hidden: list[Any] = []  # the head's input: the final hidden states
    hook = head.register_forward_hook(lambda module, args, output: hidden.append(args[0]))
    with torch.no_grad():
        model(**inputs, use_cache=False)
    hook.remove()
    last = hidden[-1][0, -1]
    with torch.no_grad():
        for ids in level_token_ids(processor.tokenizer, 9):
            head.weight[ids] += 8.0 * last / last.dot(last)  # about +8 on every level's logit
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tiny_models import BUILDERS

    root = tmp_path_factory.mktemp("tiny-openai")
    return {name: level_heavy(build(root / name)) for name, build in BUILDERS.items()}


def photo_crops() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    sizes = [(40, 30), (64, 64), (120, 50), (33, 90)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def compare_with_hf(server: TinyModelServer, prompt_id: str) -> list[Any]:
    images = photo_crops()
    by_server = scorer([server.url], prompt_id).score(images)
    by_hf = server.model.score(images)
    for a, b in zip(by_server, by_hf, strict=True):
        assert np.abs(np.array(a.probs) - np.array(b.probs)).max() < 1e-6
        assert a.level_mass == pytest.approx(b.level_mass, abs=1e-6)
        assert a.levels_found == a.K and not a.fallback
    return by_server


def test_levels_by_token_id_match_the_hf_backend(tiny_dirs) -> None:
    server = TinyModelServer(tiny_dirs["qwen2_5_vl"], "paper_word_k7", endpoints=True)
    try:
        compare_with_hf(server, "paper_word_k7")
        assert all(body.get("return_tokens_as_token_ids") is True for body in server.bodies)
    finally:
        server.close()


def test_byte_level_token_strings_still_map_every_level(tiny_dirs) -> None:
    """The tiny Idefics3 vocabulary has " 8" as one token, returned as "Ġ8"."""
    server = TinyModelServer(tiny_dirs["idefics3"], "paper_word_k7", endpoints=False)
    try:
        compare_with_hf(server, "paper_word_k7")
        assert not any(body.get("return_tokens_as_token_ids") for body in server.bodies)
        answer = server.completion(dict(server.bodies[0]))[1]["choices"][0]["logprobs"]
        assert any(t["token"].startswith("Ġ") for t in answer["content"][0]["top_logprobs"])
    finally:
        server.close()


def test_token_strings_are_read_by_id_or_text() -> None:
    from dogiqa.scoring.openai_backend import token_level

    ids = {11: 1, 12: 2, 13: 2}
    assert token_level("token_id:13", 3, ids) == 2
    assert token_level("token_id:99", 3, ids) is None
    assert token_level("Ġ3", 3, None) == 3  # byte-level BPE: " 3"
    assert token_level("\u25813", 3, None) == 3  # SentencePiece: " 3"
    assert token_level(" 2", 3, None) == 2
    assert token_level("23", 3, None) is None and token_level("Ġ9", 3, None) is None
