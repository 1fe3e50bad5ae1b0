"""Prompting systems as data: the nine systems, their conversations through real chat templates
and processors, the reading of their replies, and the exemplar rule.

The tiny models' chat templates (tests/tiny_models.py) are those of Qwen2.5-VL (its hub
``chat_template.json``: one ``<|vision_start|><|image_pad|><|vision_end|>`` per image part of any
turn, text parts as they are, list content in every role) and SmolVLM / Idefics3 (``<image>`` per
image part); the processors are transformers' own, which hand the n-th image to the n-th
placeholder (Qwen2.5-VL) or split a flat image list by the placeholders of each text (Idefics3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_models import build_idefics3, build_qwen25vl
from transformers import AutoProcessor

from dogiqa import prompts, schema, systems
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.scoring.base import Reply
from dogiqa.scoring.hf import option_token_ids

PROMPT = prompts.get("paper_word_k7")
SIZES = {"single": 1, "double": 2, "multiple": 4}
PLACEHOLDERS = {"qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>", "idefics3": "<image>"}


def system_texts() -> list[str]:
    """The systems' wording and answers, for the tiny tokenizers' corpus."""
    texts = [s.user or "" for s in systems.all_systems().values()]
    return texts + ["Answer: A. Answer: B. Answer: same. Ranking: 1, 2, 3, 4"] * 5


def exemplar(name: str, mos_norm: float) -> systems.Exemplar:
    return systems.Exemplar(name, "unused.png", mos_norm, None)


def task_of(system_id: str, size: int | None = None) -> systems.Task:
    """The system's task with made-up exemplars (MOS 0.2, 0.9, 0.55, 0.1, ...)."""
    system = systems.get(system_id)
    size = size or SIZES[system.stimulus]
    values = [0.2, 0.9, 0.55, 0.1, 0.7, 0.3, 0.8, 0.05]
    shown = tuple(exemplar(f"ex{i}", v) for i, v in enumerate(values[:size]))
    exemplars = shown if system.strategy == "in_context" else ()
    return systems.Task(system, PROMPT if size == 1 else None, size, exemplars)


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 6 * i, 56, 3), dtype=np.uint8)) for i in range(n)
    ]


def test_nine_systems_cross_three_procedures_with_three_strategies() -> None:
    found = {(s.stimulus, s.strategy) for s in systems.all_systems().values()}
    assert found == {(a, b) for a in systems.STIMULI for b in systems.STRATEGIES}
    assert len(systems.system_ids()) == 9
    for system in systems.all_systems().values():
        cot = system.strategy == "chain_of_thought"
        assert system.readouts == (
            ("generate",)
            if cot or system.stimulus == "multiple"
            else (
                "logits",
                "generate",
            )
        )
        assert (system.answer is not None) == (system.strategy == "in_context")


def test_the_plain_system_is_dogiqas_prompt_byte_for_byte() -> None:
    task = systems.as_task(PROMPT)
    assert task.plain and task.id == "paper_word_k7" and task.options == tuple("1234567")
    assert task.messages == prompts.chat_messages(PROMPT)
    request = task.request(images(1))
    assert request.messages == prompts.chat_messages(PROMPT) and len(request.images) == 1


@pytest.mark.parametrize("system_id", ["single_in_context", "double_in_context"])
def test_in_context_turns_carry_the_human_judgement(system_id: str) -> None:
    task = task_of(system_id)
    roles = [turn["role"] for turn in task.messages]
    first_user = 1 if system_id.startswith("single") else 0  # the paper prompt's system turn
    assert roles[first_user:] == ["user", "assistant", "user"]
    answer = task.messages[first_user + 1]["content"][0]["text"]
    # single: MOS 0.2 on 7 levels is 1 + round(0.2 * 6) = 2; double: 0.2 < 0.9, so B
    assert answer == ("2" if system_id.startswith("single") else "B")
    assert task.messages[first_user]["content"] == task.messages[-1]["content"]


