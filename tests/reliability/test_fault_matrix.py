"""The platform's and the modem's fault matrices, together, in one run of a real daemon
(build_daemon with every worker on its thread, gpiozero's MockFactory pins, its control
socket): the stand-in platform on 127.0.0.1 answers 500, 503 with Retry-After, 429, times
out, resets connections, trickles its answer, loses the answer to an event it kept and goes
down, while the emulated modem on a pty hangs, is unplugged and replugged, refuses sends
with +CMS errors, loses its SIM, its signal and its network, and sends garbage. Presses,
gate toggles and silences go on throughout.

Once the faults end: every event is on the platform, in creation order and without a gap
(an id may arrive twice, never two ids for one event); every alarm's SMS went out as soon
as the modem could send; each fault was raised and recovered; the siren never waited for
any of it; nothing hung."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from gpiozero.pins.mock import MockFactory

import edge.sms_outgoing
from conftest import (GATE_PIN, PANIC_PIN, PLATFORM_TOKEN, SHORT_MODEM_TIMINGS, SIREN_PIN,
                      TAMPER_PIN, _wait_until, cloudevent_problems)
from edge.control import request
from edge.service import WorkerOptions
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, SimSite, start_site
from edge.store import Store

pytestmark = pytest.mark.reliability

PRINCIPAL = "+8613800138000"
ALARM_KINDS = ("panic", "tamper")
# How soon after its modem can send again an alarm's SMS must be out: a few health checks
# ([modem] health_s = 1) and sends, with room for a busy CI machine.
SMS_AFTER_RECOVERY_S = 6.0


class Scene:
    """The daemon, its pins and what a test observes of it."""

    def __init__(self, site, factory: MockFactory, platform: PlatformStub,
                 modem: ModemEmulator):
        self.site = site
        self.cfg = site.cfg
        self.factory = factory
        self.platform = platform
        self.modem = modem
        self.presses: list[float] = []  # monotonic time of each press that sounded the siren

    # --- what the guard and the gate do --------------------------------------------

    def siren_on(self) -> bool:
        return self.factory.pin(SIREN_PIN).state == 1

    def alarm(self, pin: int, active_high: bool) -> None:
        """An alarm input goes active: the relay is on before the edge has left
        gpiozero's thread, whatever the modem and the platform are doing."""
        level = self.factory.pin(pin)
        level.drive_high() if active_high else level.drive_low()
        assert self.siren_on(), "the siren waited"
        self.presses.append(time.monotonic())
        level.drive_low() if active_high else level.drive_high()

    def traffic(self) -> None:
        """A panic press, a gate opened and closed, a tamper, each alarm silenced: events
        of every kind while the faults last."""
        before = len(self.stored(*ALARM_KINDS))
        self.alarm(PANIC_PIN, active_high=False)
        _wait_until(lambda: len(self.stored(*ALARM_KINDS)) > before, 3,
                    what="the panic committed while the parts fail")
        gate = self.factory.pin(GATE_PIN)
        gate.drive_high()
        time.sleep(0.15)  # debounce_s = 0.05
        gate.drive_low()
        self.silence()
        time.sleep(0.55)  # the same button within 0.5 s is contact bounce
        self.alarm(TAMPER_PIN, active_high=True)
        _wait_until(lambda: len(self.stored(*ALARM_KINDS)) > before + 1, 3,
                    what="the tamper committed while the parts fail")
        self.silence()

    def silence(self) -> None:
        request(self.cfg.control.socket, "silence", {"by": "门卫"}, timeout=3)
        assert not self.siren_on()

    # --- what is observed ----------------------------------------------------------

    def status(self) -> dict:
        """The daemon's status: answered within 3 s however the parts misbehave."""
        started = time.monotonic()
        status = request(self.cfg.control.socket, "status", timeout=3)
        assert time.monotonic() - started < 3
        return status

    def wait_fault(self, part: str, reasons: tuple[str, ...], timeout: float = 10) -> str:
        return _wait_until(lambda: (reason := self.status()["fault_reasons"].get(part))
                           in reasons and reason, timeout, interval=0.1,
                           what=f"{part} in fault ({' or '.join(reasons)})")

    def wait_fault_event(self, part: str, reason: str, timeout: float = 10) -> None:
        """A fault too short-lived for a status poll to catch: its `fault` event."""
        _wait_until(lambda: any(e.subject == part and e.data.get("reason") == reason
                                for e in self.stored("fault")), timeout, interval=0.1,
                    what=f"a {part} {reason} fault event")

    def wait_healthy(self, part: str, timeout: float = 10) -> None:
        _wait_until(lambda: part not in self.status()["faults"], timeout, interval=0.1,
                    what=f"{part} recovered")

    def stored(self, *kinds: str):
        reader = Store(self.cfg.storage.db_path, readonly=True)
        try:
            return [e for e in reader.events() if not kinds or e.kind in kinds]
        finally:
            reader.close()

    def alarm_sms_owed(self) -> list[int]:
        """The seqs of alarms whose SMS to the principal has not gone yet."""
        reader = Store(self.cfg.storage.db_path, readonly=True)
        try:
            return [e.seq for e in self.stored(*ALARM_KINDS)
                    if any(r["state"] != "sent" for r in reader.sms_rows(e.seq))]
        finally:
            reader.close()

    def wait_alarm_sms_sent(self, timeout: float = SMS_AFTER_RECOVERY_S) -> None:
        _wait_until(lambda: not self.alarm_sms_owed(), timeout, interval=0.1,
                    what="every alarm's SMS sent once the modem could send")


