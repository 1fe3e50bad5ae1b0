"""The ``hf`` backend: any image-text-to-text model in transformers, scored in one forward pass.

``logits`` readout: one forward pass per batch of crops (left padding, so the last position of
every row is the next token), the next-token logits of the K level tokens, softmax over those K.
A level may have two spellings among single tokens, the bare digit ("5") and the digit with a
leading space (" 5", in byte-level BPE vocabularies); its logit is the larger of the two, so the
level argmax is the greedy token whenever a level token wins the whole vocabulary.

``generate`` readout: the authors' procedure, greedy decoding of one new token, ``int(text)``,
and level 1 with the fallback flag when that fails or is outside 1..K. Its distribution is
one-hot at the parsed level.

Weights load in fp32 on CPU and in bf16 (or fp16 where bf16 is unsupported) on CUDA unless
``dtype`` says otherwise. The paper's mPLUG-Owl3 has its own remote code and processor API; it
goes through :class:`MPlugOwl3Adapter` (one crop per call).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from dogiqa import config, prompts
from dogiqa.cache import code_version
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import (
    LevelScorer,
    LevelScores,
    ScorerBackend,
    fallback_scores,
    from_logits,
    one_hot,
    parse_level,
    prompt_unit,
    resize_crop,
)
from dogiqa.scoring.models import ResolvedModel, resolve

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_params(section: Mapping[str, Any]) -> None:
    prefix = "score.hf"
    config.get_str(section, prefix, "model")
    revision = section.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise ParamError(
            f"{prefix}.revision", f"must be a commit hash, a branch or null, got {revision!r}"
        )
    config.get_choice(section, prefix, "dtype", ["auto", *DTYPES])
    device = config.get_str(section, prefix, "device")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ParamError(f"{prefix}.device", f"must be auto, cpu or cuda[:N], got {device!r}")
    config.get_int(section, prefix, "batch_size", minimum=1)
    config.get_int(section, prefix, "max_pixels", minimum=0)
    config.get_int(section, prefix, "min_side", minimum=1)
    allow = config.get_bool(section, prefix, "trust_remote_code")
    config.get_bool(section, prefix, "local_files_only")
    resolve(section["model"], revision, allow, warn=False)  # registry, pinning, remote code


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DogIQAError(f"score.hf.device is {name} but no CUDA device is available")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def level_token_ids(tokenizer: Any, k: int) -> list[list[int]]:
    """Single-token spellings of each level 1..K: the bare digit, and the digit with a leading
    space where the vocabulary has one token for it (found from how the tokenizer itself
    encodes the digit after a word, with and without a space)."""
    levels: list[list[int]] = []
    for level in range(1, k + 1):
        digit = str(level)
        found: list[int] = []
        candidates = [tokenizer.convert_tokens_to_ids(digit)]
        for text in (digit, " " + digit, "x" + digit, "x " + digit):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if encoded:
                candidates.append(encoded[-1])
        for token in candidates:
            if token is None or token == tokenizer.unk_token_id or token in found:
                continue
            if tokenizer.decode([token]).strip() == digit:
                found.append(int(token))
        if not found:
            raise DogIQAError(f"the model's tokenizer has no single token for level {digit}")
        levels.append(found)
    return levels


class AutoAdapter:
    """AutoProcessor + AutoModelForImageTextToText and the processor's chat template."""

    def __init__(self, model: Any, processor: Any, prompt: prompts.Prompt) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # the last position of every row is the next token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.text = prompts.render_chat(processor, prompt.id)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        params = inspect.signature(model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    @classmethod
    def load(
        cls,
        resolved: ResolvedModel,
        prompt: prompts.Prompt,
        dtype: torch.dtype,
        device: torch.device,
        local_files_only: bool,
    ) -> AutoAdapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs = {
            "revision": resolved.revision,
            "trust_remote_code": resolved.trust_remote_code,
            "local_files_only": local_files_only,
        }
        try:
            processor = AutoProcessor.from_pretrained(resolved.source, **kwargs)
            model = AutoModelForImageTextToText.from_pretrained(
                resolved.source, dtype=dtype, **kwargs
            )
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DogIQAError(f"cannot load model {resolved.source}: {first}") from None
        return cls(model.to(device), processor, prompt)

    def inputs(self, crops: Sequence[Image.Image]) -> Any:
        batch = self.processor(
            text=[self.text] * len(crops), images=list(crops), padding=True, return_tensors="pt"
        )
        return batch.to(self.device, self.dtype)

    @torch.inference_mode()
    def next_token_logits(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        out = self.model(**self.inputs(crops), use_cache=False, **self._keep)
        return out.logits[:, -1, :].float().cpu()

    @torch.inference_mode()
    def generate(self, crops: Sequence[Image.Image], max_new_tokens: int = 1) -> list[str]:
        batch = self.inputs(crops)
        out = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


class MPlugOwl3Adapter:
    """mPLUG-Owl3 through its own remote code, as its model card shows: AutoModel +
    AutoTokenizer, ``model.init_processor(tokenizer)``, messages whose user text carries the
    ``<|image|>`` marker, and an empty assistant turn. One crop per call."""

    def __init__(self, model: Any, tokenizer: Any, prompt: prompts.Prompt) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = model.init_processor(tokenizer)
        self.messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        self.messages += [
            {"role": "user", "content": prompt.user},
            {"role": "assistant", "content": ""},
        ]
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls,
        resolved: ResolvedModel,
        prompt: prompts.Prompt,
        dtype: torch.dtype,
        device: torch.device,
        local_files_only: bool,
    ) -> MPlugOwl3Adapter:
        from transformers import AutoModel, AutoTokenizer

        kwargs = {
            "revision": resolved.revision,
            "trust_remote_code": True,
            "local_files_only": local_files_only,
        }
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.source, **kwargs)
            model = AutoModel.from_pretrained(
                resolved.source, dtype=dtype, attn_implementation="sdpa", **kwargs
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise DogIQAError(f"cannot load model {resolved.source}: {exc}") from None
        return cls(model.to(device), tokenizer, prompt)

    def _inputs(self, crop: Image.Image) -> Any:
        inputs = self.processor(self.messages, images=[crop], videos=None).to(self.device)
        inputs.pop("image_sizes", None)  # returned by the processor, not taken by the model
        return inputs

    @torch.inference_mode()
    def next_token_logits(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        rows = [self.model(**self._inputs(c)).logits[0, -1, :].float().cpu() for c in crops]
        return torch.stack(rows)

    @torch.inference_mode()
    def generate(self, crops: Sequence[Image.Image], max_new_tokens: int = 1) -> list[str]:
        return [
            self.model.generate(
                **self._inputs(c),
                tokenizer=self.tokenizer,
                max_new_tokens=max_new_tokens,
                decode_text=True,
            )[0]
            for c in crops
        ]


class HFScorer(LevelScorer):
    """Scores crops with an MLLM: level-token logits (one forward pass) or greedy generation."""

    def __init__(
        self,
        adapter: AutoAdapter | MPlugOwl3Adapter,
        prompt: prompts.Prompt,
        readout: str = "logits",
        batch_size: int = 8,
        max_pixels: int = 0,
        min_side: int = 28,
    ) -> None:
        self.adapter = adapter
        self.prompt = prompt
        self.K = prompt.K
        self.name = prompt.id
        self.readout = readout
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.level_ids = level_token_ids(adapter.tokenizer, self.K)

    @classmethod
    def from_params(
        cls, section: Mapping[str, Any], prompt_id: str, k: int, readout: str
    ) -> HFScorer:
        prompt = prompts.get(prompt_id)
        if k != prompt.K:
            raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
        resolved = resolve(section["model"], section.get("revision"), section["trust_remote_code"])
        device = pick_device(section["device"])
        dtype = pick_dtype(section["dtype"], device)
        loader = MPlugOwl3Adapter if resolved.loader == "mplug_owl3" else AutoAdapter
        log.info("score: loading %s (%s, %s)", resolved.source, device, dtype)
        adapter = loader.load(resolved, prompt, dtype, device, section["local_files_only"])
        return cls(
            adapter,
            prompt,
            readout,
            section["batch_size"],
            section["max_pixels"],
            section["min_side"],
        )

    def level_logits(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """(n, K) level logits: per level, the larger logit of its spellings."""
        logits = self.adapter.next_token_logits(crops)
        columns = [logits[:, ids].max(dim=1).values for ids in self.level_ids]
        return torch.stack(columns, dim=1).double().numpy()

    def _prepare(self, crops: Sequence[Image.Image]) -> list[Image.Image]:
        return [resize_crop(c, self.min_side, self.max_pixels) for c in crops]

    def _score_batch(self, crops: list[Image.Image]) -> list[LevelScores]:
        if self.readout == "logits":
            return [from_logits(row) for row in self.level_logits(crops)]
        out = []
        for text in self.adapter.generate(crops, max_new_tokens=1):
            level = parse_level(text, self.K)
            out.append(
                fallback_scores(self.K, text) if level is None else one_hot(level, self.K, text)
            )
        return out

    def score(self, crops: list[Image.Image]) -> list[LevelScores]:
        prepared = self._prepare(crops)
        out: list[LevelScores] = []
        for start in range(0, len(prepared), self.batch_size):
            out += self._score_batch(prepared[start : start + self.batch_size])
        return out


NEUTRAL_SETTINGS = ("batch_size", "local_files_only")
"""Settings of ``score.hf`` that do not change the scores."""

BACKEND = ScorerBackend(
    check=check_params,
    units=lambda section: prompt_unit(
        section,
        "hf",
        NEUTRAL_SETTINGS,
        lambda s: HFScorer.from_params(s["hf"], s["prompt"], int(s["K"]), s["readout"]),
        code_version(HFScorer, resolve),
    ),
)
