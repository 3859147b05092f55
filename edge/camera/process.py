"""The camera in a process of its own (edge.camera.serve), driven from the daemon.

Why a process: a camera's work holds the interpreter's lock for milliseconds at a time
(Pillow encoding a JPEG, FreeType drawing the overlay, loading a CJK font, picamera2's own
Python threads), and a libcamera call can hang or crash outright. In the daemon's process
every such millisecond is one a panic press waits before its siren, and a crash is the whole
alarm. In a process of its own it costs the daemon nothing but reading the finished JPEG,
and a hang or a crash is a camera fault and a restart.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable

from edge.camera.wire import (MAX_FRAME, MAX_STILL, DeadlineReader, WireError, encode,
                              picture_sizes)
from edge.errors import CameraError

log = logging.getLogger(__name__)

# -P: neither the daemon's working directory nor a script's is put on the child's path,
# so an edge/ or PIL/ lying there is never what the camera process imports.
SERVE_COMMAND = (sys.executable, "-P", "-m", "edge.camera.serve")
START_TIMEOUT_S = 15.0  # a fresh interpreter importing Pillow, then picamera2 opening (10 s)
FRAMES_TIMEOUT_S = 2.0
ANSWER_MARGIN_S = 1.0  # past the camera's own deadline, for the pipe and a busy machine
CLOSE_WAIT_S = 0.5  # then SIGKILL: the kernel frees the camera; the worker stops in 1.5 s
KILL_WAIT_S = 1.0  # a process in uninterruptible sleep outlives SIGKILL: not waited for
UNREAPED_MAX = 3  # killed processes not yet gone; more, and no new one is started
OVERLAY_LINES_MAX = 8
OVERLAY_LINE_CHARS = 200
JPEG_START = b"\xff\xd8\xff"
LOG_LINE_MAX = 4096
LOG_BURST = 50  # lines the child may log at once; then LOG_PER_S a second
LOG_PER_S = 5.0


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
        self._frames_max = pre_trigger_s  # the ring keeps one a second; 0: no ring
        self._argv = [*command, backend, str(pre_trigger_s), str(os.getpid()),
                      "--head", head, "--tz", tz]
        self._clock = clock
        self._backoff_first, self._backoff_max = backoff_s
        self._backoff = self._backoff_first
        self._failures = 0  # since pictures last came
        self._retry_at = float("-inf")
        self._lock = threading.Lock()  # one request at a time, and the child with it
        self._child: subprocess.Popen[bytes] | None = None
        self._reader: DeadlineReader | None = None
        self._unreaped: list[subprocess.Popen[bytes]] = []  # killed, not yet gone
        self._ids = itertools.count(1)
        self._closed = False

    # ------------------------------------------------------------------ Camera protocol

    def start(self) -> None:
        with self._lock:
            self._running()

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes:
        lines = [line[:OVERLAY_LINE_CHARS] for line in self._overlay()[:OVERLAY_LINES_MAX]]
        (jpeg,) = self._request({"op": "capture", "timeout_s": timeout_s, "lines": lines},
                                timeout_s, pictures=(1, 1, MAX_STILL))
        return jpeg

    def pre_trigger_frames(self) -> list[bytes]:
        if not self._frames_max:
            return []
        try:
            return self._request({"op": "frames"}, FRAMES_TIMEOUT_S,
                                 pictures=(0, self._frames_max, MAX_FRAME))
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
                 pictures: tuple[int, int, int]) -> list[bytes]:
        """The answer's pictures: (fewest, most, largest) as ``pictures`` bounds them."""
        if not self._lock.acquire(timeout=timeout_s):
            raise CameraError(f"{self.name}: the camera stayed busy for {timeout_s:g} s")
        try:
            self._running()
            # After a (re)start, which has its own deadline: a camera process that died
            # while nothing was asked of it costs the next alarm its start, not its picture.
            deadline = time.monotonic() + timeout_s + ANSWER_MARGIN_S
            got = self._exchange(message, deadline, pictures)
        finally:
            self._lock.release()
        # Only pictures count as success: a child that starts and then fails every request
        # must not be started again at once, over and over.
        self._failures, self._backoff = 0, self._backoff_first
        return got

    def _running(self) -> None:
        """A child answering, started (and its camera started) if there is none."""
        if self._closed:
            raise CameraError(f"{self.name}: the camera is closed")
        if self._child is not None:
            status = self._child.poll()
            if status is None:
                return
            self._failed(f"the camera process ended (exit status {status})")
            self._stop_child(polite=False)
        wait_s = self._retry_at - self._clock()
        if wait_s > 0:
            raise CameraError(f"{self.name}: camera process down ({self.last_error}); "
                              f"next start in {wait_s:.0f} s")
        self._unreaped = [child for child in self._unreaped if child.poll() is None]
        if len(self._unreaped) >= UNREAPED_MAX:
            self._failed(f"{len(self._unreaped)} camera processes killed and not gone "
                         "(stuck in the kernel: the camera driver)")
            raise CameraError(f"{self.name}: {self.last_error}")
        try:
            child = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, close_fds=True, cwd="/",
                                     # a Ctrl-C at the demo's terminal is the daemon's
                                     process_group=0)
        except OSError as e:
            self._failed(f"the camera process cannot start: {e}")
            raise CameraError(f"{self.name}: {self.last_error}") from e
        assert child.stdout is not None and child.stderr is not None
        self._child, self._reader = child, DeadlineReader(child.stdout.fileno())
        threading.Thread(target=_relay_log, args=(child.stderr, child.pid),
                         name=f"camera-log-{child.pid}", daemon=True).start()
        # The camera's own failure to start (picamera2 missing, the camera held elsewhere)
        # is a CameraError and the child stays: its backend retries by itself.
        self._exchange({"op": "start"}, time.monotonic() + START_TIMEOUT_S, (0, 0, 0))

    def _exchange(self, message: dict[str, Any], deadline: float,
                  pictures: tuple[int, int, int]) -> list[bytes]:
        """One request and its answer; the child is killed when it fails to answer."""
        assert self._child is not None and self._child.stdin is not None
        assert self._reader is not None
        request_id = next(self._ids)
        fewest, most, largest = pictures
        try:
            self._child.stdin.write(encode({"id": request_id, **message}))
            self._child.stdin.flush()
            answer = self._reader.line(deadline)
            if answer.get("id") != request_id:
                raise WireError(f"the answer to request {answer.get('id')!r} where "
                                f"{request_id} was asked")
            sizes = picture_sizes(answer, most, largest)
            if answer.get("ok") is True and len(sizes) < fewest:
                raise WireError(f"{len(sizes)} pictures where {fewest} were asked for")
            got = [self._reader.exactly(size, deadline) for size in sizes]
            if not all(picture.startswith(JPEG_START) for picture in got):
                raise WireError("a picture that is not a JPEG")
        except (WireError, OSError, ValueError) as e:
            self._failed(f"the camera process failed ({message['op']}): {e}")
            self._stop_child(polite=False)
            raise CameraError(f"{self.name}: {self.last_error}") from e
        self.ok = answer.get("camera_ok") is True
        error = answer.get("camera_error")
        self.last_error = str(error)[:500] if error is not None else None
        if answer.get("ok") is not True:
            raise CameraError(str(answer.get("error") or f"{self.name}: the camera failed")[:500])
        return got

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
        """Asks the child to close (``polite``), then kills it; never waits on it for
        longer than CLOSE_WAIT_S and KILL_WAIT_S."""
        child, self._child, self._reader = self._child, None, None
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        try:
            if polite:
                child.stdin.write(encode({"op": "close"}))
            child.stdin.close()
        except OSError:
            pass  # gone already
        child.stdout.close()  # stderr is _relay_log's, closed at its end
        try:
            child.wait(CLOSE_WAIT_S if polite else 0)
        except subprocess.TimeoutExpired:
            child.kill()
            try:
                child.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                log.error("camera process %d killed and still there (stuck in the kernel)",
                          child.pid)
                self._unreaped.append(child)


