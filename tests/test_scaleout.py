"""Scale-out: the openai backend against several servers, and sharding with a merge.

Several local OpenAI-compatible servers (real HTTP on 127.0.0.1, the response shape vLLM
documents) must give the same scores table as one. N shards of the score stage, each scoring a
disjoint share of the images, must merge into the very bytes one run writes, including under
DVC in the form docs/scaleout.md gives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from stage_project import (
    ROOT,
    cli,
    cli_env,
    real_images,
    run_cli,
    study_params,
    write_labels,
    write_params,
)
from test_scoring_openai import MODEL, FakeServer, Gauge

from dogiqa import crops as region_crops
from dogiqa import merge_scores, paths, score, segment, sharding
from dogiqa.cli import COMMANDS
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.classical import ClassicalScorer

IMAGES = 7


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """Labels and regions of seven real photos, a broken file (stops at the segment stage) and
    a photo emptied after segmentation (reaches the score stage, which skips it)."""
    root = tmp_path_factory.mktemp("segmented")
    broken = root / "broken.JPG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    later = root / "later.JPG"
    shutil.copy(real_images(1, start=IMAGES)[0], later)
    rows = [(p.name, str(p)) for p in real_images(IMAGES)]
    rows[3:3] = [("broken.JPG", str(broken)), ("later.JPG", str(later))]
    write_labels(root, rows)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        table = segment.run("livec", study_params())
    later.write_bytes(b"")
    assert table["image"].nunique() == IMAGES + 1
    return root


@pytest.fixture(autouse=True)
def _restore_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests move between projects with os.chdir; the working directory is restored."""
    monkeypatch.chdir(tmp_path)


