"""The camera in a process of its own (edge.camera.serve), driven from the daemon.

Why a process: a camera's work holds the interpreter's lock for milliseconds at a time
(Pillow encoding a JPEG, FreeType drawing the overlay, loading a CJK font, picamera2's own
Python threads), and a libcamera call can hang or crash outright. In the daemon's process
every such millisecond is one a panic press waits before its siren, and a crash is the whole
alarm. In a process of its own it costs the daemon nothing but reading the finished JPEG,
and a hang or a crash is a camera fault and a restart.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable

from edge.camera.wire import DeadlineReader, WireError, encode, picture_sizes
from edge.errors import CameraError

log = logging.getLogger(__name__)

SERVE_COMMAND = (sys.executable, "-m", "edge.camera.serve")
START_TIMEOUT_S = 15.0  # a fresh interpreter importing Pillow, then picamera2 opening (10 s)
FRAMES_TIMEOUT_S = 2.0
ANSWER_MARGIN_S = 1.0  # past the camera's own deadline, for the pipe and a busy machine
CLOSE_WAIT_S = 0.5  # then SIGKILL: the kernel frees the camera; the worker stops in 1.5 s
LOG_LINE_MAX = 4096
JPEG_START = b"\xff\xd8\xff"


class CameraProcess:
    """A camera backend ("test-pattern", "picamera2") run by edge.camera.serve in a child
    process, with the Camera protocol of edge.camera.

    Each request has a deadline. A child that misses it, answers garbage or dies is killed
    and started again: at once after the first failure since pictures last came, then after a
    backoff doubling from ``backoff_s[0]`` up to ``backoff_s[1]``. ``ok`` and ``last_error``
    are the camera's health as the child last reported it, or why the child failed.
    """

    def __init__(self, backend: str, *, pre_trigger_s: int, head: str, tz: str,
                 overlay: Callable[[], list[str]] = list,
                 command: tuple[str, ...] = SERVE_COMMAND,
                 backoff_s: tuple[float, float] = (2.0, 120.0),
                 clock: Callable[[], float] = time.monotonic):
        self.name = backend
        self.ok = True
        self.last_error: str | None = None
        # The test pattern's lines for a still, asked of the daemon at each capture: a
        # still shows the daemon's time and the alarm it is for.
        self._overlay = overlay
        self._keeps_frames = pre_trigger_s > 0
        self._argv = [*command, backend, str(pre_trigger_s), str(os.getpid()),
                      "--head", head, "--tz", tz]
        self._clock = clock
        self._backoff_first, self._backoff_max = backoff_s
        self._backoff = self._backoff_first
        self._failures = 0  # since the last answer
        self._retry_at = float("-inf")
        self._lock = threading.Lock()  # one request at a time, and the child with it
        self._child: subprocess.Popen[bytes] | None = None
        self._reader: DeadlineReader | None = None
        self._closed = False

    # ------------------------------------------------------------------ Camera protocol

    def start(self) -> None:
        with self._lock:
            self._running(time.monotonic() + START_TIMEOUT_S)

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes:
        (jpeg,) = self._request({"op": "capture", "timeout_s": timeout_s,
                                 "lines": self._overlay()}, timeout_s, count=1)
        return jpeg

    def pre_trigger_frames(self) -> list[bytes]:
        if not self._keeps_frames:
            return []
        try:
            return self._request({"op": "frames"}, FRAMES_TIMEOUT_S)
        except CameraError as e:
            log.warning("no pre-trigger frames: %s", e)
            return []

    def close(self) -> None:
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self._closed = True
            self._stop_child(polite=locked)
        finally:
            if locked:
                self._lock.release()

    # ------------------------------------------------------------------ the child

    def _request(self, message: dict[str, Any], timeout_s: float,
                 count: int | None = None) -> list[bytes]:
        deadline = time.monotonic() + timeout_s + ANSWER_MARGIN_S
        if not self._lock.acquire(timeout=timeout_s):
            raise CameraError(f"{self.name}: the camera stayed busy for {timeout_s:g} s")
        try:
            self._running(deadline)
            pictures = self._exchange(message, deadline, count)
        finally:
            self._lock.release()
        # Only pictures count as success: a child that starts and then fails every request
        # must not be started again at once, over and over.
        self._failures, self._backoff = 0, self._backoff_first
        return pictures

    def _running(self, deadline: float) -> None:
        """A child answering, started (and its camera started) if there is none."""
        if self._closed:
            raise CameraError(f"{self.name}: the camera is closed")
        if self._child is not None:
            status = self._child.poll()
            if status is None:
                return
            self._child = None
            self._failed(f"the camera process ended (exit status {status})")
        wait_s = self._retry_at - self._clock()
        if wait_s > 0:
            raise CameraError(f"{self.name}: camera process down ({self.last_error}); "
                              f"next start in {wait_s:.0f} s")
        try:
            child = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, close_fds=True)
        except OSError as e:
            self._failed(f"the camera process cannot start: {e}")
            raise CameraError(f"{self.name}: {self.last_error}") from e
        assert child.stdout is not None and child.stderr is not None
        self._child, self._reader = child, DeadlineReader(child.stdout.fileno())
        threading.Thread(target=_relay_log, args=(child.stderr, child.pid),
                         name=f"camera-log-{child.pid}", daemon=True).start()
        # The camera's own failure to start (picamera2 missing, the camera held elsewhere)
        # is a CameraError and the child stays: its backend retries by itself.
        self._exchange({"op": "start"}, min(deadline, time.monotonic() + START_TIMEOUT_S), 0)

    def _exchange(self, message: dict[str, Any], deadline: float,
                  count: int | None) -> list[bytes]:
        """One request and its answer; the child is killed when it fails to answer."""
        assert self._child is not None and self._child.stdin is not None
        assert self._reader is not None
        try:
            self._child.stdin.write(encode(message))
            self._child.stdin.flush()
            answer = self._reader.line(deadline)
            sizes = picture_sizes(answer)
            if count is not None and answer.get("ok") and len(sizes) != count:
                raise WireError(f"{len(sizes)} pictures where {count} were asked for")
            pictures = [self._reader.exactly(size, deadline) for size in sizes]
            if not all(picture.startswith(JPEG_START) for picture in pictures):
                raise WireError("a picture that is not a JPEG")
        except (WireError, OSError, ValueError) as e:
            self._stop_child(polite=False)
            self._failed(f"the camera process failed ({message['op']}): {e}")
            raise CameraError(f"{self.name}: {self.last_error}") from e
        self.ok = answer.get("camera_ok") is True
        error = answer.get("camera_error")
        self.last_error = str(error)[:500] if error is not None else None
        if answer.get("ok") is not True:
            raise CameraError(str(answer.get("error") or f"{self.name}: the camera failed")[:500])
        return pictures

    def _failed(self, message: str) -> None:
        """Notes a failure of the child; the next start is at once after the first since
        pictures came, then after the backoff."""
        if self.ok:
            log.warning("camera fault: %s", message)
        self.ok, self.last_error = False, message
        if self._failures == 0:
            self._retry_at = self._clock()
        else:
            self._retry_at = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, self._backoff_max)
        self._failures += 1

    def _stop_child(self, polite: bool) -> None:
        child, self._child, self._reader = self._child, None, None
        if child is None:
            return
        assert child.stdin is not None
        try:
            if polite:
                child.stdin.write(encode({"op": "close"}))
            child.stdin.close()
        except OSError:
            pass  # gone already
        try:
            child.wait(CLOSE_WAIT_S if polite else 0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()  # stderr is _relay_log's, closed at its end


def _relay_log(stderr: IO[bytes], pid: int) -> None:
    """The child's stderr into the daemon's log, line by line, at the level the child
    logged it (to the journal under systemd, to the demo's log file in the demo, never
    into the demo's terminal). Ends when the child does."""
    with stderr:
        while line := stderr.readline(LOG_LINE_MAX):
            text = line.decode("utf-8", "replace").rstrip("\n")
            level = logging.getLevelName(text.partition(" ")[0])
            log.log(level if isinstance(level, int) else logging.INFO,
                    "camera process %d: %s", pid, text)
