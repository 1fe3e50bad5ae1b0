"""The stage tables as dogiqa.schema defines them, read and written through dogiqa.io."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dogiqa import io, schema
from dogiqa.errors import DogIQAError, LabelError, ParamError


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "path": ["data/raw/x/a.jpg", "", "data/raw/x/c.jpg", "data/raw/x/d.jpg"],
            "mos": [1.0, 2.0, 3.0, 4.0],
            "mos_norm": [0.0, 0.33, 0.67, 1.0],
            "order": [3, 2, 1, 0],
        }
    )


def test_one_sample_rule_for_every_stage_of_a_run(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    io.write_table(schema.LABELS, path, _labels())
    labels = io.read_table(schema.LABELS, path)
    # Every image with a file (size 0), in label order; a row without a file is never drawn.
    assert schema.stage_images(labels, schema.Sample(0, 0))["image"].tolist() == [
        "d.jpg",
        "c.jpg",
        "a.jpg",
    ]
    drawn = schema.sampled(labels, schema.Sample(2, 0))
    assert drawn.sum() == 2 and not drawn[1]
    assert schema.sampled(labels, schema.Sample(2, 0)).tolist() == drawn.tolist()  # seeded


@pytest.mark.parametrize(("key", "value"), [("size", -1), ("seed", "x"), ("size", True)])
def test_bad_sample_params_name_the_param(key: str, value: object) -> None:
    params = {"sample": {"size": 5, "seed": 0} | {key: value}}
    with pytest.raises(ParamError, match=f"sample.{key}"):
        schema.sample_params(params)


def test_text_columns_keep_empty_cells_and_numbers_are_missing(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    frame = pd.DataFrame(
        {"image": ["001", "nan"], "variant": ["paper:argmax", "NA"], "prediction": [1.5, np.nan]}
    ).assign(mos=[2.0, 3.0])
    io.write_table(schema.PREDICTIONS, path, frame)
    read = io.read_table(schema.PREDICTIONS, path)
    assert read["image"].tolist() == ["001", "nan"]  # names stay text, never numbers or NaN
    assert read["variant"].tolist() == ["paper:argmax", "NA"]
    assert read["prediction"].isna().tolist() == [False, True]


def test_a_missing_table_or_column_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        LabelError, match=r"regions table not found \(run the segment stage first\)"
    ):
        io.read_table(schema.REGIONS, tmp_path / "absent.csv")
    path = tmp_path / "scores.csv"
    pd.DataFrame({"image": ["a"], "region": [0]}).to_csv(path, index=False)
    with pytest.raises(LabelError, match=r"scores table: missing column\(s\) \['prompt_id'"):
        io.read_table(schema.SCORES, path)
    with pytest.raises(DogIQAError, match="cannot write without column"):
        io.write_table(schema.SCORES, path, pd.DataFrame({"image": ["a"]}))


def test_score_columns_put_the_levels_between_k_and_argmax() -> None:
    assert schema.score_columns(3) == [
        "image",
        "region",
        "prompt_id",
        "K",
        "p1",
        "p2",
        "p3",
        "argmax",
        "expected",
        "raw",
        "fallback",
        "level_mass",
        "levels_found",
        "error",
    ]


def test_score_fields_are_the_level_scores_cells() -> None:
    """Each column after p1..pK is a field of a crop's LevelScores (the stage writes them)."""
    from dogiqa.scoring import one_hot

    assert list(one_hot(2, 3).table_fields()) == list(schema.SCORE_FIELDS)
