"""The SAM 2 backend: Meta's ``SAM2AutomaticMaskGenerator`` with every setting from params.

The paper configuration (the authors' code) is SAM 2 (v1) Hiera-Large built with the
post-processing overrides of ``sam2.build_sam.build_sam2`` and the generator settings in
params.yaml. The model is built once per segmenter; the checkpoint must exist locally.
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

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            records = self.generator.generate(np.array(image, dtype=np.uint8))  # writable copy
        return [_to_mask(record["segmentation"]) for record in records]


def result_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that change the masks: all but the device and the batch size."""
    return {k: v for k, v in section.items() if k not in ("device", "points_per_batch")}


BACKEND = SegmenterBackend(
    settings=settings_from, build=Sam2Segmenter, result_settings=result_settings
)
