"""The per-image result cache of the long stages (segment, score).

A stage appends one JSON line per finished image to ``data/cache/<stage>/<name>.jsonl``. A line
is flushed and fsync-ed before the next image starts, so a killed run loses at most the image in
flight; a torn last line (the kill hit mid-write) is discarded on resume. Results are keyed by a
:func:`fingerprint` of the settings that shape them, so a run with other settings redoes only what
they change. Every entry records the image file's :func:`file_digest`: a result, or a skip of an
unreadable file, is reused only while the image's bytes stay the same.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fingerprint(settings: Any) -> str:
    """A short hash of JSON-able ``settings`` (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_version(files: Iterable[str | Path]) -> str:
    """A short hash of the bytes of ``files`` (in the given order, each once)."""
    digest = hashlib.sha256()
    for source in dict.fromkeys(Path(f) for f in files):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def code_version(*objects: Any) -> str:
    """A short hash of the source files that define ``objects`` (modules, functions, classes):
    a cached result made by other code is not reused."""
    return files_version(inspect.getsourcefile(o) for o in objects)


def file_digest(path: str | Path) -> str | None:
    """A short SHA-256 of a file's bytes (None when there is no readable file): cached results
    of an image are reused only while it stays the same."""
    if not path:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()[:16]


class ImageCache:
    """Append-only JSON-lines cache of per-image results, keyed by image name.

    ``done()`` gives the results already stored; ``add()`` appends one image's result durably.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records = self._load()

    def _load(self) -> dict[str, Any]:
        records: dict[str, Any] = {}
        if not self.path.exists():
            return records
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A complete file ends with a newline, so the last element is empty; anything else
        # there is a torn line from a killed run: drop it and truncate the file to the last
        # good line so that the next append starts clean.
        complete, torn = lines[:-1], lines[-1]
        for line in complete:
            if not line.strip():
                continue
            entry = json.loads(line)
            records[entry["image"]] = entry["result"]
        if torn:
            with self.path.open("r+b") as handle:
                handle.truncate(len(raw) - len(torn))
        return records

    def done(self) -> dict[str, Any]:
        return dict(self._records)

    def __contains__(self, image: str) -> bool:
        return image in self._records

    def __len__(self) -> int:
        return len(self._records)

    def add(self, image: str, result: Any) -> None:
        line = json.dumps({"image": image, "result": result}, sort_keys=True, allow_nan=False)
        with self.path.open("ab") as handle:
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._records[image] = result


def read_only(path: Path) -> dict[str, Any]:
    """The complete lines of another run's cache; that run may still be writing, so a torn last
    line is ignored (never truncated)."""
    records: dict[str, Any] = {}
    try:
        raw = path.read_bytes()
    except OSError:
        return records
    for line in raw.split(b"\n")[:-1]:
        try:
            entry = json.loads(line)
            records[entry["image"]] = entry["result"]
        except (ValueError, KeyError, TypeError):
            continue
    return records
