"""The ``hf`` backend: any image-text-to-text model in transformers, scored in one forward pass.

``logits`` readout: one forward pass per batch of crops (left padding, so the last position of
every row is the next token), the next-token logits of the K level tokens, softmax over those K.
A level may have two spellings among single tokens, the bare digit ("5") and the digit with a
leading space (" 5", in byte-level BPE vocabularies); its logit is the larger of the two, so the
level argmax is the greedy token whenever a level token wins the whole vocabulary.

``generate`` readout: the authors' procedure, greedy decoding of one new token, ``int(text)``,
and level 1 with the fallback flag when that fails or is outside 1..K. Its distribution is
one-hot at the parsed level.

The K level logits are computed in fp32 from the final hidden state and the level tokens' rows
of the output embedding (captured at the LM head's input), not read from the head's output: in
bf16 that output has a step of 0.125 at typical magnitudes (24.03 and 23.95 both become 24.0),
which would make ties common. The full (model-dtype) logits give only the normaliser of
``level_mass``, the next-token probability on the levels.

Batches: the score stage hands the scorer its images in table order; the requests of the crops
of ``lookahead`` consecutive images are sorted by their number of image tokens (as the processor
counts them) and cut into batches of ``batch_size``, largest first, so that the ~1280-token whole
images are batched together and the small region crops together, instead of every batch being
padded to its image's whole-image length. Windows are counted from the first image of the run
(cached images included) and a window's images are cached together once it is scored, so a
killed and resumed run batches as an uninterrupted one; ``lookahead: 1``
keeps batches within one image (an image's scores then depend on nothing else in the run, e.g.
its shard), since a crop's batch neighbours change its bf16 logits in their last digits. The
compare stage's requests (pairs, lists) are batched by token count alike, within each chunk of
trials it asks.

Weights load in fp32 on CPU and in bf16 on CUDA, or in fp32 where the GPU has no bf16 (V100,
T4: Qwen2-family models overflow in fp16), unless ``dtype`` says otherwise, straight onto the
device (``device_map``: no full copy in CPU memory first). The paper's
mPLUG-Owl3 has its own remote code and processor API; it goes through :class:`MPlugOwl3Adapter`
(one request per call), in the environment its code was written for (``make venv-paper``).

Crops pass :func:`dogiqa.scoring.prepare_crop` first (aspect ratio, size); an error raised for
one crop makes it a flagged fallback, an error that means the setup is wrong stops the stage
(:class:`dogiqa.scoring.CropErrors`).

What is asked is a prompting system's task (``dogiqa.systems``): per item a chat request (its
turns and images), rendered by the processor's chat template (one image placeholder per image
part; the processor matches the images to them in order). The adapters run batches of requests;
:class:`HFScorer` builds the requests (``requests``), runs them (``replies``: the option logits
of one forward pass, or the generated text) and lets the task read them. The score stage asks it
for the crops of its stream of images (``score_stream``), the compare stage for pairs and lists
of images (``replies``).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import lazy_loader
import numpy as np
from PIL import Image

from dogiqa import config, prompts, systems
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import (
    CropErrors,
    Job,
    LevelScorer,
    LevelScores,
    Reply,
    ScorerBackend,
    T,
    backend_code_version,
    find_option_token_ids,
    first_line,
    prepare_crop,
    prompt_unit,
)
from dogiqa.scoring.models import ResolvedModel, adapter_class, resolve

log = logging.getLogger(__name__)

# torch (the [mllm] extra) loads on first use: checking the params of a run that uses this
# backend (check-params checks every run) needs no torch, as in the CPU-only install.
torch = lazy_loader.load("torch")

DTYPES = ("float32", "float16", "bfloat16")
"""``score.hf.dtype`` values besides auto: names of torch dtypes."""


def torch_installed() -> bool:
    """Whether torch can be imported (the [mllm] extra); false in the CPU-only install."""
    return importlib.util.find_spec("torch") is not None


def _inference_mode(method: Any) -> Any:
    """``torch.inference_mode()`` around ``method``, entered per call (torch loads lazily)."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return method(*args, **kwargs)

    return wrapped


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
    config.get_int(section, prefix, "lookahead", minimum=1)
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


