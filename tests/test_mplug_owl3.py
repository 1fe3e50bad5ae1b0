"""The paper's mPLUG-Owl3 adapter against a stub of its remote code, and the per-crop error policy.

mPLUG-Owl3's classes live in its hub repository (mPLUG/mPLUG-Owl3-7B-240728), which cannot be
fetched here and whose code needs transformers 4.37.2. The stubs below are written from a reading
of that code and reproduce the behaviour the adapter depends on:

- ``StubOwl3Processor`` stands for ``mPLUGOwl3Processor.__call__`` (processing_mplugowl3.py):
  ``check_media`` asserts that the ``<|image|>`` markers in the messages count the images, then,
  with slicing on (``cut_enable``), each marker in ``message["content"]`` is replaced *in place*
  by the image processor's ``cut_prompt_template`` (image_processing_mplugowl3.py, ``v2_global``:
  "Cut to {h} rows {w} columns with a global view" plus one marker per slice and one for the
  global view), and ``build_text_qwen`` renders the ChatML text ending with
  "\\n<|im_start|>assistant\\n" (the empty assistant turn is dropped in inference mode).
- ``StubOwl3Model`` stands for ``mPLUGOwl3Model`` (modeling_mplugowl3.py) over
  ``HyperQwen2ForCausalLM`` (modeling_hyper_qwen2.py): ``init_processor(tokenizer)``,
  ``forward(pixel_values, **kwargs)`` whose language model, with ``use_cache`` left to the
  config's default (True), calls ``DynamicCache.from_legacy_cache`` (absent from transformers 5:
  the stub calls the installed one), computes ``lm_head(hidden).float()``; ``get_output_embeddings``
  returns that head; ``generate(..., tokenizer, decode_text=True)`` returns the stripped texts.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import build_qwen25vl
from transformers import AutoTokenizer, BatchFeature

from dogiqa import prompts
from dogiqa.errors import DogIQAError
from dogiqa.scoring import LevelScores
from dogiqa.scoring.hf import HFScorer, MPlugOwl3Adapter

MARKER = "<|image|>"
PROMPT = prompts.get("authors_word_k7")  # the authors' prompt: everything in the user turn


def cut_prompt(h: int, w: int) -> str:
    """image_processing_mplugowl3.cut_prompt_template_dict['v2_global']."""
    rows = "\n".join(" ".join(f"subimg({i},{j}){MARKER}" for j in range(w)) for i in range(h))
    return f"Cut to {h} rows {w} columns with a global view\n{rows}\nglobal_view{MARKER}"


class StubOwl3Processor:
    def __init__(self, tokenizer: Any, fail: Any = None) -> None:
        self.tokenizer = tokenizer
        self.fail = fail
        self.calls: list[int] = []  # markers found per call, before the rewrite

    def __call__(self, messages: list[dict[str, str]], images: Any = None, videos: Any = None):
        media = 0 if images is None else len(images)
        count = sum(m["content"].count(MARKER) for m in messages)
        assert media == count  # check_media
        self.calls.append(count)
        if self.fail is not None and self.fail(images[0]):
            raise ValueError("the image processor refused this image")
        width, height = images[0].size
        shape = (2, 2) if max(width, height) > 60 else (1, 1)  # AnchorResize picks a grid
        for message in messages:  # the in-place rewrite of processing_mplugowl3.py
            parts = message["content"].split(MARKER)
            message["content"] = parts[0] + "".join(cut_prompt(*shape) + p for p in parts[1:])
        text = ""
        for number, message in enumerate(messages):
            if number == 0 and message["role"] != "system":
                text += "<|im_start|>system\n<|im_end|>"
            if message["role"] == "system":
                text += f"<|im_start|>system\n{message['content']}<|im_end|>"
            elif message["role"] == "user":
                text += f"\n<|im_start|>user\n{message['content']}<|im_end|>"
            else:
                text += "\n<|im_start|>assistant\n"
        ids = torch.tensor([self.tokenizer(text).input_ids])
        pixels = torch.tensor(np.asarray(images[0].resize((8, 8)), dtype=np.float32) / 255.0)
        slices = shape[0] * shape[1] + 1
        pixel_values = pixels.permute(2, 0, 1).unsqueeze(0).repeat(slices, 1, 1, 1)
        offset = torch.zeros(1, ids.shape[1], 2, dtype=torch.long)
        return BatchFeature(
            {"input_ids": ids, "media_offset": offset, "pixel_values": pixel_values}
        )


class StubOwl3Model(torch.nn.Module):
    def __init__(self, tokenizer: Any, fail: Any = None, forward_error: Exception | None = None):
        super().__init__()
        torch.manual_seed(0)
        vocab, hidden = len(tokenizer), 16
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.vision = torch.nn.Linear(3 * 8 * 8, hidden)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():  # level digits often win, as in the tiny models
            for digit in "1234567":
                self.lm_head.weight[tokenizer.convert_tokens_to_ids(digit)] *= 6.0
        self.config = SimpleNamespace(use_cache=True)
        self.fail = fail
        self.forward_error = forward_error
        self.forward_kwargs: list[dict[str, Any]] = []

    def init_processor(self, tokenizer: Any) -> StubOwl3Processor:
        return StubOwl3Processor(tokenizer, self.fail)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head

    def _logits(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        image = self.vision(pixel_values.flatten(1)).mean(0)
        hidden = torch.tanh(self.embed(input_ids).cumsum(1) / input_ids.shape[1] + image)
        return self.lm_head(hidden).float()

    def forward(self, pixel_values=None, input_ids=None, media_offset=None, **kwargs):  # noqa: ANN001
        self.forward_kwargs.append(kwargs)
        if self.forward_error is not None:
            raise self.forward_error
        use_cache = kwargs.get("use_cache")
        if use_cache if use_cache is not None else self.config.use_cache:
            from transformers.cache_utils import DynamicCache

            DynamicCache.from_legacy_cache(kwargs.get("past_key_values"))  # hyper_qwen2's path
        return SimpleNamespace(logits=self._logits(input_ids, pixel_values))

    def generate(
        self,
        input_ids=None,
        pixel_values=None,
        media_offset=None,
        attention_mask=None,
        tokenizer=None,
        decode_text=False,
        **kwargs,
    ):  # noqa: ANN001
        assert kwargs.get("max_new_tokens") == 1
        token = self._logits(input_ids, pixel_values)[0, -1].argmax().item()
        return [tokenizer.decode([token]).strip()] if decode_text else torch.tensor([[token]])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = build_qwen25vl(tmp_path_factory.mktemp("owl3") / "qwen")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": [MARKER]})
    return tok


def crops(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    sizes = [(90, 70), (40, 40), (120, 30), (64, 96), (33, 50)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def scorer(tokenizer: Any, readout: str, **model_args: Any) -> HFScorer:
    adapter = MPlugOwl3Adapter(StubOwl3Model(tokenizer, **model_args), tokenizer)
    return HFScorer(adapter, PROMPT, readout, batch_size=1, max_pixels=0, min_side=28)


@pytest.mark.parametrize("readout", ["logits", "generate"])
def test_crops_in_a_row_each_get_fresh_messages(tokenizer: Any, readout: str) -> None:
    s = scorer(tokenizer, readout)
    results = s.score(crops(4))
    assert len(results) == 4
    assert not any(r.error for r in results)
    assert s.adapter.processor.calls == [1, 1, 1, 1]  # one marker per call, never the rewrite
    if readout == "logits":
        assert all(not r.fallback and r.levels_found == 7 for r in results)
        assert all(kwargs["use_cache"] is False for kwargs in s.adapter.model.forward_kwargs)
    else:  # the stub's greedy answer, read with int() as the authors' code
        logits = scorer(tokenizer, "logits").score(crops(4))
        for by_generate, by_logits in zip(results, logits, strict=True):
            if not by_generate.fallback:
                assert by_generate.argmax == by_logits.argmax
    # A second scorer call on the same adapter still works (the template is never edited).
    assert len(s.score(crops(2))) == 2


def test_a_crop_the_processor_refuses_is_a_flagged_fallback(tokenizer: Any) -> None:
    s = scorer(tokenizer, "logits", fail=lambda image: image.size == (120, 30))
    results = s.score(crops(4))
    assert [bool(r.error) for r in results] == [False, False, True, False]
    bad = results[2]
    assert bad.fallback and bad.argmax == 1 and "ValueError" in bad.error and "\n" not in bad.error
    assert all(not r.fallback for i, r in enumerate(results) if i != 2)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
        (ImportError("No module named 'einops'"), "lacks a module"),
        (OSError("model.safetensors not found"), "missing"),
        (
            AttributeError("'HyperQwen2ForCausalLM' object has no attribute 'generate'"),
            "environment",
        ),
    ],
)
def test_setup_errors_stop_the_stage_with_one_line(
    tokenizer: Any, error: Exception, words: str
) -> None:
    s = scorer(tokenizer, "logits", forward_error=error)
    with pytest.raises(DogIQAError, match=words) as info:
        s.score(crops(2))
    assert "\n" not in str(info.value)


def test_a_setup_that_fails_every_crop_stops(tokenizer: Any) -> None:
    s = scorer(tokenizer, "logits", forward_error=RuntimeError("shape mismatch"))
    with pytest.raises(DogIQAError, match="first 8 crops all failed"):
        s.score(crops(4) * 3)


def test_the_remote_code_refuses_transformers_5_with_one_line(tmp_path: Path) -> None:
    from dogiqa.scoring.hf import check_mplug_owl3_environment

    check_mplug_owl3_environment("4.37.2")
    with pytest.raises(DogIQAError, match="make venv-paper") as info:
        check_mplug_owl3_environment("5.23.0")
    assert "\n" not in str(info.value)
    # The registry's model in this (transformers 5) environment: refused before any download.
    section = {
        "model": "mplug-owl3-7b",
        "revision": None,
        "trust_remote_code": True,
        "dtype": "float32",
        "device": "cpu",
        "batch_size": 1,
        "max_pixels": 0,
        "min_side": 28,
        "local_files_only": True,
    }
    with pytest.raises(DogIQAError, match="paper environment"):
        HFScorer.from_params(section, PROMPT.id, 7, "generate")


def test_level_scores_keep_the_error_through_the_cache() -> None:
    from dogiqa.scoring import error_scores

    scores = error_scores(7, "ValueError: refused")
    again = LevelScores.from_json(scores.to_json())
    assert again == scores and again.fallback and again.error == "ValueError: refused"
    old = {"probs": [1.0, 0, 0], "argmax": 1, "expected": 1.0, "raw": "", "fallback": True}
    assert LevelScores.from_json(old).error == ""  # a cache line of an earlier run
