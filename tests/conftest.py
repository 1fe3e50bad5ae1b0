"""Shared fixtures: the project root and the local mirror of public data (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mirror_path() -> Path:
    return Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_path()
    if not (path / "labels").is_dir():
        pytest.fail(f"local data mirror not found at {path}; set DOGIQA_MIRROR")
    return path
