"""Every prompting system end to end through its stage: the single-stimulus systems through the
score stage, the double and multiple stimulus systems through the compare and rank stages.

Three kinds of model answer, on real LIVE Challenge photos:

- a tiny random-weight Qwen2.5-VL through the ``hf`` backend (tests/tiny_models.py): mechanics
  only, its numbers mean nothing;
- an *oracle* behind the ``openai`` backend, a loopback server speaking the chat-completions API
  as vLLM does (``choices[0].logprobs.content[0].top_logprobs``, or the generated text) that
  judges by brightness: a level from an image's mean brightness, A/B by the brighter image, a
  ranking by brightness. The labels give every image its brightness as its MOS, so the whole
  chain (which image is A, which answer means what, the ranking's pairs, the exemplars' answers,
  the aggregation) must recover the MOS order;
- the tiny model behind a loopback server (``openai`` backend), which must answer every system
  exactly as the ``hf`` backend does: the conversation the server receives is the one ``hf``
  renders.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from stage_project import real_images, study_params
from test_scoring_openai import MODEL, FakeServer
from test_systems import system_texts
from tiny_models import build_qwen25vl

from dogiqa import compare, paths, rank, schema, score, systems
from dogiqa.images import load_rgb
from dogiqa.scoring.base import Reply
from dogiqa.scoring.hf import HFScorer
from dogiqa.scoring.openai_backend import OpenAIScorer
from dogiqa.segmentation.algorithm1 import region_rows

pytestmark = pytest.mark.slow

EVALUATED, HELD_OUT = 5, 4
SAMPLE = schema.Sample(EVALUATED, 0)
"""The run's sample: EVALUATED of the photos; the others are the exemplar pool."""
RUN = "prompting"
"""The run whose folders the stages write into (its profile is not applied here: the tests pass
their own params)."""
K = 7
SINGLE = [s for s in systems.system_ids() if not systems.get(s).compares]
COMPARING = [s for s in systems.system_ids() if systems.get(s).compares]
LIST_SIZE = 3
SEED_OTHER = 3
"""An exemplar seed whose draw differs from seed 0's (checked in the test)."""
PROBS = [f"p{i}" for i in range(1, K + 1)]
SHORT = 12
"""max_new_tokens of the long-answer systems in these tests (random weights never stop)."""


def brightness(image: Image.Image | np.ndarray) -> float:
    return float(np.asarray(image, dtype=float).mean() / 255.0)


