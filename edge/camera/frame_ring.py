"""The pre-trigger ring: the last few low-resolution frames, grabbed on a thread of its own."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from edge.errors import CameraError

log = logging.getLogger(__name__)


class FrameRing:
    """The last ``seconds`` low-resolution frames, oldest first, grabbed one per ``interval_s``
    on a thread of its own. ``grab`` returns None to skip a tick (the camera is busy, not broken)."""

    def __init__(self, grab: Callable[[], bytes | None], seconds: int, *, interval_s: float = 1.0, name: str):
        self._grab = grab
        self._interval_s = interval_s
        self._frames: deque[bytes] = deque(maxlen=seconds)
        self._lock = threading.Lock()  # list(deque) fails if the deque grows meanwhile
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        if self._thread.ident is None:  # a second start() is a no-op, not a RuntimeError
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def frames(self) -> list[bytes]:
        with self._lock:
            return list(self._frames)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                frame = self._grab()
            except Exception as exc:
                # Frames from before a gap would pass for the seconds before an alarm: drop them.
                with self._lock:
                    self._frames.clear()
                if isinstance(exc, CameraError):
                    log.debug("pre-trigger frame skipped: %s", exc)
                else:
                    log.exception("pre-trigger frame failed")
            else:
                if frame is not None:
                    with self._lock:
                        self._frames.append(frame)
            next_at = max(next_at + self._interval_s, time.monotonic())
            self._stop.wait(next_at - time.monotonic())
