"""The wall clock stepped back and forward, as NTP does to a Pi that booted without a
battery clock (hours off, then right): every timer runs on the monotonic clock, events keep
their creation order in seq, and each event's time is honestly the wall clock when it was
made, with whether that clock was synchronised (`clock_synced`).

The owner's timers (siren max_on_s, drill, walk test, held-open) are driven on the
daemon-logic rig with a FakeClock (tests/test_daemon_logic.py has each one alone); the
workers' waits (the uplink's backoff, the SMS fallback deadline) and the escalation's wait
for its call on a running daemon whose wall clock is stepped under it."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from typing import Callable

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import (PANIC_PIN, PLATFORM_TOKEN, SHORT_MODEM_TIMINGS, SyncedKernel,
                      _wait_until, cloudevent_problems)
import edge.sms_outgoing
from edge import config
from edge.clock import FakeClock
from edge.service import WorkerOptions
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, SimSite, start_site
from edge.store import Store
from sia_receiver import Receiver
from test_daemon_logic import MONDAY_7AM, Rig
from test_escalation import escalation_config
from test_sia import ACCOUNT, make_site  # noqa: F401 (a fixture)
from test_sms_worker import (LiveDaemon, SteppedClock, live,  # noqa: F401 (fixtures)
                             make_config, sms_rows, texts_to, write_sms_config)

PRINCIPAL = "+8613800138000"
CALL_AFTER_S = 4  # [escalation]: a panic nobody acknowledges rings the principal then


def test_every_owner_timer_keeps_its_length_through_steps_back_and_forward(write_config):
    clock = FakeClock(MONDAY_7AM - dt.timedelta(hours=9))  # the time saved at shutdown
    rig = Rig(config.load(str(write_config(held_open_alert_s=300))), clock).start()
    rig.daemon._sync = SyncedKernel(False)  # booted without an RTC, NTP not there yet
    made: list[tuple[str, dt.datetime, bool]] = []  # kind, wall clock, synced: as made

    def expect(kind: str) -> None:
        made.append((kind, clock.now(), rig.daemon._sync.synced()))

    try:
        rig.press()
        expect("panic")
        rig.release()
        rig.open_gate()
        rig.advance(0.5)  # debounce_s: the opening counts from its first edge
        made.append(("gate_open", clock.now() - dt.timedelta(seconds=0.5), False))
        rig.daemon.set_drill(True, 600)
        rig.daemon.set_walktest(True, 900, "李师傅")
        rig.advance(59.5)

        clock.cut_to(clock.now() - dt.timedelta(hours=5))  # a bad server steps it back
        rig.run()
        rig.drive(PANIC_PIN, high=False)  # during the walk test: a test, not an alarm
        expect("input_tested")
        rig.release()
        rig.advance(60)

        rig.daemon._sync = SyncedKernel()  # NTP: right at last, 14 hours ahead
        clock.cut_to(MONDAY_7AM)
        rig.run()
        rig.advance(59)  # 179.5 s since the press
        assert rig.siren_on
        rig.advance(1)  # max_on_s = 180
        assert not rig.siren_on and rig.status()["alarm"]["active"]
        rig.advance(119.5)  # 299.5 s since the gate opened
        assert rig.stored("gate_held_open") == []
        rig.advance(0.5)
        expect("gate_held_open")
        assert len(rig.stored("gate_held_open")) == 1
        rig.advance(299.5)  # 599.5 s of drill mode
        assert rig.status()["drill"]["active"]
        rig.advance(1)
        assert not rig.status()["drill"]["active"]
        rig.advance(299)  # 899.5 s of walk test
        assert rig.status()["walktest"]["active"]
        rig.advance(1)
        assert not rig.status()["walktest"]["active"]
        rig.close_gate()
        expect("gate_closed")
        rig.advance(0.5)

        events = [e for e in rig.stored() if e.kind in {kind for kind, _, _ in made}]
        assert [e.seq for e in rig.stored()] == sorted(e.seq for e in rig.stored())
        assert [(e.kind, e.time, e.data["clock_synced"]) for e in events] == made
        assert events[2].time < events[0].time < events[3].time  # times as the clock said
    finally:
        rig.close()


class SteppedOnCue(SteppedClock):
    """A SteppedClock stepped by ``step_s`` at the first reading thread ``thread`` makes
    once ``cue()`` holds: a step landed at the moment a race needs, every run."""

    def __init__(self, step_s: float, thread: str):
        self._step_s = step_s
        self._thread = thread
        self.cue: Callable[[], bool] = lambda: False
        self.stepped_at: float | None = None  # time.monotonic() of the step

    def now(self) -> dt.datetime:
        if (not self.step_s and threading.current_thread().name == self._thread
                and self.cue()):
            self.stepped_at = time.monotonic()
            self.step_s = self._step_s
        return super().now()


@pytest.fixture
def stepped_site(tmp_path, short_dir):
    """start(clock, **SimSite options) → (running site, platform, modem, clock): a daemon
    whose wall clock a test steps (a SteppedClock unless ``clock`` is given), with the
    stand-in platform and the modem."""
    with contextlib.ExitStack() as stack:
        platform = stack.enter_context(
            PlatformStub(token=PLATFORM_TOKEN, check_event=cloudevent_problems))
        modem = stack.enter_context(ModemEmulator())

        def start(clock: SteppedClock | None = None, **options):
            clock = clock or SteppedClock()
            site = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                           debounce_s=0.05, modem_keys={"health_s": 1},
                           contacts=[Contact("principal", PRINCIPAL,
                                             ["panic", "gate_open"])], **options)
            running = start_site(site, tmp_path, stack, modem=modem, platform=platform,
                                 clock=clock, pin_factory=MockFactory(),
                                 options=WorkerOptions(modem_timings=SHORT_MODEM_TIMINGS,
                                                       uplink_rng=lambda: 0.0))
            return running, platform, modem, clock
        yield start


def _stored(cfg, kind: str):
    reader = Store(cfg.storage.db_path, readonly=True)
    try:
        return [e for e in reader.events() if e.kind == kind]
    finally:
        reader.close()


@pytest.mark.parametrize("step_h", [-0.5, 3], ids=["back-30min", "forward-3h"])
@pytest.mark.parametrize("moment", ["while-waiting", "as-the-503-is-recorded"])
def test_the_uplinks_retry_after_waits_its_seconds_through_a_step(stepped_site, step_h,
                                                                   moment):
    """NTP steps the clock while the upload waits out a Retry-After, or in the instant
    between the 503 and the uplink writing its retry time (the first clock reading the
    uplink makes after the answer is the stepped one)."""
    clock = SteppedOnCue(step_h * 3600, thread="uplink")
    running, platform, _, _ = stepped_site(clock)
    daemon = running.daemon
    _wait_until(lambda: platform.events, 5, what="the heartbeat at start delivered")

    def refusals():
        return [r for r in platform.requests if r.status == 503]
    if moment == "as-the-503-is-recorded":
        clock.cue = lambda: bool(refusals())
    platform.respond_with(503, retry_after=3)
    daemon.loop.call(daemon.simulate, "main_gate", True)
    (opened,) = _wait_until(lambda: _stored(running.cfg, "gate_open"), 5)
    (refused,) = _wait_until(refusals, 5, what="the 503 answered")
    if moment == "while-waiting":
        clock.step_s = step_h * 3600
    daemon.loop.call(daemon.simulate, "main_gate", False)  # a new event wakes the uplink
    _wait_until(lambda: opened.id in {e.id for e in platform.events}, 15, interval=0.05,
                what="the waiting upload sent after its Retry-After")
    (sent,) = [r for r in platform.requests if opened.id.encode() in r.body
               and r.status == 200]
    waited = sent.received_mono - refused.received_mono
    assert clock.step_s == step_h * 3600
    assert 2.5 <= waited < 10, f"Retry-After 3 s became {waited:.1f} s across the step"


@pytest.mark.parametrize("step_h", [-0.5, 3], ids=["back-30min", "forward-3h"])
def test_an_alarm_centre_retry_keeps_its_backoff_through_a_step_as_it_is_recorded(
        make_site, step_h):
    """NTP steps the clock in the instant between the centre's DUH and the SIA worker
    writing its retry time: the retry still waits its backoff (0.99 s), neither sent at
    once nor held back for the step."""
    clock = SteppedOnCue(step_h * 3600, thread="sia")
    with Receiver("tcp", ACCOUNT) as receiver:
        receiver.script.append("DUH")  # to the heartbeat at start
        clock.cue = lambda: "DUH" in receiver.answers
        make_site(receiver.port, clock=clock, jitter=0.99)
        _wait_until(lambda: "DUH" in receiver.answers, 10, interval=0.01,
                    what="the heartbeat answered DUH")
        refused = time.monotonic()
        # (and NAKed: it carries our stepped time, off the centre's)
        _wait_until(lambda: receiver.answers[1:], 10, interval=0.01,
                    what="the heartbeat sent again")
        waited = time.monotonic() - refused
    assert clock.step_s == step_h * 3600
    assert 0.8 <= waited < 5, f"a 0.99 s backoff became {waited:.2f} s across the step"


@pytest.mark.parametrize("step_h", [-0.5, 3], ids=["back-30min", "forward-3h"])
def test_an_sms_retry_keeps_its_backoff_through_a_step_as_it_is_recorded(
        live, emulator, monkeypatch, step_h):
    """NTP steps the clock in the instant between the modem refusing an alarm's SMS and
    the SMS worker writing its retry time: the retry still waits its 1 s."""
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 1.0)
    clock = SteppedOnCue(step_h * 3600, thread="modem")
    d = live(clock=clock, principal_receives=("panic",))
    emulator.fail_next_sends(38)  # after the PDU: the refusal is the send's last word
    clock.cue = lambda: any(c.startswith("AT+CMGS") for c in emulator.commands)
    d.press()
    (panic,) = _wait_until(lambda: d.events("panic"), 5)
    _wait_until(lambda: sms_rows(d.cfg, panic.seq)[0]["attempts"] >= 1, 5,
                what="the refused send recorded")
    _wait_until(lambda: texts_to(emulator, PRINCIPAL), 10, interval=0.01,
                what="the panic SMS sent again")
    assert clock.stepped_at is not None
    waited = time.monotonic() - clock.stepped_at
    assert 0.8 <= waited < 5, f"a 1 s SMS retry became {waited:.2f} s across the step"


@pytest.mark.parametrize("step_h", [-6, 6], ids=["back-6h", "forward-6h"])
def test_a_fallback_sms_waits_its_seconds_through_a_step(stepped_site, step_h):
    running, platform, modem, clock = stepped_site(sms_fallback_after_s=3, sms_keys={
        "immediate": ["panic"]})
    platform.stop()  # the platform is down: the gate's event owes a fallback SMS
    daemon = running.daemon
    daemon.loop.call(daemon.simulate, "main_gate", True)
    (opened,) = _wait_until(lambda: _stored(running.cfg, "gate_open"), 5)
    # From the event's own instant (the clock not stepped yet), however late it was seen.
    made = time.monotonic() - (time.time() - opened.ts)
    time.sleep(1)
    clock.step_s = step_h * 3600
    daemon.loop.call(daemon.simulate, "main_gate", False)  # the owner notices the step

    def gate_texts():
        return [t for t in texts_to(modem, PRINCIPAL) if "校门" in t and "经短信补发" in t]
    _wait_until(gate_texts, 15, interval=0.05, what="the fallback SMS")
    waited = time.monotonic() - made
    assert 2.5 <= waited < 10, f"a 3 s fallback went after {waited:.1f} s across the step"


@pytest.mark.parametrize("step_h", [-5, 14], ids=["back-5h", "forward-14h"])
@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_an_escalation_call_waits_its_seconds_through_a_step(
        tmp_path, short_dir, emulator, step_h, restart):
    """NTP steps the clock while an unacknowledged panic waits call_after_s for its first
    escalation call; the owner notices the step as it stores a tamper alarm, which joins
    the escalation (its plan is kept again); and the daemon may restart before the call
    (the kept plan carries on). The principal's phone rings call_after_s after the press,
    neither at once nor hours later."""
    cfg = escalation_config(tmp_path, short_dir, emulator, f"call_after_s = {CALL_AFTER_S}")
    clock = SteppedClock()
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        pressed = time.perf_counter()
        daemon.press()
        _wait_until(lambda: texts_to(emulator, PRINCIPAL), 5, what="the panic SMS")
        clock.step_s = step_h * 3600
        daemon.press("box")
        if restart:
            daemon.stop()
            daemon = LiveDaemon(cfg, clock).start(_wait_until)
        _wait_until(lambda: emulator.calls, CALL_AFTER_S + 10, what="the escalation call")
    finally:
        daemon.stop()
    dialled = next(t for t, c in emulator.timed_commands if c.startswith("ATD"))
    waited = dialled - pressed
    assert CALL_AFTER_S <= waited < CALL_AFTER_S + 5, (
        f"a {CALL_AFTER_S} s escalation rang after {waited:.1f} s across the step")


def test_an_escalation_kept_through_a_step_back_no_daemon_saw_rings_all_the_same(
        tmp_path, short_dir, emulator):
    """The clock is stepped back 5 h while the daemon is stopped (nothing notices the
    step): the kept call, now 5 h ahead, rings call_after_s after the start at most."""
    cfg = escalation_config(tmp_path, short_dir, emulator, f"call_after_s = {CALL_AFTER_S}")
    clock = SteppedClock()
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        daemon.press()
        _wait_until(lambda: texts_to(emulator, PRINCIPAL), 5, what="the panic SMS")
    finally:
        daemon.stop()
    clock.step_s = -5 * 3600
    started = time.perf_counter()
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        _wait_until(lambda: emulator.calls, CALL_AFTER_S + 10, what="the escalation call")
    finally:
        daemon.stop()
    dialled = next(t for t, c in emulator.timed_commands if c.startswith("ATD"))
    assert dialled - started < CALL_AFTER_S + 5


DRILL_S = 4  # drill mode's length in these tests (the control socket's least is 60 s)


def _drill_on(daemon: LiveDaemon) -> float:
    """Drill mode on for DRILL_S; the monotonic instant before it was asked for."""
    asked = time.monotonic()
    daemon.call(daemon.daemon.set_drill, True, DRILL_S)
    return asked


def _drill_ended(daemon: LiveDaemon) -> float:
    """Waits for drill mode to end by itself; the monotonic instant it was seen off."""
    _wait_until(lambda: not daemon.status()["drill"]["active"], DRILL_S + 10, interval=0.05,
                what="drill mode off")
    return time.monotonic()


@pytest.mark.parametrize("step_h", [-5, 14], ids=["back-5h", "forward-14h"])
@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_drill_mode_lasts_its_seconds_through_a_step(make_config, step_h, restart):
    """NTP steps the clock during a drill; a panic press after the step is still a drill
    (the owner notices the step as it stores it), and the daemon may restart then (the
    drill's end is kept). Drill mode ends DRILL_S after it was turned on, neither at once
    (a drill press would alarm the contacts) nor hours later (a real press would be a
    drill)."""
    cfg = make_config()
    clock = SteppedClock()
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        asked = _drill_on(daemon)
        clock.step_s = step_h * 3600
        daemon.press()
        _wait_until(lambda: daemon.events("drill"), 5, what="the press stored as a drill")
        daemon.call(daemon.daemon.simulate, "guard_room", False)
        if restart:
            daemon.stop()
            daemon = LiveDaemon(cfg, clock).start(_wait_until)
        assert daemon.status()["drill"]["active"], "drill mode ended with the step"
        lasted = _drill_ended(daemon) - asked
        daemon.press()  # real again
        _wait_until(lambda: daemon.events("panic"), 5, what="the press stored as a panic")
    finally:
        daemon.stop()
    assert DRILL_S <= lasted < DRILL_S + 4, (
        f"a {DRILL_S} s drill lasted {lasted:.1f} s across the step")


def test_drill_mode_kept_through_a_step_back_no_daemon_saw_ends_at_the_start(make_config):
    """The clock is stepped back 5 h while the daemon is stopped (nothing notices the
    step): the kept end, now 5 h further ahead than the drill's length, cannot be trusted,
    and a drill kept on would take real presses for drills; the start ends it."""
    cfg = make_config()
    clock = SteppedClock()
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        _drill_on(daemon)
    finally:
        daemon.stop()
    clock.step_s = -5 * 3600
    daemon = LiveDaemon(cfg, clock).start(_wait_until)
    try:
        assert not daemon.status()["drill"]["active"]
    finally:
        daemon.stop()
