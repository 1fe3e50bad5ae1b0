"""Aggregation variants on small synthetic regions/scores tables shaped as in the data contracts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from dogiqa import aggregate, paths
from dogiqa.errors import DogIQAError, ParamError

PARAMS = {
    "aggregate": {
        "variants": "all",
        "readouts": ["argmax", "expected"],
        "main": "paper:argmax",
        "prompt_id": "auto",
        "prompt_ids": "all",
        "ensemble": "all",
        "llmiqa_lambda": 1.0,
        "c_max": "dataset",
        "missing": "report",
        "classical_K": [],
    },
    "sample": {"size": 0, "seed": 0},
}

# Image a: global + 2 masks + complement (c=3). Image b: Algorithm 1's fallback, one `whole`
# region (c=1). Image c: one mask whose score is missing. Image d: labelled, never segmented.
REGIONS = pd.DataFrame(
    [
        # image, region, kind, area, area_authors, count
        ("a", 0, "global", 100, 100, 3),
        ("a", 1, "mask", 50, 50, 3),
        ("a", 2, "mask", 30, 30, 3),
        ("a", 3, "complement", 20, 10, 3),
        ("b", 0, "global", 100, 100, 1),
        ("b", 1, "whole", 100, 100, 1),
        ("c", 0, "global", 100, 100, 1),
        ("c", 1, "mask", 100, 100, 1),
    ],
    columns=["image", "region", "kind", "area", "area_authors", "count"],
).assign(height=10, width=10)

ARGMAX = {("a", 0): 6, ("a", 1): 7, ("a", 2): 4, ("a", 3): 2, ("b", 0): 3, ("b", 1): 2, ("c", 0): 5}
EXPECTED = {key: value - 0.25 for key, value in ARGMAX.items()}


def _scores(prompt: str = "p1", shift: float = 0.0) -> pd.DataFrame:
    rows = [
        {
            "image": img,
            "region": reg,
            "prompt_id": prompt,
            "K": 7,
            "argmax": ARGMAX[(img, reg)] + shift,
            "expected": EXPECTED[(img, reg)] + shift,
            "raw": "",
        }
        for img, reg in ARGMAX
    ]
    return pd.DataFrame(rows)


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": ["a", "b", "c", "d"],
            "path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "mos": [4.0, 2.0, 3.0, 1.0],
        }
    )


def _params(**changes) -> dict:
    params = copy.deepcopy(PARAMS)
    params["aggregate"].update(changes)
    return params


def _compute(scores: pd.DataFrame | None = None, **changes) -> dict[str, pd.Series]:
    p = aggregate.validate_params(_params(**changes))
    images = pd.Index(["a", "b", "c", "d"], name="image")
    predictions, _ = aggregate.compute(REGIONS, _scores() if scores is None else scores, images, p)
    return predictions


def test_paper_formula_with_area_weights_and_s_seg():
    pred = _compute()
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    assert pred["paper:argmax"]["a"] == pytest.approx((6 + local_a) / 2 + 3 * 7 / 3)
    assert pred["paper:argmax"]["b"] == pytest.approx((3 + 2) / 2 + 1 * 7 / 3)
    assert pred["no_sseg:argmax"]["a"] == pytest.approx((6 + local_a) / 2)
    assert pred["local_only_area:argmax"]["a"] == pytest.approx(local_a)
    assert pred["local_area_sseg:argmax"]["a"] == pytest.approx(local_a + 7)


def test_authors_variants_use_the_coded_areas():
    pred = _compute()
    coded = (7 * 50 + 4 * 30 + 2 * 10) / 90
    true = (7 * 50 + 4 * 30 + 2 * 20) / 100
    assert pred["authors_code:argmax"]["a"] == pytest.approx(coded + 0.1 * 3 + 0.5 * 6)
    assert pred["authors_script:argmax"]["a"] == pytest.approx(coded + 0.1 * 3 + 6)
    assert pred["authors_code_true_area:argmax"]["a"] == pytest.approx(true + 0.3 + 3)
    assert pred["paper_authors_area:argmax"]["a"] == pytest.approx((6 + coded) / 2 + 7)


def test_mean_global_and_expected_readout():
    pred = _compute()
    assert pred["local_mean:argmax"]["a"] == pytest.approx((7 + 4 + 2) / 3)
    assert pred["local_mean_sseg:argmax"]["a"] == pytest.approx((7 + 4 + 2) / 3 + 7)
    assert pred["paper_mean:argmax"]["a"] == pytest.approx((6 + 13 / 3) / 2 + 7)
    assert pred["global_only:argmax"]["a"] == 6
    # every level 0.25 lower: the area-weighted and plain means drop by 0.25 as well
    assert pred["global_only:expected"]["a"] == pytest.approx(5.75)
    assert pred["no_sseg:expected"]["a"] == pytest.approx(pred["no_sseg:argmax"]["a"] - 0.25)


def test_missing_region_score_or_image_leaves_the_prediction_missing():
    pred = _compute()
    # c: its mask has no score -> every variant that needs the regions is missing
    assert np.isnan(pred["paper:argmax"]["c"])
    assert np.isnan(pred["local_mean:argmax"]["c"])
    assert pred["global_only:argmax"]["c"] == 5
    # d: no regions, no scores at all
    assert all(np.isnan(series["d"]) for series in pred.values())


def test_c_max_fixed_value():
    pred = _compute(c_max=31)
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    assert pred["paper:argmax"]["a"] == pytest.approx((6 + local_a) / 2 + 3 * 7 / 31)


def test_llmiqa_ensemble_over_prompts_and_per_prompt_names():
    scores = pd.concat([_scores("p1"), _scores("p2", shift=1.0)], ignore_index=True)
    pred = _compute(scores, llmiqa_lambda=0.5)
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    member1 = 6 + 0.5 * local_a
    member2 = 7 + 0.5 * (local_a + 1)
    assert pred["llmiqa:argmax"]["a"] == pytest.approx((member1 + member2) / 2)
    # the main prompt (auto = first) has plain names, the other one an @ suffix
    assert pred["global_only:argmax"]["a"] == 6
    assert pred["global_only:argmax@p2"]["a"] == 7
    assert "llmiqa:argmax@p2" not in pred


def test_prompt_selection_errors_name_the_param():
    with pytest.raises(ParamError, match="aggregate.prompt_id"):
        _compute(prompt_id="nope")
    with pytest.raises(ParamError, match="aggregate.ensemble"):
        _compute(ensemble=["p1", "nope"])


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"variants": ["paper", "bogus"]}, "aggregate.variants"),
        ({"readouts": ["median"]}, "aggregate.readouts"),
        ({"main": "paper:median"}, "aggregate.main"),
        ({"variants": ["global_only"]}, "aggregate.main"),
        ({"c_max": 0}, "aggregate.c_max"),
        ({"c_max": "max"}, "aggregate.c_max"),
        ({"missing": "zero"}, "aggregate.missing"),
        ({"llmiqa_lambda": "one"}, "aggregate.llmiqa_lambda"),
    ],
)
def test_bad_params_fail_before_any_work(tmp_path, monkeypatch, changes, param):
    monkeypatch.chdir(tmp_path)  # no tables here: a param error must come first
    with pytest.raises(ParamError, match=param):
        aggregate.run("toy", _params(**changes))


def _write_inputs(root) -> None:
    for path, frame in (
        (paths.labels_table("toy"), _labels()),
        (paths.regions_table("toy"), REGIONS),
        (paths.scores_table("toy"), _scores()),
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(root / path, index=False)


def test_run_writes_long_table_and_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    table = aggregate.run("toy", _params(variants=["paper", "global_only"], readouts=["argmax"]))
    written = pd.read_csv(paths.predictions_table("toy"))
    assert list(written.columns) == ["image", "variant", "prediction", "mos"]
    assert len(written) == len(table) == 2 * 4
    assert written.variant.unique().tolist() == ["paper:argmax", "global_only:argmax"]
    assert written.image.tolist()[:4] == ["a", "b", "c", "d"]
    summary = json.loads(paths.summary("predictions", "toy").read_text())
    assert summary["missing"] == {"paper:argmax": 2, "global_only:argmax": 1}
    assert summary["missing_main_images"] == ["c", "d"]
    assert summary["without_regions"] == 1
    assert summary["c_max"] == 3
    paper = written[written.variant == "paper:argmax"].set_index("image").prediction
    assert paper.isna().tolist() == [False, False, True, True]


def test_authors_missing_policy_scores_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    aggregate.run("toy", _params(variants=["paper"], readouts=["argmax"], missing="authors"))
    written = pd.read_csv(paths.predictions_table("toy")).set_index("image")
    assert written.prediction[["c", "d"]].tolist() == [1.0, 1.0]
    summary = json.loads(paths.summary("predictions", "toy").read_text())
    assert summary["missing"] == {"paper:argmax": 2}  # still counted


def test_only_the_runs_sample_is_evaluated_and_reruns_are_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    labels = _labels().assign(path=["a.jpg", "b.jpg", "", ""])  # c, d: no image file
    labels.to_csv(paths.labels_table("toy"), index=False)
    aggregate.run("toy", PARAMS)
    first = paths.predictions_table("toy").read_bytes()
    written = pd.read_csv(paths.predictions_table("toy"))
    assert set(written.image) == {"a", "b"}
    aggregate.run("toy", PARAMS)
    assert paths.predictions_table("toy").read_bytes() == first
    aggregate.run("toy", {**PARAMS, "sample": {"size": 1, "seed": 0}})
    assert pd.read_csv(paths.predictions_table("toy")).image.nunique() == 1


def test_missing_scores_table_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    paths.scores_table("toy").unlink()
    with pytest.raises(DogIQAError, match="scores table not found"):
        aggregate.run("toy", PARAMS)


def _counts(*extra: int) -> pd.DataFrame:
    """Region counts of the run's images (a: 3, b: 1, c: 1) and of images outside the run."""
    counts = [3, 1, 1, *extra]
    names = ["a", "b", "c", *(f"x{i}" for i in range(len(extra)))]
    return pd.DataFrame(
        {"image": names, "count": counts, "in_sample": [True] * 3 + [False] * len(extra)}
    )


