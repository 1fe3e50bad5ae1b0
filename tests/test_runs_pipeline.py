"""Runs under DVC, end to end in small git copies of the study.

1. Enabling, changing or adding a run never touches another run's outputs, and `dvc repro` reruns
   only the changed run's stages.
2. The route of a GPU run to its readers: clone A computes a run whose scorer is an MLLM (a tiny
   random-weight Qwen2.5-VL standing in for a GPU model: mechanics only) beside the CPU run and
   pushes to the default DVC remote (a local folder); a fresh clone B pulls and `dvc repro`
   re-renders the notebooks without segmenting or scoring anything, and the notebooks show the
   run. A clone C pulls the same outputs read-only over HTTP (the folder served on loopback, as a
   public web server would serve what publishers push to their storage).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from run_project import GIT, commit, dogiqa, dvc, make_project, ran, run, run_outputs
from tiny_models import build_qwen25vl

from dogiqa import paths

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu", "datasets": ["livec"], "enabled": True}


def run_stages(result, run_name: str) -> list[str]:
    return [s for s in ran(result) if s.split("@")[-1].startswith(f"{run_name}-")]


def test_enabling_changing_or_adding_a_run_leaves_the_others_alone(tmp_path: Path) -> None:
    profiles = {
        "k5": {
            "description": "K = 5",
            "overrides": {"score.K": 5, "score.prompt": "paper_word_k5"},
        },
        "k9": {
            "description": "K = 9",
            "overrides": {"score.K": 9, "score.prompt": "paper_word_k9"},
        },
    }
    declared = {"cpu": CPU, "k5": {**CPU, "profile": "k5", "enabled": False}}
    root = make_project(tmp_path / "study", declared, profiles, images=2)
    first = dvc(root, "repro")
    assert len(ran(first)) == 5 and run_stages(first, "cpu") == ran(first)
    cpu = run_outputs(root, "cpu")
    assert "data/scores/cpu/livec.csv" in cpu and "data/cache/score/cpu/livec.jsonl" in cpu

    dogiqa(root, "runs", "--enable", "k5")  # enabling
    enabled = dvc(root, "repro")
    assert sorted(ran(enabled)) == sorted(
        f"{s}@k5-livec" for s in ("aggregate", "count_regions", "evaluate", "score", "segment")
    )
    k5 = run_outputs(root, "k5")
    assert pd.read_csv(root / "data/scores/k5/livec.csv").K.unique().tolist() == [5]

    profile_file = root / "src/dogiqa/resources/profiles.yaml"  # changing k5's profile
    profile_file.write_text(
        profile_file.read_text()
        .replace("paper_word_k5", "paper_word_k3")
        .replace("score.K: 5", "score.K: 3")
    )
    changed = dvc(root, "repro")
    assert ran(changed) and run_stages(changed, "k5") == ran(changed)

    params = root / "params.yaml"  # adding a run
    params.write_text(
        params.read_text().replace(
            "run_datasets:",
            "  k9: {profile: k9, datasets: [livec], enabled: true}\nrun_datasets:",
            1,
        )
    )
    dogiqa(root, "runs", "--write")
    added = dvc(root, "repro")
    assert ran(added) and run_stages(added, "k9") == ran(added)

    assert run_outputs(root, "cpu") == cpu  # same bytes, never rewritten
    assert set(run_outputs(root, "k5")) == set(k5)
    assert "up to date" in dvc(root, "status").stdout
    assert ran(dvc(root, "repro")) == []


def test_an_exp_run_that_only_enables_a_run_stops_in_one_line(tmp_path: Path) -> None:
    """``dvc exp run -S runs.paper.enabled=true`` leaves run_datasets, from which DVC builds the
    run stages, as it was: with the cpu run up to date only the report stages (which track
    ``runs``) rerun, and the first one refuses in one line saying what to run instead."""
    declared = {"cpu": CPU, "paper": {"profile": "paper", "datasets": ["livec"], "enabled": False}}
    root = make_project(tmp_path / "study", declared, reports=("report_segmentation",), images=2)
    dvc(root, "repro")
    commit(root, "the cpu run")
    cpu = run_outputs(root, "cpu")
    result = dvc(root, "exp", "run", "-S", "runs.paper.enabled=true", check=False)
    assert result.returncode != 0
    assert ran(result) == ["report_segmentation"]
    output = (result.stdout + result.stderr).splitlines()
    assert [line for line in output if line.startswith("dogiqa ")] == [
        "dogiqa report: error: params: run_datasets: lacks the enabled run(s) paper: DVC takes "
        "each run's stages from run_datasets, which `dvc exp run -S runs...` does not rewrite; "
        "run `python -m dogiqa runs --enable paper` first (it writes run_datasets), then "
        "`dvc repro` or `dvc exp run`"
    ]
    assert run_outputs(root, "cpu") == cpu and run_outputs(root, "paper") == {}


class ReadOnlyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder (GET and HEAD, as DVC's HTTP remote reads, dvc_http + fsspec's
    HTTPFileSystem) and records the methods it was asked for."""

    methods: list[str] = []

    def log_message(self, *args) -> None:
        ReadOnlyHandler.methods.append(self.command)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "dogiqa-remote"  # the default remote of clones in tmp_path
    folder.mkdir()
    handler = functools.partial(ReadOnlyHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


REPORTS = ("report_main_results", "report_cpu_mixgrained")
NOTEBOOKS = ("02_main_results", "06_cpu_mixgrained")


def test_a_gpu_run_reaches_readers_through_the_remote(tmp_path: Path, served) -> None:
    remote, url = served
    model = build_qwen25vl(tmp_path / "tiny-qwen")
    tiny = {
        "description": "A tiny random-weight Qwen2.5-VL standing in for a GPU model (mechanics).",
        "overrides": {
            "score.backend": "hf",
            "score.prompt": "paper_word_k7",
            "score.readout": "logits",
            "score.hf.model": str(model),
            "score.hf.device": "cpu",
            "score.hf.max_pixels": 0,
            "score.hf.local_files_only": True,
        },
    }
    declared = {"cpu": CPU, "tiny": {**CPU, "profile": "tiny"}}
    # Six photos: Figure 4 in notebook 06 fits a 4-parameter logistic curve.
    a = make_project(tmp_path / "a", declared, {"tiny": tiny}, reports=REPORTS, images=6)
    computed = dvc(a, "repro")
    assert {"segment@tiny-livec", "score@tiny-livec", *REPORTS} <= set(ran(computed))
    dvc(a, "push")  # to the default remote, ../dogiqa-remote
    commit(a, "runs cpu and tiny, rendered")
    assert any(remote.rglob("*")), "nothing was pushed"

    b = tmp_path / "b"
    run(tmp_path, *GIT, "clone", "-q", str(a), str(b))
    dvc(b, "pull")
    assert "up to date" in dvc(b, "status").stdout
    for name in NOTEBOOKS:
        paths.report_notebook(name, base=b).unlink()
    rendered = dvc(b, "repro")
    assert sorted(ran(rendered)) == sorted(REPORTS)  # no segment, score, aggregate, evaluate
    for name in NOTEBOOKS:
        source = paths.report_notebook(name, base=b).read_bytes()
        assert source == paths.report_notebook(name, base=a).read_bytes()
    table2 = pd.read_csv(paths.table("table2_training_free", base=b))
    dog_iqa = table2[(table2.method == "Dog-IQA") & (table2.dataset == "livec")]
    assert dog_iqa["this study: tiny"].notna().all() and dog_iqa["this study: cpu"].notna().all()
    assert dog_iqa.delta.isna().all()  # neither run is in the paper's configuration
    diffs = pd.read_csv(paths.table("cpu_mixgrained", base=b))
    assert set(diffs.run) == {"cpu", "tiny"} and diffs.delta.isna().all()
    assert "run tiny" in paths.report_notebook("06_cpu_mixgrained", base=b).read_text()

    c = tmp_path / "c"
    run(tmp_path, *GIT, "clone", "-q", str(a), str(c))
    # Outputs with `cache: false` (summaries, metrics, reports) come with git; the cached ones
    # (the stage tables) only from the remote.
    assert paths.summary("scores", "livec", base=c, run="tiny").exists()
    assert not paths.scores_table("livec", base=c, run="tiny").exists()
    ReadOnlyHandler.methods.clear()
    dvc(c, "remote", "add", "--local", "--default", "reader", url)
    dvc(c, "pull")
    assert set(ReadOnlyHandler.methods) <= {"GET", "HEAD"} and ReadOnlyHandler.methods
    assert "up to date" in dvc(c, "status").stdout
    for kind in ("regions", "scores", "predictions"):
        table = paths.stage_file(kind, "livec", base=c, run="tiny")
        assert (
            table.read_bytes() == paths.stage_file(kind, "livec", base=a, run="tiny").read_bytes()
        )
