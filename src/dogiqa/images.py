"""Reading images safely: every way an image file can be bad ends in one ``ImageError`` line.

All stages read images through :func:`load_rgb`, which returns an RGB ``uint8`` array in display
orientation (EXIF rotation applied), whatever the file's mode (grayscale, palette, RGBA, CMYK,
16-bit). Decompression bombs are refused before their pixels are decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dogiqa import paths
from dogiqa.errors import ImageError

#: Images above this many pixels are refused (a 100-megapixel photo is far above any IQA set).
MAX_PIXELS = 100_000_000


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range down to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white, the way a viewer shows it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load ``path`` as an H x W x 3 uint8 RGB array, or raise ``ImageError`` with one line."""
    path = Path(path)
    shown = paths.show(path)  # messages name it as the labels table does
    if not path.exists():
        raise ImageError(f"{shown}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{shown}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{shown}: refused, {width}x{height} pixels is over the limit of "
                        f"{max_pixels} (possible decompression bomb)"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                rgb = _to_rgb(image)
                array = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{shown}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{shown}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{shown}: unreadable or truncated image ({exc})") from None
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError(f"{shown}: unexpected decoded shape {array.shape}")
    return array