def test_c_max_is_taken_over_every_counted_image_of_the_dataset():
    p = aggregate.validate_params(_params())
    images = pd.Index(["a", "b", "c", "d"], name="image")
    pred, facts = aggregate.compute(REGIONS, _scores(), images, p, _counts(6, 2))
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    assert facts["c_max"] == 6 and facts["c_max_sample"] == 3 and facts["counted_images"] == 5
    assert pred["paper:argmax"]["a"] == pytest.approx((6 + local_a) / 2 + 3 * 7 / 6)


def test_s_seg_at_the_papers_scale_uses_the_mean_count_and_the_papers_ratio():
    p = aggregate.validate_params(_params())
    images = pd.Index(["a", "b", "c", "d"], name="image")
    pred, facts = aggregate.compute(REGIONS, _scores(), images, p, _counts(6, 2))
    c_max_scaled = (3 + 1 + 1 + 6 + 2) / 5 * 71 / 7.22
    assert facts["c_max_scaled"] == pytest.approx(c_max_scaled, abs=1e-6)
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    s_seg = 3 * 7 / c_max_scaled
    assert pred["paper_scaled:argmax"]["a"] == pytest.approx((6 + local_a) / 2 + s_seg)
    assert pred["local_area_sseg_scaled:argmax"]["a"] == pytest.approx(local_a + s_seg)
    assert pred["local_mean_sseg_scaled:argmax"]["a"] == pytest.approx(13 / 3 + s_seg)


