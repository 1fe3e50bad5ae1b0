"""Shared fixtures: the project root, the in-repo fixture set and the local mirror of public data.

Tests that read the mirror (``../shared/data``, or ``$DOGIQA_MIRROR``) carry the ``mirror``
marker: every test that asks for the ``mirror`` fixture gets it here, the others say
``@pytest.mark.mirror`` themselves (or ``pytestmark``). Where the mirror is absent they are
skipped with the reason, so that ``make test-fast`` passes in a clone without it, on the in-repo
fixtures (``tests/fixtures/data``). CI sets ``DOGIQA_REQUIRE_MIRROR=1``: there a missing mirror
stops the run at once instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
"""Generated images and tiny label tables (``tests/fixtures/make_fixtures.py``)."""
REQUIRE = "DOGIQA_REQUIRE_MIRROR"


def mirror_path() -> Path:
    return Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()


def mirror_present() -> bool:
    return (mirror_path() / "labels").is_dir()


def mirror_missing_reason() -> str:
    return (
        f"needs the local data mirror, not found at {mirror_path()} "
        "(set DOGIQA_MIRROR; shared/data beside the checkout is the default)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get(REQUIRE) == "1" and not mirror_present():
        where = mirror_path()
        pytest.exit(f"{REQUIRE}=1 but the local data mirror is not found at {where}", returncode=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    present = mirror_present()
    for item in items:
        if "mirror" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mirror)
        if not present and item.get_closest_marker("mirror") is not None:
            item.add_marker(pytest.mark.skip(reason=mirror_missing_reason()))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_path()
    if not (path / "labels").is_dir():
        pytest.skip(mirror_missing_reason())
    return path
