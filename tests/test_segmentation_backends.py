"""Segmenter backends: the classical CPU segmenter on real images, and SAM 2's mechanics."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from dogiqa.errors import DogIQAError, ParamError
from dogiqa.images import load_rgb
from dogiqa.segmentation import build_segmenter
from dogiqa.segmentation.algorithm1 import region_rows
from dogiqa.segmentation.classical import ClassicalSegmenter, ClassicalSettings, settings_from

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data"))
LIVEC = MIRROR / "livec" / "Images"


@pytest.fixture(scope="module")
def segment_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["segment"]


@pytest.fixture(scope="module")
def real_images() -> dict[str, np.ndarray]:
    paths = {
        "1000.JPG": LIVEC / "1000.JPG",
        "1024.JPG": LIVEC / "1024.JPG",  # 640 x 960
        "1113.JPG": LIVEC / "1113.JPG",  # 608 x 608
        "t1.bmp": LIVEC / "trainingImages" / "t1.bmp",
        "agiqa": MIRROR / "agiqa3k" / "images" / "AttnGAN_normal_000.jpg",
    }
    return {name: load_rgb(path) for name, path in paths.items()}


# --- classical ------------------------------------------------------------------------------


def test_classical_masks_partition_real_images(
    real_images: dict[str, np.ndarray], segment_params: dict[str, Any]
) -> None:
    settings = settings_from(segment_params["classical"])
    segmenter = ClassicalSegmenter(settings)
    for name, image in real_images.items():
        masks = segmenter.masks(image)
        assert 1 <= len(masks) <= settings.max_regions, name
        stack = np.stack(masks)
        assert stack.dtype == bool and stack.shape[1:] == image.shape[:2], name
        # A partition: every pixel in exactly one mask, no empty mask.
        assert (stack.sum(axis=0) == 1).all(), name
        assert stack.any(axis=(1, 2)).all(), name
        # Algorithm 1 with the default t keeps a few regions.
        rows = region_rows(masks, *image.shape[:2], t=segment_params["min_area"])
        assert rows[0]["count"] >= 1


def test_classical_is_deterministic_and_fast(real_images: dict[str, np.ndarray]) -> None:
    image = real_images["1000.JPG"]
    segmenter = ClassicalSegmenter(ClassicalSettings())
    start = time.perf_counter()
    first = segmenter.labels(image)
    elapsed = time.perf_counter() - start
    assert np.array_equal(first, segmenter.labels(image))
    assert np.array_equal(first, ClassicalSegmenter(ClassicalSettings()).labels(image.copy()))
    assert elapsed < 2.0  # about 0.2 s on one core; generous for loaded machines


def test_classical_slic_and_full_resolution(real_images: dict[str, np.ndarray]) -> None:
    image = np.asarray(Image.fromarray(real_images["1000.JPG"]).resize((150, 120)))
    for settings in (ClassicalSettings(method="slic"), ClassicalSettings(work_size=0)):
        labels = ClassicalSegmenter(settings).labels(image)
        assert labels.shape == (120, 150)
        assert 1 <= labels.max() + 1 <= settings.max_regions


def test_merging_respects_max_regions_and_threshold(real_images: dict[str, np.ndarray]) -> None:
    image = real_images["agiqa"]
    few = ClassicalSegmenter(ClassicalSettings(max_regions=3, merge_threshold=0.0))
    assert few.labels(image).max() + 1 == 3
    # An enormous merge threshold merges everything into one region.
    one = ClassicalSegmenter(ClassicalSettings(merge_threshold=1e6))
    assert one.labels(image).max() == 0
    # A flat image is one region whatever the settings.
    flat = np.full((64, 80, 3), 128, dtype=np.uint8)
    assert ClassicalSegmenter(ClassicalSettings()).masks(flat)[0].all()


def test_classical_settings_are_validated(segment_params: dict[str, Any]) -> None:
    section = dict(segment_params["classical"], method="watershed")
    with pytest.raises(ParamError, match=r"segment\.classical\.method"):
        settings_from(section)
    section = dict(segment_params["classical"], max_regions=0)
    with pytest.raises(ParamError, match=r"segment\.classical\.max_regions"):
        settings_from(section)
    with pytest.raises(ParamError, match=r"segment\.classical"):
        build_segmenter({"backend": "classical"})


# --- sam2 -----------------------------------------------------------------------------------

SAM2_PATHS = ("model_cfg", "checkpoint", "device")


def test_sam2_generator_receives_exactly_the_params(
    segment_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sam2.automatic_mask_generator as amg

    from dogiqa.segmentation import sam2_backend

    calls: list[tuple[Any, dict[str, Any]]] = []

    class Recorder:
        def __init__(self, model: Any, **kwargs: Any) -> None:
            calls.append((model, kwargs))

    model = object()
    monkeypatch.setattr(amg, "SAM2AutomaticMaskGenerator", Recorder)
    monkeypatch.setattr(sam2_backend, "build_model", lambda settings: model)
    section = copy.deepcopy(segment_params)
    section["backend"] = "sam2"
    build_segmenter(section)
    expected = {k: v for k, v in segment_params["sam2"].items() if k not in SAM2_PATHS}
    assert calls == [(model, expected)]
    # The paper configuration (the authors' settings) is what params.yaml holds.
    assert segment_params["sam2"]["model_cfg"] == "configs/sam2/sam2_hiera_l.yaml"
    assert {
        k: expected[k]
        for k in (
            "points_per_side",
            "points_per_batch",
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "crop_n_layers",
            "min_mask_region_area",
            "use_m2m",
        )
    } == {
        "points_per_side": 8,
        "points_per_batch": 128,
        "pred_iou_thresh": 0.9,
        "stability_score_thresh": 0.8,
        "stability_score_offset": 0.7,
        "box_nms_thresh": 0.9,
        "crop_n_layers": 0,
        "min_mask_region_area": 1000,
        "use_m2m": False,
    }


def test_sam2_config_names_exist_in_the_package(segment_params: dict[str, Any]) -> None:
    import sam2

    package = Path(sam2.__file__).parent
    assert (package / segment_params["sam2"]["model_cfg"]).is_file()


def test_sam2_missing_checkpoint_is_one_clear_error(
    segment_params: dict[str, Any], tmp_path: Path
) -> None:
    section = copy.deepcopy(segment_params)
    section["backend"] = "sam2"
    section["sam2"]["checkpoint"] = str(tmp_path / "absent.pt")
    with pytest.raises(DogIQAError) as info:
        build_segmenter(section)
    message = str(info.value)
    assert "segment.sam2.checkpoint" in message and "absent.pt" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("points_per_side", 0),
        ("pred_iou_thresh", "high"),
        ("device", "tpu"),
        ("output_mode", "png"),
        ("use_m2m", "no"),
        ("points_per_grid", 4),
    ],
)
def test_sam2_settings_are_validated(segment_params: dict[str, Any], key: str, value: Any) -> None:
    from dogiqa.segmentation.sam2_backend import settings_from as sam2_settings

    section = dict(segment_params["sam2"], **{key: value})
    with pytest.raises(ParamError, match=rf"segment\.sam2\.{key}"):
        sam2_settings(section)


@pytest.mark.slow
def test_sam2_end_to_end_with_random_weights(segment_params: dict[str, Any]) -> None:
    """Mechanics only: a SAM 2 built from the package's config with random weights (no
    checkpoint). Its masks mean nothing; the test checks shapes, types and the hand-over to
    Algorithm 1, which falls back to the whole image when no mask survives."""
    import torch
    from sam2.build_sam import build_sam2

    from dogiqa.segmentation.sam2_backend import Sam2Segmenter
    from dogiqa.segmentation.sam2_backend import settings_from as sam2_settings

    torch.manual_seed(0)
    model = build_sam2("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu")
    image = np.asarray(Image.fromarray(load_rgb(LIVEC / "1000.JPG")).resize((80, 60)))
    # Few points and no quality filter, so that random weights still yield some masks.
    section = dict(
        segment_params["sam2"],
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_mask_region_area=0,
    )
    segmenter = Sam2Segmenter(sam2_settings(section), model=model)
    masks = segmenter.masks(image)
    assert all(m.dtype == bool and m.shape == (60, 80) for m in masks)
    rows = region_rows(masks, 60, 80, t=100)
    kept = [r for r in rows[1:] if r["kind"] == "mask"]
    assert len(kept) == sum(int(m.sum()) >= 100 for m in masks)
    if not kept:
        assert [r["kind"] for r in rows] == ["global", "whole"]
    for row in rows:
        assert 0 <= row["x0"] < row["x1"] <= 80 and 0 <= row["y0"] < row["y1"] <= 60