_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
           "CRITICAL": logging.CRITICAL}


def _level(text: str) -> int:
    """The level a child's line was logged at: its first word from edge.camera.serve's
    logging, a later one from libcamera ("[0:00:01.2] [123] ERROR Camera ..."); WARNING
    for a line with none, since a healthy camera process says little."""
    for word in text.split(maxsplit=3)[:3]:
        if word in _LEVELS:
            return _LEVELS[word]
    return logging.WARNING


def _relay_log(stderr: IO[bytes], pid: int) -> None:
    """The child's stderr into the daemon's log, line by line, at the level the child
    logged it (to the journal under systemd, to the demo's log file in the demo, never
    into the demo's terminal), at most LOG_BURST lines at once and LOG_PER_S a second
    after: a child pouring out lines must not drown the alarm's own in the journal (which
    rate-limits a service as a whole). Ends when the child does."""
    allowance, refilled, dropped = float(LOG_BURST), time.monotonic(), 0
    with stderr:
        while line := stderr.readline(LOG_LINE_MAX):
            now = time.monotonic()
            allowance = min(LOG_BURST, allowance + (now - refilled) * LOG_PER_S)
            refilled = now
            if allowance < 1:
                dropped += 1
                continue
            allowance -= 1
            if dropped:
                log.warning("camera process %d: %d lines not logged (too many)", pid, dropped)
                dropped = 0
            text = line.decode("utf-8", "replace").rstrip("\n")
            log.log(_level(text), "camera process %d: %s", pid, text)
        if dropped:
            log.warning("camera process %d: %d lines not logged (too many)", pid, dropped)