def test_literal_inner_product_differs_from_the_weighted_mean_when_masks_overlap():
    # e: two masks of 60 pixels each on a 10x10 image, overlapping on 20 (no complement)
    regions = pd.DataFrame(
        [("e", 0, "global", 100, 100, 2), ("e", 1, "mask", 60, 60, 2), ("e", 2, "mask", 60, 60, 2)],
        columns=["image", "region", "kind", "area", "area_authors", "count"],
    ).assign(height=10, width=10)
    scores = pd.DataFrame(
        {
            "image": "e",
            "region": [0, 1, 2],
            "prompt_id": "p1",
            "K": 7,
            "argmax": [5, 6, 2],
            "expected": [5.0, 6.0, 2.0],
            "raw": "",
        }
    )
    p = aggregate.validate_params(_params(variants=["paper", "paper_inner"]))
    pred, _ = aggregate.compute(regions, scores, pd.Index(["e"], name="image"), p)
    inner = (6 * 60 + 2 * 60) / 100  # 4.8, against the weighted mean 4.0
    assert pred["paper_inner:argmax"]["e"] == pytest.approx((5 + inner) / 2 + 7)
    assert pred["paper:argmax"]["e"] == pytest.approx((5 + 4.0) / 2 + 7)
    # a: the regions partition the image, so both readings agree
    pred_a = _compute(variants=["paper", "paper_inner"])
    assert pred_a["paper_inner:argmax"]["a"] == pytest.approx(pred_a["paper:argmax"]["a"])