def test_a_ranking_exemplar_lists_its_images_best_first() -> None:
    task = task_of("multiple_in_context")  # MOS 0.2, 0.9, 0.55, 0.1
    assert task.messages[1]["content"][0]["text"] == "Ranking: 2, 3, 1, 4"
    question = "".join(p.get("text", "<img>") for p in task.messages[-1]["content"])
    assert question.startswith("Image 1: <img>\nImage 2: <img>\nImage 3: <img>\nImage 4: <img>\n")
    assert "For the shown 4 images" in question


def test_exemplar_levels_follow_the_normalised_mos() -> None:
    assert [systems.exemplar_level(v, 7) for v in (0.0, 0.08, 0.5, 0.92, 1.0)] == [1, 1, 4, 7, 7]
    # 0.125 * 4 = 0.5 and 0.375 * 4 = 1.5: numpy rounds half to even
    assert [systems.exemplar_level(v, 5) for v in (0.125, 0.375)] == [1, 3]


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("systems")
    return {
        "qwen2_5_vl": AutoProcessor.from_pretrained(
            build_qwen25vl(root / "qwen", texts=system_texts())
        ),
        "idefics3": AutoProcessor.from_pretrained(
            build_idefics3(root / "idefics", texts=system_texts())
        ),
    }


@pytest.mark.parametrize("model", PLACEHOLDERS)
@pytest.mark.parametrize("system_id", systems.system_ids())
def test_every_system_renders_through_the_real_processors(processors, model, system_id) -> None:
    processor = processors[model]
    task = task_of(system_id)
    exemplar_images = [im.resize((48, 48)) for im in images(len(task.exemplars or ()), seed=9)]
    request = task.request(images(task.size), exemplar_images)
    text = prompts.render_messages(processor, request.messages, system_id)
    assert (
        text.count(PLACEHOLDERS[model])
        == len(request.images)
        == task.size * (2 if task.system.strategy == "in_context" else 1)
    )
    assert text.endswith("<|im_start|>assistant\n" if model == "qwen2_5_vl" else "Assistant:")
    for turn in request.messages:
        for part in turn["content"]:
            if part["type"] == "text":
                assert part["text"] in text
    batch = processor(text=[text, text], images=request.images * 2, padding=True)
    assert len(batch["input_ids"]) == 2  # the processor accepts the images for the placeholders
    if task.options:  # every answer is one token of the vocabulary
        assert len(option_token_ids(processor.tokenizer, task.options)) == len(task.options)


def test_image_parts_are_replaced_in_order_and_written_as_markers() -> None:
    request = task_of("double_in_context").request(images(2), images(2, seed=1))
    urls = [{"type": "image_url", "image_url": {"url": f"u{i}"}} for i in range(4)]
    sent = request.image_parts(urls)
    shown = [p["image_url"]["url"] for turn in sent for p in turn["content"] if "image_url" in p]
    assert shown == ["u0", "u1", "u2", "u3"]
    assert request.messages[0]["content"][1] == {"type": "image"}  # the original is untouched
    marked = request.marker_messages("<|image|>")
    assert [m["content"].count("<|image|>") for m in marked] == [2, 0, 2]
    assert marked[1] == {"role": "assistant", "content": "B"}


# --- reading replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("Description: sharp, well exposed. Score: 6.", 6),
        ("Description: noisy. Score: [3]", 3),
        ("score: 2. On reflection... Score: 5", 5),  # the last one counts
        ("Score: 8", None),  # no level of K = 7
        ("The quality is good.", None),
    ],
)
def test_chain_of_thought_reads_the_last_score(text: str, level: int | None) -> None:
    task = task_of("single_cot")
    assert task.choice(text) == level
    scores = task.answer_scores(Reply(text=text))
    assert scores.fallback == (level is None)
    assert scores.argmax == (level or 1) and scores.raw == text  # fallback: level 1, flagged


@pytest.mark.parametrize(
    ("system_id", "text", "option"),
    [
        ("double_standard", "A", 1),
        ("double_standard", " B.", 2),
        ("double_standard", "Same", 3),
        ("double_standard", "Image A", None),
        ("double_cot", "Description: B is blurred. Answer: A.", 1),
        ("double_cot", "Description: alike. Answer: [same]", 3),
        ("double_cot", "A is better.", None),
        ("single_standard", "5", 5),
        ("single_standard", "5.", None),  # the authors' int(text)
    ],
)
def test_answers_are_parsed_as_each_system_asks(system_id, text, option) -> None:
    assert task_of(system_id).choice(text) == option


