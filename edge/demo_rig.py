"""The rig of `edge-alarm demo`: the simulated school gate of edge.sim.site, started in one
temporary directory with a fast-forward clock, driven as a user drives it (the control
socket, the principal's SMS) and observed through the store, the emulated modem and the
stand-in platform."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import secrets
import tempfile
import time
from pathlib import Path
from typing import Callable

from edge.clock import FakeClock
from edge.control import request
from edge.errors import EdgeAlarmError
from edge.events import Event
from edge.routing import UPLINK
from edge.sdnotify import Notifier
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, SimSite, start_site
from edge.store import Store

TEMP_PREFIX = "edge-alarm-demo-"
PRINCIPAL = "+8613800138000"
DEVICE_ID = "gaoshan-gate-1"
HELD_OPEN_ALERT_S = 300
SMS_FALLBACK_AFTER_S = 20
PRE_TRIGGER_S = 3
CALL_AFTER_S = 30  # [escalation]: the principal's phone rings before 收到 comes
LAMP_PIN = 23  # [indicator]: the guard's lamp
STEP_TIMEOUT_S = 10.0   # real seconds any one expected step may take
# A Unix socket path longer than this does not fit in sockaddr_un on every system.
MAX_SOCKET_PATH = 100


class StepMissing(EdgeAlarmError, RuntimeError):
    """An expected step of the scenario did not happen."""


def demo_site(directory: Path) -> SimSite:
    """The demo's school gate: the simulated site with a test-pattern camera, the modem and
    platform (wired in by start_site) and the principal told of every alarm."""
    return SimSite(
        directory / "var", directory / "control.sock", device_id=DEVICE_ID,
        held_open_alert_s=HELD_OPEN_ALERT_S, camera_pre_trigger_s=PRE_TRIGGER_S,
        sms_fallback_after_s=SMS_FALLBACK_AFTER_S, uplink_keys={"heartbeat_s": 300},
        contacts=[Contact("principal", PRINCIPAL, ["panic", "gate_after_hours",
                                                   "gate_held_open", "tamper", "fault"],
                          may_command=True)],
        extra=f"\n[escalation]\ncall_after_s = {CALL_AFTER_S}\nring_s = 60\n"
              f"\n[indicator]\npin = {LAMP_PIN}\n",
        comment="The demo's school gate: simulated pins, emulated modem, test-pattern camera "
                "and a\nstand-in platform, all on this computer. Written by `edge-alarm demo`, "
                "removed with it.")


class Rig:
    """The simulated gate, in one temporary directory: config, token, store, control socket,
    the modem's pty link and the daemon log all live there."""

    def __init__(self, stack: contextlib.ExitStack, start: dt.datetime, log_tail: list[str]):
        """Everything started is registered on ``stack`` to be stopped; the daemon log's
        last lines are put in ``log_tail`` just before the directory goes."""
        self.dir = _make_workdir()
        stack.callback(shutil.rmtree, self.dir, ignore_errors=True)
        self.log_path = self.dir / "daemon.log"
        stack.callback(lambda: log_tail.extend(_tail(self.log_path)))
        _log_to(self.log_path, stack)
        self.tz = start.tzinfo
        self.clock = FakeClock(start.astimezone(dt.timezone.utc))

        self.platform = PlatformStub(token=secrets.token_hex(16)).start()
        stack.callback(self.platform.stop)
        # The emulator's port link goes in our directory too.
        self.modem = ModemEmulator(operator="CHINA MOBILE", signal=20, dir=str(self.dir))
        self.modem.start()
        stack.callback(self.modem.close)
        site = start_site(demo_site(self.dir), self.dir, stack, modem=self.modem,
                          platform=self.platform,
                          clock=self.clock, notifier=Notifier(environ={}))
        self.config_path, self.cfg, self.daemon = site.config_path, site.cfg, site.daemon
        self._owner = site.owner
        self.socket = self.cfg.control.socket
        self.store = Store(self.cfg.storage.db_path)  # our own reader connection
        stack.callback(self.store.close)

    # ---------------------------------------------------------------- driving

    def sim(self, name: str, on: bool) -> None:
        """As `edge-alarm sim NAME on|off`, through the control socket."""
        request(self.socket, "sim", {"input": name, "state": "on" if on else "off"})

    def status(self) -> dict:
        """As `edge-alarm status`, through the control socket."""
        return request(self.socket, "status")

    def status_when(self, condition: Callable[[dict], object]) -> dict | None:
        status = self.status()
        return status if condition(status) else None

    def now(self) -> dt.datetime:
        return self.clock.now().astimezone(self.tz)

    def advance(self, seconds: float) -> None:
        """Fast-forward: move the clock, then wake the owner loop and every worker, since
        each computes its next deadline from the daemon's clock."""
        self.clock.advance(seconds)
        self.daemon.loop.post(lambda: None)
        for worker in self.daemon.workers:
            worker.wake()

    def advance_to(self, when: dt.datetime) -> None:
        self.advance(max(0.0, (when - self.clock.now()).total_seconds()))

    def debounce(self) -> None:
        """Let a gate's new level hold for its debounce_s."""
        gate = self.cfg.input("main_gate")
        assert gate is not None  # the demo's site has it
        self.advance(gate.debounce_s + 0.05)

    def wait(self, predicate: Callable[[], object], what: str,
             timeout: float = STEP_TIMEOUT_S):
        """The predicate's truthy result, polled; StepMissing naming ``what`` if none came."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self._owner.crash:
                raise StepMissing(f"the daemon stopped: {self._owner.crash[0]}")
            if time.monotonic() >= deadline:
                raise StepMissing(f"{what} (waited {timeout:.0f} s)")
            time.sleep(0.02)

    # ---------------------------------------------------------------- observing

    def events_after(self, seq: int) -> list[Event]:
        return self.store.events(after_seq=seq)

    def stored(self, kind: str, after_seq: int) -> Event | None:
        return next((e for e in self.events_after(after_seq) if e.kind == kind), None)

    def received(self, event: Event) -> bool:
        return any(r.id == event.id for r in self.platform.events)

    def pending(self) -> list:
        return self.store.pending_deliveries(UPLINK, 1000)

    def uplink_has_failed(self) -> bool:
        """The oldest event owed to the platform has been tried at least once."""
        rows = self.pending()
        return bool(rows) and rows[0].attempts >= 1

    def drained(self) -> bool:
        """Whether every event reached the platform and the uplink is no longer failing;
        if not, fast-forward to the uplink's next retry."""
        status = self.status()
        if status["uplink"]["pending"] == 0 and "uplink" not in status["faults"]:
            return True
        rows = self.pending()
        if rows and rows[0].next_try > self.clock.now().timestamp():
            self.advance(rows[0].next_try - self.clock.now().timestamp() + 0.1)
        return False

    def settled(self) -> bool:
        """Nothing due is left undone: no SMS due unsent, and the uplink has tried every
        event whose retry time has come (it then waits for a later time)."""
        now = self.clock.now().timestamp()
        if self.store.due_sms(now):
            return False
        rows = self.pending()
        return not rows or rows[0].next_try > now


def _make_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    if len(str(path / "control.sock")) > MAX_SOCKET_PATH:  # a long $TMPDIR
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp"))
    return path


def _log_to(path: Path, stack: contextlib.ExitStack) -> None:
    """The daemon's log goes to a file in the demo's directory, not into the timeline."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def restore():
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
    stack.callback(restore)


def _tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []
