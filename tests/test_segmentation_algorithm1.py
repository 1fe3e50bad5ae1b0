"""Algorithm 1 (area threshold, complement, whole-image fallback) on hand-checked masks.

All examples use a 10 x 10 image (100 pixels) and t = 10 unless stated.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dogiqa import rle
from dogiqa.segmentation.algorithm1 import (
    Threshold,
    c_max,
    check_regions_table,
    region_rows,
    select_regions,
)

H = W = 10


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def summary(regions: list) -> list[tuple[str, int, int]]:
    return [(kind, area, authors) for kind, _, area, authors in regions]


def test_overlapping_masks_both_modes() -> None:
    a = box(0, 5, 0, 10)  # 50 px
    b = box(3, 7, 0, 5)  # 20 px, 10 of them inside a
    # union 60 -> true complement 40; authors: 100 - (50 + 20) = 30
    correct = select_regions([b, a], H, W, t=10, mode="correct")
    authors = select_regions([b, a], H, W, t=10, mode="authors")
    assert summary(correct) == [("mask", 50, 50), ("mask", 20, 20), ("complement", 40, 30)]
    assert summary(authors) == [("mask", 50, 50), ("mask", 20, 20), ("complement", 30, 30)]
    # The complement's pixels are NOT(union) in both modes.
    for regions in (correct, authors):
        assert np.array_equal(regions[2][1], ~(a | b))


def test_heavy_overlap_drops_the_complement_only_in_authors_mode() -> None:
    a = box(0, 6, 0, 10)  # 60 px
    b = box(3, 8, 0, 10)  # 50 px, 30 shared -> union 80, true complement 20
    correct = select_regions([a, b], H, W, t=10, mode="correct")
    authors = select_regions([a, b], H, W, t=10, mode="authors")
    assert summary(correct) == [("mask", 60, 60), ("mask", 50, 50), ("complement", 20, -10)]
    assert summary(authors) == [("mask", 60, 60), ("mask", 50, 50)]


@pytest.mark.parametrize("mode", ["correct", "authors"])
def test_nothing_kept_falls_back_to_the_whole_image(mode: str) -> None:
    small = [box(0, 3, 0, 3), box(5, 8, 5, 8)]  # 9 px each, under t = 10
    for masks in (small, []):
        regions = select_regions(masks, H, W, t=10, mode=mode)
        assert summary(regions) == [("whole", 100, 100)]
        assert regions[0][1].all()


@pytest.mark.parametrize("mode", ["correct", "authors"])
def test_tiny_complement_is_dropped(mode: str) -> None:
    a = box(0, 5, 0, 10)  # 50
    b = box(5, 10, 0, 9)  # 45 -> 5 px uncovered, under t
    assert summary(select_regions([a, b], H, W, t=10, mode=mode)) == [
        ("mask", 50, 50),
        ("mask", 45, 45),
    ]


def test_small_masks_are_dropped_but_their_pixels_join_the_complement() -> None:
    big = box(0, 6, 0, 10)  # 60
    small = box(7, 9, 0, 4)  # 8 px, under t
    regions = select_regions([small, big], H, W, t=10, mode="correct")
    assert summary(regions) == [("mask", 60, 60), ("complement", 40, 40)]
    assert regions[1][1][small].all()


def test_threshold_is_inclusive_and_masks_sorted_by_area_with_stable_ties() -> None:
    a, b, c = box(0, 2, 0, 5), box(0, 2, 5, 10), box(2, 10, 0, 10)  # 10, 10, 80
    regions = select_regions([a, b, c], H, W, t=10, mode="correct")
    assert [r[2] for r in regions] == [80, 10, 10]
    assert np.array_equal(regions[1][1], a)
    assert np.array_equal(regions[2][1], b)
    # Everything is covered: no complement row, c = 3.
    assert len(regions) == 3


def test_threshold_as_fraction_of_the_image() -> None:
    assert Threshold(pixels=1000).for_image(10, 10) == 1000
    assert Threshold(pixels=1000, fraction=0.25).for_image(10, 10) == 25
    masks = [box(0, 5, 0, 5)]  # 25 px: kept at t = 25 (fraction 0.25), not at 0.26
    assert (
        summary(select_regions(masks, H, W, Threshold(fraction=0.25).for_image(H, W)))[0][0]
        == "mask"
    )
    assert summary(select_regions(masks, H, W, Threshold(fraction=0.26).for_image(H, W))) == [
        ("whole", 100, 100)
    ]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        select_regions([], H, W, t=10, mode="paper")


def test_region_rows_follow_the_table_contract() -> None:
    a = box(2, 5, 1, 4)  # 9 px
    b = box(0, 4, 5, 10)  # 20 px
    rows = region_rows([a, b], H, W, t=5, mode="authors")
    assert [r["kind"] for r in rows] == ["global", "mask", "mask", "complement"]
    assert [r["region"] for r in rows] == [0, 1, 2, 3]
    assert {r["count"] for r in rows} == {3}
    glob = rows[0]
    assert (glob["x0"], glob["y0"], glob["x1"], glob["y1"], glob["rle"]) == (0, 0, W, H, "")
    assert glob["area"] == glob["area_authors"] == 100
    assert (rows[1]["x0"], rows[1]["y0"], rows[1]["x1"], rows[1]["y1"]) == (5, 0, 10, 4)
    assert np.array_equal(rle.decode(json.loads(rows[1]["rle"]), H, W), b)
    assert (rows[3]["area"], rows[3]["area_authors"]) == (71, 71)
    assert rows[3]["x0"] == 0 and rows[3]["y1"] == 10


def test_region_rows_refuse_masks_of_another_size() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        region_rows([np.ones((3, 3), dtype=bool)], H, W, t=1)


def _table(rows_by_image: dict[str, list[dict]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{**r, "image": name} for name, rows in rows_by_image.items() for r in rows]
    )


def test_check_regions_table_accepts_sound_tables_and_finds_faults() -> None:
    a, b = box(0, 5, 0, 10), box(3, 7, 0, 5)
    good = {
        "one": region_rows([a, b], H, W, t=10),
        "tiny": region_rows([box(0, 5, 0, 10), box(5, 10, 0, 9)], H, W, t=10),
        "whole": region_rows([], H, W, t=10),
    }
    assert check_regions_table(_table(good), Threshold(pixels=10)) == []
    assert c_max(r[0]["count"] for r in good.values()) == 3

    # A complement row removed (and the count fixed): 40 pixels are covered by nothing.
    uncovered = {"one": [{**r, "count": 2} for r in good["one"][:3]]}
    assert check_regions_table(_table(uncovered), Threshold(pixels=10)) == [
        "one: 40 pixels covered by no region"
    ]
    # With t = 50 the same 40 pixels would have been dropped legitimately.
    assert check_regions_table(_table(uncovered), Threshold(pixels=50)) == []
    # In authors mode coverage is not required.
    assert check_regions_table(_table(uncovered), Threshold(pixels=10), mode="authors") == []

    shifted = {"one": [dict(r) for r in good["one"]]}
    shifted["one"][1]["x1"] = 11
    shifted["one"][2]["y0"] = 4
    problems = check_regions_table(_table(shifted), Threshold(pixels=10))
    assert problems == [
        "one region 1: bbox (0, 0, 11, 5) not inside the image",
        "one region 2: bbox (0, 4, 5, 7) is not the mask's box",
    ]
