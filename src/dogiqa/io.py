"""File helpers shared by the stages: atomic writes, and the stage tables read and written as
``dogiqa.schema`` defines them.

Every stage writes its final outputs atomically (write to a temporary file in the same folder,
then rename), so an interrupted run never leaves a half-written table behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from dogiqa import paths, schema
from dogiqa.errors import DogIQAError, LabelError


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
    spec: schema.Table, path: str | Path, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a stage table as ``spec`` defines it (text columns as strings, empty cells of the
    others missing); one-line ``DogIQAError`` if it is absent or lacks one of ``columns``
    (default: all of the spec's). ``LabelError`` is the error of any stage table."""
    path = Path(path)
    if not path.exists():
        raise LabelError(
            f"{paths.show(path)}: {spec.what} not found (run the {spec.stage} stage first)"
        )
    frame = pd.read_csv(
        path,
        dtype=dict.fromkeys(spec.text, str),
        keep_default_na=False,
        na_values={c: [""] for c in spec.columns if c not in spec.text},
    )
    absent = [c for c in (columns or spec.columns) if c not in frame.columns]
    if absent:
        raise LabelError(f"{paths.show(path)}: {spec.what}: missing column(s) {absent}")
    return frame


def write_table(
    spec: schema.Table, path: str | Path, frame: pd.DataFrame, float_format: str = "%.6g"
) -> None:
    """Write a stage table; it must hold the spec's columns."""
    absent = [c for c in spec.columns if c not in frame.columns]
    if absent:
        raise DogIQAError(f"{spec.what}: cannot write without column(s) {absent}")
    write_csv_atomic(path, frame, float_format)


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A stage's JSON summary (or metrics file); one-line ``DogIQAError`` if absent or broken."""
    path = Path(path)
    if not path.exists():
        raise DogIQAError(f"{paths.show(path)}: {what} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise DogIQAError(f"{paths.show(path)}: {what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise DogIQAError(f"{paths.show(path)}: {what} is not a JSON object")
    return data
