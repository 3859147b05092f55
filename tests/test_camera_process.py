"""The camera in a process of its own (edge.camera.process, edge.camera.serve): real child
processes, killed, stopped and replaced by liars; the daemon's own process never loads the
camera's libraries."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import children_of, start_daemon, stop_daemon
from edge.camera.process import (ANSWER_MARGIN_S, KILL_WAIT_S, LOG_BURST, SERVE_COMMAND,
                                 START_TIMEOUT_S, CameraProcess)
from edge.camera.wire import MAX_FRAME, MAX_LINE, MAX_STILL
from edge.errors import CameraError


def pattern_camera(pre_trigger_s: int = 2, **options) -> CameraProcess:
    return CameraProcess("test-pattern", pre_trigger_s=pre_trigger_s, head="test-gate-1",
                         tz="Asia/Shanghai", **options)


def child_pid(camera: CameraProcess) -> int:
    assert camera._child is not None
    return camera._child.pid


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` has ended (exited and reaped, or a zombie) within ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_stills_and_frames_come_from_a_child_with_the_daemons_lines():
    camera = pattern_camera(overlay=lambda: ["实验小学 东门", "一键报警"])
    try:
        camera.start()
        assert camera.ok and child_pid(camera) != os.getpid()
        jpeg = camera.capture_jpeg()
        with Image.open(io.BytesIO(jpeg)) as image:
            assert (image.format, image.size) == ("JPEG", (1280, 720))
        frames = camera.pre_trigger_frames()
        assert 1 <= len(frames) <= 2  # the first is there as soon as the camera is up
        with Image.open(io.BytesIO(frames[0])) as frame:
            assert (frame.format, frame.size) == ("JPEG", (320, 180))
    finally:
        camera.close()


def test_a_killed_child_is_replaced_at_once():
    camera = pattern_camera(pre_trigger_s=0)
    try:
        camera.start()
        first = child_pid(camera)
        os.kill(first, signal.SIGKILL)
        assert gone(first)
        jpeg = camera.capture_jpeg()
        assert jpeg.startswith(b"\xff\xd8") and child_pid(camera) != first and camera.ok
    finally:
        camera.close()


def test_a_hung_child_is_killed_at_the_deadline_and_replaced():
    camera = pattern_camera(pre_trigger_s=0)
    try:
        camera.start()
        hung = child_pid(camera)
        os.kill(hung, signal.SIGSTOP)  # as a libcamera call that never returns
        started = time.monotonic()
        with pytest.raises(CameraError, match="no answer in time"):
            camera.capture_jpeg(timeout_s=0.5)
        assert time.monotonic() - started < 0.5 + ANSWER_MARGIN_S + 1.0
        assert gone(hung, 2.0) and not camera.ok
        camera.capture_jpeg()  # a fresh child
        assert child_pid(camera) != hung and camera.ok
    finally:
        camera.close()


LIARS = {
    "not JSON": "out.write(b'hello\\n')",
    "a line without end": f"out.write(b'x' * {MAX_LINE * 4})",
    "a JSON list": "out.write(b'[1, 2]\\n')",
    "a picture too big": f"answer(sizes=[{MAX_STILL + 1}])",
    "the answer to another request": "answer(id=-1, sizes=[4]); out.write(b'\\xff\\xd8\\xff\\xd9')",
    "too many pictures": "answer(sizes=[1] * 1000)",
    "a size that is no number": "answer(sizes=['12'])",
    "a picture cut short": "answer(sizes=[1000]); out.write(b'\\xff\\xd8\\xff' + b'x' * 10)",
    "no picture where one was asked": "answer(sizes=[])",
    "a picture that is no JPEG": "answer(sizes=[4]); out.write(b'GIF8')",
    "silence": "time.sleep(60)",
}


def liar(tmp_path: Path, lie: str) -> tuple[str, ...]:
    """A fake camera process that answers its start properly, then a request with ``lie``."""
    script = tmp_path / "liar.py"
    script.write_text(textwrap.dedent(f"""\
        import json, sys, time
        out = sys.stdout.buffer
        def answer(**fields):
            out.write(json.dumps({{"id": request["id"], "ok": True, "camera_ok": True,
                                   **fields}}).encode() + b"\\n")
            out.flush()
        request = json.loads(sys.stdin.readline())
        answer(sizes=[])
        request = json.loads(sys.stdin.readline())
        {lie}
        out.flush()
        time.sleep(60)
        """))
    return (sys.executable, str(script), "--")


def test_a_child_failing_again_after_its_restart_waits_out_a_backoff(tmp_path):
    now = [100.0]
    camera = CameraProcess("test-pattern", pre_trigger_s=0, head="x", tz="UTC",
                           command=liar(tmp_path, LIARS["silence"]),
                           backoff_s=(30.0, 60.0), clock=lambda: now[0])
    try:
        camera.start()
        with pytest.raises(CameraError, match="no answer in time"):
            camera.capture_jpeg(timeout_s=0.2)
        with pytest.raises(CameraError, match="no answer in time"):
            camera.capture_jpeg(timeout_s=0.2)  # restarted at once: the first failure
        with pytest.raises(CameraError, match="next start in 30 s"):
            camera.capture_jpeg(timeout_s=0.2)  # failed again: not before the backoff
        now[0] += 30
        with pytest.raises(CameraError, match="no answer in time"):
            camera.capture_jpeg(timeout_s=0.2)
        with pytest.raises(CameraError, match="next start in 60 s"):
            camera.capture_jpeg(timeout_s=0.2)  # the backoff doubled
        assert not camera.ok and "no answer in time" in camera.last_error
    finally:
        camera.close()


@pytest.mark.parametrize("lie", LIARS.values(), ids=LIARS.keys())
def test_a_child_that_breaks_the_protocol_is_a_fault_never_an_escape(tmp_path, lie):
    camera = CameraProcess("test-pattern", pre_trigger_s=0, head="x", tz="UTC",
                           command=liar(tmp_path, lie))
    try:
        camera.start()
        child = child_pid(camera)
        started = time.monotonic()
        with pytest.raises(CameraError):
            camera.capture_jpeg(timeout_s=0.5)
        assert time.monotonic() - started < 0.5 + ANSWER_MARGIN_S + 1.0
        assert not camera.ok and camera._child is None
        assert gone(child, 2.0)
    finally:
        camera.close()


def child_log(tmp_path: Path, caplog, talk: str, until: str) -> list[logging.LogRecord]:
    """The daemon's log records of a fake camera process that runs ``talk`` (Python,
    writing to stderr), answers its start and is closed; once ``until`` is in the log."""
    script = tmp_path / "talker.py"
    script.write_text("import json, sys\n" + textwrap.dedent(talk) + textwrap.dedent("""\
        sys.stderr.flush()
        request = json.loads(sys.stdin.readline())
        sys.stdout.write(json.dumps({"id": request["id"], "ok": True, "camera_ok": True,
                                     "sizes": []}) + "\\n")
        sys.stdout.flush()
        sys.stdin.readline()
        """))
    camera = CameraProcess("test-pattern", pre_trigger_s=0, head="x", tz="UTC",
                           command=(sys.executable, str(script), "--"))
    with caplog.at_level(logging.INFO, logger="edge.camera.process"):
        camera.start()
        camera.close()
        deadline = time.monotonic() + 5
        while until not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    return caplog.records


def test_the_childs_log_reaches_the_daemons_log_at_its_level(tmp_path, caplog):
    records = child_log(tmp_path, caplog, """\
        print("WARNING edge.camera.pi_camera: the ribbon cable is loose", file=sys.stderr)
        """, until="ribbon cable")
    [record] = [r for r in records if "ribbon cable" in r.getMessage()]
    assert record.levelno == logging.WARNING


def test_the_daemon_never_loads_pillow_and_its_camera_dies_with_it(
        write_config, tmp_path, short_dir, wait_until):
    config = write_config(camera_pre_trigger_s=2)
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        wait_until(lambda: json.loads(daemon.cli("status", "--json").stdout)
                   ["camera"]["ok"], 15, what="the camera up")
        daemon.cli("sim", "guard_room", "on")
        wait_until(lambda: list((tmp_path / "var" / "snapshots").rglob("*-frame-1.jpg")), 10,
                   what="the panic's picture and frame")
        maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
        assert "PIL" not in maps and "freetype" not in maps and "jpeg" not in maps
        [camera] = children_of(daemon.proc.pid)
        assert "PIL" in Path(f"/proc/{camera}/maps").read_text()
        daemon.proc.kill()  # kill -9: no close, no goodbye
        daemon.proc.wait()
        assert gone(camera, 5.0), "the camera process outlived the daemon"
    finally:
        stop_daemon(daemon)


def test_an_overlong_overlay_line_cannot_put_the_answers_out_of_step():
    """A label of 70,000 characters: the still is still the still, the frames frames."""
    camera = pattern_camera(overlay=lambda: ["门" * 70_000, "x" * 70_000] * 20)
    try:
        camera.start()
        for _ in range(2):
            with Image.open(io.BytesIO(camera.capture_jpeg())) as still:
                assert still.size == (1280, 720)
            assert {Image.open(io.BytesIO(f)).size for f in camera.pre_trigger_frames()} \
                == {(320, 180)}
        assert camera.ok
    finally:
        camera.close()


@pytest.mark.parametrize("lie", [f"answer(sizes=[{MAX_FRAME + 1}])",
                                 "answer(sizes=[10] * 3)"],
                         ids=["a frame too big", "more frames than seconds kept"])
def test_frames_are_bounded_by_what_a_ring_can_hold(tmp_path, lie):
    camera = CameraProcess("test-pattern", pre_trigger_s=2, head="x", tz="UTC",
                           command=liar(tmp_path, lie))
    try:
        camera.start()
        assert camera.pre_trigger_frames() == []
        assert not camera.ok and "out of bounds" in camera.last_error
    finally:
        camera.close()


def test_a_child_that_a_kill_does_not_end_costs_a_bounded_wait_and_a_fault(monkeypatch):
    """A process stuck in the kernel (a camera driver's ioctl) outlives SIGKILL: here one
    stopped, whose kill is lost."""
    camera = pattern_camera(pre_trigger_s=0)
    try:
        camera.start()
        stuck = camera._child
        monkeypatch.setattr(subprocess.Popen, "kill", lambda self: None)
        os.kill(stuck.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(CameraError, match="no answer in time"):
            camera.capture_jpeg(timeout_s=0.5)
        assert time.monotonic() - started < 0.5 + ANSWER_MARGIN_S + KILL_WAIT_S + 1.0
        assert not camera.ok and stuck.poll() is None
        monkeypatch.undo()
        camera.capture_jpeg()  # a new camera process beside the stuck one
        assert camera.ok
    finally:
        os.kill(stuck.pid, signal.SIGKILL)
        stuck.wait()
        camera.close()


def test_a_camera_process_that_died_while_idle_gets_its_start_before_the_alarms_deadline(
        tmp_path):
    """Killed between alarms; the new one is slow to start (a Pi importing picamera2): the
    next alarm's frames and still wait for it, and both come."""
    slow_start = ("sh", "-c", 'sleep 3.5; exec "$0" "$@"', *SERVE_COMMAND)
    camera = CameraProcess("test-pattern", pre_trigger_s=2, head="x", tz="UTC",
                           command=slow_start)
    try:
        camera.start()
        os.kill(child_pid(camera), signal.SIGKILL)
        time.sleep(0.2)
        started = time.monotonic()
        frames = camera.pre_trigger_frames()
        assert 1 <= len(frames) <= 2 and time.monotonic() - started < START_TIMEOUT_S
        assert camera.capture_jpeg().startswith(b"\xff\xd8")
        assert camera.ok
    finally:
        camera.close()


def test_a_fake_edge_package_in_the_working_directory_is_never_the_camera_process(
        tmp_path, monkeypatch):
    impostor = tmp_path / "edge" / "camera"
    impostor.mkdir(parents=True)
    for package in (tmp_path / "edge", impostor):
        (package / "__init__.py").write_text("")
    (impostor / "serve.py").write_text("raise SystemExit('impostor')\n")
    monkeypatch.chdir(tmp_path)
    camera = pattern_camera(pre_trigger_s=0)
    try:
        camera.start()
        assert camera.capture_jpeg().startswith(b"\xff\xd8") and camera.ok
    finally:
        camera.close()


def test_a_child_pouring_out_log_lines_gets_a_bounded_share_of_the_log(tmp_path, caplog):
    records = child_log(tmp_path, caplog, """\
        for n in range(20_000):
            print(f"[0:00:01.{n}] [42] ERROR V4L2 v4l2_videodevice.cpp:1906 dequeue timeout",
                  file=sys.stderr)
        """, until="not logged")
    relayed = [r for r in records if "dequeue timeout" in r.getMessage()]
    assert LOG_BURST <= len(relayed) < LOG_BURST + 50
    assert all(r.levelno == logging.ERROR for r in relayed)  # libcamera's level, read
    assert any("lines not logged (too many)" in r.getMessage() for r in records)
