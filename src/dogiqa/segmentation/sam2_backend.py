"""The SAM 2 backend: Meta's ``SAM2AutomaticMaskGenerator`` with every setting from params.

The paper configuration (the authors' code) is SAM 2 (v1) Hiera-Large built with the
post-processing overrides of ``sam2.build_sam.build_sam2`` and the generator settings in
params.yaml. The model is built once per segmenter; the checkpoint must exist locally.

Hole and sprinkle removal: with ``min_mask_region_area`` > 0 the generator's predictor fills
background components and drops foreground components up to that area in the low-resolution
masks (``SAM2Transforms.postprocess_masks``, sam2/utils/transforms.py). SAM 2 labels those
components with its compiled CUDA extension (``sam2._C``, ``get_connected_components`` in
sam2/utils/misc.py) and silently skips the step, with a warning, where the extension is absent or
the tensor is on the CPU; so a CPU run and a GPU install would keep different masks. Here the
components are labelled with scipy (8-connectivity, the extension's semantics) on every device,
so the post-processing runs, with the same result, whatever the install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dogiqa import config
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.segmentation import SegmenterBackend

PREFIX = "segment.sam2"
# Part of the segment cache fingerprint: masks made before this post-processing differ.
POSTPROCESS = "holes-sprinkles-scipy-cc8"
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
DEVICES = ("cpu", "cuda")
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

# Generator keyword arguments read from params, with their types. Every key here must be present
# in the params section; each is passed to SAM2AutomaticMaskGenerator unchanged.
INT_SETTINGS = (
    "points_per_side",
    "points_per_batch",
    "crop_n_layers",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)
FLOAT_SETTINGS = (
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "mask_threshold",
    "box_nms_thresh",
    "crop_nms_thresh",
    "crop_overlap_ratio",
)
BOOL_SETTINGS = ("use_m2m", "multimask_output")
GENERATOR_SETTINGS = INT_SETTINGS + FLOAT_SETTINGS + BOOL_SETTINGS + ("output_mode",)


@dataclass(frozen=True)
class Sam2Settings:
    model_cfg: str
    checkpoint: str
    device: str
    generator: dict[str, Any] = field(default_factory=dict)


def _generator_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key in INT_SETTINGS:
        settings[key] = config.get_int(section, PREFIX, key, minimum=0)
    if settings["points_per_side"] < 1 or settings["points_per_batch"] < 1:
        raise ParamError(f"{PREFIX}.points_per_side/points_per_batch", "must be >= 1")
    for key in FLOAT_SETTINGS:
        settings[key] = config.get_float(section, PREFIX, key)
    for key in BOOL_SETTINGS:
        settings[key] = config.get_bool(section, PREFIX, key)
    settings["output_mode"] = config.get_choice(section, PREFIX, "output_mode", OUTPUT_MODES)
    if settings["output_mode"] == "coco_rle" and importlib.util.find_spec("pycocotools") is None:
        raise ParamError(f"{PREFIX}.output_mode", "coco_rle needs pycocotools (not installed)")
    return settings


def settings_from(section: Mapping[str, Any]) -> Sam2Settings:
    """Validated settings from the ``segment.sam2`` params section (no file is touched)."""
    unknown = sorted(set(section) - set(GENERATOR_SETTINGS) - {"model_cfg", "checkpoint", "device"})
    if unknown:
        raise ParamError(f"{PREFIX}.{unknown[0]}", "unknown setting")
    return Sam2Settings(
        model_cfg=config.get_str(section, PREFIX, "model_cfg"),
        checkpoint=config.get_str(section, PREFIX, "checkpoint"),
        device=config.get_choice(section, PREFIX, "device", DEVICES),
        generator=_generator_settings(section),
    )


def build_model(settings: Sam2Settings) -> Any:
    """Build SAM 2 from the package's config and load the checkpoint (once per run)."""
    path = Path(settings.checkpoint)
    if not path.is_file():
        raise DogIQAError(
            f"params: {PREFIX}.checkpoint: SAM 2 checkpoint {path} not found; download "
            f"{CHECKPOINT_URL} to that path (or point {PREFIX}.checkpoint at a local copy)"
        )
    import torch
    from sam2.build_sam import build_sam2

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ParamError(f"{PREFIX}.device", "cuda requested but no CUDA device is available")
    try:
        return build_sam2(settings.model_cfg, ckpt_path=str(path), device=settings.device)
    except Exception as exc:  # hydra/torch errors: bad config name or a broken checkpoint
        raise DogIQAError(
            f"params: {PREFIX}: cannot build SAM 2 from {settings.model_cfg} and {path} "
            f"({type(exc).__name__}: {exc})"
        ) from None


