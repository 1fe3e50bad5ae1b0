"""The model registry: MLLMs the ``hf`` backend knows by a short name.

Switching models is a params change (``score.hf.model``): a registry name below, a local folder
holding a saved model and processor, or any hub id of an image-text-to-text model.

Architectures: the backend talks to a model through an adapter chosen by the ``model_type`` of
its config.json (:data:`ADAPTERS`). Every architecture that transformers' AutoProcessor and
AutoModelForImageTextToText load goes through the one generic adapter; a model with its own
processor API (mPLUG-Owl3's remote code) has an adapter class of its own, registered here by its
model type. A registry name below only adds a pinned hub location to a model type.

Revisions: a 40-hex commit hash pins weights, processor and (for remote-code models) code. The
registry pins the paper's model and the Qwen2.5-VL models to hub commits; where it does not know
the commit it says ``main`` and the loader warns that the run is unpinned. ``score.hf.revision``
overrides the registry's commit. Remote code runs only for a model that needs it, only
when ``score.hf.trust_remote_code`` is true, and only with a pinned revision (a local folder counts
as pinned: its files do not change under the run).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from dogiqa.errors import ParamError

log = logging.getLogger(__name__)

UNPINNED = "main"


@dataclass(frozen=True)
class Adapter:
    """How the hf backend loads and queries one architecture."""

    target: str
    """``module:Class``: a class with ``load(resolved, prompt, dtype, device, local_files_only)``
    (a classmethod returning the adapter), ``level_logits(crops, ids)``, ``generate(crops)`` and
    a ``tokenizer`` (see ``dogiqa.scoring.hf.AutoAdapter``)."""
    remote_code: bool
    """True when the architecture's classes live in the model's repository, not in
    transformers (then ``score.hf.trust_remote_code`` and a pinned revision are required)."""
    note: str = ""


AUTO = "auto"
"""The adapter of every architecture transformers loads by itself."""
ADAPTERS: dict[str, Adapter] = {
    AUTO: Adapter(
        "dogiqa.scoring.hf:AutoAdapter",
        remote_code=False,
        note="AutoProcessor + AutoModelForImageTextToText and the processor's chat template",
    ),
    "mplugowl3": Adapter(
        "dogiqa.scoring.hf:MPlugOwl3Adapter",
        remote_code=True,
        note="mPLUG-Owl3's remote code: AutoModel + AutoTokenizer, model.init_processor",
    ),
}
"""config.json ``model_type`` -> its adapter; a type not listed goes through ``auto``."""

FP16_OVERFLOW_TYPES = ("qwen2_vl", "qwen2_5_vl")
"""Architectures (config.json ``model_type``) whose activations overflow in fp16: NaN logits."""


def adapter_name(model_type: str | None) -> str:
    """The key of ``model_type``'s adapter in :data:`ADAPTERS`."""
    return model_type if model_type in ADAPTERS else AUTO


def adapter_class(name: str) -> type:
    """The adapter class registered as ``name`` (its module is imported here)."""
    module, _, attribute = ADAPTERS[name].target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ModelSpec:
    repo: str
    """Hub id."""
    revision: str
    """Commit hash, or ``main`` (unpinned) where the registry does not know it."""
    model_type: str
    """The ``model_type`` of the model's config.json: it picks the adapter (:data:`ADAPTERS`)
    and the tests' tiny version of the architecture (``tests/tiny_models.py``)."""
    note: str = ""

    @property
    def loader(self) -> str:
        return adapter_name(self.model_type)

    @property
    def trust_remote_code(self) -> bool:
        return ADAPTERS[self.loader].remote_code

    @property
    def fp16_overflows(self) -> bool:
        return self.model_type in FP16_OVERFLOW_TYPES