def masks(height: int, width: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[:height, :width]
    return [(yy < height // 2) & (xx < width // 2), (yy > height * 0.6) & (xx > width * 0.4)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Labels of real photos, EVALUATED of them in the run's sample (SAMPLE), the others held
    out (the exemplar pool); every image's MOS and normalised MOS are its brightness. Regions of
    the sampled ones in the run's folder. Returns the brightness by image."""
    photos = real_images(EVALUATED + HELD_OUT, start=20)
    shade = {p.name: brightness(load_rgb(p)) for p in photos}
    labels = pd.DataFrame(
        {
            "image": [p.name for p in photos],
            "path": [str(p) for p in photos],
            "mos": [shade[p.name] for p in photos],
            "mos_norm": [shade[p.name] for p in photos],
            "order": range(len(photos)),
        }
    )
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    paths.labels_table("livec", base=tmp_path).parent.mkdir(parents=True)
    labels.to_csv(paths.labels_table("livec", base=tmp_path), index=False)
    rows = []
    for name, path in schema.stage_images(labels, SAMPLE)[["image", "path"]].itertuples(False):
        height, width = load_rgb(path).shape[:2]
        for row in region_rows(masks(height, width), height, width, 1000.0):
            rows.append({**row, "image": name, "backend": "classical"})
    regions = paths.regions_table("livec", base=tmp_path, run=RUN)
    regions.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(regions, index=False)
    monkeypatch.chdir(tmp_path)
    return shade


@pytest.fixture(autouse=True)
def short_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long answers (chain-of-thought, rankings) cut to SHORT tokens: a random-weight model
    never stops by itself, and the mechanics are the same."""
    table = systems.all_systems()
    for name, system in list(table.items()):
        if system.max_new_tokens > SHORT:
            monkeypatch.setitem(table, name, replace(system, max_new_tokens=SHORT))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen25vl(tmp_path_factory.mktemp("prompting") / "qwen", texts=system_texts())


def readout_of(system_id: str) -> str:
    return systems.get(system_id).readouts[0]  # logits where the system allows it


def hf_params(model: Path, **changes: Any) -> dict[str, Any]:
    hf = {"model": str(model), "device": "cpu", "local_files_only": True, "batch_size": 4}
    return study_params(
        score__backend="hf",
        score__exemplars=2,
        sample__size=SAMPLE.size,
        sample__seed=SAMPLE.seed,
        **{f"score__hf__{k}": v for k, v in hf.items()},
        **changes,
    )


def compare_params(base: dict[str, Any], system_id: str, **changes: Any) -> dict[str, Any]:
    section = {
        "system": system_id,
        "readout": readout_of(system_id),
        "pairs_per_image": 2,
        "lists_per_image": 2,
        "list_size": LIST_SIZE,
        **changes,
    }
    return {**base, "compare": {**base["compare"], **section}}


def summary(kind: str) -> dict[str, Any]:
    return json.loads(paths.summary(kind, "livec", run=RUN).read_text())


def evaluated() -> list[str]:
    """The run's sample, in label order."""
    labels = pd.read_csv(paths.labels_table("livec"), keep_default_na=False)
    return schema.stage_images(labels, SAMPLE)["image"].tolist()


def pool() -> systems.Pool:
    return systems.Pool("livec", SAMPLE)


# --- the tiny model, hf backend: mechanics --------------------------------------------------------


@pytest.mark.parametrize("system_id", SINGLE)
def test_single_stimulus_system_runs_through_the_score_stage(project, tiny, system_id) -> None:
    params = hf_params(tiny, score__system=system_id, score__readout=readout_of(system_id))
    table = score.run("livec", params, run_name=RUN)
    regions = pd.read_csv(paths.regions_table("livec", run=RUN))
    task = systems.score_task(params["score"], pool())
    assert len(table) == len(regions) and (table["prompt_id"] == task.id).all()
    assert paths.scores_table("livec", run=RUN).is_file()
    probs = table[[f"p{i}" for i in range(1, K + 1)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    written = summary("scores")
    assert written["system"] == system_id and written["prompt_id"] == task.id
    assert written["fallbacks"] == int(table["fallback"].sum())
    if system_id == "single_cot":  # free text, parsed; random weights give no "Score: n"
        assert (table["raw"] != "").all() and table["level_mass"].isna().all()
    else:  # one forward pass over the level tokens
        assert not table["fallback"].any() and (table["levels_found"] == K).all()
    if system_id == "single_in_context":
        photos = {p.name for p in real_images(EVALUATED + HELD_OUT, start=20)}
        held_out = photos - set(evaluated())
        assert len(held_out) == HELD_OUT
        assert {e.image for e in task.exemplars} <= held_out and len(task.exemplars) == 2
        # Other exemplars are other conversations: other scores, another cache fingerprint.
        other = hf_params(tiny, score__system=system_id, score__exemplar_seed=SEED_OTHER)
        assert systems.score_task(other["score"], pool()).exemplars != task.exemplars
        again = score.run("livec", other, run_name=RUN)
        assert not np.allclose(again[PROBS].to_numpy(), table[PROBS].to_numpy())


@pytest.mark.parametrize("system_id", COMPARING)
def test_comparison_system_runs_through_compare_and_rank(project, tiny, system_id) -> None:
    params = compare_params(hf_params(tiny), system_id)
    frame = compare.run("livec", params, run_name=RUN)
    system = systems.get(system_id)
    per_image = 2
    trials = EVALUATED * per_image
    pairs_per_trial = 1 if system.stimulus == "double" else len(list(combinations(range(3), 2)))
    assert len(frame) == trials * pairs_per_trial == summary("comparisons")["pairs"]
    written = summary("comparisons")
    assert written["trials"] == trials and written["system"] == system_id
    assert written["run"] == RUN and paths.comparisons_table("livec", run=RUN).is_file()
    assert set(frame["first"]) | set(frame["second"]) <= set(evaluated())
    assert written["fallbacks"] == int(frame.drop_duplicates("trial")["fallback"].sum())
    answered = frame[~frame["fallback"]]
    np.testing.assert_allclose(answered[["p_first", "p_second", "p_same"]].sum(axis=1), 1.0)
    assert frame.loc[frame["fallback"], ["outcome", "expected"]].isna().all().all()
    if system.strategy == "in_context":
        assert len(written["exemplars"]) == (2 if system.stimulus == "double" else LIST_SIZE)
    if readout_of(system_id) == "logits":
        assert not frame["fallback"].any() and (frame["answers_found"] == 3).all()
    report = rank.run("livec", params, run_name=RUN)
    assert list(report["variants"]) == [
        f"{m}:{r}" for r in rank.READINGS for m in params["rank"]["methods"]
    ]
    assert report["run"] == RUN and paths.comparison_metrics("livec", run=RUN).is_file()
    predictions = pd.read_csv(paths.comparison_predictions("livec", run=RUN))
    assert set(predictions["variant"]) == set(report["variants"])


def test_an_interrupted_compare_asks_only_what_no_cache_line_holds(
    project, tiny, monkeypatch
) -> None:
    params = compare_params(hf_params(tiny), "double_standard")
    compare.run("livec", params, run_name=RUN)
    reference = paths.comparisons_table("livec", run=RUN).read_bytes()
    asked = {"n": 0}
    original = HFScorer.replies

    def counting(self, requests):
        asked["n"] += len(requests)
        return original(self, requests)

    monkeypatch.setattr(HFScorer, "replies", counting)
    cached = paths.stage_cache("compare", "livec", run=RUN)
    lines = cached.read_text().splitlines()
    frame = pd.read_csv(io.BytesIO(reference))
    shown = set(zip(frame["first"], frame["second"], strict=True))
    assert len(lines) == len(shown)  # one line per distinct trial
    cached.write_text("\n".join(lines[:4]) + "\n")
    compare.run("livec", params, run_name=RUN)
    assert asked["n"] == len(lines) - 4
    assert paths.comparisons_table("livec", run=RUN).read_bytes() == reference
    asked["n"] = 0  # every pair once: only the pairs no trial showed in that order are asked
    every_pair = compare_params(hf_params(tiny), "double_standard", design="all")
    compare.run("livec", every_pair, run_name=RUN)
    names = evaluated()
    assert asked["n"] == len(set(combinations(names, 2)) - shown)


# --- the brightness oracle, openai backend: the plumbing ------------------------------------------


def _decoded(part: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].split(",", 1)[1])))


def _images(turn: dict[str, Any]) -> list[Image.Image]:
    return [_decoded(p) for p in turn["content"] if p.get("type") == "image_url"]


def _text(turn: dict[str, Any]) -> str:
    content = turn["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


class OracleServer(FakeServer):
    """Judges by brightness: a level (one image), A / B / same (two), a ranking (more)."""

    def __init__(self) -> None:
        self.exemplar_answers: list[tuple[str, str]] = []  # (sent, the oracle's own)
        super().__init__()

    @staticmethod
    def judge(images: list[Image.Image]) -> str:
        shades = [brightness(im) for im in images]
        if len(shades) == 1:
            return str(systems.exemplar_level(shades[0], K))
        if len(shades) == 2:
            return "A" if shades[0] > shades[1] else "B" if shades[1] > shades[0] else "same"
        order = sorted(range(len(shades)), key=lambda i: -shades[i])
        return "Ranking: " + ", ".join(str(i + 1) for i in order)

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.bodies.append(body)
        turns = body["messages"]
        for asked, answered in zip(turns, turns[1:], strict=False):  # exemplar turns
            if asked["role"] == "user" and answered["role"] == "assistant":
                with self.lock:
                    self.exemplar_answers.append((_text(answered), self.judge(_images(asked))))
        shown = _images(turns[-1])
        answer = self.judge(shown)
        options = [str(i) for i in range(1, 10)] if len(shown) == 1 else ["A", "B", "same"]
        logprobs = None
        if body.get("logprobs"):
            tops = [
                {"token": t, "logprob": -0.05 if t == answer else -4.0 - i}
                for i, t in enumerate(options)
            ]
            logprobs = {"content": [{**tops[0], "top_logprobs": tops}]}
        elif "Description:" in _text(turns[-1]):  # chain-of-thought: a description first
            word = "Answer" if len(shown) == 2 else "Score" if len(shown) == 1 else ""
            answer = f"Description: mean brightness. {word + ': ' if word else ''}{answer}."
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop",
            "logprobs": logprobs,
        }
        return 200, {
            "id": "o",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [choice],
        }


@pytest.fixture
def oracle() -> Any:
    server = OracleServer()
    yield server
    server.close()


def openai_params(url: str, **changes: Any) -> dict[str, Any]:
    return study_params(
        score__backend="openai",
        score__exemplars=2,
        sample__size=SAMPLE.size,
        sample__seed=SAMPLE.seed,
        score__openai__base_urls=[url],
        score__openai__model=MODEL,
        score__openai__retries=0,
        score__openai__timeout=20.0,
        **changes,
    )


@pytest.mark.parametrize("system_id", SINGLE)
def test_single_stimulus_answers_reach_the_scores_table(project, oracle, system_id) -> None:
    params = openai_params(
        oracle.url, score__system=system_id, score__readout=readout_of(system_id)
    )
    table = score.run("livec", params, run_name=RUN)
    regions = pd.read_csv(paths.regions_table("livec", run=RUN))
    images = {name: load_rgb(Path(p)) for name, p in zip(*_paths(), strict=True)}
    expected = [
        systems.exemplar_level(brightness(images[r.image][r.y0 : r.y1, r.x0 : r.x1]), K)
        for r in regions.itertuples()
    ]
    assert table["argmax"].tolist() == expected and not table["fallback"].any()
    sent = oracle.exemplar_answers
    assert len(sent) == (2 * len(oracle.bodies) if system_id == "single_in_context" else 0)
    assert all(ours == theirs for ours, theirs in sent)  # exemplars answered by their MOS


def _paths() -> tuple[list[str], list[str]]:
    labels = pd.read_csv(paths.labels_table("livec"), keep_default_na=False)
    return labels["image"].tolist(), labels["path"].tolist()


@pytest.mark.parametrize("system_id", COMPARING)
def test_comparisons_recover_the_mos_order(project, oracle, system_id) -> None:
    """Double stimulus: every pair of the five images; multiple: lists led by each image. The
    brightness oracle's answers must come out as the MOS order, pair by pair and in the scores
    that Thurstone's Case V recovers from them."""
    design = "all" if systems.get(system_id).stimulus == "double" else "per_image"
    params = compare_params(openai_params(oracle.url), system_id, design=design, backend="openai")
    frame = compare.run("livec", params, run_name=RUN)
    assert not frame["fallback"].any() and len(frame) > 0
    shade = project
    brighter = [shade[a] > shade[b] for a, b in zip(frame["first"], frame["second"], strict=True)]
    assert frame["outcome"].tolist() == [1.0 if b else 0.0 for b in brighter]
    assert all(ours == theirs for ours, theirs in oracle.exemplar_answers)
    if systems.get(system_id).strategy == "in_context":
        assert len(oracle.exemplar_answers) == summary("comparisons")["trials"]
    report = rank.run("livec", params, run_name=RUN)
    predictions = pd.read_csv(paths.comparison_predictions("livec", run=RUN))
    main = predictions[predictions["variant"] == "thurstone_map:outcome"]
    assert stats.spearmanr(main["prediction"], main["mos"]).statistic == pytest.approx(1.0)
    assert report["variants"]["thurstone_map:outcome"]["srcc"] == pytest.approx(1.0)


# --- the tiny model behind a server: the openai backend sends what hf renders ---------------------


class ConversationServer(FakeServer):
    """Answers any conversation from the tiny model, as vLLM would from its weights: the
    log-softmax of the next token over the vocabulary (every token returned, more than vLLM's
    20, so that no option is missing), or greedy text; /tokenize and /detokenize beside /v1."""

    def __init__(self, model: HFScorer) -> None:
        self.model = model
        self.tokenizer = model.adapter.tokenizer
        super().__init__()

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/tokenize":
            ids = self.tokenizer.encode(body["prompt"], add_special_tokens=False)
            return 200, {"count": len(ids), "max_model_len": 4096, "tokens": ids}
        if path == "/detokenize":
            return 200, {"prompt": self.tokenizer.decode(body["tokens"])}
        return super().route(path, body)

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import torch

        images = [
            _decoded(p).convert("RGB")
            for t in body["messages"]
            for p in t["content"]
            if p.get("type") == "image_url"
        ]
        turns = [
            {
                **t,
                "content": [
                    {"type": "image"} if p.get("type") == "image_url" else p for p in t["content"]
                ],
            }
            for t in body["messages"]
        ]
        request = systems.Request(turns, images)
        adapter = self.model.adapter
        with self.lock, torch.inference_mode():
            if not body.get("logprobs"):
                text = adapter.generate([request], body["max_tokens"])[0]
                return 200, _choice(text, None)
            out = adapter.model(**adapter.inputs([request]), use_cache=False)
        logprobs = torch.log_softmax(out.logits[0, -1].double(), dim=0)
        name = "token_id:{}" if body.get("return_tokens_as_token_ids") else None
        tops = [
            {
                "token": name.format(i) if name else self.tokenizer.convert_ids_to_tokens(i),
                "logprob": float(v),
            }
            for i, v in enumerate(logprobs)
        ]
        return 200, _choice("", {"content": [{**tops[0], "top_logprobs": tops}]})


def _choice(text: str, logprobs: Any) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "logprobs": logprobs,
    }
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [choice],
    }


