"""Prompts of standard-guided scoring, read from ``resources/prompts.yaml``.

Each prompt has an id ``<style>_<standard>_k<K>``: style ``paper`` (seed 000, section 3.1) or
``authors`` (the authors' coded prompt), standard ``number``, ``word`` or ``sentence`` (K = 7
only), K in {3, 5, 7, 9}. ``render`` gives the plain texts; ``chat_messages`` the chat turns with
the image as its own content part; ``render_chat`` the string a processor's chat template makes.
The prompting systems of seed 003 (``dogiqa.systems``) build their conversations from these
prompts with :func:`content_parts` and render them with :func:`render_messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from dogiqa.errors import DogIQAError

STYLES = ("paper", "authors")
STANDARDS = ("number", "word", "sentence")
LEVELS = (3, 5, 7, 9)
IMAGE_PART: dict[str, str] = {"type": "image"}


@dataclass(frozen=True)
class Prompt:
    id: str
    style: str
    standard: str
    K: int
    system: str | None
    user: str
    """User text with the image marker where the image goes."""
    image_marker: str


@cache
def _data() -> dict[str, Any]:
    text = resources.files("dogiqa").joinpath("resources/prompts.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def resource_section(name: str) -> Any:
    """A top-level section of ``resources/prompts.yaml`` (e.g. ``systems``)."""
    return _data()[name]


def _descriptions(standard: str, k: int) -> list[str] | None:
    """Level texts from K down to 1, or None when the standard has none for this K."""
    data = _data()
    if standard == "number":
        return []
    table = data["words" if standard == "word" else "sentences"]
    return list(table[k]) if k in table else None


def _build(style: str, standard: str, k: int) -> Prompt | None:
    texts = _descriptions(standard, k)
    if texts is None:
        return None
    spec = _data()["styles"][style]
    fields = {"levels": ", ".join(str(i) for i in range(1, k + 1)), "standard": ""}
    if texts:
        entry, separator = spec["entry"][standard], spec["separator"][standard]
        levels = range(k, 0, -1)
        fields["standard"] = separator.join(
            entry.format(level=level, text=text) for level, text in zip(levels, texts, strict=True)
        )
    system = spec["system"][standard] if spec["system"] else None
    return Prompt(
        id=f"{style}_{standard}_k{k}",
        style=style,
        standard=standard,
        K=k,
        system=system.format(**fields) if system else None,
        user=spec["user"][standard].format(**fields),
        image_marker=_data()["image_marker"],
    )


@cache
def all_prompts() -> dict[str, Prompt]:
    """Every defined prompt by id."""
    built = (_build(s, std, k) for s in STYLES for std in STANDARDS for k in LEVELS)
    return {p.id: p for p in built if p is not None}


def prompt_ids() -> list[str]:
    return list(all_prompts())


def get(prompt_id: str) -> Prompt:
    try:
        return all_prompts()[prompt_id]
    except KeyError:
        raise DogIQAError(f"unknown prompt id {prompt_id!r}; known: {prompt_ids()}") from None


def render(prompt_id: str) -> tuple[str | None, str]:
    """(system text or None, user text with the image marker)."""
    prompt = get(prompt_id)
    return prompt.system, prompt.user


def content_parts(
    text: str, marker: str, image_part: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``text`` as chat content parts: each ``marker`` becomes ``image_part`` (default
    ``{"type": "image"}``), the text around them text parts; empty text parts are dropped."""
    image = image_part or IMAGE_PART
    parts: list[dict[str, Any]] = []
    for number, piece in enumerate(text.split(marker)):
        if number:
            parts.append(dict(image))
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def chat_messages(prompt: Prompt, image_part: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Chat turns in the content-parts format that chat templates and OpenAI servers read.

    The user text is split at the image marker; ``image_part`` (default ``{"type": "image"}``)
    is put in its place. Empty text parts are dropped.
    """
    if prompt.image_marker not in prompt.user:
        raise DogIQAError(f"prompt {prompt.id}: user text has no image marker")
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
    user = content_parts(prompt.user, prompt.image_marker, image_part)
    messages.append({"role": "user", "content": user})
    return messages


def render_messages(processor: Any, messages: list[dict[str, Any]], what: str) -> str:
    """Chat turns through ``processor``'s chat template, ending with the generation prompt
    (``what`` names them in the one-line error when the template fails)."""
    try:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except (ValueError, TypeError, KeyError) as exc:
        raise DogIQAError(f"{what}: the processor's chat template failed ({exc})") from None


def render_chat(processor: Any, prompt_id: str) -> str:
    """The prompt through ``processor``'s chat template, ending with the generation prompt."""
    return render_messages(processor, chat_messages(get(prompt_id)), f"prompt {prompt_id}")


def level_words(k: int) -> list[str] | None:
    """The word standard's names of the levels 1..K, lowest first (None where it has none)."""
    texts = _descriptions("word", k)
    return None if texts is None else texts[::-1]