@pytest.mark.parametrize(
    ("text", "ranking"),
    [
        ("Ranking: 2, 4, 1, 3", (1, 3, 0, 2)),
        ("Description: ... Ranking: [3 > 1 > 4 > 2].", (2, 0, 3, 1)),
        ("Ranking: 2, 4, 1", None),  # not every image
        ("Ranking: 2, 2, 1, 3", None),  # one twice
        ("Ranking: 1, 2, 3, 5", None),
        ("2, 4, 1, 3", None),  # no "Ranking:"
    ],
)
def test_a_ranking_must_name_every_image_once(text: str, ranking) -> None:
    task = task_of("multiple_standard")
    assert task.ranking(Reply(text=text)) == ranking
    assert task.ranking(Reply(text="Ranking: 1, 2, 3, 4", error="ValueError: x")) is None


def test_option_logits_become_a_three_way_distribution() -> None:
    task = task_of("double_standard")
    scores = task.answer_scores(Reply((2.0, 0.0, -np.inf), 0.0))
    assert scores.probs[2] == 0.0 and scores.argmax == 1 and scores.levels_found == 2
    assert scores.probs[0] == pytest.approx(np.exp(2) / (np.exp(2) + 1))
    failed = task.answer_scores(Reply.failed("RuntimeError: refused"))
    assert failed.fallback and failed.error == "RuntimeError: refused"


def test_replies_survive_a_json_line() -> None:
    import json

    reply = Reply((1.5, -np.inf, 0.25), -0.5, "A", "")
    line = json.dumps(reply.to_json(), allow_nan=False)
    assert Reply.from_json(json.loads(line)) == reply


# --- exemplars ------------------------------------------------------------------------------------


SAMPLE = schema.Sample(10, 0)
"""The run's sample of :func:`labels`: 10 of the 29 images with a file."""


def labels(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    mos = rng.permutation(np.linspace(0.0, 1.0, n))
    return pd.DataFrame(
        {
            "image": [f"im{i:02d}.png" for i in range(n)],
            "path": [f"data/raw/x/im{i:02d}.png" if i != n - 1 else "" for i in range(n)],
            "mos": mos * 100,
            "mos_norm": mos,
            "order": range(n),
        }
    )


def test_exemplars_are_never_evaluated_images() -> None:
    table = labels()
    chosen = systems.choose_exemplars(table, 6, 0, SAMPLE)
    names = [e.image for e in chosen]
    evaluated = set(schema.stage_images(table, SAMPLE)["image"])
    assert len(evaluated) == 10 and len(set(names)) == 6 and not evaluated & set(names)
    assert "im29.png" not in names  # no image file
    assert systems.choose_exemplars(table, 6, 0, SAMPLE) == chosen  # seeded
    assert systems.choose_exemplars(table, 6, 1, SAMPLE) != chosen
    # Another run's sample is another pool: its exemplars are never its evaluated images.
    other = schema.Sample(10, 7)
    names = {e.image for e in systems.choose_exemplars(table, 6, 0, other)}
    assert not names & set(schema.stage_images(table, other)["image"])


def test_exemplars_span_the_quality_range() -> None:
    table = labels()
    outside = ~schema.sampled(table, SAMPLE) & (table["path"] != "")
    pool = table[outside].sort_values("mos_norm")
    thirds = np.array_split(pool["image"].to_numpy(), 3)
    for seed in range(5):
        chosen = [e.image for e in systems.choose_exemplars(table, 3, seed, SAMPLE)]
        assert sorted(next(i for i, t in enumerate(thirds) if n in t) for n in chosen) == [0, 1, 2]


def test_too_few_held_out_images_is_one_clear_error() -> None:
    with pytest.raises(ParamError, match="sample.size: in-context prompting needs 25 exemplar"):
        systems.choose_exemplars(labels(), 25, 0, SAMPLE)
    # A run that evaluates every image (the paper's sample) has none to show.
    with pytest.raises(ParamError, match="the labels table has 0 .*0 evaluates every image"):
        systems.choose_exemplars(labels(), 1, 0, schema.Sample(0, 0))


# --- params --------------------------------------------------------------------------------------


def score_section(**changes: object) -> dict[str, object]:
    section = {"system": "single_standard", "prompt": "paper_word_k7", "K": 7, "readout": "logits"}
    return {**section, "exemplars": 1, "exemplar_seed": 0, **changes}


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"system": "double_standard"}, "score.system"),
        ({"system": "nine"}, "score.system"),
        ({"system": "single_cot"}, "score.readout"),
        (
            {"system": "single_cot", "readout": "generate", "prompt": "authors_word_k7"},
            "score.prompt",
        ),
    ],
)
def test_score_system_params_fail_naming_the_param(changes, param) -> None:
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        systems.score_task(score_section(**changes))


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"system": "single_cot"}, "compare.system"),
        ({"system": "multiple_standard"}, "compare.readout"),
        ({"system": "double_cot"}, "compare.readout"),
    ],
)
def test_compare_system_params_fail_naming_the_param(changes, param) -> None:
    section = {"system": "double_standard", "readout": "logits", "list_size": 4}
    section = {**section, "exemplars": 1, "exemplar_seed": 0, **changes}
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        systems.compare_task(section)