@pytest.fixture
def scene(tmp_path, short_dir, monkeypatch):
    # Failed sends are retried sooner than on a real network, so that the run stays short.
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_MAX_S", 8.0)
    factory = MockFactory()
    site = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                   debounce_s=0.05, held_open_alert_s=0, sms_fallback_after_s=3600,
                   modem_keys={"health_s": 1},
                   uplink_keys={"connect_timeout_s": 0.5, "read_timeout_s": 1.0},
                   contacts=[Contact("principal", PRINCIPAL, ALARM_KINDS)])
    with contextlib.ExitStack() as stack:
        platform = stack.enter_context(
            PlatformStub(token=PLATFORM_TOKEN, check_event=cloudevent_problems))
        modem = stack.enter_context(ModemEmulator())
        # Backoff with its jitter drawn small: the retries of a long run stay under a
        # second or two instead of minutes (Retry-After still holds them back).
        running = start_site(site, tmp_path, stack, modem=modem, platform=platform,
                             pin_factory=factory,
                             options=WorkerOptions(modem_timings=SHORT_MODEM_TIMINGS,
                                                   uplink_rng=lambda: 0.004))
        scene = Scene(running, factory, platform, modem)
        _wait_until(lambda: not scene.status()["faults"], 10, what="every part healthy")
        yield scene
        started = time.monotonic()
        assert running.owner.close(10), "the daemon did not stop"
        assert time.monotonic() - started < 10
        assert running.owner.crash == []
        assert platform.invalid_events == []


