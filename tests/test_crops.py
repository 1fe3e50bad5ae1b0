"""Run-length encoding of masks and the crops that the scoring stage scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dogiqa import crops, rle
from dogiqa.errors import DogIQAError
from dogiqa.images import load_rgb
from dogiqa.segmentation import algorithm1

# --- RLE ------------------------------------------------------------------------------------


def test_rle_hand_checked_example() -> None:
    # 3 x 2 mask, column-major order reads: col 0 = (0, 1, 1), col 1 = (1, 0, 0).
    mask = np.array([[0, 1], [1, 0], [1, 0]], dtype=bool)
    assert rle.encode(mask) == [1, 3, 2]
    # A mask starting with a True pixel begins with an empty 0-run.
    assert rle.encode(~mask) == [0, 1, 3, 2]
    assert rle.decode([1, 3, 2], 3, 2).tolist() == mask.tolist()


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (5, 7), (13, 1)])
def test_rle_round_trip_random_masks(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(shape) < rng.random()
        counts = rle.encode(mask)
        assert counts[0] >= 0 and all(c > 0 for c in counts[1:])
        assert sum(counts) == mask.size
        assert rle.area(counts) == int(mask.sum())
        assert np.array_equal(rle.decode(counts, *shape), mask)


def test_rle_empty_and_full_masks() -> None:
    assert rle.encode(np.zeros((4, 3), dtype=bool)) == [12]
    assert rle.encode(np.ones((4, 3), dtype=bool)) == [0, 12]
    assert rle.mask_bbox(np.zeros((4, 3), dtype=bool)) == (0, 0, 0, 0)


def test_rle_decode_refuses_wrong_size() -> None:
    with pytest.raises(ValueError, match="expected 3x3=9"):
        rle.decode([1, 3, 2], 3, 3)


def test_rle_bbox_is_half_open() -> None:
    mask = np.zeros((6, 9), dtype=bool)
    mask[2:5, 3:8] = True
    assert rle.bbox(rle.encode(mask), 6, 9) == (3, 2, 8, 5)


# --- crops ----------------------------------------------------------------------------------


def _region(mask: np.ndarray, kind: str = "mask", as_json: bool = True) -> dict:
    x0, y0, x1, y1 = rle.mask_bbox(mask)
    counts = rle.encode(mask)
    return {
        "kind": kind,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "rle": json.dumps(counts) if as_json else counts,
        "height": mask.shape[0],
        "width": mask.shape[1],
    }


@pytest.fixture(scope="module")
def odd_image(mirror: Path) -> np.ndarray:
    """LIVE Challenge 1024.JPG, the dataset's one 640 x 960 (portrait) image."""
    image = load_rgb(mirror / "livec" / "Images" / "1024.JPG")
    assert image.shape == (960, 640, 3)
    return image


def test_bbox_crop_geometry_on_portrait_image(odd_image: np.ndarray) -> None:
    mask = np.zeros(odd_image.shape[:2], dtype=bool)
    mask[101:958, 3:411] = True  # odd offsets, reaching near the bottom edge
    mask[500, 639] = True  # one pixel in the last column widens the box to the right edge
    crop = crops.make_crop(odd_image, _region(mask), "bbox")
    assert crop.size == (640 - 3, 958 - 101)  # PIL size is (width, height)
    assert np.array_equal(np.asarray(crop), odd_image[101:958, 3:640])


def test_mask_crop_zeroes_outside_pixels(odd_image: np.ndarray) -> None:
    mask = np.zeros(odd_image.shape[:2], dtype=bool)
    mask[10:20, 30:35] = True
    mask[40:41, 50:61] = True  # second component: the box spans both
    crop = np.asarray(crops.make_crop(odd_image, _region(mask), "mask"))
    assert crop.shape == (41 - 10, 61 - 30, 3)
    inside = mask[10:41, 30:61]
    assert np.array_equal(crop[inside], odd_image[10:41, 30:61][inside])
    assert not crop[~inside].any()


def test_whole_mode_and_global_region_give_the_whole_image(odd_image: np.ndarray) -> None:
    mask = np.zeros(odd_image.shape[:2], dtype=bool)
    mask[0:5, 0:5] = True
    full = _region(np.ones(odd_image.shape[:2], dtype=bool), kind="global")
    full["rle"] = ""
    for mode in crops.CROP_MODES:
        assert np.array_equal(np.asarray(crops.make_crop(odd_image, full, mode)), odd_image)
    whole = crops.make_crop(odd_image, _region(mask), "whole")
    assert whole.size == (640, 960)


def test_crops_of_algorithm1_rows_match_masks() -> None:
    # A 7 x 5 image (odd both ways) with a hand-made mask; the rows come from Algorithm 1.
    image = np.arange(7 * 5 * 3, dtype=np.uint8).reshape(7, 5, 3)
    mask = np.zeros((7, 5), dtype=bool)
    mask[1:6, 2:5] = True
    rows = algorithm1.region_rows([mask], 7, 5, t=3)
    assert [r["kind"] for r in rows] == ["global", "mask", "complement"]
    for row in rows[1:]:
        full = crops.region_mask(row)
        x0, y0, x1, y1 = row["x0"], row["y0"], row["x1"], row["y1"]
        cut = np.asarray(crops.make_crop(image, row, "mask"))
        assert cut.shape[:2] == (y1 - y0, x1 - x0)
        expected = np.where(full[y0:y1, x0:x1, None], image[y0:y1, x0:x1], 0)
        assert np.array_equal(cut, expected)
    assert np.asarray(crops.make_crop(image, rows[1], "bbox")).shape == (5, 3, 3)


def test_rle_given_as_list_is_accepted() -> None:
    image = np.full((3, 4, 3), 200, dtype=np.uint8)
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1:3] = True
    crop = crops.make_crop(image, _region(mask, as_json=False), "mask")
    assert np.asarray(crop).tolist() == [[[200] * 3, [200] * 3]]


def test_bad_mode_and_mismatched_size_are_refused() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    mask = np.ones((4, 4), dtype=bool)
    with pytest.raises(DogIQAError, match="crop mode"):
        crops.make_crop(image, _region(mask), "box")
    with pytest.raises(DogIQAError, match="differs from the image"):
        crops.make_crop(np.zeros((5, 4, 3), dtype=np.uint8), _region(mask), "bbox")
    bad = {**_region(mask), "x1": 9}
    with pytest.raises(DogIQAError, match="outside"):
        crops.make_crop(image, bad, "bbox")
