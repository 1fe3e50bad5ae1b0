"""Real photos cut as the score stage cuts them, for the scoring benchmarks.

LIVE Challenge photos from the local mirror, segmented with the default run's segmenter and
Algorithm 1 (``params.yaml``'s ``segment`` section as the default run sees it), and cut into each
image's distinct crops (``score.crop``: bbox): the whole image first, then its regions.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from PIL import Image

from dogiqa import crops, paths, runs, segment
from dogiqa.images import load_rgb
from dogiqa.segmentation import algorithm1, build_segmenter

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
FOLDER = MIRROR / "livec" / "Images"


def segmented(count: int, start: int = 0) -> list[list[Image.Image]]:
    """Per photo (``count`` LIVE Challenge photos in name order from ``start``), its distinct
    crops as the score stage of the default run cuts them."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = runs.run_params(params, paths.DEFAULT_RUN)  # its profile's overrides applied
    settings = segment.validate_params(params)
    segmenter = build_segmenter(settings.section)
    names = sorted(p.name for p in FOLDER.iterdir() if p.suffix.upper() == ".JPG")
    out = []
    for name in names[start : start + count]:
        image = load_rgb(FOLDER / name)
        height, width = image.shape[:2]
        t = settings.threshold.for_image(height, width)
        rows = algorithm1.region_rows(segmenter.masks(image), height, width, t, settings.mode)
        distinct, _ = crops.region_crops(image, rows, params["score"]["crop"])
        out.append(distinct)
    return out
