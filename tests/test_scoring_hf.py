"""The hf backend end to end on tiny random-weight Qwen2.5-VL and Idefics3 models (CPU, fp32).

Random weights test mechanics only: the numbers mean nothing about image quality.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import BUILDERS

from dogiqa import prompts
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import build_scorer, check_section, parse_level
from dogiqa.scoring.hf import HFScorer, level_token_ids
from dogiqa.scoring.models import resolve

ROOT = Path(__file__).resolve().parents[1]
BOXES = [
    (0, 0, 500, 500),
    (10, 20, 130, 110),
    (200, 150, 260, 420),
    (300, 40, 480, 90),
    (60, 300, 95, 335),
    (0, 0, 250, 500),
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def crops(fixtures: Path) -> list[Image.Image]:
    """Crops of different sizes from two of the fixture scenes, brought to 500 x 500 (the size
    of most LIVE Challenge photos)."""
    out = []
    for name in ("scene1.png", "scene2.jpg"):
        image = Image.fromarray(load_rgb(fixtures / "images" / name)).resize((500, 500))
        out += [image.crop(box) for box in BOXES[:4] if name == "scene1.png"]
        out += [image.crop(box) for box in BOXES[3:] if name == "scene2.jpg"]
    return out


def hf_section(model: Path, **overrides: Any) -> dict[str, Any]:
    section = {
        "model": str(model),
        "revision": None,
        "trust_remote_code": False,
        "dtype": "auto",
        "device": "cpu",
        "batch_size": 4,
        "lookahead": 1,
        "max_pixels": 0,
        "min_side": 28,
        "local_files_only": True,
    }
    return {**section, **overrides}


def scorer(model: Path, prompt_id: str, readout: str = "logits", **overrides: Any) -> HFScorer:
    return HFScorer.from_params(
        hf_section(model, **overrides), prompt_id, prompts.get(prompt_id).K, readout
    )


@pytest.mark.parametrize("name", BUILDERS)
def test_level_tokens_are_the_digits_with_and_without_space(model_dirs, name) -> None:
    s = scorer(model_dirs[name], "paper_word_k9")
    tokenizer = s.adapter.tokenizer
    for level, ids in enumerate(level_token_ids(tokenizer, 9), start=1):
        assert [tokenizer.decode([i]).strip() for i in ids] == [str(level)] * len(ids)
        spellings = sorted(tokenizer.decode([i]) for i in ids)
        # Qwen2-style BPE splits the space off a digit; the Idefics3 tokenizer has " 5" too.
        expected = [str(level)] if name == "qwen2_5_vl" else [f" {level}", str(level)]
        assert spellings == expected


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("prompt_id", ["paper_word_k7", "authors_word_k5", "paper_number_k3"])
def test_distributions_sum_to_one(model_dirs, crops, name, prompt_id) -> None:
    s = scorer(model_dirs[name], prompt_id)
    results = s.score(crops)
    assert len(results) == len(crops)
    for r in results:
        probs = np.array(r.probs)
        assert len(probs) == s.K and np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert r.argmax == int(np.argmax(probs)) + 1
        assert r.expected == pytest.approx(float(np.dot(np.arange(1, s.K + 1), probs)))
        assert not r.fallback and r.raw == ""


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("prompt_id", ["paper_word_k9", "authors_word_k7"])
def test_argmax_is_the_greedy_answer_when_that_is_a_level(
    model_dirs, crops, name, prompt_id
) -> None:
    logits = scorer(model_dirs[name], prompt_id).score(crops)
    generated = scorer(model_dirs[name], prompt_id, readout="generate").score(crops)
    compared = 0
    for by_logits, by_generate in zip(logits, generated, strict=True):
        level = parse_level(by_generate.raw, by_generate.K)
        if level is None:  # the authors' fallback: score 1, flagged
            assert by_generate.fallback and by_generate.argmax == 1
            continue
        assert not by_generate.fallback and by_generate.argmax == level
        assert by_generate.probs[level - 1] == 1.0
        assert by_logits.argmax == level
        compared += 1
    if prompt_id == "paper_word_k9":  # the digit-boosted tiny models answer with a digit
        assert compared == len(crops)


def test_generate_flags_an_answer_outside_the_levels(model_dirs, crops) -> None:
    """The tiny Idefics3 answers " 8", which is no level when K = 7: it scores 1, flagged."""
    generated = scorer(model_dirs["idefics3"], "authors_word_k7", readout="generate").score(crops)
    assert {r.raw for r in generated} == {" 8"}
    assert all(r.fallback and r.argmax == 1 for r in generated)


@pytest.mark.parametrize("name", BUILDERS)
def test_batching_gives_the_numbers_of_one_crop_at_a_time(model_dirs, crops, name) -> None:
    batched_scorer = scorer(model_dirs[name], "paper_word_k7", batch_size=len(crops))
    requests = batched_scorer.requests([[crop] for crop in crops])
    padded = batched_scorer.adapter.inputs(requests)["attention_mask"]
    assert (padded[:, 0] == 0).any() and (padded[:, -1] == 1).all()  # left padding was needed
    batched = batched_scorer.score(crops)
    single = scorer(model_dirs[name], "paper_word_k7", batch_size=1).score(crops)
    for a, b in zip(batched, single, strict=True):
        assert np.abs(np.array(a.probs) - np.array(b.probs)).max() < 1e-4
        assert a.argmax == b.argmax


def test_small_and_large_crops_are_resized_before_the_processor(model_dirs) -> None:
    s = scorer(model_dirs["qwen2_5_vl"], "paper_word_k7", max_pixels=64 * 64)
    tiny, huge = Image.new("RGB", (5, 40), "gray"), Image.new("RGB", (900, 300), "white")
    prepared = s._prepare([tiny, huge])
    assert min(prepared[0].size) == 28 and prepared[0].size[1] >= 28 * 8
    assert prepared[1].size[0] * prepared[1].size[1] <= 64 * 64
    assert len(s.score([tiny, huge])) == 2


def test_build_scorer_from_the_params_section(model_dirs, crops) -> None:
    section = {
        "backend": "hf",
        "K": 7,
        "prompt": "paper_word_k7",
        "crop": "bbox",
        "readout": "logits",
        "hf": hf_section(model_dirs["idefics3"]),
    }
    check_section(section)
    s = build_scorer(section)
    assert s.name == "paper_word_k7" and s.K == 7
    assert len(s.score(crops[:2])) == 2


def test_params_are_checked(model_dirs) -> None:
    for key, value in [
        ("dtype", "float64"),
        ("device", "tpu"),
        ("batch_size", 0),
        ("trust_remote_code", "yes"),
    ]:
        section = {"backend": "hf", "hf": hf_section(model_dirs["qwen2_5_vl"], **{key: value})}
        with pytest.raises(ParamError, match=f"score.hf.{key}"):
            check_section(section)
    with pytest.raises(ParamError, match="score.prompt"):
        HFScorer.from_params(hf_section(model_dirs["qwen2_5_vl"]), "paper_word_k5", 7, "logits")


def test_remote_code_needs_consent_and_a_pinned_revision(caplog) -> None:
    with pytest.raises(ParamError, match="score.hf.trust_remote_code"):
        resolve("mplug-owl3-7b", None, allow_remote_code=False)
    with pytest.raises(ParamError, match="score.hf.revision"):
        resolve("mplug-owl3-7b", "main", allow_remote_code=True)
    registry_pin = resolve("mplug-owl3-7b", None, allow_remote_code=True)
    assert len(registry_pin.revision) == 40 and registry_pin.revision != "main"
    pinned = resolve("mplug-owl3-7b", "a" * 40, allow_remote_code=True)
    assert (pinned.source, pinned.loader, pinned.trust_remote_code, pinned.revision) == (
        "mPLUG/mPLUG-Owl3-7B-240728",
        "mplugowl3",
        True,
        "a" * 40,
    )
    with caplog.at_level(logging.WARNING):
        qwen = resolve("qwen2.5-vl-7b", None, allow_remote_code=False)
    assert (qwen.source, qwen.trust_remote_code) == ("Qwen/Qwen2.5-VL-7B-Instruct", False)
    assert len(qwen.revision) == 40 and "not pinned" not in caplog.text
    with caplog.at_level(logging.WARNING):
        smol = resolve("smolvlm", None, allow_remote_code=False)
    assert smol.revision == "main"
    assert "not pinned" in caplog.text
    with pytest.raises(ParamError, match="score.hf.model"):
        resolve("no-such-model", None, allow_remote_code=False)


def test_missing_model_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(ParamError, match="no readable config.json"):
        scorer(tmp_path, "paper_word_k7")
    with pytest.raises(DogIQAError, match="cannot load model nobody/nothing") as info:
        scorer(Path("nobody/nothing"), "paper_word_k7")
    assert "\n" not in str(info.value)


# --- thin crops (every backend's aspect-ratio limit) --------------------------------------------


@pytest.mark.parametrize("size", [(1500, 6), (6, 1500)])
def test_thin_crops_pass_the_real_qwen_processor(model_dirs, size) -> None:
    """Qwen2-VL's image processor (transformers models/qwen2_vl/image_processing_qwen2_vl.py,
    ``smart_resize``) raises for an aspect ratio above 200: a 1500 x 6 region must not."""
    s = scorer(model_dirs["qwen2_5_vl"], "paper_word_k7")
    stripe = Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1] + (3,), np.uint8))
    prepared = s._prepare([stripe])[0]
    assert max(prepared.size) / min(prepared.size) <= 50
    s.adapter.inputs(s.requests([[stripe]]))  # the real processor accepts it
    (result,) = s.score([stripe])
    assert not result.fallback and not result.error and result.levels_found == 7


# --- level logits in fp32 from the final hidden state --------------------------------------------


def tie_prone_model(folder: Path, target: Path) -> Path:
    """The tiny Qwen2.5-VL edited so that its bf16 LM head ties levels 6 and 7 apart by 0.08.

    The decoder layers' output projections are zeroed, so the final hidden state at the last
    position is the normalised embedding of the prompt's last token; that embedding is set to
    +-1, which bf16 holds exactly. The head rows of the levels then give logits 24.03125 (level
    7), 23.94921875 (level 6) and 20.0 (the others): distinct in fp32, but both of the first two
    round to 24.0 in bf16, where the step is 0.125."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    text = prompts.render_chat(processor, "paper_word_k7")
    last = processor.tokenizer(text).input_ids[-1]
    signs = torch.tensor([1.0, -1.0] * 16)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.get_input_embeddings().weight[last] = signs
        head = model.get_output_embeddings().weight
        ids = level_token_ids(processor.tokenizer, 7)
        for level, spellings in enumerate(ids, start=1):
            tail = {7: 0.78125, 6: 0.69921875}.get(level, -3.25)
            row = torch.full((32,), 0.75)
            row[-1] = tail
            for token in spellings:
                head[token] = signs * row
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def tie_prone(model_dirs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tie_prone_model(model_dirs["qwen2_5_vl"], tmp_path_factory.mktemp("ties") / "qwen")


def test_bf16_level_logits_equal_the_fp32_model(tie_prone, crops) -> None:
    fp32 = scorer(tie_prone, "paper_word_k7", dtype="float32")
    bf16 = scorer(tie_prone, "paper_word_k7", dtype="bfloat16")
    assert bf16.adapter.dtype == torch.bfloat16
    # The bf16 readout picks level 7 as the fp32 model does (a tie would go to level 6).
    assert [r.argmax for r in fp32.score(crops[:3])] == [7, 7, 7]
    assert [r.argmax for r in bf16.score(crops[:3])] == [7, 7, 7]
    reference, _ = fp32.level_logits(crops[:3])
    ours, _ = bf16.level_logits(crops[:3])
    assert np.abs(ours - reference).max() < 1e-3
    assert reference[0, 6] - reference[0, 5] == pytest.approx(0.08203125, abs=1e-4)
    # The plain bf16 head, read as before: levels 6 and 7 tie at 24.0 and differ from fp32.
    with torch.inference_mode():
        inputs = bf16.adapter.inputs(bf16.requests([[crop] for crop in crops[:3]]))
        plain = bf16.adapter.model(**inputs, use_cache=False)
    ids = [spellings[0] for spellings in bf16.level_ids]
    head = plain.logits[:, -1, ids].double().numpy()
    assert np.abs(head - reference).max() > 1e-3
    assert (head[:, 5] == head[:, 6]).all()


# --- dtype on GPUs without bf16 ------------------------------------------------------------------


def test_auto_dtype_is_fp32_on_a_gpu_without_bf16(monkeypatch, caplog) -> None:
    from dogiqa.scoring.hf import pick_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert pick_dtype("auto", torch.device("cuda")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    with caplog.at_level(logging.WARNING):
        assert pick_dtype("float16", torch.device("cuda"), fp16_overflows=False) == torch.float16
    assert "overflow" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert pick_dtype("float16", torch.device("cuda"), fp16_overflows=True) == torch.float16
    assert "overflow" in caplog.text


def test_models_known_to_overflow_in_fp16(model_dirs) -> None:
    assert resolve("qwen2.5-vl-7b", None, allow_remote_code=False).fp16_overflows
    assert resolve(str(model_dirs["qwen2_5_vl"]), None, allow_remote_code=False).fp16_overflows
    assert not resolve(str(model_dirs["idefics3"]), None, allow_remote_code=False).fp16_overflows
    assert not resolve("mplug-owl3-7b", None, allow_remote_code=True).fp16_overflows


def test_level_mass_is_the_next_token_probability_on_the_levels(model_dirs, crops) -> None:
    s = scorer(model_dirs["idefics3"], "paper_word_k7")
    with torch.inference_mode():
        inputs = s.adapter.inputs(s.requests([[crop] for crop in crops[:2]]))
        out = s.adapter.model(**inputs, use_cache=False)
    probs = torch.softmax(out.logits[:, -1, :].double(), dim=1)
    for row, result in zip(probs, s.score(crops[:2]), strict=True):
        expected = sum(float(row[ids].max()) for ids in s.level_ids)
        assert result.level_mass == pytest.approx(expected, abs=1e-6)
        assert result.levels_found == 7


def test_weights_load_straight_onto_the_device(model_dirs, monkeypatch) -> None:
    """``from_pretrained`` gets ``device_map`` (transformers' modeling_utils then loads each
    tensor onto that device, through accelerate, instead of building the whole model in CPU
    memory first), and the loaded model is not moved afterwards."""
    import transformers

    calls: list[dict[str, Any]] = []
    moved: list[Any] = []
    real_load = transformers.AutoModelForImageTextToText.from_pretrained
    real_to = transformers.PreTrainedModel.to

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        model = real_load(*args, **kwargs)
        calls.append(kwargs)
        return model

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if calls:  # after the load
            moved.append(args or kwargs)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(
        transformers.AutoModelForImageTextToText, "from_pretrained", from_pretrained
    )
    monkeypatch.setattr(transformers.PreTrainedModel, "to", to)
    s = scorer(model_dirs["qwen2_5_vl"], "paper_word_k7")
    assert [c.get("device_map") for c in calls] == ["cpu"]
    assert moved == []
    assert {p.device.type for p in s.adapter.model.parameters()} == {"cpu"}
    assert len(s.score([Image.new("RGB", (64, 48), "gray")])) == 1
