"""Prompts: every standard and K renders, the coded prompt is verbatim, chat templates work."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import build_idefics3, build_qwen25vl
from transformers import AutoProcessor

from dogiqa import prompts
from dogiqa.errors import DogIQAError

# The authors' coded prompt (K = 7, word standard), as quoted in the reference notes, with its
# "score in quality" slip.
AUTHORS_WORD_K7 = (
    "You are a helpful assistant to help me evaluate the quality of the image. You will be given "
    "standards about each quality level. The quality standard is list as follows:\n7: Perfect!\n"
    "6: Excellent!\n5: Good!\n4: Fair!\n3: Bad!\n2: Poor!\n1: Very Bad!\n\nThe higher the image "
    "quality, the higher the score should be. Please strictly follow the USER's format, otherwise "
    "the result will be invalid. <|image|> Please evaluate the quality of the image and score in "
    "quality. Only tell me the number. Do not analysis the image."
)
# Seed 000, section 3.1.
PAPER_SYSTEM_WORD_K7 = (
    "You are a helpful assistant to evaluate image quality. You will be given standards for each "
    "quality level. The quality standard is listed as follows: 7: Perfect, 6: Excellent, 5: Good, "
    "4: Fair, 3: Bad, 2: Poor, 1: Very Bad. The higher the image quality is, the higher the score "
    "should be."
)
PAPER_USER_K7 = "Please evaluate the quality of the image and score in [1, 2, 3, 4, 5, 6, 7]."
WORDS = {
    3: ["Excellent", "Fair", "Poor"],
    5: ["Excellent", "Good", "Fair", "Bad", "Poor"],
    7: ["Perfect", "Excellent", "Good", "Fair", "Bad", "Poor", "Very Bad"],
    9: ["Perfect", "Excellent", "Very Good", "Good", "Fair", "Bad", "Poor", "Awful", "Very Bad"],
}
ALL_IDS = [
    f"{style}_{standard}_k{k}"
    for style in prompts.STYLES
    for standard in ("number", "word")
    for k in prompts.LEVELS
]
ALL_IDS += ["paper_sentence_k7", "authors_sentence_k7"]


def test_ids_cover_every_style_standard_and_k() -> None:
    assert sorted(prompts.prompt_ids()) == sorted(ALL_IDS)
    with pytest.raises(DogIQAError, match="unknown prompt id 'paper_sentence_k5'"):
        prompts.get("paper_sentence_k5")


@pytest.mark.parametrize("prompt_id", ALL_IDS)
def test_every_prompt_renders_with_its_levels(prompt_id: str) -> None:
    prompt = prompts.get(prompt_id)
    system, user = prompts.render(prompt_id)
    text = (system or "") + user
    assert user.count(prompt.image_marker) == 1
    assert "{" not in text and "}" not in text  # every placeholder filled
    if prompt.standard == "word":
        for level, word in zip(range(prompt.K, 0, -1), WORDS[prompt.K], strict=True):
            assert f"{level}: {word}" in text
    if prompt.standard == "number" or prompt.style == "paper":
        levels = ", ".join(str(i) for i in range(1, prompt.K + 1))
        assert f"score in [{levels}]" in text
    if prompt.standard == "sentence":
        assert (
            "4: Fair! The overall quality of the image is fair. There are certain merits but "
            "also some deficiencies." in text
        )
        assert "7: Perfect! The overall quality of the image is unparalleled" in text
        assert text.count("The overall quality of the image is") == 7


def test_authors_prompt_is_the_coded_text() -> None:
    assert prompts.render("authors_word_k7") == (None, AUTHORS_WORD_K7)


def test_paper_prompt_is_the_printed_text() -> None:
    assert prompts.render("paper_word_k7") == (PAPER_SYSTEM_WORD_K7, "<|image|>" + PAPER_USER_K7)


def test_chat_messages_put_the_image_where_the_marker_was() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    messages = prompts.chat_messages(prompts.get("authors_word_k7"), image)
    assert [m["role"] for m in messages] == ["user"]
    before, part, after = messages[0]["content"]
    assert part == image
    assert before["text"].endswith("otherwise the result will be invalid. ")
    assert after["text"].startswith(" Please evaluate the quality")
    paper = prompts.chat_messages(prompts.get("paper_word_k7"))
    assert [m["role"] for m in paper] == ["system", "user"]
    assert paper[1]["content"] == [{"type": "image"}, {"type": "text", "text": PAPER_USER_K7}]


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("models")
    return {
        "qwen2_5_vl": AutoProcessor.from_pretrained(build_qwen25vl(Path(root / "qwen"))),
        "idefics3": AutoProcessor.from_pretrained(build_idefics3(Path(root / "idefics"))),
    }


@pytest.mark.parametrize(
    "prompt_id",
    [
        "paper_word_k7",
        "authors_word_k7",
        "paper_number_k3",
        "paper_sentence_k7",
        "authors_number_k9",
    ],
)
def test_chat_template_renders_with_each_models_image_token(processors, prompt_id) -> None:
    system, user = prompts.render(prompt_id)
    before, _, after = user.partition("<|image|>")
    qwen = prompts.render_chat(processors["qwen2_5_vl"], prompt_id)
    assert qwen.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert before + "<|vision_start|><|image_pad|><|vision_end|>" + after in qwen
    assert qwen.endswith("<|im_start|>assistant\n")
    if system:
        assert f"<|im_start|>system\n{system}<|im_end|>" in qwen
    idefics = prompts.render_chat(processors["idefics3"], prompt_id)
    assert idefics.count("<image>") == 1
    assert before + "<image>" + after in idefics
    assert idefics.endswith("Assistant:")
