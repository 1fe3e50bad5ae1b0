"""Hostile image files: each is read correctly or refused with one clear line, never a traceback."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogiqa.errors import ImageError
from dogiqa.images import load_rgb


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return np.stack([np.tile(x, (height, 1))] * 3, axis=-1)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _assert_one_line_refusal(path: Path, pattern: str) -> None:
    with pytest.raises(ImageError, match=pattern) as info:
        load_rgb(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_one_line_refusal(path, "empty file")


def test_truncated_jpeg(tmp_path):
    full = _save(tmp_path / "full.jpg", Image.fromarray(_gradient(200, 150)), quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _assert_one_line_refusal(path, "truncated")


def test_non_image_with_image_extension(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a picture\n")
    _assert_one_line_refusal(path, "not an image")


def test_missing_file(tmp_path):
    _assert_one_line_refusal(tmp_path / "absent.jpg", "not found")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    _assert_one_line_refusal(path, "decompression bomb")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(_gradient()).convert("CMYK"))
    array = load_rgb(path)
    assert array.shape == (30, 40, 3) and array.dtype == np.uint8
    assert array[:, -1].mean() > array[:, 0].mean()  # the gradient survives


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    path = _save(tmp_path / "deep.png", Image.fromarray(values))
    array = load_rgb(path)
    assert array.shape == (30, 40, 3)
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == 255
    assert 100 < array[0, 20, 0] < 160  # mid-grey stays mid-grey


def test_grayscale(tmp_path):
    path = _save(tmp_path / "grey.jpg", Image.fromarray(_gradient()[..., 0]))
    array = load_rgb(path)
    assert array.shape == (30, 40, 3)
    assert np.array_equal(array[..., 0], array[..., 1])


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 5:, 3] = 255
    path = _save(tmp_path / "alpha.png", Image.fromarray(rgba, "RGBA"))
    array = load_rgb(path)
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[0, 9]) == (255, 0, 0)


def test_palette_png(tmp_path):
    path = _save(tmp_path / "palette.png", Image.fromarray(_gradient()).convert("P"))
    assert load_rgb(path).shape == (30, 40, 3)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = _save(tmp_path / "rotated.jpg", image, exif=exif)
    assert load_rgb(path).shape == (40, 30, 3)


def test_one_pixel_image(tmp_path):
    path = _save(tmp_path / "dot.png", Image.new("RGB", (1, 1), (10, 20, 30)))
    assert load_rgb(path).tolist() == [[[10, 20, 30]]]


def test_real_bmp_and_jpeg_from_the_mirror(mirror):
    assert load_rgb(mirror / "livec/Images/trainingImages/t1.bmp").shape == (500, 500, 3)
    assert load_rgb(mirror / "livec/Images/1000.JPG").ndim == 3
