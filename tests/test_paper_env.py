"""The hf adapters pass only keyword arguments that the pinned transformers releases accept.

Two environments load models: .venv (transformers 5, native models such as Qwen2.5-VL) and the
paper environment .venv-paper (transformers 4.37.2, mPLUG-Owl3's remote code; ``make
venv-paper``). The keywords that 4.37.2 accepts were recorded once in that environment by
tests/fixtures/record_signatures.py into tests/fixtures/paper_env_signatures.json (``make
paper-signatures``), so this test needs no paper environment; where one exists, the fixture is
checked against it too. The installed transformers is read live.

``from_pretrained`` takes most options through ``**kwargs``: in 4.37.2 (modeling_utils.py)
it pops ``torch_dtype`` and ``attn_implementation`` but not ``dtype``, which would reach the
model's ``__init__`` and fail; transformers 5 pops both ``dtype`` and ``torch_dtype``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dogiqa.scoring import hf
from dogiqa.scoring.models import resolve

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))
import record_signatures  # noqa: E402

PAPER = json.loads((FIXTURES / "paper_env_signatures.json").read_text(encoding="utf-8"))
PAPER_PYTHON = ROOT / ".venv-paper" / "bin" / "python"


def pinned(requirements: Path, name: str) -> str:
    for line in requirements.read_text(encoding="utf-8").splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in {requirements.name}")


class Stop(Exception):
    """Ends a load once from_pretrained has been called (nothing is downloaded)."""


def captured_load_kwargs(
    monkeypatch: pytest.MonkeyPatch, version: str, dtype: torch.dtype
) -> dict[str, dict[str, Any]]:
    """The keyword arguments MPlugOwl3Adapter.load passes to from_pretrained, with the
    installed transformers taken for ``version``."""
    import transformers

    calls: dict[str, dict[str, Any]] = {}

    def recorder(name: str, stop: bool) -> Any:
        def from_pretrained(source: str, **kwargs: Any) -> Any:
            calls[name] = kwargs
            if stop:
                raise Stop
            return object()

        return from_pretrained

    monkeypatch.setattr(hf, "transformers_version", lambda: version, raising=False)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder("tok", False))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", recorder("model", True))
    resolved = resolve("mplug-owl3-7b", None, allow_remote_code=True, warn=False)
    with pytest.raises(Stop):
        hf.MPlugOwl3Adapter.load(resolved, dtype, torch.device("cpu"), True)
    return calls


def test_the_fixture_records_the_pinned_paper_transformers() -> None:
    assert PAPER["transformers"] == pinned(ROOT / "requirements-paper.txt", "transformers")
    assert PAPER["transformers"] == pinned(ROOT / "constraints-paper.txt", "transformers")
    assert pinned(ROOT / "constraints-paper.txt", "torch") == "2.4.1"
    assert pinned(ROOT / "constraints-paper.txt", "einops")


def test_mplug_owl3_load_passes_keywords_transformers_4_37_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = captured_load_kwargs(monkeypatch, PAPER["transformers"], torch.float16)
    assert set(calls["model"]) <= set(PAPER["AutoModel.from_pretrained"])
    assert set(calls["tok"]) <= set(PAPER["AutoTokenizer.from_pretrained"])
    assert calls["model"]["torch_dtype"] == torch.float16  # the authors' fp16
    assert calls["model"]["attn_implementation"] == "sdpa"
    # The remote generate passes max_new_tokens on to GenerationMixin.generate.
    assert "max_new_tokens" in PAPER["GenerationMixin.generate"]


def test_mplug_owl3_keywords_suit_the_installed_transformers_too() -> None:
    """The adapter's keywords for transformers 5 (where its remote code itself cannot run, so
    ``load`` refuses first: see test_mplug_owl3.py) are accepted there as well."""
    import transformers

    live = record_signatures.record()
    resolved = resolve("mplug-owl3-7b", None, allow_remote_code=True, warn=False)
    kwargs = hf.MPlugOwl3Adapter.load_kwargs(
        resolved, torch.float16, True, transformers.__version__
    )
    assert set(kwargs["model"]) <= set(live["AutoModel.from_pretrained"])
    assert set(kwargs["tokenizer"]) <= set(live["AutoTokenizer.from_pretrained"])


def test_auto_adapter_passes_keywords_the_installed_transformers_accepts() -> None:
    import transformers

    live = record_signatures.record()
    resolved = resolve("qwen2.5-vl-7b", None, allow_remote_code=False, warn=False)
    kwargs = hf.AutoAdapter.load_kwargs(resolved, torch.bfloat16, True, transformers.__version__)
    assert set(kwargs["model"]) <= set(live["AutoModelForImageTextToText.from_pretrained"])
    assert set(kwargs["processor"]) <= set(live["AutoProcessor.from_pretrained"])
    assert kwargs["model"]["dtype"] == torch.bfloat16  # no deprecation warning in 5.x


def test_dtype_keyword_by_release() -> None:
    assert hf.dtype_keyword("4.37.2") == "torch_dtype"
    assert hf.dtype_keyword("4.55.4") == "torch_dtype"
    assert hf.dtype_keyword("4.56.0") == "dtype"
    assert hf.dtype_keyword("5.23.0") == "dtype"


@pytest.mark.skipif(not PAPER_PYTHON.exists(), reason="no .venv-paper (make venv-paper)")
def test_fixture_matches_the_paper_environment(tmp_path: Path) -> None:
    out = tmp_path / "signatures.json"
    script = FIXTURES / "record_signatures.py"
    subprocess.run([str(PAPER_PYTHON), str(script), str(out)], check=True, capture_output=True)
    assert json.loads(out.read_text(encoding="utf-8")) == PAPER
