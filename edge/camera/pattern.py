"""The test-pattern camera: a generated image instead of a camera, for the demo and bench tests."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from edge.camera.frame_ring import FrameRing
from edge.camera.jpeg import encode_jpeg


# Fonts with Chinese glyphs, where Debian / Raspberry Pi OS packages put them
# (fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk, fonts-droid-fallback).
CJK_FONT_PATHS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)

# Colour bars: grey, yellow, cyan, green, magenta, red, blue.
_BARS = ((192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192))


class _Overlay:
    """Text drawn over an image at one size, in a CJK font when the system has one. Without one,
    characters outside ASCII are drawn as '?': Pillow's own font has no Chinese glyphs (and its
    old bitmap font raises on them)."""

    def __init__(self, height: int, font_paths: Sequence[str]):
        size = max(10, height // 18)
        self.font, self.cjk = self._load(size, font_paths)

    @staticmethod
    def _load(size: int, font_paths: Sequence[str]) -> tuple[Any, bool]:
        for path in font_paths:
            try:
                return ImageFont.truetype(path, size), True
            except OSError:
                continue
        try:
            return ImageFont.load_default(size=size), False
        except TypeError:  # Pillow before 10.1 has only the small bitmap font
            return ImageFont.load_default(), False

    def draw(self, image: Image.Image, lines: list[str]) -> None:
        if not self.cjk:
            lines = [line.encode("ascii", "replace").decode("ascii") for line in lines]
        draw = ImageDraw.Draw(image)
        line_h = draw.textbbox((0, 0), "Ay", font=self.font)[3] * 5 // 4
        pad = line_h // 3
        top = image.height - len(lines) * line_h - 2 * pad
        draw.rectangle((0, top, image.width, image.height), fill=(0, 0, 0))
        for i, line in enumerate(lines):
            draw.text((pad, top + pad + i * line_h), line, font=self.font, fill=(255, 255, 255))


class TestPatternCamera:
    """A generated image instead of a camera: colour bars over a grey ramp, with the overlay's text
    lines (or the local time) at the bottom. Used by ``demo`` and for bench tests."""

    __test__ = False  # not a pytest test class, despite the name

    name = "test-pattern"
    ok = True
    last_error: str | None = None

    def __init__(
        self,
        *,
        pre_trigger_s: int,
        overlay: Callable[[], list[str]] | None = None,
        still_size: tuple[int, int] = (1280, 720),
        frame_size: tuple[int, int] = (320, 180),
        frame_interval_s: float = 1.0,
        font_paths: Sequence[str] = CJK_FONT_PATHS,
    ):
        self._overlay = overlay or (lambda: ["edge-alarm test pattern", time.strftime("%Y-%m-%d %H:%M:%S")])
        self._still_size = still_size
        self._font_paths = font_paths
        # Each size's font is loaded at its first picture: a daemon that never takes a still
        # never holds the still's face (FreeType keeps a face's tables and glyph cache).
        self._texts: dict[tuple[int, int], _Overlay] = {}
        # The bars and ramp of a pre-trigger frame, drawn once: a frame a second then costs
        # only its text and its JPEG on an idle daemon. A still's (2.7 MB at 1280x720) is
        # drawn for each alarm instead of being kept.
        self._frame_background = _background(frame_size)
        self._ring = (
            FrameRing(lambda: self._render(frame_size), pre_trigger_s,
                      interval_s=frame_interval_s, name="test-pattern-frames")
            if pre_trigger_s > 0 else None
        )

    def start(self) -> None:
        if self._ring:
            self._ring.start()

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes:
        return self._render(self._still_size)

    def pre_trigger_frames(self) -> list[bytes]:
        return self._ring.frames() if self._ring else []

    def close(self) -> None:
        if self._ring:
            self._ring.stop()

    def _render(self, size: tuple[int, int]) -> bytes:
        image = (self._frame_background.copy() if size == self._frame_background.size
                 else _background(size))
        text = self._texts.get(size) or self._texts.setdefault(
            size, _Overlay(size[1], self._font_paths))
        text.draw(image, self._overlay())
        return encode_jpeg(image)


def _background(size: tuple[int, int]) -> Image.Image:
    """Colour bars over a grey ramp."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    bars_h = height * 2 // 3
    for i, colour in enumerate(_BARS):
        draw.rectangle((i * width // len(_BARS), 0, (i + 1) * width // len(_BARS), bars_h), fill=colour)
    # One row of the ramp stretched down in C: a line per column from Python cost the
    # camera thread ~2.7 ms of CPU under the interpreter's lock at 1280x720, at every alarm.
    ramp = bytes(x * 255 // (width - 1) for x in range(width))
    image.paste(Image.frombytes("L", (width, 1), ramp).resize((width, height - bars_h),
                                                              Image.Resampling.NEAREST),
                (0, bars_h))
    return image
