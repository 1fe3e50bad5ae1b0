"""Segmenter backends: the classical CPU segmenter on real images, and SAM 2's mechanics."""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from dogiqa.errors import DogIQAError, ParamError
from dogiqa.images import load_rgb
from dogiqa.segmentation import build_segmenter
from dogiqa.segmentation.algorithm1 import region_rows
from dogiqa.segmentation.classical import (
    ClassicalSegmenter,
    ClassicalSettings,
    merge_regions,
    settings_from,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_SCENE = ROOT / "tests" / "fixtures" / "data" / "images" / "scene1.png"


@pytest.fixture(scope="module")
def segment_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["segment"]


@pytest.fixture(scope="module")
def real_images(mirror: Path) -> dict[str, np.ndarray]:
    livec = mirror / "livec" / "Images"
    paths = {
        "1000.JPG": livec / "1000.JPG",
        "1024.JPG": livec / "1024.JPG",  # 640 x 960
        "1113.JPG": livec / "1113.JPG",  # 608 x 608
        "t1.bmp": livec / "trainingImages" / "t1.bmp",
        "agiqa": mirror / "agiqa3k" / "images" / "AttnGAN_normal_000.jpg",
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


def _merge_by_sets(labels: np.ndarray, lab: np.ndarray, max_regions: int, threshold: float):
    """The greedy Ward merge written plainly (edges as a set of pairs, scanned in sorted order
    every step): what ``merge_regions`` computes with sorted integer codes instead."""
    n = int(labels.max()) + 1
    sizes = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    means = (
        np.stack(
            [
                np.bincount(labels.ravel(), weights=lab[..., c].ravel(), minlength=n)
                for c in range(3)
            ],
            axis=1,
        )
        / sizes[:, None]
    )
    edges = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        edges |= {
            (min(x, y), max(x, y)) for x, y in zip(a.ravel(), b.ravel(), strict=True) if x != y
        }
    parent, alive = np.arange(n), n
    while edges:
        pairs = sorted(edges)
        costs = []
        for a, b in pairs:
            dist2 = float(((means[a] - means[b]) ** 2).sum())
            ward = sizes[a] * sizes[b] / (sizes[a] + sizes[b])
            costs.append(ward * dist2 if alive > max_regions else dist2)
        best = int(np.argmin(costs))
        if alive <= max_regions and costs[best] >= threshold**2:
            break
        a, b = pairs[best]
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / (sizes[a] + sizes[b])
        sizes[a] += sizes[b]
        parent[parent == b] = a
        alive -= 1
        edges = {
            (min(x, y), max(x, y))
            for x, y in ((a if p == b else p, a if q == b else q) for p, q in edges)
            if x != y
        }
    return np.unique(parent[labels], return_inverse=True)[1].reshape(labels.shape)


@pytest.mark.parametrize("seed", range(6))
def test_merge_regions_is_the_plain_greedy_merge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 25, size=(6, 8))  # 25 labels in blocks, some repeated apart
    labels = np.unique(np.kron(blocks, np.ones((4, 4), dtype=int)), return_inverse=True)[1]
    labels = labels.reshape(24, 32)
    lab = rng.normal(50, 20, size=(24, 32, 3))
    for max_regions, threshold in ((5, 20.0), (1, 0.0), (30, 1e6), (8, 0.0)):
        expected = _merge_by_sets(labels, lab, max_regions, threshold)
        assert np.array_equal(merge_regions(labels, lab, max_regions, threshold), expected)


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
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from dogiqa.segmentation import sam2_backend

    calls: list[tuple[Any, dict[str, Any]]] = []

    class Recorder:
        def __init__(self, model: Any, **kwargs: Any) -> None:
            calls.append((model, kwargs))
            self.predictor = SAM2ImagePredictor(SimpleNamespace(image_size=1024))

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
    image = np.asarray(Image.fromarray(load_rgb(FIXTURE_SCENE)).resize((80, 60)))
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


# --- hole and sprinkle removal without the CUDA extension -----------------------------------


def extension_stub() -> Any:
    """Stands for SAM 2's compiled ``sam2._C`` (sam2/csrc/connected_components.cu,
    ``get_connected_componnets``): for a uint8 (N, 1, H, W) CUDA tensor, the 8-connected
    component label of every foreground pixel (0 on the background) and its component's area
    (0 on the background). Written with scikit-image's labelling, independently of the backend."""
    import torch
    from skimage.measure import label

    def get_connected_componnets(inputs: Any) -> list[Any]:
        masks = inputs.numpy().astype(bool)
        labels = np.zeros(masks.shape, dtype=np.int32)
        counts = np.zeros(masks.shape, dtype=np.int32)
        for n in range(masks.shape[0]):
            lab = label(masks[n, 0], connectivity=2)
            labels[n, 0] = lab
            counts[n, 0] = np.where(lab > 0, np.bincount(lab.ravel())[lab], 0)
        return [torch.from_numpy(labels), torch.from_numpy(counts)]

    return type(
        "ExtensionStub", (), {"get_connected_componnets": staticmethod(get_connected_componnets)}
    )


def low_res_masks() -> Any:
    """Two 64 x 64 mask-logit maps. The first: a square with a 3 x 3 hole (filled at area 10)
    and a 4 x 4 one (kept), a 2 x 2 speck (removed) and a diagonal line of 12 pixels (one
    component of 12 under 8-connectivity: kept; twelve single pixels under 4-connectivity).
    The second: a large blob."""
    import torch

    masks = torch.full((1, 2, 64, 64), -5.0)
    masks[0, 0, 10:40, 10:40] = 5.0
    masks[0, 0, 15:18, 15:18] = -5.0
    masks[0, 0, 30:34, 30:34] = -5.0
    masks[0, 0, 50:52, 50:52] = 5.0
    for i in range(12):
        masks[0, 0, 44 + i, 2 + i] = 5.0
    masks[0, 1, 5:60, 30:60] = 5.0
    return masks


def test_connected_components_have_the_extension_semantics() -> None:
    import torch

    from dogiqa.segmentation.sam2_backend import connected_components

    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((3, 1, 40, 50)) > 0.55)
    labels, areas = connected_components(masks)
    stub_labels, stub_areas = extension_stub().get_connected_componnets(masks.to(torch.uint8))
    assert labels.dtype == torch.int32 and labels.shape == masks.shape
    assert torch.equal(areas, stub_areas)
    assert torch.equal(labels > 0, stub_labels > 0)
    # Same partition: pixels share a label exactly when they share one in the reference.
    for n in range(3):
        ours, theirs = labels[n, 0].flatten().tolist(), stub_labels[n, 0].flatten().tolist()
        pairs = set(zip(ours, theirs, strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_sam2_fills_holes_and_drops_sprinkles_on_cpu(
    segment_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segmenter's predictor post-processes as SAM 2 with its CUDA extension does, on the
    CPU and without the extension (which the Makefile does not build)."""
    import sys

    import torch
    from sam2.utils.transforms import SAM2Transforms

    from dogiqa.segmentation.sam2_backend import Sam2Segmenter
    from dogiqa.segmentation.sam2_backend import settings_from as sam2_settings

    settings = sam2_settings(dict(segment_params["sam2"], min_mask_region_area=10))
    segmenter = Sam2Segmenter(settings, model=SimpleNamespace(image_size=64))
    transforms = segmenter.generator.predictor._transforms
    assert (transforms.max_hole_area, transforms.max_sprinkle_area) == (10, 10)
    masks = low_res_masks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SAM 2 warns when it skips the step
        ours = transforms.postprocess_masks(masks, (64, 64))
    assert ours[0, 0, 16, 16] > 0 and ours[0, 0, 31, 31] < 0  # hole of 9 filled, of 16 kept
    assert ours[0, 0, 50, 50] < 0  # speck of 4 removed
    assert ours[0, 0, 50, 8] > 0  # the diagonal line (12 pixels, 8-connected) stays
    assert ours[0, 1, 30, 45] > 0  # the blob stays
    # SAM 2's own post-processing with its extension (stubbed) gives the same masks.
    monkeypatch.setitem(sys.modules, "sam2._C", extension_stub())
    reference = SAM2Transforms(64, 0.0, max_hole_area=10, max_sprinkle_area=10)
    assert torch.equal(ours, reference.postprocess_masks(masks, (64, 64)))


def test_sam2_fingerprint_covers_everything_that_changes_masks(
    segment_params: dict[str, Any],
) -> None:
    from dogiqa import segment

    def fingerprint(**sam2: Any) -> str:
        section = copy.deepcopy(segment_params)
        section["backend"] = "sam2"
        section["sam2"].update(sam2)
        return segment.validate_params({"segment": section, "sample": sample}).fingerprint

    sample = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["sample"]
    base = fingerprint()
    assert fingerprint(device="cuda") != base  # floating-point results differ by device
    assert fingerprint(points_per_batch=64) != base
    assert fingerprint(min_mask_region_area=500) != base
    assert fingerprint() == base
