"""Kill and resume: `python -m dogiqa segment|score` killed with SIGKILL mid-run, then rerun.

The stage runs as a real subprocess on real LIVE Challenge images. The test waits until the
stage's cache holds a few finished images (polling the file), kills it with SIGKILL, and reruns
it. The rerun must not recompute any finished image (the cache's complete lines are kept byte
for byte and only the missing images are appended: one line per image in the end), lose or
duplicate none, and write tables byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from stage_project import cli, cli_env, real_images, study_params, write_labels, write_params

from dogiqa import paths, score, segment

pytestmark = pytest.mark.slow

IMAGES = 10
KILL_AFTER = 2  # finished images in the cache when the kill is sent
# Scoring with two scorers makes each image take long enough to be killed between images.
SCORERS = ["piqe", "niqe"]


def make_project(root: Path) -> list[str]:
    images = real_images(IMAGES)
    write_labels(root, [(p.name, str(p)) for p in images])
    write_params(root, study_params(score__classical__scorer=SCORERS))
    return [p.name for p in images]


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_killed(root: Path, stage: str, cache: Path) -> bytes:
    """Start the stage, SIGKILL it once ``KILL_AFTER`` images are cached; the cache's bytes."""
    log = (root / f"{stage}.killed.log").open("w")
    process = subprocess.Popen(
        cli("dogiqa", stage, "--dataset", "livec"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 120
    try:
        while complete_lines(cache) < KILL_AFTER:
            assert process.poll() is None, f"{stage} ended before it could be killed"
            assert time.monotonic() < deadline, f"{stage} wrote no cache line in time"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    return cache.read_bytes()


def cache_images(data: bytes) -> list[str]:
    return [json.loads(line)["image"] for line in data.splitlines()]


def check_resume(
    root: Path, stage: str, images: list[str], outputs: list[Path], reference: Path
) -> None:
    cache = paths.stage_cache(stage, "livec", base=root)
    before = run_killed(root, stage, cache)
    finished = before[: before.rfind(b"\n") + 1]  # a kill mid-write leaves a torn last line
    done = len(cache_images(finished))
    assert KILL_AFTER <= done < len(images), "the kill must land mid-run"
    assert not any(out.exists() for out in outputs), "outputs are written only at the end"

    again = subprocess.run(
        cli("dogiqa", stage, "--dataset", "livec"),
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    to_do = "segment" if stage == "segment" else "score"
    assert f"{len(images)} images, {done} cached, {len(images) - done} to {to_do}" in again.stderr

    after = cache.read_bytes()
    assert after.startswith(finished), "a finished image's cache line changed"
    assert sorted(cache_images(after)) == sorted(images), "an image was lost or recomputed"
    for out in outputs:
        assert out.read_bytes() == (reference / out.relative_to(root)).read_bytes(), out.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """An uninterrupted run of both stages (in-process) on the same images."""
    root = tmp_path_factory.mktemp("uninterrupted")
    make_project(root)
    params = study_params(score__classical__scorer=SCORERS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        segment.run("livec", params)
        score.run("livec", params)
    return root


def outputs(root: Path, kind: str) -> list[Path]:
    return [paths.stage_file(kind, "livec", base=root), paths.summary(kind, "livec", base=root)]


def test_segment_resumes_after_sigkill(tmp_path: Path, reference: Path) -> None:
    images = make_project(tmp_path)
    tables = outputs(tmp_path, "regions")
    check_resume(tmp_path, "segment", images, tables, reference)


def test_score_resumes_after_sigkill(tmp_path: Path, reference: Path) -> None:
    images = make_project(tmp_path)
    regions = paths.regions_table("livec", base=tmp_path)
    regions.parent.mkdir(parents=True)
    shutil.copy(paths.regions_table("livec", base=reference), regions)
    tables = outputs(tmp_path, "scores")
    check_resume(tmp_path, "score", images, tables, reference)
    summary: dict[str, Any] = json.loads(tables[1].read_text())
    assert summary["prompt_ids"] == SCORERS and summary["images_scored"] == IMAGES
