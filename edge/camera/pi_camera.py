"""The Raspberry Pi camera through picamera2, which is imported late, inside Picamera2Camera:
it exists only on Raspberry Pi OS (from apt), and the rest of the daemon runs without it."""

from __future__ import annotations

import io
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, NoReturn, TypeVar

from edge.camera.frame_ring import FrameRing
from edge.camera.jpeg import yuv420_to_jpeg
from edge.errors import CameraError

log = logging.getLogger(__name__)

T = TypeVar("T")


class _CameraThread:
    """One Picamera2 and the only thread that calls it. A picamera2 call can hang in libcamera
    (a loose ribbon cable, a frontend timeout); the caller then gives up on the whole thread,
    a daemon so it never holds up the process's exit. ``retire()`` queues the camera's close
    behind whatever is running, so the camera is released if that call ever returns."""

    _numbers = itertools.count(1)

    def __init__(self) -> None:
        self.camera: Any = None  # the Picamera2 opened on this thread; used only on this thread
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name=f"picamera2-{next(self._numbers)}", daemon=True
        )
        self._thread.start()

    def call(self, fn: Callable[[], T], timeout_s: float) -> T:
        """fn's result; TimeoutError when it has not finished within timeout_s."""
        future = self._submit(fn)
        try:
            return future.result(timeout=max(timeout_s, 0.0))
        finally:
            future.cancel()  # no effect once it runs; a call not yet started is dropped

    def retire(self) -> Future:
        """Closes the camera once the calls queued so far are done, then ends the thread."""
        closed = self._submit(self._close_camera)
        self._calls.put(None)
        return closed

    def _submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._calls.put((fn, future))
        return future

    def _close_camera(self) -> None:
        camera, self.camera = self.camera, None
        if camera is not None:
            camera.close()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class Picamera2Camera:
    """The Raspberry Pi camera through picamera2 (installed from apt on Raspberry Pi OS; imported
    only here). Configured once for stills, with a lores stream when pre-trigger frames are kept,
    and kept running so a capture takes one frame's time.

    Every call has a deadline. A failure (the camera held by another process, a capture that
    hangs or raises) makes ``ok`` false and ``last_error`` say why, and retires the camera: its
    thread closes it as soon as it is free. The next capture (or pre-trigger frame) after a
    backoff, doubling from ``backoff_s[0]`` up to ``backoff_s[1]``, waits for that close and opens
    a new camera; a success makes ``ok`` true again. ``clock`` (monotonic seconds) times the
    backoff only.
    """

    name = "picamera2"

    FRAME_WIDTH = 320
    FRAME_TIMEOUT_S = 2.0
    CLOSE_WAIT_S = 2.0

    def __init__(
        self,
        *,
        pre_trigger_s: int,
        frame_interval_s: float = 1.0,
        backoff_s: tuple[float, float] = (2.0, 120.0),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ok = True
        self.last_error: str | None = None
        self._clock = clock
        self._backoff_first, self._backoff_max = backoff_s
        self._backoff = self._backoff_first
        self._retry_at = float("-inf")
        self._lock = threading.Lock()  # one caller at a time drives the camera and this state
        self._worker: _CameraThread | None = None  # with a configured, running camera
        self._retired: Future | None = None  # the close of the camera that last failed
        self._closed = False
        self._ring = (
            FrameRing(self._grab_frame, pre_trigger_s, interval_s=frame_interval_s, name="picamera2-frames")
            if pre_trigger_s > 0 else None
        )

    def start(self, timeout_s: float = 10.0) -> None:
        try:
            self._use("opening the camera", lambda camera: None, timeout_s)
        finally:
            # Even when the camera failed to open: the ring's grabs retry it, so it recovers unasked.
            if self._ring:
                self._ring.start()

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes:
        return self._use("capturing a still", self._still_jpeg, timeout_s)

    def pre_trigger_frames(self) -> list[bytes]:
        return self._ring.frames() if self._ring else []

    def close(self) -> None:
        if self._ring:
            self._ring.stop()
        locked = self._lock.acquire(timeout=self.CLOSE_WAIT_S)
        try:
            self._closed = True
            worker, self._worker = self._worker, None
        finally:
            if locked:
                self._lock.release()
        if worker is not None:
            self._wait_closed(worker.retire(), self.CLOSE_WAIT_S)

    # Runs on the camera thread.
    def _open(self, worker: _CameraThread) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError("picamera2 is not installed (sudo apt install python3-picamera2; "
                              "the venv needs --system-site-packages, as install.sh makes "
                              f"it): {exc}") from exc

        worker.camera = camera = Picamera2()
        lores = None
        if self._ring:
            sensor_w, sensor_h = camera.sensor_resolution
            # Same aspect ratio as the sensor: the lores stream is scaled, not cropped.
            lores_h = round(self.FRAME_WIDTH * sensor_h / sensor_w / 2) * 2
            lores = {"size": (self.FRAME_WIDTH, lores_h), "format": "YUV420"}
        camera.configure(camera.create_still_configuration(main={}, lores=lores))
        camera.start()

    @staticmethod
    def _still_jpeg(camera: Any) -> bytes:
        out = io.BytesIO()
        camera.capture_file(out, format="jpeg")
        if not out.getvalue():
            raise CameraError("the camera returned an empty image")
        return out.getvalue()

    @staticmethod
    def _lores_jpeg(camera: Any) -> bytes:
        stream = camera.camera_config["lores"]
        return yuv420_to_jpeg(bytes(camera.capture_buffer("lores")), stream["size"], stream["stride"])

    # Runs on the caller's thread.
    def _grab_frame(self) -> bytes | None:
        deadline = time.monotonic() + self.FRAME_TIMEOUT_S
        if not self._lock.acquire(timeout=self.FRAME_TIMEOUT_S):
            return None  # a still capture holds the camera; skip this frame, keep the others
        try:
            return self._use_locked("capturing a pre-trigger frame", self._lores_jpeg, deadline)
        finally:
            self._lock.release()

    def _use(self, what: str, action: Callable[[Any], T], timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            raise CameraError(f"picamera2: {what}: the camera stayed busy for {timeout_s:g} s")
        try:
            return self._use_locked(what, action, deadline)
        finally:
            self._lock.release()

    def _use_locked(self, what: str, action: Callable[[Any], T], deadline: float) -> T:
        """action(camera) on the camera thread by the deadline, opening the camera first if it is down."""
        if self._closed:
            raise CameraError("picamera2: the camera is closed")
        worker = self._worker if self._worker is not None else self._restart(deadline)
        result = self._call(worker, what, lambda: action(worker.camera), deadline)
        if not self.ok:
            log.info("camera recovered (was: %s)", self.last_error)
        self.ok, self.last_error, self._backoff = True, None, self._backoff_first
        return result

    def _restart(self, deadline: float) -> _CameraThread:
        """A new camera thread with the camera opened on it, by the deadline."""
        wait_s = self._retry_at - self._clock()
        if wait_s > 0:
            raise CameraError(f"picamera2: camera down ({self.last_error}); next restart in {wait_s:.0f} s")
        if self._retired is not None:
            # The old camera must let go of the device first, or the new one cannot open it.
            if not self._wait_closed(self._retired, min(deadline - time.monotonic(), self.CLOSE_WAIT_S)):
                self._fail("the previous camera has not closed (stuck in libcamera)")
            self._retired = None
        worker = _CameraThread()
        self._call(worker, "opening the camera", lambda: self._open(worker), deadline)
        self._worker = worker
        return worker

    def _call(self, worker: _CameraThread, what: str, fn: Callable[[], T], deadline: float) -> T:
        timeout_s = deadline - time.monotonic()
        try:
            return worker.call(fn, timeout_s)
        except TimeoutError:
            self._fail(f"{what} did not finish within {max(timeout_s, 0):.1f} s", worker)
        except Exception as exc:
            self._fail(f"{what} failed: {type(exc).__name__}: {exc}", worker)

    def _fail(self, message: str, worker: _CameraThread | None = None) -> NoReturn:
        """Records the fault, retires the camera, schedules the next restart, and raises."""
        if self.ok:
            log.warning("camera fault: %s", message)
        self.ok, self.last_error = False, message
        if worker is not None:
            self._retired = worker.retire()
            if worker is self._worker:
                self._worker = None
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        raise CameraError(f"picamera2: {message}")

    @staticmethod
    def _wait_closed(closed: Future, timeout_s: float) -> bool:
        """Whether the camera's close finished within timeout_s (a failed close counts: it is gone)."""
        try:
            closed.result(timeout=max(timeout_s, 0.0))
        except TimeoutError:
            log.warning("camera close did not finish within %.1f s", timeout_s)
            return False
        except Exception as exc:
            log.warning("camera close failed: %s: %s", type(exc).__name__, exc)
        return True
