"""Tiny random-weight image-text-to-text models saved to a folder, for offline tests.

``build_qwen25vl(folder)`` and ``build_idefics3(folder)`` write a model, a processor and a
tokenizer that ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained(folder)`` load
with no network. The tokenizer is a byte-level BPE trained in memory on the study's prompts:
the Qwen-style one splits digits from a preceding space (only "5" is a token, as in Qwen2), the
Idefics3 one also learns " 5" as one token (so both spellings of a level exist). The output rows
of the digit tokens 1-9 are scaled up so that level tokens often win the greedy choice, which lets
tests compare the logits readout with generation. ``texts`` adds texts to the tokenizer's
training corpus (the prompting systems' wording, so that their answer words such as "same" are
single tokens); without it the models are the ones the other tests were written against.
Random weights: mechanics only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from dogiqa import prompts

DIGIT_BOOST = 8.0

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IDEFICS_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
# SmolVLM's template: "User:<image>...<end_of_utterance>\nAssistant:" (the answer follows a colon).
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _corpus(extra: Sequence[str] = ()) -> list[str]:
    texts = []
    for prompt in prompts.all_prompts().values():
        texts += [prompt.system or "", prompt.user]
    answers = " ".join(f"Assistant: {i}\nassistant\n{i}" for i in range(1, 10))
    return texts + [answers] * 20 + list(extra)


def _tokenizer(
    special: list[str], split_digits: bool, texts: Sequence[str] = (), **tokens: str
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=special,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **tokens)


def _boost_digits(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    head = model.get_output_embeddings().weight
    ids = {
        tokenizer.convert_tokens_to_ids(t)
        for t in [*map(str, range(1, 10)), *(f"Ġ{i}" for i in range(1, 10))]
    }
    ids.discard(tokenizer.unk_token_id)
    with torch.no_grad():
        for token in ids:
            if token is not None and 0 <= token < head.shape[0]:
                head[token] *= DIGIT_BOOST


def build_qwen25vl(
    folder: Path,
    seed: int = 0,
    pixels: tuple[int, int] = (28 * 28, 28 * 28 * 16),
    texts: Sequence[str] = (),
) -> Path:
    """A ~30k-parameter Qwen2.5-VL with processor, saved to ``folder``; the image processor
    resizes images to between ``pixels`` (min, max) pixels: 1 to 16 image tokens by default,
    (3136, 12845056), Qwen2.5-VL-7B-Instruct's own limits, for up to 16384. ``texts`` join the
    tokenizer's training corpus (see the module's docstring)."""
    tokenizer = _tokenizer(
        QWEN_SPECIAL,
        split_digits=True,
        texts=texts,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=pixels[0],
            max_pixels=pixels[1],
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
        ),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_TEMPLATE,
    )
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 2, 4],
        },
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 32,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [0],
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _save(model, processor, tokenizer, folder)


def build_idefics3(folder: Path, seed: int = 0, texts: Sequence[str] = ()) -> Path:
    """A tiny Idefics3 (SmolVLM architecture) with processor, saved to ``folder``."""
    tokenizer = _tokenizer(
        IDEFICS_SPECIAL,
        split_digits=False,
        texts=texts,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IDEFICS_SPECIAL}
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}
        ),
        tokenizer=tokenizer,
        image_seq_len=4,  # (32 / 8) ** 2 patches / scale_factor ** 2
        chat_template=IDEFICS_TEMPLATE,
    )
    text = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "tie_word_embeddings": False,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=2,
        image_token_id=ids["<image>"],
        tie_word_embeddings=False,
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    return _save(model, processor, tokenizer, folder)


def _save(
    model: torch.nn.Module, processor: object, tokenizer: PreTrainedTokenizerFast, folder: Path
) -> Path:
    _boost_digits(model, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BUILDERS = {"qwen2_5_vl": build_qwen25vl, "idefics3": build_idefics3}
