"""How the daemon and its camera process talk, over the child's stdin and stdout.

A request is one line of JSON: ``{"id": n, "op": "start" | "capture" | "frames" | "close",
...}``, at most MAX_LINE bytes. An answer is one line of JSON, ``{"id": n, "ok": bool,
"error": str | null, "camera_ok": bool, "camera_error": str | null, "sizes": [n, ...]}``,
followed by that many pictures, raw, of those sizes. The answer names its request, so a
child that answered twice or not at all cannot hand one request's pictures to the next.

Everything the daemon reads is bounded in size and in time: the child is ours, but it runs
libcamera, and a child gone wrong must cost a camera fault, not the daemon's memory or its
thread. Pictures are read in chunks and joined once, so taking in a 12-megapixel still
never holds the daemon's interpreter lock for more than one copy of it.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

MAX_LINE = 64 * 1024
MAX_STILL = 24 * 1024 * 1024  # a 12 MP JPEG at quality 95 is under 10 MB
MAX_FRAME = 1024 * 1024  # a 320-pixel-wide low-resolution JPEG is tens of kB
_CHUNK = 256 * 1024


class WireError(Exception):
    """The other side broke the protocol, went quiet past the deadline, or is gone."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


class DeadlineReader:
    """Reads a pipe's file descriptor, each call by a deadline (time.monotonic seconds)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._pending = b""  # read past the last line or picture

    def line(self, deadline: float) -> dict[str, Any]:
        buffer = bytearray(self._pending)
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > MAX_LINE:
                raise WireError(f"a line longer than {MAX_LINE} bytes")
            buffer += self._read(deadline, _CHUNK)
        raw, self._pending = bytes(buffer[:end]), bytes(buffer[end + 1:])
        try:
            message = json.loads(raw)
        except ValueError as e:
            raise WireError(f"not JSON: {raw[:80]!r}") from e
        if not isinstance(message, dict):
            raise WireError(f"not a JSON object: {raw[:80]!r}")
        return message

    def exactly(self, size: int, deadline: float) -> bytes:
        chunks = [self._pending[:size]]
        self._pending = self._pending[size:]
        got = len(chunks[0])
        while got < size:
            chunk = self._read(deadline, min(size - got, _CHUNK))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read(self, deadline: float, most: int) -> bytes:
        timeout = deadline - time.monotonic()
        if timeout <= 0 or not select.select([self._fd], [], [], timeout)[0]:
            raise WireError("no answer in time")
        try:
            data = os.read(self._fd, most)
        except OSError as e:
            raise WireError(f"cannot read: {e}") from e
        if not data:
            raise WireError("the other side closed the pipe")
        return data


def picture_sizes(answer: dict[str, Any], most: int, each_at_most: int) -> list[int]:
    """The answer's picture sizes, checked against the request's bounds before a byte of
    them is read."""
    sizes = answer.get("sizes", [])
    if (not isinstance(sizes, list) or len(sizes) > most
            or not all(type(n) is int and 0 < n <= each_at_most for n in sizes)):
        raise WireError(f"picture sizes out of bounds: {str(sizes)[:80]}")
    return sizes
