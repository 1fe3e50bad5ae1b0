"""Benchmark of the openai backend's request scheduling against a loopback server (CPU only).

A local server speaking the chat-completions API answers every request after a fixed latency
(``--latency``, 50 ms: a stand-in for a vLLM server's time per request), in its own process, with
log-probabilities of the level tokens. The openai backend (``concurrency`` 32) scores the distinct
crops of real LIVE Challenge photos, segmented and cut as the score stage does
(benchmarks/photos.py), along two paths, in one run:

- ``per_image``: one ``measure`` call per image, as the score stage made them before it streamed
  images: at most one image's crops (~7) in flight, and every image waits for its slowest crop;
- ``pipelined``: one stream over all images (``dogiqa.scoring.measure_stream``, what the score
  stage runs now): ``concurrency`` requests in flight across images, results in table order.

``pipelined_vs_per_image_speedup`` is the ratio of their crops per second (fastest of
``--repeats`` interleaved runs of each; medians kept too), and the server reports the most
requests it had in flight during each run. The crops are shrunk to at most ``--side`` pixels a
side before the runs so that what is measured is the scheduling: on the 2-core build machine the
client's PNG encoding of a 500 x 500 photo alone takes tens of milliseconds (``png_encode_ms``
shows it, at Pillow's default zlib level and at the level the backend uses).

Also measured: the client's CPU time per request at ``concurrency`` in flight through the
``openai`` client's typed ``chat.completions.create`` and through its generic ``post`` with the
same JSON body (what the backend uses).

    python benchmarks/scaleout.py [--images 64] [--latency 0.05] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from photos import ROOT, segmented
from PIL import Image

from dogiqa import io as dogiqa_io
from dogiqa import paths, prompts
from dogiqa.scoring import measure_stream
from dogiqa.scoring.openai_backend import PNG_COMPRESS_LEVEL, OpenAIScorer

MODEL = "loopback-vlm"
PROMPT = "paper_word_k7"


# --- the loopback server ----------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True

    def __init__(self, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.latency = latency
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0


ANSWER = {
    "id": "loopback",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "4"},
            "finish_reason": "length",
            "logprobs": {
                "content": [
                    {
                        "token": "4",
                        "logprob": -0.5,
                        "top_logprobs": [
                            {"token": str(level), "logprob": -0.5 - abs(level - 4)}
                            for level in range(1, 8)
                        ],
                    }
                ]
            },
        }
    ],
}


class Handler(BaseHTTPRequestHandler):
    """/v1/models, /v1/chat/completions (after the latency), /stats (peak in flight, reset)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server
    disable_nagle_algorithm = True  # headers and body go out at once (no delayed-ACK stall)
    server: Server

    def log_message(self, *args: Any) -> None:
        pass

    def send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/v1/models":
            self.send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif self.path == "/stats":
            with self.server.lock:
                peak, self.server.peak = self.server.peak, 0
            self.send(200, {"peak": peak})
        else:
            self.send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/chat/completions":  # no /tokenize: levels are read by text
            self.send(404, {"detail": "Not Found"})
            return
        with self.server.lock:
            self.server.now += 1
            self.server.peak = max(self.server.peak, self.server.now)
        time.sleep(self.server.latency)
        with self.server.lock:
            self.server.now -= 1
        self.send(200, ANSWER)


def serve(latency: float, ports: Any) -> None:
    server = Server(latency)
    ports.put(server.server_address[1])
    server.serve_forever()


def peak_in_flight(url: str) -> int:
    import httpx

    return int(httpx.get(url.removesuffix("/v1") + "/stats").json()["peak"])


# --- the two paths ----------------------------------------------------------------------------


def shrunk(images: list[list[Image.Image]], side: int) -> list[list[Image.Image]]:
    out = []
    for crops in images:
        small = []
        for crop in crops:
            copy = crop.copy()
            copy.thumbnail((side, side))
            small.append(copy)
        out.append(small)
    return out


def per_image(scorer: OpenAIScorer, images: list[list[Image.Image]]) -> None:
    for crops in images:
        scorer.measure(crops)


