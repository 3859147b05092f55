"""The camera process killed, hung and killed again under a real daemon (build_daemon with
every worker, MockFactory pins, the modem emulator on a pty, the test-pattern camera in its
own process as `edge-alarm run` has it): every press still sounds the siren before its edge
leaves gpiozero's thread, is stored and texted; the camera's failure is a fault, its
restart the recovery; its pictures come back; no camera process outlives the daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

import edge.snapshots
from conftest import PANIC_PIN, SHORT_MODEM_TIMINGS, SIREN_PIN, _wait_until, children_of
from edge.control import request as ask
from edge.service import WorkerOptions
from edge.sim.modem import ModemEmulator
from edge.sim.site import Contact, SimSite, start_site
from edge.store import Store

pytestmark = pytest.mark.reliability

PRINCIPAL = "+8613800138000"
# A hung capture costs its deadline (edge.snapshots.CAPTURE_TIMEOUT_S) and the margin
# edge.camera.process adds for the pipe, then the fault.
HUNG_CAPTURE_S = 5.0 + 1.0 + 4.0


def camera_processes() -> list[int]:
    """The pids of this process's children running edge.camera.serve."""
    found = []
    for pid in children_of(os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            if b"edge.camera.serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def the_camera_process() -> int:
    return _wait_until(lambda: (pids := camera_processes()) and len(pids) == 1 and pids[0],
                       10, what="one camera process")


class Gate:
    def __init__(self, running, factory: MockFactory, modem: ModemEmulator):
        self.cfg = running.cfg
        self.factory = factory
        self.modem = modem

    def press(self) -> int:
        """A panic press: the siren on before the edge leaves gpiozero's thread; the
        event's seq once stored."""
        before = len(self.panics())
        button = self.factory.pin(PANIC_PIN)
        button.drive_low()
        assert self.factory.pin(SIREN_PIN).state == 1, "the siren waited"
        button.drive_high()
        _wait_until(lambda: len(self.panics()) > before, 3, what="the panic stored")
        ask(self.cfg.control.socket, "silence", {"by": "门卫"}, timeout=3)
        time.sleep(0.55)  # the same button within 0.5 s is contact bounce
        return self.panics()[-1].seq

    def panics(self):
        return self.events("panic")

    def events(self, kind: str):
        reader = Store(self.cfg.storage.db_path, readonly=True)
        try:
            return [e for e in reader.events() if e.kind == kind]
        finally:
            reader.close()

    def event(self, seq: int):
        return next(e for e in self.panics() if e.seq == seq)

    def wait_picture(self, seq: int, timeout: float) -> dict:
        """The event's data once the camera worker has attached its picture, or why not."""
        return _wait_until(lambda: (data := self.event(seq).data) and (
            "snapshot_sha256" in data or "snapshot_error" in data) and data, timeout,
            interval=0.1, what=f"the picture of panic {seq}, or its error")

    def texted(self) -> int:
        return len([s for s in self.modem.sent if s.number == PRINCIPAL])

    def camera_faults(self) -> list[str]:
        return [e.kind for kind in ("fault", "recovered") for e in self.events(kind)
                if e.subject == "camera"]


@pytest.fixture
def gate(request: pytest.FixtureRequest, tmp_path, short_dir, monkeypatch):
    """The gate, with the pre-trigger seconds of the test's parameter."""
    pre_trigger_s = request.param
    monkeypatch.setattr(edge.snapshots, "CAMERA_RETRY_S", 1.0)  # the fault's retry, not 30 s
    factory = MockFactory()
    site = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                   camera_pre_trigger_s=pre_trigger_s,
                   contacts=[Contact("principal", PRINCIPAL, ("panic",))])
    with contextlib.ExitStack() as stack:
        modem = stack.enter_context(ModemEmulator())
        running = start_site(site, tmp_path, stack, modem=modem, pin_factory=factory,
                             options=WorkerOptions(modem_timings=SHORT_MODEM_TIMINGS))
        gate = Gate(running, factory, modem)
        _wait_until(lambda: ask(gate.cfg.control.socket, "status", timeout=3)
                    ["camera"]["ok"], 15, what="the camera up")
        yield gate
        child = the_camera_process()
        started = time.monotonic()
        os.kill(child, signal.SIGSTOP)  # a hung camera must not hold up the daemon's stop
        assert running.owner.close(10), "the daemon did not stop"
        assert time.monotonic() - started < 10
        assert running.owner.crash == []
        _wait_until(lambda: not camera_processes(), 5, what="no camera process left")


@pytest.mark.parametrize("gate", [2], indirect=True)
def test_a_killed_or_hung_camera_process_is_replaced_and_the_alarms_keep_their_pictures(gate):
    first = gate.press()
    assert "snapshot_sha256" in gate.wait_picture(first, 10)
    assert gate.event(first).data["frames"] >= 1

    # Killed: the next alarm's capture starts a new camera process at once.
    killed = the_camera_process()
    os.kill(killed, signal.SIGKILL)
    second = gate.press()
    assert "snapshot_sha256" in gate.wait_picture(second, 15)
    assert the_camera_process() != killed

    # Hung (as in a libcamera call that never returns), met by the request for the
    # pre-trigger frames: those are lost, the stuck process is killed, and a new one takes
    # the still.
    hung = the_camera_process()
    os.kill(hung, signal.SIGSTOP)
    third = gate.press()
    data = gate.wait_picture(third, HUNG_CAPTURE_S)
    assert "snapshot_sha256" in data and "frames" not in data
    assert the_camera_process() != hung
    _wait_until(lambda: gate.texted() == 3, 10, what="three alarm SMS")


@pytest.mark.parametrize("gate", [0], indirect=True)
def test_a_capture_that_hangs_is_a_camera_fault_and_never_holds_an_alarm_up(gate):
    hung = the_camera_process()
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    first = gate.press()
    assert time.monotonic() - started < 2, "the press waited for the camera"
    data = gate.wait_picture(first, HUNG_CAPTURE_S)
    assert "snapshot_sha256" not in data and "no answer" in data["snapshot_error"]
    _wait_until(lambda: gate.camera_faults()[-1:] == ["recovered"], 10,
                what="the camera recovered")
    assert hung not in camera_processes()
    assert gate.camera_faults() == ["fault", "recovered"]

    second = gate.press()
    assert "snapshot_sha256" in gate.wait_picture(second, 10)
    _wait_until(lambda: gate.texted() == 2, 10, what="both alarm SMS")
