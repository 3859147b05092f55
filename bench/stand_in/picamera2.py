"""A stand-in for picamera2, put on the daemon's PYTHONPATH by bench_idle.py: the daemon's
own picamera2 backend (Picamera2Camera, its pre-trigger ring, yuv420_to_jpeg) runs as on a
Pi, while picamera2's own import (numpy, libcamera, its threads and buffers), which the
memory target leaves out, costs nothing. Frames are a flat grey YUV420 picture of a Camera
Module 3's lores aspect ratio, laid out as libcamera does (rows padded to 64 bytes)."""

from __future__ import annotations

import io
from typing import Any

SENSOR_RESOLUTION = (4608, 2592)  # Camera Module 3 (IMX708)
GREY = 128


class Picamera2:
    def __init__(self, camera_num: int = 0):
        self.sensor_resolution = SENSOR_RESOLUTION
        self.camera_config: dict[str, Any] = {}

    def create_still_configuration(self, main: dict | None = None,
                                   lores: dict | None = None) -> dict[str, Any]:
        return {"main": {"size": self.sensor_resolution, **(main or {})}, "lores": lores}

    def configure(self, config: dict[str, Any]) -> None:
        self.camera_config = dict(config)
        if config["lores"]:
            width = config["lores"]["size"][0]
            self.camera_config["lores"] = {**config["lores"], "stride": -(-width // 64) * 64}

    def start(self) -> None:
        pass

    def capture_buffer(self, name: str = "main") -> bytes:
        stream = self.camera_config[name]
        return bytes([GREY]) * (stream["stride"] * stream["size"][1] * 3 // 2)

    def capture_file(self, file_output: io.BufferedIOBase, name: str = "main",
                     format: str | None = None) -> None:
        from edge.camera.jpeg import yuv420_to_jpeg
        width, height = 1280, 720
        file_output.write(yuv420_to_jpeg(bytes([GREY]) * (width * height * 3 // 2),
                                         (width, height), width))

    def close(self) -> None:
        pass
