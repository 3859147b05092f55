"""How the daemon and its camera process talk, over the child's stdin and stdout.

A request is one line of JSON: ``{"op": "start" | "capture" | "frames" | "close", ...}``.
An answer is one line of JSON, ``{"ok": bool, "error": str | null, "camera_ok": bool,
"camera_error": str | null, "sizes": [n, ...]}``, followed by that many pictures, raw,
of those sizes. Everything the daemon reads is bounded in size and in time: the child is
ours, but it runs libcamera, and a child gone wrong must cost a camera fault, not the
daemon's memory or its thread.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

MAX_LINE = 64 * 1024
MAX_PICTURE = 32 * 1024 * 1024  # a 12 MP JPEG at quality 95 is under 10 MB
MAX_PICTURES = 64  # a still and its pre-trigger frames ([camera] pre_trigger_s ≤ 30)
_CHUNK = 256 * 1024


class WireError(Exception):
    """The other side broke the protocol, went quiet past the deadline, or is gone."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


class DeadlineReader:
    """Reads a pipe's file descriptor, each call by a deadline (time.monotonic seconds)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._buffer = bytearray()

    def line(self, deadline: float) -> dict[str, Any]:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE:
                raise WireError(f"a line longer than {MAX_LINE} bytes")
            self._fill(deadline)
        raw = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        try:
            message = json.loads(raw)
        except ValueError as e:
            raise WireError(f"not JSON: {raw[:80]!r}") from e
        if not isinstance(message, dict):
            raise WireError(f"not a JSON object: {raw[:80]!r}")
        return message

    def exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline, size - len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fill(self, deadline: float, want: int = _CHUNK) -> None:
        timeout = deadline - time.monotonic()
        if timeout <= 0 or not select.select([self._fd], [], [], timeout)[0]:
            raise WireError("no answer in time")
        try:
            data = os.read(self._fd, min(max(want, 4096), _CHUNK))
        except OSError as e:
            raise WireError(f"cannot read: {e}") from e
        if not data:
            raise WireError("the other side closed the pipe")
        self._buffer += data


def picture_sizes(answer: dict[str, Any]) -> list[int]:
    """The answer's picture sizes, checked against the bounds."""
    sizes = answer.get("sizes", [])
    if (not isinstance(sizes, list) or len(sizes) > MAX_PICTURES
            or not all(type(n) is int and 0 < n <= MAX_PICTURE for n in sizes)):
        raise WireError(f"picture sizes out of bounds: {str(sizes)[:80]}")
    return sizes
