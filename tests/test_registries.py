"""Backends by registry: every entry resolves to a module with its BACKEND, the stage modules name
no backend, and the cache fingerprint follows what changes a backend's results."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from dogiqa import score, segment
from dogiqa.scoring import BACKENDS, ScorerBackend, backend
from dogiqa.scoring import classical as classical_scoring
from dogiqa.segmentation import SEGMENTERS, SegmenterBackend
from dogiqa.segmentation import backend as segmenter

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_every_segmenter_entry_has_its_backend(name: str) -> None:
    entry = segmenter(name)
    assert isinstance(entry, SegmenterBackend)
    settings = entry.settings(PARAMS["segment"][name])  # the study's params are valid
    assert settings is not None and isinstance(entry.result_settings(PARAMS["segment"][name]), dict)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_scorer_entry_has_its_backend(name: str) -> None:
    entry = backend(name)
    assert isinstance(entry, ScorerBackend)
    if name == "hf":
        pytest.importorskip("torch")
    section = {**PARAMS["score"], "backend": name}
    entry.check(section[name])
    units = entry.units(section)
    assert units and all(unit.id and unit.settings for unit in units)


@pytest.mark.parametrize("module", [score, segment])
def test_stage_modules_name_no_backend(module) -> None:
    """Per-backend logic lives in the backends: the stage modules hold no backend's name."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set(BACKENDS) | set(SEGMENTERS) | set(classical_scoring.SCORERS)
    found = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    }
    assert found == set()


def _score_params(**changes) -> dict:
    params = copy.deepcopy({"score": PARAMS["score"]})
    params["score"].update(changes)
    return params


def test_a_classical_fingerprint_ignores_k_and_the_prompt() -> None:
    base = score.validate_params(_score_params()).fingerprints
    k5 = score.validate_params(_score_params(K=5, prompt="paper_word_k5")).fingerprints
    assert k5 == base
    masked = score.validate_params(_score_params(crop="mask")).fingerprints
    assert all(masked[p] != base[p] for p in base)


def test_a_changed_metric_implementation_is_not_reused(monkeypatch) -> None:
    base = score.validate_params(_score_params()).fingerprints["piqe"]
    spec = classical_scoring.SCORERS["piqe"]
    other = type(spec)(yaml.safe_load, spec.best, spec.worst, spec.min_side, spec.reference)
    monkeypatch.setitem(classical_scoring.SCORERS, "piqe", other)  # code from another file
    assert score.validate_params(_score_params()).fingerprints["piqe"] != base


def test_mllm_fingerprints_follow_k_and_the_prompt_but_not_throughput() -> None:
    openai = _score_params(backend="openai")
    base = score.validate_params(openai).fingerprints
    assert list(base) == ["paper_word_k7"]
    k5 = score.validate_params(_score_params(backend="openai", K=5, prompt="paper_word_k5"))
    assert k5.fingerprints["paper_word_k5"] != base["paper_word_k7"]
    busy = copy.deepcopy(openai)
    busy["score"]["openai"] = {**busy["score"]["openai"], "concurrency": 64, "retries": 9}
    assert score.validate_params(busy).fingerprints == base


def test_segment_fingerprint_follows_the_chosen_backend_only() -> None:
    """SAM 2's settings all count, the device and batch size too (they change floating-point
    results near the thresholds); the classical segmenter's do not while SAM 2 is chosen."""
    params = {"segment": {**PARAMS["segment"], "backend": "sam2"}, "sample": PARAMS["sample"]}
    base = segment.validate_params(params).fingerprint
    params["segment"]["classical"] = {**params["segment"]["classical"], "max_regions": 3}
    assert segment.validate_params(params).fingerprint == base
    params["segment"]["sam2"] = {**params["segment"]["sam2"], "device": "cuda"}
    assert segment.validate_params(params).fingerprint != base


def test_hf_fingerprint_records_the_resolved_dtype(monkeypatch) -> None:
    """``dtype: auto`` is keyed as the dtype the weights load in on this machine: the same cache
    entry as the explicit dtype, another one where auto resolves differently."""
    torch = pytest.importorskip("torch")

    def key(**hf) -> str:
        params = _score_params(backend="hf")
        params["score"]["hf"] = {**params["score"]["hf"], **hf}
        return score.validate_params(params).fingerprints["paper_word_k7"]

    assert PARAMS["score"]["hf"]["dtype"] == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert key() == key(dtype="float32") != key(dtype="bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert key() == key(dtype="bfloat16") != key(dtype="float32")
    assert key(device="cpu") == key(device="cpu", dtype="float32")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert key() == key(dtype="float32")
    assert key(batch_size=1) != key()  # padding a batch changes bf16 logits