def project(segmented: Path, target: Path) -> Path:
    """A fresh project with the labels and regions of ``segmented`` (no caches, no scores)."""
    for table in (paths.labels_table, paths.regions_table):
        table("livec", base=target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(table("livec", base=segmented), table("livec", base=target))
    return target


def outputs(root: Path) -> tuple[bytes, bytes]:
    table = paths.scores_table("livec", base=root)
    return table.read_bytes(), table.with_name("livec.summary.json").read_bytes()


@pytest.fixture
def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Crops each classical scorer is asked to score."""
    counts: dict[str, int] = {}
    real = ClassicalScorer.measure

    def counted(self: ClassicalScorer, crops: list) -> list:
        counts[self.metric] = counts.get(self.metric, 0) + len(crops)
        return real(self, crops)

    monkeypatch.setattr(ClassicalScorer, "measure", counted)
    return counts


def run_single(segmented: Path, root: Path, params: dict[str, Any]) -> tuple[bytes, bytes]:
    project(segmented, root)
    os.chdir(root)
    score.run("livec", params)
    return outputs(root)


def run_shards(root: Path, params: dict[str, Any]) -> None:
    os.chdir(root)
    for index in params["score"]["shards"]:
        score.run("livec", params, shard=str(index))
    merge_scores.run("livec", params)


# --- shards -----------------------------------------------------------------------------------


def test_shard_assignment_is_disjoint_covering_balanced() -> None:
    images = [f"{i}.jpg" for i in range(11)]
    shards = [sharding.Shard(i, 4).select(images) for i in range(4)]
    assert sorted(sum(shards, [])) == sorted(images)
    assert [len(s) for s in shards] == [3, 3, 3, 2]
    assert shards[1] == ["1.jpg", "5.jpg", "9.jpg"]  # every 4th, in table order
    assert sharding.parse("2", 4) == sharding.parse(" 2/4 ", 4) == sharding.Shard(2, 4)
    with pytest.raises(ParamError, match="score.shards: lists 4 shard"):
        sharding.parse("1/3", 4)
    with pytest.raises(ParamError, match="score.shards: has no shard 4"):
        sharding.parse("4", 4)
    with pytest.raises(DogIQAError, match="--shard: expected I or I/N"):
        sharding.parse("first", 4)
    with pytest.raises(ParamError, match="score.shards"):
        sharding.shard_count({"shards": [0, 2]})


def test_shards_merge_to_the_bytes_of_one_run(segmented, tmp_path) -> None:
    single = run_single(segmented, tmp_path / "single", study_params())
    params = study_params(score__shards=[0, 1, 2])
    root = project(segmented, tmp_path / "sharded")
    run_shards(root, params)
    assert outputs(root) == single

    images = []
    for index in range(3):
        summary = json.loads((root / sharding.summary_path("livec", index)).read_text())
        assert summary["shard"] == f"{index}/3"
        table = (root / sharding.table_path("livec", index)).read_text().splitlines()[1:]
        skipped = {s["image"] for s in summary["skipped"]}
        images.append({line.split(",")[0] for line in table} | skipped)
    assert sum(len(s) for s in images) == len(set().union(*images)) == IMAGES + 1
    merged = json.loads(single[1])
    assert [s["image"] for s in merged["skipped"]] == ["later.JPG"]


def test_merge_refuses_missing_stale_or_other_shards(segmented, tmp_path) -> None:
    root = project(segmented, tmp_path)
    os.chdir(root)
    params = study_params(score__shards=[0, 1])
    score.run("livec", params, shard="0/2")
    with pytest.raises(DogIQAError, match=r"1\.csv: output of shard 1/2 not found"):
        merge_scores.run("livec", params)
    score.run("livec", study_params(score__shards=[0, 1], score__K=5), shard="1")
    with pytest.raises(DogIQAError, match=r"other settings \(K\)"):
        merge_scores.run("livec", params)
    score.run("livec", params, shard="1")
    merge_scores.run("livec", params)
    with pytest.raises(DogIQAError, match="holds shard '0/2', not 0/3"):
        merge_scores.run("livec", study_params(score__shards=[0, 1, 2]))


def test_merge_names_the_command_that_makes_a_missing_shard(segmented, tmp_path) -> None:
    """The message's command runs (the package's CLI has it), not a module without a main."""
    root = project(segmented, tmp_path)
    os.chdir(root)
    params = study_params(score__shards=[0, 1])
    score.run("livec", params, shard="0/2")
    with pytest.raises(DogIQAError) as caught:
        merge_scores.run("livec", params)
    command = str(caught.value).split("(run: ")[1].rstrip(")").split()
    assert command[:3] == ["python", "-m", "dogiqa"] and command[3] in COMMANDS
    assert command[3:] == ["score", "--run", "cpu", "--dataset", "livec", "--shard", "1/2"]


def test_merge_refuses_a_shard_summary_without_its_error_count(segmented, tmp_path) -> None:
    """A summary from a score stage that did not count errors: one line naming the key and the
    file, not a KeyError."""
    root = project(segmented, tmp_path)
    os.chdir(root)
    params = study_params(score__shards=[0, 1])
    run_shards(root, params)
    path = root / sharding.summary_path("livec", 1)
    summary = json.loads(path.read_text())
    del summary["errors"]
    path.write_text(json.dumps(summary))
    with pytest.raises(DogIQAError, match=r"1\.summary\.json: shard summary lacks errors .*rerun"):
        merge_scores.run("livec", params)


def test_every_cache_of_the_dataset_is_reused(segmented, tmp_path, count_calls) -> None:
    """After a whole run, shards (of any count) score nothing again, and the other way round."""
    two, three = study_params(score__shards=[0, 1]), study_params(score__shards=[0, 1, 2])
    whole_first = project(segmented, tmp_path / "whole-first")
    os.chdir(whole_first)
    score.run("livec", study_params())
    reference = outputs(whole_first)
    calls = {"piqe": json.loads(reference[1])["scorer_calls"]}
    assert count_calls == calls
    run_shards(whole_first, three)
    run_shards(whole_first, two)
    score.run("livec", study_params())
    assert count_calls == calls and outputs(whole_first) == reference

    count_calls.clear()
    shards_first = project(segmented, tmp_path / "shards-first")
    run_shards(shards_first, two)
    assert count_calls == calls
    run_shards(shards_first, three)
    score.run("livec", study_params())
    assert count_calls == calls and outputs(shards_first) == reference


# --- several servers ------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    fakes = [FakeServer() for _ in range(3)]
    yield fakes
    for fake in fakes:
        fake.close()


def openai_params(urls: list[str], **changes: Any) -> dict[str, Any]:
    return study_params(
        score__backend="openai",
        score__prompt="paper_word_k7",
        score__K=7,
        score__readout="logits",
        score__openai__base_urls=urls,
        score__openai__model=MODEL,
        score__openai__retries=0,
        score__openai__timeout=30.0,
        **{"score__openai__concurrency": 4, **changes},
    )


def test_three_servers_give_the_table_of_one(segmented, tmp_path, servers) -> None:
    one = run_single(segmented, tmp_path / "one", openai_params([servers[0].url]))
    calls = json.loads(one[1])["scorer_calls"]
    assert calls > IMAGES and len(servers[0].bodies) == calls
    before = [len(s.bodies) for s in servers]
    three = run_single(segmented, tmp_path / "three", openai_params([s.url for s in servers]))
    assert three == one
    shares = [len(s.bodies) - n for s, n in zip(servers, before, strict=True)]
    assert sum(shares) == calls and min(shares) > 0


def test_shards_on_separate_servers_merge_to_one_run(segmented, tmp_path, servers) -> None:
    single = run_single(segmented, tmp_path / "one", openai_params([servers[0].url]))
    root = project(segmented, tmp_path / "sharded")
    os.chdir(root)
    for index, server in enumerate(servers[1:]):
        params = openai_params([server.url], score__shards=[0, 1])
        score.run("livec", params, shard=f"{index}/2")
        assert server.bodies
    merge_scores.run("livec", openai_params([servers[0].url], score__shards=[0, 1]))
    assert outputs(root) == single


# --- requests in flight across images -------------------------------------------------------


def cached_images(root: Path) -> list[str]:
    """The images of the score cache, in the order their lines were written."""
    lines = paths.stage_cache("score", "livec", base=root).read_text().splitlines()
    return [json.loads(line)["image"] for line in lines]


def table_images(root: Path) -> list[str]:
    regions = pd.read_csv(paths.regions_table("livec", base=root))
    return list(dict.fromkeys(regions["image"]))


SMALL = {"score__openai__max_pixels": 64 * 64}  # crops sent small: quick to encode and decode


def test_requests_stay_in_flight_across_images(segmented, tmp_path) -> None:
    """score.openai.concurrency requests are in flight over the whole run, not at most one
    image's crops with a wait for its slowest one; the table, and the order in which images are
    cached, are those of one request at a time."""
    gauge = Gauge()
    server = FakeServer(gauge=gauge)
    try:
        params = openai_params([server.url], score__openai__concurrency=1, **SMALL)
        one = run_single(segmented, tmp_path / "one", params)
        assert gauge.peak == 1
        regions = pd.read_csv(paths.regions_table("livec", base=tmp_path / "one"))
        most = max(region_crops.distinct_crops(g, "bbox") for _, g in regions.groupby("image"))
        concurrency = most + 4  # more than any one image has crops
        server.delay, gauge.peak = 0.2, 0
        params = openai_params([server.url], score__openai__concurrency=concurrency, **SMALL)
        many = run_single(segmented, tmp_path / "many", params)
        assert most < gauge.peak <= concurrency  # more than one image's crops at once
    finally:
        server.close()
    assert many == one
    assert cached_images(tmp_path / "many") == table_images(tmp_path / "many")


class FailingServer(FakeServer):
    """Answers ``answers`` requests, then HTTP 500 (a server that went away) until healed."""

    def __init__(self, answers: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: int | None = answers

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            broken = self.answers is not None and self.answers <= 0
            if self.answers is not None:
                self.answers -= 1
        if broken:
            self.bodies.append(body)
            return 500, {"error": {"message": "gone", "type": "server_error"}}
        return super().completion(body)


def test_a_stopped_pipelined_run_resumes_to_the_same_table(segmented, tmp_path) -> None:
    """A server failure stops the stage with the images finished before it cached, whole and in
    table order; the rerun sends only the other images' crops and writes the table of an
    uninterrupted run."""
    reference = FakeServer()
    try:
        whole = run_single(segmented, tmp_path / "whole", openai_params([reference.url], **SMALL))
    finally:
        reference.close()
    calls = json.loads(whole[1])["scorer_calls"]
    server = FailingServer(answers=calls // 2, delay=0.02)
    try:
        params = openai_params([server.url], score__openai__concurrency=6, **SMALL)
        with pytest.raises(DogIQAError, match="answered HTTP 500"):
            run_single(segmented, tmp_path / "resumed", params)
        done = cached_images(tmp_path / "resumed")
        assert done and done == table_images(tmp_path / "resumed")[: len(done)]
        server.answers, sent = None, len(server.bodies)
        os.chdir(tmp_path / "resumed")
        score.run("livec", params)
        assert outputs(tmp_path / "resumed") == whole
    finally:
        server.close()
    regions = pd.read_csv(paths.regions_table("livec", base=tmp_path / "resumed"))
    crops_of = {n: region_crops.distinct_crops(g, "bbox") for n, g in regions.groupby("image")}
    finished = sum(crops_of[n] for n in done if n != "later.JPG")  # later.JPG: skipped
    assert finished > 0 and len(server.bodies) - sent == calls - finished
    assert cached_images(tmp_path / "resumed") == table_images(tmp_path / "resumed")


# --- commands and DVC -------------------------------------------------------------------------


@pytest.mark.slow
def test_sharding_commands(segmented, tmp_path) -> None:
    root = project(segmented, tmp_path)
    write_params(root, study_params(score__shards=[0, 1]))
    for shard in ("0", "1/2"):
        result = run_cli(root, "score", "--dataset", "livec", "--shard", shard)
        assert result.returncode == 0, result.stderr
    result = run_cli(root, "merge-scores", "--dataset", "livec")
    assert result.returncode == 0, result.stderr
    for bad, message in (("1/3", "score.shards: lists 2 shard(s)"), ("x", "expected I or I/N")):
        result = run_cli(root, "score", "--dataset", "livec", "--shard", bad)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith("dogiqa score: error: ") and message in result.stderr


def documented_stages(run: str = "paper") -> dict[str, Any]:
    """The sharded score stages docs/scaleout.md gives for dvc.yaml (its run ``paper`` renamed
    to ``run``)."""
    text = (ROOT / "docs" / "scaleout.md").read_text(encoding="utf-8")
    block = text.split("<!-- sharded score stages")[1].split("```yaml\n", 1)[1].split("```")[0]
    return yaml.safe_load("stages:\n" + block.replace("paper", run))["stages"]


@pytest.mark.slow
def test_documented_dvc_form(tmp_path) -> None:
    """`dvc repro` with the score stage replaced by the documented matrix and merge."""
    for name in ("params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("src", ".dvc", "notebooks"):
        shutil.copytree(
            ROOT / folder,
            tmp_path / folder,
            ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp", "*.egg-info"),
        )
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    stages: dict[str, Any] = {}
    for name, stage in pipeline["stages"].items():
        # The documented stages of the `paper` run, for the CPU run (no GPU here).
        stages.update(documented_stages(paths.DEFAULT_RUN) if name == "score" else {name: stage})
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    params = study_params(datasets=["livec"], sample__size=6, score__shards=[0, 1])
    write_params(tmp_path, params)
    env = cli_env() | {"PYTHONPATH": str(tmp_path / "src"), "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("git", "init", "-q")
    run(*cli("dogiqa", "dvc-deps", "--write"))  # the code deps, as the docs say
    written = yaml.safe_load((tmp_path / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert written["score"]["deps"][-3:] == documented_stages(paths.DEFAULT_RUN)["score"]["deps"]
    assert "src/dogiqa/score.py" in written["score"]["deps"]
    assert "src/dogiqa/merge_scores.py" in written["merge_scores"]["do"]["deps"]
    log = run(sys.executable, "-m", "dvc", "repro", "merge_scores@livec")
    ran = [line[15:-2] for line in log.splitlines() if line.startswith("Running stage")]
    assert ran[:2] == ["download@livec", "segment@cpu-livec"] and ran[-1] == "merge_scores@livec"
    assert sorted(ran[2:-1]) == ["score@livec-0", "score@livec-1"]  # in either order
    sharded = outputs(tmp_path)
    # One unsharded run from scratch (no cache) writes the same bytes over the merged ones.
    shutil.rmtree(tmp_path / paths.CACHE / "score")
    result = subprocess.run(
        cli("dogiqa", "score", "--dataset", "livec"), cwd=tmp_path, env=env, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert b"6 images, 0 cached, 6 to score" in result.stderr
    assert outputs(tmp_path) == sharded
    assert "up to date" in run(sys.executable, "-m", "dvc", "status", "merge_scores@livec")