MODELS: dict[str, ModelSpec] = {
    "mplug-owl3-7b": ModelSpec(
        repo="mPLUG/mPLUG-Owl3-7B-240728",
        revision="eff25bcdc02ff1b513c25f376d761ec1ab6dfa1b",
        model_type="mplugowl3",
        note="the paper's model (fp16, sdpa); its remote code needs transformers 4.37.2 "
        "(make venv-paper)",
    ),
    "qwen2.5-vl-7b": ModelSpec(
        repo="Qwen/Qwen2.5-VL-7B-Instruct",
        revision="cc594898137f460bfe9f0759e9844b3ce807cfb5",
        model_type="qwen2_5_vl",
    ),
    "qwen2.5-vl-3b": ModelSpec(
        repo="Qwen/Qwen2.5-VL-3B-Instruct",
        revision="66285546d2b821cf421d4f5eb2576359d3770cd3",
        model_type="qwen2_5_vl",
    ),
    "smolvlm": ModelSpec(
        repo="HuggingFaceTB/SmolVLM-Instruct",
        revision=UNPINNED,
        model_type="idefics3",
        note="Idefics3 architecture, 2B",
    ),
    "idefics3-8b": ModelSpec(
        repo="HuggingFaceM4/Idefics3-8B-Llama3",
        revision=UNPINNED,
        model_type="idefics3",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    source: str
    """Hub id or local folder passed to from_pretrained."""
    revision: str | None
    """None for a local folder."""
    loader: str
    """The key of its adapter in :data:`ADAPTERS`."""
    trust_remote_code: bool
    local: bool
    fp16_overflows: bool = False


def is_pinned(revision: str | None) -> bool:
    return revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def _local_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ParamError("score.hf.model", f"{folder}: no readable config.json") from None


def _local_needs_remote_code(config: dict) -> tuple[str, bool]:
    """(adapter, needs remote code) of a saved model folder, from its config.json."""
    loader = adapter_name(config.get("model_type"))
    return loader, ADAPTERS[loader].remote_code or "auto_map" in config


def resolve(
    model: str, revision: str | None, allow_remote_code: bool, warn: bool = True
) -> ResolvedModel:
    """Where to load ``model`` from, with the pinning and remote-code rules applied (ParamError
    when they refuse it; a logged warning, if ``warn``, when the revision is unpinned)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = _local_config(folder)
        loader, needs_code = _local_needs_remote_code(config)
        overflows = config.get("model_type") in FP16_OVERFLOW_TYPES
        resolved = ResolvedModel(str(folder), None, loader, needs_code, True, overflows)
    elif model in MODELS:
        spec = MODELS[model]
        resolved = ResolvedModel(
            spec.repo,
            revision or spec.revision,
            spec.loader,
            spec.trust_remote_code,
            local=False,
            fp16_overflows=spec.fp16_overflows,
        )
    else:
        if "/" not in model:
            raise ParamError(
                "score.hf.model",
                f"{model!r} is neither a registry name "
                f"({sorted(MODELS)}), a local folder, nor a hub id (owner/name)",
            )
        resolved = ResolvedModel(model, revision or UNPINNED, AUTO, False, local=False)
    _check_remote_code(resolved, allow_remote_code)
    if warn and not resolved.local and not is_pinned(resolved.revision):
        log.warning(
            "score: model %s is not pinned (revision %r); set score.hf.revision to a "
            "commit hash for a reproducible run",
            resolved.source,
            resolved.revision,
        )
    return resolved


def _check_remote_code(resolved: ResolvedModel, allowed: bool) -> None:
    if not resolved.trust_remote_code:
        return
    if not allowed:
        raise ParamError(
            "score.hf.trust_remote_code",
            f"{resolved.source} runs code from its "
            "repository; set it to true to allow that (with a pinned revision)",
        )
    if not resolved.local and not is_pinned(resolved.revision):
        raise ParamError(
            "score.hf.revision",
            f"{resolved.source} runs remote code, so its "
            f"revision must be a 40-hex commit hash, got {resolved.revision!r}",
        )
