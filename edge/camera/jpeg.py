"""JPEG encoding with Pillow, and libcamera's YUV420 frames to JPEG (no numpy needed)."""

from __future__ import annotations

import io

from PIL import Image


def encode_jpeg(image: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def yuv420_to_jpeg(data: bytes, size: tuple[int, int], stride: int) -> bytes:
    """A JPEG of a YUV420 frame as libcamera lays it out: the Y plane (``stride`` bytes a row),
    then U and V planes at half width and height (``stride // 2`` bytes a row). Pure Pillow,
    so no numpy is needed."""
    width, height = size
    chroma = (width // 2, height // 2)
    u_at = stride * height
    v_at = u_at + (stride // 2) * (height // 2)
    y = Image.frombytes("L", size, data[:u_at], "raw", "L", stride)
    u = Image.frombytes("L", chroma, data[u_at:v_at], "raw", "L", stride // 2)
    v = Image.frombytes("L", chroma, data[v_at:], "raw", "L", stride // 2)
    return encode_jpeg(Image.merge("YCbCr", (y, u.resize(size), v.resize(size))))