def test_in_context_without_a_dataset_says_where_exemplars_come_from(tmp_path: Path) -> None:
    task = systems.score_task(score_section(system="single_in_context"))
    assert task.exemplars is None and task.settings()["exemplars"] is None
    with pytest.raises(DogIQAError, match="outside the evaluated sample"):
        task.request(images(1))


# --- the stages' params ---------------------------------------------------------------------------


def study(**changes: object) -> dict[str, object]:
    from stage_project import study_params

    return study_params(**changes)


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"score__system": "single_cot"}, "score.system"),  # the classical backend has no prompt
        ({"score__system": "double_standard"}, "score.system"),
        ({"score__exemplars": 0}, "score.exemplars"),
    ],
)
def test_score_stage_checks_the_system_params(changes, param) -> None:
    from dogiqa import score

    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        score.validate_params(study(**changes))


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        (
            {
                "compare__system": "multiple_standard",
                "compare__readout": "generate",
                "compare__design": "all",
            },
            "compare.design",
        ),
        ({"compare__backend": "classical"}, "compare.backend"),
        ({"compare__backend": "hf", "score__hf__dtype": "float8"}, "score.hf.dtype"),
        ({"compare__list_size": 12}, "compare.list_size"),
        ({"rank__methods": ["elo"]}, "rank.methods"),
        ({"rank__main": "thurstone_map:soft"}, "rank.main"),
    ],
)
def test_compare_and_rank_check_their_params(changes, param) -> None:
    from dogiqa import compare, rank

    params = study(**changes)
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        compare.validate_params(params)
        rank.validate_params(params)


def test_the_default_params_leave_compare_out_of_the_pipeline() -> None:
    from dogiqa import runs

    params = study()
    assert params["run_comparisons"] == {} == runs.comparison_items(runs.declared(params))
    # The prompting run (disabled) compares; its profile picks its systems.
    prompting = runs.run_params(params, "prompting")
    assert runs.declared(params)["prompting"].compare == ("livec", "agiqa")
    assert prompting["score"]["system"] == "single_in_context"
    assert prompting["compare"]["system"] == "double_standard"


@pytest.mark.parametrize(
    ("stage", "change", "param"),
    [
        ("score", "score__system=nine", "score.system"),
        ("compare", "compare__system=nine", "compare.system"),
        ("compare", "compare__system=single_cot", "compare.system"),
    ],
)
def test_a_bad_system_name_is_one_line_before_any_work(tmp_path: Path, stage, change, param):
    """Through the command line, as DVC runs a stage: a bad system is refused in one line naming
    the param, and nothing is read or written (no labels, regions or images exist here)."""
    from stage_project import run_cli, write_params

    key, value = change.split("=")
    write_params(tmp_path, study(score__backend="hf", compare__backend="hf", **{key: value}))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    result = run_cli(tmp_path, stage, "--dataset", "livec")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dogiqa {stage}: error: params: {param}: ")
    assert "got 'nine'" in lines[0] or "'nine'; known:" in lines[0] or "score stage" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]
