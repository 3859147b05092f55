"""The camera process: one camera backend, driven by the daemon over stdin and stdout.

    python -m edge.camera.serve BACKEND PRE_TRIGGER_S PARENT_PID [--head TEXT] [--tz ZONE]

edge.camera.process starts it; nothing else should. Its stdout carries only the protocol of
edge.camera.wire (anything else printing there, a library included, is sent to stderr, which
the daemon logs line by line). It ends when the daemon closes its stdin, asks it to close, or
dies.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from edge.camera import Camera, open_camera
from edge.camera.wire import MAX_LINE, encode
from edge.errors import CameraError

log = logging.getLogger("edge.camera.serve")

_PR_SET_PDEATHSIG = 1
FIRST_FRAME_WAIT_S = 2.0


def _die_with(parent_pid: int) -> None:
    """SIGKILL when the daemon dies, even while a libcamera call holds this process up and
    no one reads the closed stdin (it would keep the camera from the next daemon)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the closed stdin still ends this process
    if os.getppid() != parent_pid:  # the daemon died before the prctl
        os._exit(1)


class Overlay:
    """The lines the test pattern draws: a still's, sent with its request, or the device's
    name and this process's local time for a pre-trigger frame."""

    def __init__(self, head: str, tz: dt.tzinfo):
        self._head = head
        self._tz = tz
        self.still: list[str] | None = None

    def __call__(self) -> list[str]:
        if self.still is not None:
            return self.still
        return [self._head, dt.datetime.now(self._tz).strftime("%Y-%m-%d %H:%M:%S %z")]


def _answer(out: int, request_id: object, camera: Camera, error: str | None = None,
            pictures: tuple[bytes, ...] = ()) -> None:
    header = {"id": request_id, "ok": error is None, "error": error, "camera_ok": camera.ok,
              "camera_error": camera.last_error, "sizes": [len(p) for p in pictures]}
    for data in (encode(header), *pictures):
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]


def _start(camera: Camera, pre_trigger: bool) -> None:
    """Starts the camera and, with a pre-trigger ring, waits (bounded) for its first frame:
    the daemon's camera is up when its pictures are, so an alarm right after start-up still
    gets the second before it."""
    camera.start()
    deadline = time.monotonic() + FIRST_FRAME_WAIT_S
    while pre_trigger and not camera.pre_trigger_frames() and time.monotonic() < deadline:
        time.sleep(0.02)


def _handle(request: dict[str, Any], camera: Camera, overlay: Overlay,
            pre_trigger: bool) -> tuple[bytes, ...]:
    op = request.get("op")
    if op == "start":
        _start(camera, pre_trigger)
        return ()
    if op == "capture":
        lines = request.get("lines")
        overlay.still = [str(line) for line in lines] if isinstance(lines, list) else None
        try:
            return (camera.capture_jpeg(float(request.get("timeout_s", 5.0))),)
        finally:
            overlay.still = None
    if op == "frames":
        return tuple(camera.pre_trigger_frames())
    raise ValueError(f"unknown request {op!r}")


def _requests(lines) -> Iterator[dict[str, Any] | str]:
    """Each request line as a dict, or why it is none; a line over MAX_LINE is read to its
    end and answered once, so the answers keep step with the requests."""
    while line := lines.readline(MAX_LINE + 1):
        if not line.endswith(b"\n") and len(line) > MAX_LINE:
            while (rest := lines.readline(MAX_LINE + 1)) and not rest.endswith(b"\n"):
                pass
            yield f"a request longer than {MAX_LINE} bytes"
            continue
        try:
            request = json.loads(line)
        except ValueError as e:
            yield f"not JSON: {e}"
            continue
        yield request if isinstance(request, dict) else "a request is a JSON object"


def serve(camera: Camera, overlay: Overlay, lines, out: int, pre_trigger: bool) -> None:
    """Answers each request line until end of input or ``close``."""
    for request in _requests(lines):
        if isinstance(request, str):
            _answer(out, None, camera, request)
            continue
        if request.get("op") == "close":
            break
        request_id = request.get("id")
        try:
            pictures = _handle(request, camera, overlay, pre_trigger)
        except CameraError as e:
            _answer(out, request_id, camera, str(e))
        except Exception as e:  # the daemon sent something odd: say so, keep serving
            log.exception("camera request failed")
            _answer(out, request_id, camera, f"{type(e).__name__}: {e}")
        else:
            _answer(out, request_id, camera, None, pictures)


def _first_to_go() -> None:
    """Short of memory, the kernel kills this process before the daemon (which systemd
    starts with OOMScoreAdjust=-500, inherited here): the camera is what the alarm can lose."""
    try:
        Path("/proc/self/oom_score_adj").write_text("500")
    except OSError:
        pass  # not Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge.camera.serve")
    parser.add_argument("backend")
    parser.add_argument("pre_trigger_s", type=int)
    parser.add_argument("parent_pid", type=int)
    parser.add_argument("--head", default="edge-alarm")
    parser.add_argument("--tz", default="UTC")
    args = parser.parse_args(argv)
    _die_with(args.parent_pid)
    _first_to_go()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the demo is the daemon's to act on
    out = os.dup(1)
    os.dup2(2, 1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    overlay = Overlay(args.head, ZoneInfo(args.tz))
    camera = open_camera(args.backend, pre_trigger_s=args.pre_trigger_s, overlay=overlay)
    if camera is None:
        return 2
    try:
        serve(camera, overlay, sys.stdin.buffer, out, args.pre_trigger_s > 0)
    finally:
        camera.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