@pytest.mark.parametrize("system_id", systems.system_ids())
def test_the_openai_backend_asks_what_the_hf_backend_renders(project, tiny, system_id) -> None:
    system = systems.get(system_id)
    readout = readout_of(system_id)
    params = compare_params(hf_params(tiny, score__system=system_id), system_id)
    section = {**params["score"], "readout": readout}
    section["hf"] = {**section["hf"], "max_pixels": 0, "dtype": "float32"}
    if system.compares:
        task = systems.compare_task(params["compare"], pool())
    else:
        task = systems.score_task(section, pool())
    hf = HFScorer.from_task(section["hf"], task, readout)
    names, files = _paths()
    photos = [Image.fromarray(load_rgb(Path(f))) for f in files[:EVALUATED]]
    items = [photos[i : i + task.size] for i in range(0, len(photos) - task.size + 1, 2)]
    server = ConversationServer(hf)
    try:
        client = OpenAIScorer([server.url], MODEL, task, readout, retries=0, timeout=30.0)
        by_server = client.replies(client.requests(items))
        by_hf = hf.replies(hf.requests(items))
    finally:
        server.close()
    assert not any(r.error for r in by_server + by_hf)
    for ours, theirs in zip(by_server, by_hf, strict=True):
        if readout == "logits":
            a, b = task.answer_scores(ours), task.answer_scores(theirs)
            assert np.abs(np.array(a.probs) - np.array(b.probs)).max() < 1e-6
        else:
            assert ours.text == theirs.text and len(ours.text) > 0
    if system.strategy == "in_context":  # the exemplars went with every request
        assert task.exemplars and len(task.exemplars) % task.size == 0
        assert len(client.requests(items[:1])[0].images) == len(task.exemplars) + task.size


