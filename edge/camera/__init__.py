"""Camera backends: a full-resolution JPEG still for each alarm, and a ring of low-resolution
frames from the seconds before it (pre-trigger).

``open_camera(backend, ...)`` is the one entry point to a backend: ``"picamera2"`` (the Pi
camera through libcamera), ``"test-pattern"`` (a generated image, for the demo and bench
tests) or ``"none"``. The daemon runs the backend in a process of its own (process.py, with
serve.py on the other side of wire.py), so the camera's work never holds the daemon's
interpreter lock and a hang or crash in libcamera is a camera fault, not the alarm's.

The parts: pi_camera.py (Picamera2Camera: picamera2 imported late, on its own thread, with
deadlines and restarts), pattern.py (TestPatternCamera), frame_ring.py (the pre-trigger
FrameRing), jpeg.py (JPEG encoding, libcamera's YUV420 to JPEG). This module imports none of
them, nor Pillow: the daemon, which only talks to the camera process, never loads them.
"""

from __future__ import annotations

import io
import time
from typing import Callable, Protocol

from edge.errors import CameraError, ConfigError

__all__ = ["Camera", "open_camera", "probe"]


class Camera(Protocol):
    """What the daemon needs of a camera. ``ok`` and ``last_error`` describe the camera's health
    as of its latest attempt, so the caller can raise a ``fault`` / ``recovered`` event."""

    name: str
    ok: bool
    last_error: str | None

    def start(self) -> None: ...

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes: ...

    def pre_trigger_frames(self) -> list[bytes]: ...

    def close(self) -> None: ...


def open_camera(
    backend: str, *, pre_trigger_s: int, overlay: Callable[[], list[str]] | None = None
) -> Camera | None:
    """The camera for ``[camera] backend``; None for ``"none"``. ``overlay`` gives the text lines
    (site, label, local time) that the test pattern draws."""
    if backend == "none":
        return None
    if backend == "test-pattern":
        from edge.camera.pattern import TestPatternCamera
        return TestPatternCamera(pre_trigger_s=pre_trigger_s, overlay=overlay)
    if backend == "picamera2":
        from edge.camera.pi_camera import Picamera2Camera
        return Picamera2Camera(pre_trigger_s=pre_trigger_s)
    from edge.config import CAMERA_BACKENDS  # the whole config package: not in the camera process

    raise ConfigError(
        [f"[camera] backend: unknown camera backend {backend!r}; expected one of {', '.join(CAMERA_BACKENDS)}"]
    )


def probe(camera: Camera, timeout_s: float = 5.0) -> tuple[bool, str]:
    """One capture, checked to decode as a JPEG, for ``edge-alarm check``."""
    from PIL import Image

    started = time.monotonic()
    try:
        jpeg = camera.capture_jpeg(timeout_s)
    except CameraError as exc:
        return False, str(exc)  # a backend's CameraError names the backend
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            kind, (width, height) = image.format, image.size
    except OSError as exc:
        return False, f"{camera.name}: the capture is not a readable image: {exc}"
    if kind != "JPEG":
        return False, f"{camera.name}: the capture is a {kind} image, not a JPEG"
    elapsed = time.monotonic() - started
    return True, f"{camera.name}: ok, {width}x{height} JPEG of {len(jpeg) // 1024} kB in {elapsed:.2f} s"