def test_platform_and_modem_faults_together_lose_nothing_and_never_hold_the_siren(scene):
    platform, modem = scene.platform, scene.modem
    run_started = time.monotonic()
    scene.traffic()
    scene.wait_alarm_sms_sent()

    # 500s until the uplink is in fault, while the modem hangs.
    platform.respond_with(500, times=4)
    modem.silent = True
    scene.traffic()
    scene.wait_fault_event("uplink", "unreachable")
    scene.wait_fault("modem", ("silent",))
    scene.traffic()

    # 503 with Retry-After, then 429; the modem is unplugged, then comes back.
    platform.respond_with(503, retry_after=1, times=2)
    platform.respond_with(429)
    modem.silent = False
    modem.unplug()
    scene.wait_fault("modem", ("port_gone",))
    scene.traffic()
    modem.replug()
    scene.wait_healthy("modem")
    scene.wait_alarm_sms_sent()

    # Connections reset, an answer lost after the platform kept the event; the network
    # refuses the modem's sends, then the modem hangs right after one went out.
    platform.reset_connections(2)
    platform.lose_responses(1)
    modem.fail_next_sends(38, 500, 42)
    modem.lose_next_send_answer()
    scene.traffic()
    scene.wait_alarm_sms_sent(SMS_AFTER_RECOVERY_S + 9)  # three refusals, a lost +CMGS

    # Answers trickled past the request deadline, then none within it (timeouts); the
    # SIM is taken out.
    platform.trickle_answers(2, byte_every_s=0.1)
    modem.sim_present = False
    scene.wait_fault("modem", ("sim_missing",))
    scene.traffic()
    platform.set_delay(2.0)
    scene.traffic()
    platform.set_delay(0)
    modem.sim_present = True
    scene.wait_healthy("modem")
    scene.wait_alarm_sms_sent()

    # The platform goes down; the modem loses its signal and its network.
    platform.stop()
    modem.signal, modem.registration = 99, 0
    scene.wait_fault("modem", ("not_registered", "signal_unknown"))
    scene.wait_fault("uplink", ("unreachable",))
    scene.traffic()
    time.sleep(3)  # long enough for the sends refused meanwhile to back off
    scene.traffic()
    modem.signal, modem.registration = 20, 1
    scene.wait_healthy("modem")
    scene.wait_alarm_sms_sent()

    # Garbage on the modem's line: noise, a broken URC, a line far over its bound.
    modem.inject(b"\x00\xff\xfe+CMTI: \"SM\",\r\n\x1b[0m\r\n+CMS ERROR: \r\n")
    modem.stream(b"\xaa" * 10_000 + b"\r\n")
    platform.start()
    scene.traffic()

    # The faults have ended.
    _wait_until(lambda: not {e.id for e in scene.stored()} - {e.id for e in platform.events}
                and not scene.status()["faults"], 20, interval=0.2,
                what="everything delivered and every part healthy")
    scene.wait_alarm_sms_sent()
    assert time.monotonic() - run_started < 90, "the run took too long: something waited"

    stored = scene.stored()
    delivered = platform.events
    seqs = [int(e.sequence) for e in delivered]
    assert seqs == list(range(1, len(seqs) + 1)), "not in creation order, or with a gap"
    kept = {e.id: e for e in stored}
    assert all(int(e.sequence) == kept[e.id].seq for e in delivered if e.id in kept)
    assert {e.id for e in delivered} >= set(kept)
    seq_of_id: dict[str, str] = {}
    for posted in (doc for r in platform.requests if r.method == "POST"
                   for doc in _documents(r.body)):
        assert seq_of_id.setdefault(posted["id"], posted["sequence"]) == posted["sequence"]
    assert len(set(seq_of_id.values())) == len(seq_of_id), "one event under two ids"
    assert any(r.status is None for r in platform.requests), "no answer was lost"
    assert len(seq_of_id) < sum(len(_documents(r.body)) for r in platform.requests
                                if r.method == "POST"), "no event was sent twice"

    # Retry-After was honoured.
    requests = platform.requests
    for k, r in enumerate(requests[:-1]):
        if r.status == 503:
            assert requests[k + 1].received_mono - r.received_mono >= 0.95

    # Each fault raised is recovered, and every kind asked for was raised.
    faults = [(e.kind, e.subject, e.data.get("reason")) for e in stored
              if e.kind in ("fault", "recovered")]
    raised = {(subject, reason) for kind, subject, reason in faults if kind == "fault"}
    # (The unplugged modem was already in fault, as silent: status said port_gone.)
    assert {("uplink", "unreachable"), ("modem", "silent"), ("modem", "sim_missing")} <= raised
    assert raised & {("modem", "not_registered"), ("modem", "signal_unknown")}
    for part in ("uplink", "modem"):
        kinds = [kind for kind, subject, _ in faults if subject == part]
        assert kinds[-1] == "recovered" and kinds.count("fault") == kinds.count("recovered")

    # Every alarm's SMS went, once each (a copy after a lost confirmation is marked).
    alarms = scene.stored(*ALARM_KINDS)
    texts = [s.text for s in modem.sent if s.number == PRINCIPAL]
    assert len(alarms) == len(scene.presses)
    assert len([text for text in texts if "（重发）" not in text]) == len(alarms)
    assert any("（重发）" in text for text in texts), "no confirmation was lost"
    assert scene.status()["modem"]["lines_dropped"] >= 1


def _documents(body: bytes) -> list[dict]:
    try:
        document = json.loads(body)
    except ValueError:
        return []
    return document if isinstance(document, list) else [document]


def test_an_alarm_sms_refused_for_want_of_a_network_goes_once_the_network_is_back(
        scene, monkeypatch):
    """Not at the next retry of its backoff, which after a long outage is minutes away."""
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 4.0)
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_MAX_S", 300.0)
    modem = scene.modem
    modem.signal, modem.registration = 99, 0
    scene.wait_fault("modem", ("not_registered", "signal_unknown"))
    scene.alarm(PANIC_PIN, active_high=False)
    _wait_until(lambda: _attempts(scene) >= 2, 10, interval=0.05,
                what="the panic's SMS refused twice (the next try 8 s away)")
    modem.signal, modem.registration = 20, 1
    back = time.monotonic()
    scene.wait_alarm_sms_sent(timeout=10)
    assert time.monotonic() - back < 4, "the SMS waited for its backoff, not for the modem"


def _attempts(scene: Scene) -> int:
    reader = Store(scene.cfg.storage.db_path, readonly=True)
    try:
        return max((r["attempts"] for e in scene.stored("panic")
                    for r in reader.sms_rows(e.seq)), default=0)
    finally:
        reader.close()