def test_compare_fingerprint_keeps_the_settings_that_shape_its_replies() -> None:
    """Cached replies are keyed by the hf settings that change them (``batch_size``: batch
    neighbours), not by ``score.hf.lookahead``, which groups only the score stage's images."""
    base = compare_params(hf_params(Path("qwen2.5-vl-7b")), "double_standard")

    def fingerprint(**hf: Any) -> str:
        score_section = {**base["score"], "hf": {**base["score"]["hf"], **hf}}
        return compare.validate_params({**base, "score": score_section}).fingerprint

    before = fingerprint()
    assert fingerprint(lookahead=1) == fingerprint(lookahead=32) == before
    assert fingerprint(batch_size=2) != before


def test_reply_cache_lines_are_strict_json() -> None:
    line = json.dumps(Reply((-np.inf, 0.5), 0.0).to_json(), allow_nan=False)
    assert re.search(r"-inf", line)


# --- the stages' deps ---------------------------------------------------------------------------


def test_compare_and_rank_run_through_dvc_reading_only_their_deps(tmp_path: Path, oracle) -> None:
    """A run that compares gets its compare and rank stages from dvc.yaml, and ``dvc repro``
    runs them (``--run``, into the run's folders); every project file they open is one of their
    deps in dvc.lock and what they write is their outs or their run's cache. They are not in the
    default pipeline, so the four-image ``dvc repro`` of tests/test_dvc_reads.py does not run
    them: here they run with that test's audit hook (``sys.addaudithook`` from a
    ``sitecustomize`` module; DVC sets ``DVC_STAGE`` for each stage's command)."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml
    from stage_project import ROOT, cli_env, one_run, write_params
    from test_dvc_reads import SITECUSTOMIZE, _covered, _source_of

    root = tmp_path / "study"
    folder = root / "data" / "raw" / "livec" / "Images"
    folder.mkdir(parents=True)
    photos = real_images(EVALUATED + HELD_OUT, start=20)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    labels = pd.DataFrame(
        {
            "image": [p.name for p in photos],
            "path": [f"data/raw/livec/Images/{p.name}" for p in photos],
            "mos": range(len(photos)),
            "mos_norm": np.linspace(0, 1, len(photos)),
            "order": range(len(photos)),
        }
    )
    paths.labels_table("livec", base=root).parent.mkdir(parents=True)
    labels.to_csv(paths.labels_table("livec", base=root), index=False)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", root / "src", ignore=ignore)  # the stages' code deps
    params = compare_params(openai_params(oracle.url), "double_in_context", backend="openai")
    params.update(one_run(["livec"], name=RUN, compare=["livec"]))
    write_params(root, params)
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "opened.tsv"
    env = {
        **cli_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{audit}{os.pathsep}{root / 'src'}",
        "DOGIQA_AUDIT_LOG": str(log),
        "DVC_NO_ANALYTICS": "1",
    }
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, env=env, check=True)
    stages = [f"compare@{RUN}-livec", f"rank@{RUN}-livec"]
    for stage in stages:  # --single-item: not the download stage that makes the labels
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    assert set(lock) == set(stages)
    reads: dict[str, set[str]] = {stage: set() for stage in stages}
    written: dict[str, set[str]] = {stage: set() for stage in stages}
    for line in log.read_text(encoding="utf-8").splitlines():
        stage, kind, path = line.split("\t")
        if not Path(path).is_relative_to(root) or Path(path).is_dir():
            continue
        relative = _source_of(Path(path).relative_to(root).as_posix())
        (written if kind == "write" else reads)[stage].add(relative)
    # The run's sample and the in-context exemplars (outside it), no other image.
    written_summary = json.loads(paths.summary("comparisons", "livec", root, run=RUN).read_text())
    shown = {*schema.stage_images(labels, SAMPLE)["image"], *written_summary["exemplars"]}
    assert len(shown) == EVALUATED + 2
    assert {f for f in reads[stages[0]] if "/Images/" in f} == {
        f"data/raw/livec/Images/{name}" for name in shown
    }
    assert f"data/comparisons/{RUN}/livec.csv" in reads[stages[1]]
    report = json.loads(paths.comparison_metrics("livec", root, run=RUN).read_text())
    assert report["run"] == RUN and report["variants"][report["main"]]["n"] == EVALUATED
    for stage in stages:
        deps = [d["path"] for d in lock[stage]["deps"]]
        outs = [o["path"] for o in lock[stage]["outs"]]
        assert all(f"/{RUN}/" in out for out in outs), outs
        ignored = [*outs, f"data/cache/compare/{RUN}", *lock[stage]["params"]]
        stray = [
            f
            for f in written[stage]
            if not _covered(f, ignored) and ".tmp." not in f and "__pycache__" not in f
        ]
        assert stray == [], stage  # a run's stage writes into the run's folders alone
        missing = [
            f
            for f in reads[stage] - written[stage]
            if not _covered(f, deps) and not _covered(f, ignored) and ".tmp." not in f
        ]
        assert missing == [], stage
