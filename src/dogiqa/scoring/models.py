"""The model registry: MLLMs the ``hf`` backend knows by a short name.

Switching models is a params change (``score.hf.model``): a registry name below, a local folder
holding a saved model and processor, or any hub id of an image-text-to-text model.

Revisions: a 40-hex commit hash pins weights, processor and (for remote-code models) code. The
registry pins the paper's model and the Qwen2.5-VL models to hub commits; where it does not know
the commit it says ``main`` and the loader warns that the run is unpinned. ``score.hf.revision``
overrides the registry's commit. Remote code runs only for a model that needs it, only
when ``score.hf.trust_remote_code`` is true, and only with a pinned revision (a local folder counts
as pinned: its files do not change under the run).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from dogiqa.errors import ParamError

log = logging.getLogger(__name__)

UNPINNED = "main"


@dataclass(frozen=True)
class ModelSpec:
    repo: str
    """Hub id."""
    revision: str
    """Commit hash, or ``main`` (unpinned) where the registry does not know it."""
    loader: str
    """``auto``: AutoProcessor + AutoModelForImageTextToText; ``mplug_owl3``: its remote code."""
    trust_remote_code: bool
    """True when the model's classes live in its repository, not in transformers."""
    note: str = ""
    fp16_overflows: bool = False
    """True for models whose activations overflow in fp16 (Qwen2-VL family): NaN logits."""


MODELS: dict[str, ModelSpec] = {
    "mplug-owl3-7b": ModelSpec(
        repo="mPLUG/mPLUG-Owl3-7B-240728",
        revision="eff25bcdc02ff1b513c25f376d761ec1ab6dfa1b",
        loader="mplug_owl3",
        trust_remote_code=True,
        note="the paper's model (fp16, sdpa); its remote code needs transformers 4.37.2 "
        "(make venv-paper)",
    ),
    "qwen2.5-vl-7b": ModelSpec(
        repo="Qwen/Qwen2.5-VL-7B-Instruct",
        revision="cc594898137f460bfe9f0759e9844b3ce807cfb5",
        loader="auto",
        trust_remote_code=False,
        fp16_overflows=True,
    ),
    "qwen2.5-vl-3b": ModelSpec(
        repo="Qwen/Qwen2.5-VL-3B-Instruct",
        revision="66285546d2b821cf421d4f5eb2576359d3770cd3",
        loader="auto",
        trust_remote_code=False,
        fp16_overflows=True,
    ),
    "smolvlm": ModelSpec(
        repo="HuggingFaceTB/SmolVLM-Instruct",
        revision=UNPINNED,
        loader="auto",
        trust_remote_code=False,
        note="Idefics3 architecture, 2B",
    ),
    "idefics3-8b": ModelSpec(
        repo="HuggingFaceM4/Idefics3-8B-Llama3",
        revision=UNPINNED,
        loader="auto",
        trust_remote_code=False,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    source: str
    """Hub id or local folder passed to from_pretrained."""
    revision: str | None
    """None for a local folder."""
    loader: str
    trust_remote_code: bool
    local: bool
    fp16_overflows: bool = False


# Architectures (config.json ``model_type``) whose activations overflow in fp16.
FP16_OVERFLOW_TYPES = ("qwen2_vl", "qwen2_5_vl")


def is_pinned(revision: str | None) -> bool:
    return revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def _local_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ParamError("score.hf.model", f"{folder}: no readable config.json") from None


def _local_needs_remote_code(config: dict) -> tuple[str, bool]:
    """(loader, needs remote code) of a saved model folder, from its config.json."""
    if config.get("model_type") == "mplugowl3":
        return "mplug_owl3", True
    return "auto", "auto_map" in config


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
        resolved = ResolvedModel(model, revision or UNPINNED, "auto", False, local=False)
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