def test_llmiqa_one_model_with_and_without_the_complement():
    pred = _compute(scores=pd.concat([_scores("p1"), _scores("p2", 1.0)]), llmiqa_lambda=0.5)
    local_a = (7 * 50 + 4 * 30 + 2 * 20) / 100
    masks_only = (7 * 50 + 4 * 30) / 80
    assert pred["llmiqa_one:argmax"]["a"] == pytest.approx(6 + 0.5 * local_a)
    assert pred["llmiqa_one:argmax@p2"]["a"] == pytest.approx(7 + 0.5 * (local_a + 1))
    assert pred["llmiqa_one_no_complement:argmax"]["a"] == pytest.approx(6 + 0.5 * masks_only)
    # b has no complement (one whole region): nothing to leave out
    assert pred["llmiqa_one_no_complement:argmax"]["b"] == pred["llmiqa_one:argmax"]["b"]


def _classical_scores() -> pd.DataFrame:
    """The toy images scored by PIQE (raw values, levels at K = 7 as the score stage maps them)."""
    from dogiqa.scoring.classical import ClassicalScorer

    raws = {key: 10.0 + 9.0 * i for i, key in enumerate(ARGMAX)}
    rows = []
    for (img, reg), raw in raws.items():
        levels = ClassicalScorer("piqe", 7).levels(raw)
        rows.append(
            {
                "image": img,
                "region": reg,
                "prompt_id": "piqe",
                "K": 7,
                "argmax": levels.argmax,
                "expected": levels.expected,
                "raw": levels.raw,
            }
        )
    return pd.DataFrame(rows)


def test_classical_scores_are_mapped_again_to_other_k_as_the_score_stage_would():
    from dogiqa.scoring.classical import ClassicalScorer

    scores = _classical_scores()
    pred = _compute(scores, classical_K=[5, 7])
    remapped = {name.split("@")[0].split(":")[0] for name in pred if name.endswith("@piqe_k5")}
    assert remapped == set(aggregate.REMAPPED_VARIANTS) and "paper:argmax@piqe_k7" not in pred
    region = scores.set_index(["image", "region"]).raw
    levels = {r: ClassicalScorer("piqe", 5).levels(float(region[("b", r)])) for r in (0, 1)}
    # b: one whole region of 100 pixels, so s_local is its level at K = 5
    assert pred["local_only_area:argmax@piqe_k5"]["b"] == levels[1].argmax
    assert pred["local_only_area:expected@piqe_k5"]["b"] == pytest.approx(levels[1].expected)
    assert pred["local_area_sseg:argmax@piqe_k5"]["a"] - pred["local_only_area:argmax@piqe_k5"][
        "a"
    ] == pytest.approx(5)
    # the ensemble stays over the scorers at the run's K
    assert "llmiqa:argmax@piqe_k5" not in pred
    # listed apart from the run's own prompts (which the per-scorer comparisons iterate)
    p = aggregate.validate_params(_params(classical_K=[5, 7]))
    _, facts = aggregate.compute(REGIONS, scores, pd.Index(["a"], name="image"), p)
    assert facts["prompt_ids"] == ["piqe"] and facts["remapped_prompt_ids"] == ["piqe_k5"]


def test_global_float_is_the_unclipped_continuous_score_of_classical_scorers_only():
    from dogiqa.scoring.classical import SCORERS

    scores = _classical_scores()
    pred = _compute(scores)
    spec = SCORERS["piqe"]
    raw = float(scores.set_index(["image", "region"]).raw[("a", 0)])
    assert pred["global_float:argmax"]["a"] == pytest.approx(
        1 + 6 * (spec.worst - raw) / (spec.worst - spec.best)
    )
    assert "global_float:argmax" not in _compute()  # an MLLM's prompt has no continuous score


@pytest.mark.parametrize("value", [[1], ["five"], 5])
def test_bad_classical_k_names_the_param(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match="aggregate.classical_K"):
        aggregate.run("toy", _params(classical_K=value))


@pytest.mark.parametrize("metric", ["piqe", "brisque", "niqe"])
def test_the_level_map_apart_from_the_scorers_gives_the_score_stages_levels(metric):
    from dogiqa import levelmap
    from dogiqa.scoring.classical import ClassicalScorer

    anchor = levelmap.load_anchors()[metric]
    span = anchor["worst"] - anchor["best"]
    # across the range, beyond both anchors, exact ties between two levels, and non-finite
    values = [anchor["best"] + span * t for t in np.linspace(-0.2, 1.2, 57)]
    values += [anchor["worst"] - span * (i + 0.5) / 6 for i in range(6)] + [float("nan")]
    for k in (3, 5, 7, 9):
        for value in values:
            stage = ClassicalScorer(metric, k).levels(value)
            argmax, expected = levelmap.levels(value, metric, k)
            assert (argmax, expected) == (stage.argmax, pytest.approx(stage.expected))