def connected_components(mask: Any) -> tuple[Any, Any]:
    """``sam2.utils.misc.get_connected_components`` without the CUDA extension: for a binary
    (N, 1, H, W) tensor, the 8-connected component label of every foreground pixel (0 on the
    background) and the area of its component (0 on the background), int32, on the mask's
    device. Labels are numbered per mask; only ``label > 0`` and the areas are used upstream."""
    import torch
    from scipy import ndimage

    flat = mask.detach().to("cpu", torch.bool).numpy()
    labels = np.zeros(flat.shape, dtype=np.int32)
    areas = np.zeros(flat.shape, dtype=np.int32)
    eight = np.ones((3, 3), dtype=bool)
    for index in np.ndindex(flat.shape[:2]):
        label, _ = ndimage.label(flat[index], structure=eight)
        labels[index] = label
        areas[index] = np.bincount(label.ravel())[label] * (label > 0)
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(areas).to(mask.device)


def _transforms_class() -> type:
    from sam2.utils.transforms import SAM2Transforms

    class Transforms(SAM2Transforms):
        """SAM2Transforms whose ``postprocess_masks`` (sam2/utils/transforms.py) labels
        components with :func:`connected_components` and never skips the step."""

        def postprocess_masks(self, masks: Any, orig_hw: Any) -> Any:
            import torch
            import torch.nn.functional as F  # noqa: N812 (torch's convention)

            masks = masks.float()
            flat = masks.flatten(0, 1).unsqueeze(1)  # both steps read the input masks
            if self.max_hole_area > 0:
                labels, areas = connected_components(flat <= self.mask_threshold)
                holes = ((labels > 0) & (areas <= self.max_hole_area)).reshape_as(masks)
                masks = torch.where(holes, self.mask_threshold + 10.0, masks)
            if self.max_sprinkle_area > 0:
                labels, areas = connected_components(flat > self.mask_threshold)
                sprinkles = ((labels > 0) & (areas <= self.max_sprinkle_area)).reshape_as(masks)
                masks = torch.where(sprinkles, self.mask_threshold - 10.0, masks)
            return F.interpolate(masks, orig_hw, mode="bilinear", align_corners=False)

    return Transforms


def with_cpu_postprocessing(predictor: Any) -> Any:
    """``predictor`` (a SAM2ImagePredictor) with its transforms replaced by ones whose hole and
    sprinkle removal runs without the CUDA extension; every other setting is kept."""
    old = predictor._transforms
    predictor._transforms = _transforms_class()(
        resolution=old.resolution,
        mask_threshold=old.mask_threshold,
        max_hole_area=old.max_hole_area,
        max_sprinkle_area=old.max_sprinkle_area,
    )
    return predictor


def _to_mask(segmentation: Any) -> np.ndarray:
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool)
    counts = segmentation["counts"]
    if isinstance(counts, list):  # SAM's uncompressed RLE (column-major, like COCO)
        from sam2.utils.amg import rle_to_mask

        return rle_to_mask(segmentation).astype(bool)
    from pycocotools import mask as mask_utils

    return mask_utils.decode(segmentation).astype(bool)


class Sam2Segmenter:
    """``masks(image)``: the automatic mask generator's masks, in the generator's order."""

    name = "sam2"

    def __init__(self, settings: Sam2Settings, model: Any | None = None) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        self.settings = settings
        self.model = model if model is not None else build_model(settings)
        self.generator = SAM2AutomaticMaskGenerator(self.model, **settings.generator)
        with_cpu_postprocessing(self.generator.predictor)

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            records = self.generator.generate(np.array(image, dtype=np.uint8))  # writable copy
        return [_to_mask(record["segmentation"]) for record in records]


def result_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``segment.sam2`` settings that change the masks, for the segment cache fingerprint:
    all of them (the device and the batch size change the floating-point results near the
    thresholds), plus the post-processing implementation."""
    return {**section, "postprocess": POSTPROCESS}


PAPER_C_MAX = 71
"""Seed 000, Implementation Details: SAM 2 with the authors' settings gives SPAQ images at most 71
masks (7.22 on average)."""


BACKEND = SegmenterBackend(
    settings=settings_from,
    build=Sam2Segmenter,
    result_settings=result_settings,
    default_c_max=lambda settings: (PAPER_C_MAX, "the paper's c_max (SAM 2 on SPAQ, seed 000)"),
)