def pipelined(scorer: OpenAIScorer, images: list[list[Image.Image]]) -> None:
    for _ in measure_stream(scorer, enumerate(images)):
        pass


def client_cpu(scorer: OpenAIScorer, crop: Image.Image, requests: int) -> dict[str, float]:
    """Client CPU milliseconds per request, ``scorer.concurrency`` requests in flight."""
    body = scorer.prepare(crop)
    client = scorer.clients[0]
    calls = {
        "typed_create": lambda: client.chat.completions.create(**body),
        "generic_post": lambda: client.post("/chat/completions", cast_to=object, body=body),
    }
    out = {}
    for name, call in calls.items():
        call()
        start = time.process_time()
        with ThreadPoolExecutor(scorer.concurrency) as pool:
            for future in [pool.submit(call) for _ in range(requests)]:
                future.result()
        out[name] = 1000 * (time.process_time() - start) / requests
    return out


def png_encode_ms(image: Image.Image, repeats: int = 10) -> dict[str, float]:
    out = {}
    for level in (6, PNG_COMPRESS_LEVEL):
        start = time.perf_counter()
        for _ in range(repeats):
            image.save(io.BytesIO(), format="PNG", compress_level=level)
        out[f"level_{level}"] = 1000 * (time.perf_counter() - start) / repeats
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--side", type=int, default=32, help="crops shrunk to this many px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / paths.BENCH / "scaleout.json")
    args = parser.parse_args(argv)
    photos = segmented(args.images)
    images = shrunk(photos, args.side)
    crops = sum(len(c) for c in images)
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.latency, ports), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
        scorer = OpenAIScorer(
            [url], MODEL, prompts.get(PROMPT), concurrency=args.concurrency, retries=0
        )
        paths_run = {"per_image": per_image, "pipelined": pipelined}
        for run in paths_run.values():  # warm-up: connections, the server check
            run(scorer, images[:2])
        peak_in_flight(url)
        seconds: dict[str, list[float]] = {name: [] for name in paths_run}
        peaks: dict[str, int] = {name: 0 for name in paths_run}
        for _ in range(args.repeats):
            for name, run in paths_run.items():
                start = time.perf_counter()
                run(scorer, images)
                seconds[name].append(time.perf_counter() - start)
                peaks[name] = max(peaks[name], peak_in_flight(url))
        cpu = client_cpu(scorer, images[0][0], 20 * args.concurrency)
    finally:
        server.terminate()
        server.join()
    best = {name: crops / min(values) for name, values in seconds.items()}
    median = {name: crops / statistics.median(values) for name, values in seconds.items()}
    counts = [len(c) for c in images]
    result = {
        "pipelined_vs_per_image_speedup": best["pipelined"] / best["per_image"],
        "median_speedup": median["pipelined"] / median["per_image"],
        "crops_per_second": best,
        "median_crops_per_second": median,
        "peak_requests_in_flight": peaks,
        "seconds": seconds,
        "client_cpu_ms_per_request": cpu,
        "png_encode_ms": {"photo": list(photos[0][0].size), **png_encode_ms(photos[0][0])},
        "settings": {
            "server": "http.server (HTTP/1.1 keep-alive) in its own process, sleeping the latency",
            "latency_s": args.latency,
            "concurrency": args.concurrency,
            "images": len(images),
            "crops": crops,
            "crops_per_image": {
                "mean": statistics.mean(counts),
                "min": min(counts),
                "max": max(counts),
            },
            "crop_source": "livec photos in name order, segmented with params.yaml (bbox crops)",
            "crop_side_px": args.side,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": multiprocessing.cpu_count(),
        },
        "note": "loopback: the server's latency stands in for a model's time per request; the "
        "ratio shows the scheduling, not the speed of a real vLLM server",
    }
    dogiqa_io.write_json_atomic(args.out, result)
    print(
        f"pipelined vs per image: {result['pipelined_vs_per_image_speedup']:.2f}x "
        f"({best['pipelined']:.0f} vs {best['per_image']:.0f} crops/s; in flight "
        f"{peaks['pipelined']} vs {peaks['per_image']}) -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
