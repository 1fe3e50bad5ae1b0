"""Small file helpers shared by the stages: atomic writes and an append-only per-image cache.

Every stage writes its final outputs atomically (write to a temporary file in the same folder,
then rename), so an interrupted run never leaves a half-written table behind.

Long stages (segment, score) keep a JSON-lines cache with one line per finished image. A line is
flushed and fsync-ed before the next image starts, so a killed run loses at most the image in
flight; a torn last line (the kill hit mid-write) is discarded on resume.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: some writers (papermill, pandas) choose the format by it.
    fd, tmp = tempfile.mkstemp(prefix=f".tmp.{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_csv_atomic(path: str | Path, frame: pd.DataFrame, float_format: str = "%.6g") -> None:
    """Write a table as CSV with a fixed float format, so reruns give byte-identical files."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")


def read_table(
    path: str | Path, columns: tuple[str, ...], what: str, dtype: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Read a stage's CSV output; one-line ``DogIQAError`` if it is absent or lacks a column."""
    from dogiqa.errors import DogIQAError

    path = Path(path)
    if not path.exists():
        raise DogIQAError(f"{path}: {what} not found (run the stage that writes it)")
    frame = pd.read_csv(path, dtype=dtype)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DogIQAError(f"{path}: {what} lacks column(s) {absent}")
    return frame


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
