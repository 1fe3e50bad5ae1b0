"""Label parsing of every dataset, from the real label files of the mirror."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dogiqa.errors import LabelError
from dogiqa.labels import read_labels
from dogiqa.registry import DATASETS


def _label_folder(mirror: Path, key: str, tmp_path: Path) -> Path:
    folder = tmp_path / key
    for resource in DATASETS[key].labels:
        (folder / resource.dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / resource.mirror, folder / resource.dest)
    return folder


@pytest.mark.parametrize(
    ("key", "rows", "first", "first_mos", "low", "high"),
    [
        ("koniq", 10073, "10004473376.jpg", 3.82857142857143, 1.09615384615385, 4.31),
        ("spaq", 11125, "00001.jpg", 48.86, 2.0, 96.0),
        ("livec", 1169, "t1.bmp", 63.963406174124174, 3.42, 92.4319526627219),
        ("kadid", 10125, "I01_01_01.png", 4.57, 1.0, 4.93),
        ("agiqa", 2982, "AttnGAN_normal_000.jpg", 0.965602553, 0.0, 4.488740784),
    ],
)
def test_every_dataset_parses_to_the_normalised_table(
    mirror, tmp_path, key, rows, first, first_mos, low, high
):
    table = read_labels(DATASETS[key], _label_folder(mirror, key, tmp_path))
    assert list(table.columns) == ["image", "mos", "mos_norm", "order"]
    assert len(table) == rows
    assert table["image"].iloc[0] == first
    assert table["mos"].iloc[0] == pytest.approx(first_mos)
    assert table["mos"].min() == pytest.approx(low)
    assert table["mos"].max() == pytest.approx(high)
    assert table["mos_norm"].min() == 0.0 and table["mos_norm"].max() == 1.0
    assert table["order"].tolist() == list(range(rows))


def test_livec_test_option_drops_the_seven_training_images(mirror, tmp_path):
    folder = _label_folder(mirror, "livec", tmp_path)
    full = read_labels(DATASETS["livec"], folder, "all")
    test = read_labels(DATASETS["livec"], folder, "test")
    assert len(test) == 1162
    assert set(full["image"]) - set(test["image"]) == {f"t{i}.bmp" for i in range(1, 8)}
    # label-file order is kept, so order starts at 7 for the test images
    assert test["order"].iloc[0] == 7


def test_kadid_uses_dmos_where_higher_is_better(mirror, tmp_path):
    table = read_labels(DATASETS["kadid"], _label_folder(mirror, "kadid", tmp_path))
    # I01_01_01 is the mildest blur of reference I01, I01_01_05 the strongest
    mos = table.set_index("image")["mos"]
    assert mos["I01_01_01.png"] > mos["I01_01_05.png"]


def test_agiqa_uses_mos_quality_not_alignment(mirror, tmp_path):
    folder = _label_folder(mirror, "agiqa", tmp_path)
    table = read_labels(DATASETS["agiqa"], folder)
    raw = pd.read_csv(folder / "data.csv")
    np.testing.assert_allclose(table["mos"], raw["mos_quality"])


def test_missing_column_is_named_in_one_line(mirror, tmp_path):
    folder = _label_folder(mirror, "koniq", tmp_path)
    path = folder / "koniq10k_scores_and_distributions.csv"
    pd.read_csv(path).drop(columns=["MOS"]).to_csv(path, index=False)
    with pytest.raises(LabelError, match="missing column 'MOS'") as info:
        read_labels(DATASETS["koniq"], folder)
    assert "\n" not in str(info.value)


def test_missing_label_file_is_reported(tmp_path):
    with pytest.raises(LabelError, match="label file not found"):
        read_labels(DATASETS["agiqa"], tmp_path)