def pick_dtype(name: str, device: torch.device, fp16_overflows: bool = False) -> torch.dtype:
    """The weights' dtype: ``auto`` is fp32 on CPU, bf16 on CUDA and fp32 on a GPU without bf16
    (fp16 overflows in Qwen2-family models: every crop would be NaN). fp16 only when asked, with
    a warning for a model known to overflow in it."""
    if name != "auto":
        if name == "float16" and fp16_overflows:
            log.warning(
                "score: score.hf.dtype is float16, in which this model is known to overflow "
                "(NaN logits make every crop a fallback); bfloat16 or float32 avoid it"
            )
        return getattr(torch, name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def transformers_version() -> str:
    """The installed transformers release (read without importing it)."""
    return metadata.version("transformers")


def dtype_keyword(version: str | None = None) -> str:
    """The ``from_pretrained`` keyword of the weights' dtype: ``dtype`` from transformers 4.56
    on, ``torch_dtype`` before (4.37.2, the paper environment's, knows only that one)."""
    from packaging.version import Version

    installed = version if version is not None else transformers_version()
    return "dtype" if Version(installed) >= Version("4.56") else "torch_dtype"


def option_token_ids(
    tokenizer: Any, options: Sequence[str], what: str = "answer"
) -> list[list[int]]:
    """Single-token spellings of each answer option in ``tokenizer``'s vocabulary (see
    :func:`dogiqa.scoring.base.find_option_token_ids`)."""

    def lookup(text: str) -> int | None:
        token = tokenizer.convert_tokens_to_ids(text)
        return None if token == tokenizer.unk_token_id else token

    return find_option_token_ids(
        options,
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        lambda token: tokenizer.decode([token]),
        lookup,
        what,
    )


def level_token_ids(tokenizer: Any, k: int) -> list[list[int]]:
    """Single-token spellings of each level 1..K in ``tokenizer``'s vocabulary."""
    return option_token_ids(tokenizer, [str(level) for level in range(1, k + 1)], "level")


def output_head(model: Any) -> Any:
    """The LM head (``get_output_embeddings()``), or None when the model does not expose one."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(getattr(head, "weight", None), torch.Tensor) else None


@contextmanager
def head_input(model: Any) -> Iterator[list[torch.Tensor]]:
    """Captures the LM head's input (the final hidden states) during the forward passes run
    inside the block; yields the list they are appended to (empty without a head)."""
    captured: list[torch.Tensor] = []
    head = output_head(model)
    if head is None:
        yield captured
        return
    handle = head.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


class LevelReadout:
    """Level logits in fp32 from the final hidden state and the level rows of the LM head."""

    def __init__(self, model: Any, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.head = output_head(model)
        self.warned = False

    def __call__(
        self, logits: torch.Tensor, hidden: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, len(ids)) level logits and (n,) log-normalisers over the vocabulary, from the
        model's next-token ``logits`` (n, V) and the head's input at that position (n, d)."""
        ids = torch.tensor(self.ids, device=logits.device)
        given = logits.index_select(1, ids).float()
        levels = given
        if self.head is not None and hidden is not None:
            rows = self.head.weight.index_select(0, ids.to(self.head.weight.device)).float()
            exact = hidden.float().to(rows.device) @ rows.T
            bias = getattr(self.head, "bias", None)
            if bias is not None:
                exact = exact + bias.index_select(0, ids.to(bias.device)).float()
            exact = exact.to(logits.device)
            if self._plain_head(exact, given, logits.dtype):
                levels = exact
        full = logits.float().clone()
        full[:, ids] = levels
        log_norm = torch.logsumexp(full, dim=1)
        return levels.double().cpu().numpy(), log_norm.double().cpu().numpy()

    def _plain_head(self, exact: torch.Tensor, given: torch.Tensor, dtype: torch.dtype) -> bool:
        """Whether the head is the plain linear map (no soft-capping, no scaling): its output
        equals ours up to the rounding of its dtype. Otherwise the model's logits are used."""
        step = torch.finfo(dtype).eps if dtype.is_floating_point else 1e-6
        tolerance = 4 * step * (exact.abs() + 1) + 1e-4
        if bool(((exact - given).abs() <= tolerance).all()):
            return True
        if not self.warned:
            log.warning(
                "score: the LM head is not a plain linear map; level logits are read from the "
                "model's output in its dtype"
            )
            self.warned = True
        return False


def _load_error(source: str, exc: Exception) -> DogIQAError:
    return DogIQAError(f"cannot load model {source}: {first_line(exc)}")


def plan_batches(tokens: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of crops in batches of at most ``batch_size``, crops of similar token counts
    together (a left-padded batch is as long as its longest crop): sorted by ``tokens``, largest
    first, so that a batch size too large for the device fails on the first batch."""
    order = sorted(range(len(tokens)), key=lambda i: (-tokens[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pixel_count(crop: Image.Image) -> int:
    return crop.width * crop.height


class AutoAdapter:
    """AutoProcessor + AutoModelForImageTextToText and the processor's chat template."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # the last position of every row is the next token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._texts: dict[str, str] = {}  # a task's requests share their turns: render once
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        params = inspect.signature(model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._readouts: dict[tuple[int, ...], LevelReadout] = {}
        self._counts_tokens = callable(getattr(processor, "_get_num_multimodal_tokens", None))

    def image_tokens(self, crop: Image.Image) -> int:
        """The number of tokens the processor gives ``crop``, as its
        ``_get_num_multimodal_tokens`` computes them from the size (transformers'
        processing_utils; what vLLM reads too); a processor without it: the pixel count,
        which orders crops alike for a model whose tokens grow with the area."""
        if self._counts_tokens:
            try:
                counted = self.processor._get_num_multimodal_tokens(
                    image_sizes=[(crop.height, crop.width)]
                )
                return int(counted["num_image_tokens"][0])
            except Exception as exc:  # an API transformers marks as subject to change
                log.info("score: processor cannot count image tokens (%s)", first_line(exc))
                self._counts_tokens = False
        return pixel_count(crop)

    @staticmethod
    def load_kwargs(
        resolved: ResolvedModel,
        dtype: torch.dtype,
        local_files_only: bool,
        version: str | None,
        device: torch.device | str = "cpu",
    ) -> dict[str, dict[str, Any]]:
        """Keyword arguments of ``from_pretrained``: ``processor`` and ``model``. The weights
        load onto ``device`` directly (``device_map``; transformers then reads each tensor
        onto it, through accelerate, instead of building the model in CPU memory first)."""
        common = {
            "revision": resolved.revision,
            "trust_remote_code": resolved.trust_remote_code,
            "local_files_only": local_files_only,
        }
        model = {**common, dtype_keyword(version): dtype, "device_map": str(device)}
        return {"processor": common, "model": model}

    @classmethod
    def load(
        cls,
        resolved: ResolvedModel,
        dtype: torch.dtype,
        device: torch.device,
        local_files_only: bool,
    ) -> AutoAdapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs = cls.load_kwargs(resolved, dtype, local_files_only, None, device)
        try:
            processor = AutoProcessor.from_pretrained(resolved.source, **kwargs["processor"])
            model = AutoModelForImageTextToText.from_pretrained(resolved.source, **kwargs["model"])
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise _load_error(resolved.source, exc) from None
        return cls(model, processor)

    def text(self, request: systems.Request) -> str:
        """The request's turns through the chat template (one placeholder per image part)."""
        key = json.dumps(request.messages, sort_keys=True)
        if key not in self._texts:
            self._texts[key] = prompts.render_messages(self.processor, request.messages, "prompt")
        return self._texts[key]

    def inputs(self, requests: Sequence[systems.Request]) -> Any:
        """One batch: the rendered texts, and every request's images in order (the processor
        gives the n-th image to the n-th placeholder)."""
        images = [image for request in requests for image in request.images]
        batch = self.processor(
            text=[self.text(r) for r in requests], images=images, padding=True, return_tensors="pt"
        )
        return batch.to(self.device, self.dtype)

    @_inference_mode
    def level_logits(
        self, requests: Sequence[systems.Request], ids: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass: the fp32 logits of token ``ids`` at the next position of every
        request (n, len(ids)) and the log-normaliser over the vocabulary (n,)."""
        readout = self._readouts.setdefault(tuple(ids), LevelReadout(self.model, ids))
        with head_input(self.model) as hidden:
            out = self.model(**self.inputs(requests), use_cache=False, **self._keep)
        return readout(out.logits[:, -1, :], hidden[-1][:, -1, :] if hidden else None)

    @_inference_mode
    def generate(self, requests: Sequence[systems.Request], max_new_tokens: int = 1) -> list[str]:
        batch = self.inputs(requests)
        out = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


# mPLUG-Owl3's remote code (modeling_mplugowl3.py, modeling_hyper_qwen2.py of
# mPLUG/mPLUG-Owl3-7B-240728) was written for transformers 4.37.2: from 4.50 on PreTrainedModel
# no longer brings ``generate`` (GenerationMixin), 5.x moved SiglipVisionTransformer and removed
# DynamicCache.from_legacy_cache. The paper environment (requirements-paper.txt) pins 4.37.2.
MPLUG_OWL3_TRANSFORMERS = "4.37.2"
MPLUG_OWL3_BREAKS_FROM = "4.50"


def check_mplug_owl3_environment(version: str | None = None) -> None:
    """DogIQAError (one line) when the installed transformers cannot run mPLUG-Owl3's code."""
    from packaging.version import Version

    installed = version if version is not None else transformers_version()
    if Version(installed) >= Version(MPLUG_OWL3_BREAKS_FROM):
        raise DogIQAError(
            f"mPLUG-Owl3's remote code needs transformers {MPLUG_OWL3_TRANSFORMERS} (its authors' "
            f"release) but this environment has {installed}: run this stage in the paper "
            "environment (make venv-paper; see README, GPU notes)"
        )
    if installed != MPLUG_OWL3_TRANSFORMERS:
        log.warning(
            "score: mPLUG-Owl3 was released for transformers %s; this environment has %s",
            MPLUG_OWL3_TRANSFORMERS,
            installed,
        )


class MPlugOwl3Adapter:
    """mPLUG-Owl3 through its own remote code, as its model card shows: AutoModel +
    AutoTokenizer, ``model.init_processor(tokenizer)``, messages whose user text carries the
    ``<|image|>`` marker, and an empty assistant turn. One crop per call.

    Its processor (processing_mplugowl3.py) rewrites ``messages[i]["content"]`` in place, one
    ``<|image|>`` becoming one marker per image slice, and asserts that the markers count the
    images: every call gets fresh messages. The forward pass gets ``use_cache=False`` (with the
    config's default, True, the remote code builds a DynamicCache through
    ``from_legacy_cache``, and a single forward pass needs no cache). A request's image parts
    become ``<|image|>`` markers in its turns' text, as this processor reads them."""

    MARKER = "<|image|>"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = model.init_processor(tokenizer)
        self.device = next(model.parameters()).device
        self._readouts: dict[tuple[int, ...], LevelReadout] = {}

    @staticmethod
    def load_kwargs(
        resolved: ResolvedModel,
        dtype: torch.dtype,
        local_files_only: bool,
        version: str | None,
        device: torch.device | str = "cpu",
    ) -> dict[str, dict[str, Any]]:
        """Keyword arguments of ``from_pretrained``: ``tokenizer`` and ``model`` (onto
        ``device`` directly, as :meth:`AutoAdapter.load_kwargs`; transformers 4.37.2 takes
        ``device_map`` too, through the paper environment's accelerate)."""
        common = {
            "revision": resolved.revision,
            "trust_remote_code": True,
            "local_files_only": local_files_only,
        }
        model = {
            **common,
            dtype_keyword(version): dtype,
            "attn_implementation": "sdpa",
            "device_map": str(device),
        }
        return {"tokenizer": common, "model": model}

    @classmethod
    def load(
        cls,
        resolved: ResolvedModel,
        dtype: torch.dtype,
        device: torch.device,
        local_files_only: bool,
    ) -> MPlugOwl3Adapter:
        check_mplug_owl3_environment()
        from transformers import AutoModel, AutoTokenizer

        kwargs = cls.load_kwargs(resolved, dtype, local_files_only, None, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.source, **kwargs["tokenizer"])
            model = AutoModel.from_pretrained(resolved.source, **kwargs["model"])
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise _load_error(resolved.source, exc) from None
        return cls(model, tokenizer)

    def image_tokens(self, crop: Image.Image) -> int:
        """One request per forward pass: nothing is padded, the pixel count orders crops."""
        return pixel_count(crop)

    def messages(self, request: systems.Request) -> list[dict[str, str]]:
        """A new message list (the processor edits the one it is given), ending with the empty
        assistant turn of the model card."""
        return [*request.marker_messages(self.MARKER), {"role": "assistant", "content": ""}]

    def _inputs(self, request: systems.Request) -> Any:
        messages = self.messages(request)
        inputs = self.processor(messages, images=list(request.images), videos=None)
        inputs = inputs.to(self.device)
        inputs.pop("image_sizes", None)  # returned by some processors, not taken by the model
        return inputs

    @_inference_mode
    def level_logits(
        self, requests: Sequence[systems.Request], ids: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`AutoAdapter.level_logits`, one forward pass per request."""
        readout = self._readouts.setdefault(tuple(ids), LevelReadout(self.model, ids))
        rows, norms = [], []
        for request in requests:
            with head_input(self.model) as hidden:
                out = self.model(**self._inputs(request), use_cache=False)
            levels, log_norm = readout(
                out.logits[:, -1, :], hidden[-1][:, -1, :] if hidden else None
            )
            rows.append(levels[0])
            norms.append(log_norm[0])
        return np.stack(rows), np.asarray(norms)

    @_inference_mode
    def generate(self, requests: Sequence[systems.Request], max_new_tokens: int = 1) -> list[str]:
        return [
            self.model.generate(
                **self._inputs(r),
                tokenizer=self.tokenizer,
                max_new_tokens=max_new_tokens,
                decode_text=True,
            )[0]
            for r in requests
        ]


class HFScorer(LevelScorer):
    """Asks an MLLM a prompting system's task: level-token logits (one forward pass) or greedy
    generation. ``task`` is a ``dogiqa.systems.Task`` (Dog-IQA's prompt alone stands for its
    single-stimulus standard task)."""

    def __init__(
        self,
        adapter: AutoAdapter | MPlugOwl3Adapter,
        task: systems.Task | prompts.Prompt,
        readout: str = "logits",
        batch_size: int = 8,
        max_pixels: int = 0,
        min_side: int = 28,
        lookahead: int = 1,
    ) -> None:
        self.adapter = adapter
        self.task = systems.as_task(task)
        self.prompt = self.task.prompt
        self.K = len(self.task.options)
        self.name = self.task.id
        self.readout = readout
        self.batch_size = batch_size
        self.lookahead = lookahead
        self.max_pixels = max_pixels
        self.min_side = min_side
        # the answer tokens a one-token readout reads (the levels, or A / B / same)
        options = self.task.options if readout == "logits" else ()
        what = "level" if self.prompt is not None else "answer"
        self.level_ids = option_token_ids(adapter.tokenizer, options, what) if options else []
        stage = "compare" if self.task.system.compares else "score"
        item = "request" if self.task.system.compares else "crop"
        self.errors = CropErrors(self.K, f"{stage} ({self.name})", flagged=Reply.failed, item=item)
        self._exemplars: list[Image.Image] | None = None

    @classmethod
    def from_params(
        cls, section: Mapping[str, Any], prompt_id: str, k: int, readout: str
    ) -> HFScorer:
        """Dog-IQA's prompt ``prompt_id`` (single-stimulus standard) with ``score.hf`` settings."""
        prompt = prompts.get(prompt_id)
        if k != prompt.K:
            raise ParamError("score.prompt", f"{prompt_id} has K={prompt.K} but score.K is {k}")
        return cls.from_task(section, systems.as_task(prompt), readout)

    @classmethod
    def from_task(cls, section: Mapping[str, Any], task: systems.Task, readout: str) -> HFScorer:
        """The model of ``score.hf`` (``section``) asking ``task``."""
        if not torch_installed():
            raise DogIQAError(
                "score.backend hf needs torch and transformers, which this environment lacks: "
                "install the mllm extra (make venv-full, or pip install -e '.[mllm]')"
            )
        resolved = resolve(section["model"], section.get("revision"), section["trust_remote_code"])
        device = pick_device(section["device"])
        dtype = pick_dtype(section["dtype"], device, resolved.fp16_overflows)
        loader = adapter_class(resolved.loader)  # registered by model type (models.ADAPTERS)
        log.info("%s: loading %s (%s, %s)", task.id, resolved.source, device, dtype)
        adapter = loader.load(resolved, dtype, device, section["local_files_only"])
        return cls(
            adapter,
            task,
            readout,
            section["batch_size"],
            section["max_pixels"],
            section["min_side"],
            section.get("lookahead", 1),  # checked params always name it
        )

    # --- requests ------------------------------------------------------------------------------

    def _prepare(self, crops: Sequence[Image.Image]) -> list[Image.Image]:
        return [prepare_crop(c, self.min_side, self.max_pixels) for c in crops]

    def requests(self, items: Sequence[Sequence[Image.Image]]) -> list[systems.Request]:
        """One request per item (its stimuli: one crop, two or L images), every image prepared
        (the exemplars' once)."""
        if self._exemplars is None:
            self._exemplars = self._prepare(self.task.exemplar_images())
        return [self.task.request(self._prepare(item), self._exemplars) for item in items]

    def request_tokens(self, request: systems.Request) -> int:
        """The image tokens of a request (its text is its task's, alike for all requests)."""
        return sum(self.adapter.image_tokens(image) for image in request.images)

    def replies(self, requests: Sequence[systems.Request]) -> list[Reply]:
        """The model's reply to every request, in their order, from batches of at most
        ``batch_size`` requests of similar token counts (:func:`plan_batches`); a request the
        model or processor refuses gets a reply carrying the error."""
        tokens = [self.request_tokens(request) for request in requests]
        out: list[Reply | None] = [None] * len(requests)
        for batch in plan_batches(tokens, self.batch_size):
            replies = self.errors.call(self._replies, [requests[i] for i in batch])
            for i, reply in zip(batch, replies, strict=True):
                out[i] = reply
        return out  # type: ignore[return-value]  (every index is in one batch)

    def _replies(self, batch: list[systems.Request]) -> list[Reply]:
        if self.readout == "logits":
            levels, log_norm = self.option_logits(batch)
            return [
                Reply(tuple(float(v) for v in row), float(z))
                for row, z in zip(levels, log_norm, strict=True)
            ]
        texts = self.adapter.generate(batch, max_new_tokens=self.task.max_new_tokens)
        return [Reply(text=text) for text in texts]

    def option_logits(self, requests: Sequence[systems.Request]) -> tuple[np.ndarray, np.ndarray]:
        """(n, options) logits in fp32 (per option, the larger logit of its spellings) and the
        (n,) log-normalisers over the vocabulary."""
        flat = [token for ids in self.level_ids for token in ids]
        logits, log_norm = self.adapter.level_logits(requests, flat)
        columns, start = [], 0
        for ids in self.level_ids:
            columns.append(logits[:, start : start + len(ids)].max(axis=1))
            start += len(ids)
        return np.stack(columns, axis=1), log_norm

    # --- single stimulus: crops ----------------------------------------------------------------

    def level_logits(self, crops: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(n, K) level logits of crops in fp32 and the (n,) log-normalisers."""
        return self.option_logits(self.requests([[crop] for crop in crops]))

    def score_stream(self, jobs: Iterable[Job[T]]) -> Iterator[tuple[T, list[LevelScores]]]:
        """Per image, in order: the requests of the crops of ``lookahead`` images at a time
        batched together (:meth:`replies`)."""
        jobs = iter(jobs)
        while window := list(itertools.islice(jobs, self.lookahead)):
            asked = [self.requests([[crop] for crop in crops]) for _, crops in window]
            replies = self.replies([request for requests in asked for request in requests])
            start = 0
            for (tag, _), requests in zip(window, asked, strict=True):
                done = replies[start : start + len(requests)]
                yield tag, [self.task.answer_scores(reply) for reply in done]
                start += len(requests)


NEUTRAL_SETTINGS = ("local_files_only",)
"""Settings of ``score.hf`` that do not change the scores (``batch_size`` and ``lookahead`` do:
a crop's batch neighbours and padding change bf16 logits)."""


def fingerprint_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """``score.hf`` as the cache fingerprint records it: ``dtype`` resolved to the dtype the
    weights load in on this machine (``auto``: fp32 on CPU, bf16 or fp32 on CUDA), since that,
    not the word ``auto``, shapes the logits."""
    dtype = section["dtype"]
    if dtype == "auto" and not torch_installed():
        return dict(section)  # no scoring here (HFScorer.from_params refuses): params checks only
    if dtype == "auto":
        wanted = section["device"]
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = str(pick_dtype("auto", torch.device(wanted))).removeprefix("torch.")
    return {**section, "dtype": dtype}


def model_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """``score.hf`` of a ``score`` section as it shapes the compare stage's answers
    (fingerprints): without ``lookahead``, which groups the score stage's images only."""
    resolved = fingerprint_settings(section["hf"])
    neutral = (*NEUTRAL_SETTINGS, "lookahead")
    return {k: v for k, v in resolved.items() if k not in neutral}


BACKEND = ScorerBackend(
    check=check_params,
    units=lambda section: prompt_unit(
        section,
        "hf",
        NEUTRAL_SETTINGS,
        lambda s, task: HFScorer.from_task(s["hf"], task, s["readout"]),
        backend_code_version(__name__),
        fingerprint_settings,
    ),
    ask=lambda section, task, readout: HFScorer.from_task(section["hf"], task, readout),
    ask_settings=model_settings,
)
