"""Escalation calls ([escalation], spec §3 `call`, §6) through the emulated modem: ATD…;,
AT+CLCC, BUSY, AT+CHUP."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import SHORT_MODEM_TIMINGS, stored_event_problems
from edge import config as config_mod
from edge.errors import ConfigError
from edge.modem.modem import Modem
from test_sms_worker import DEPUTY, PRINCIPAL, LiveDaemon, config_text, stored_events


def escalation_config(tmp_path, short_dir, emulator, keys: str):
    path = tmp_path / "config.toml"
    path.write_text(config_text(tmp_path / "var", short_dir / "control.sock", emulator.port)
                    + f"\n[escalation]\n{keys}\n", encoding="utf-8")
    return config_mod.load(str(path))


@pytest.fixture
def escalating(tmp_path, short_dir, emulator, wait_until):
    """escalating(keys) → a started LiveDaemon with these [escalation] keys."""
    started = []

    def start(keys: str) -> LiveDaemon:
        cfg = escalation_config(tmp_path, short_dir, emulator, keys)
        daemon = LiveDaemon(cfg).start(wait_until)
        started.append(daemon)
        return daemon
    yield start
    for daemon in started:
        daemon.stop()


def escalation_of(live: LiveDaemon):
    from edge.escalation import Escalation
    return next(w for w in live.daemon.workers if isinstance(w, Escalation))


def call_results(live: LiveDaemon) -> list[tuple[str, str]]:
    return [(e.subject, e.data["result"]) for e in live.events("call")]


def test_an_unacknowledged_panic_rings_the_first_contact_and_silence_hangs_up(
        escalating, emulator, wait_until):
    live = escalating("call_after_s = 1\nring_s = 120")
    pressed = time.perf_counter()
    live.press()
    wait_until(lambda: emulator.ringing, timeout=15, what="the principal's phone rings")
    assert emulator.calls == [PRINCIPAL]  # the first contact that receives panic
    panic = live.events("panic")[0]
    dialled = next(t for t, c in emulator.timed_commands if c.startswith("ATD"))
    assert dialled - pressed >= 1.0  # not before call_after_s
    emulator.deliver(PRINCIPAL, "SILENCE")
    wait_until(lambda: not emulator.ringing, timeout=15, what="hung up mid-ring")
    wait_until(lambda: call_results(live), timeout=15, what="the call recorded")
    assert call_results(live) == [("principal", "no answer")]
    assert live.events("call")[0].data["alarm_id"] == panic.id
    assert live.call(lambda: escalation_of(live).plan) is None
    assert emulator.calls == [PRINCIPAL]
    assert any(c in ("AT+CHUP", "ATH") for c in emulator.commands)


def test_rounds_run_out(escalating, emulator, wait_until):
    emulator.call_outcome = "busy"
    live = escalating('call_after_s = 0\nring_s = 30\nrounds = 2\n'
                      'contacts = ["principal", "deputy"]')
    live.press()
    wait_until(lambda: live.call(lambda: escalation_of(live).plan) is None
               and len(call_results(live)) == 4, timeout=30, what="two rounds of calls")
    assert emulator.calls == [PRINCIPAL, DEPUTY, PRINCIPAL, DEPUTY]
    assert call_results(live) == [("principal", "busy"), ("deputy", "busy")] * 2
    assert stored_event_problems(live.cfg.storage.db_path) == []  # call_data's `result`


def test_a_restart_carries_on_with_the_contact_it_was_ringing(
        tmp_path, short_dir, emulator, wait_until):
    cfg = escalation_config(tmp_path, short_dir, emulator,
                            'call_after_s = 0\nring_s = 120\ncontacts = ["principal", "deputy"]')
    emulator.call_outcome, emulator.call_progress_s = "busy", 2.0
    first = LiveDaemon(cfg).start(wait_until)
    try:
        first.press()
        wait_until(lambda: emulator.calls == [PRINCIPAL], timeout=15, what="principal rung")
        emulator.call_outcome = "no answer"  # the deputy's phone rings on
        wait_until(lambda: emulator.calls == [PRINCIPAL, DEPUTY] and emulator.ringing,
                   timeout=15, what="deputy rung")
    finally:
        first.stop()
    assert not emulator.ringing  # a stopping daemon hangs up
    second = LiveDaemon(cfg).start(wait_until)
    try:
        wait_until(lambda: emulator.calls == [PRINCIPAL, DEPUTY, DEPUTY], timeout=15,
                   what="the deputy rung again after the restart")
        assert call_results(second) == [("principal", "busy")]
        emulator.deliver(PRINCIPAL, "收到")  # only acknowledges: the calls stop all the same
        wait_until(lambda: not emulator.ringing, timeout=15, what="hung up")
        wait_until(lambda: len(call_results(second)) == 2, timeout=15, what="recorded")
        assert second.call(lambda: escalation_of(second).plan) is None
    finally:
        second.stop()
    assert [e.kind for e in stored_events(cfg, "acknowledged")] == ["acknowledged"]


def test_the_alarm_sms_goes_before_the_call(escalating, emulator, wait_until):
    live = escalating("call_after_s = 0\nring_s = 5")
    live.press()
    wait_until(lambda: emulator.calls, timeout=15, what="the call")
    commands = emulator.commands
    first_dial = next(i for i, c in enumerate(commands) if c.startswith("ATD"))
    assert any(c.startswith("AT+CMGS=") for c in commands[:first_dial])
    live.call(live.daemon.silence, "test", "cli")


@pytest.mark.parametrize("outcome, result", [("answer", "answered"), ("busy", "busy"),
                                             ("fail", "failed")])
def test_the_modem_reports_the_call_as_the_network_ends_it(emulator, outcome, result):
    emulator.call_outcome, emulator.call_progress_s = outcome, 0.1
    modem = Modem(emulator.port, timings=SHORT_MODEM_TIMINGS)
    try:
        modem.ensure_ready()
        got = modem.voice_call(PRINCIPAL, ring_s=2, cancel=threading.Event(), poll_s=0.1)
    finally:
        modem.close()
    assert got == result
    assert emulator.calls == [PRINCIPAL]
    assert not emulator.ringing


def test_escalation_contacts_default_to_those_told_of_panic_and_must_be_contacts(
        tmp_path, short_dir, emulator):
    cfg = escalation_config(tmp_path, short_dir, emulator, "")
    assert cfg.escalation == config_mod.Escalation()
    assert [c.name for c in cfg.escalation_contacts()] == ["principal"]
    with pytest.raises(ConfigError) as refused:
        escalation_config(tmp_path, short_dir, emulator,
                          'contacts = ["principal", "janitor"]\nring_s = 1')
    assert refused.value.problems == [
        f"config error: {tmp_path / 'config.toml'}: [escalation] ring_s: must be from 5 to "
        "120 seconds",
        f"config error: {tmp_path / 'config.toml'}: [escalation] contacts: 'janitor' is not "
        "a [[contact]] name"]


def test_an_alarm_sms_due_while_a_call_rings_goes_first_and_the_call_rings_again(
        escalating, emulator, wait_until):
    live = escalating("call_after_s = 0\nring_s = 120")
    live.press()
    wait_until(lambda: emulator.ringing, timeout=15, what="the principal's phone rings")
    sent_before = len(emulator.sent)
    live.press("box")  # tamper: its SMS hangs up the call
    wait_until(lambda: emulator.calls == [PRINCIPAL, PRINCIPAL] and emulator.ringing,
               timeout=15, what="the principal rung again")
    commands = emulator.commands
    first_dial = commands.index(f"ATD{PRINCIPAL};")
    redial = commands.index(f"ATD{PRINCIPAL};", first_dial + 1)
    assert "AT+CHUP" in commands[first_dial:redial]
    assert any(c.startswith("AT+CMGS=") for c in commands[first_dial:redial])
    assert len(emulator.sent) > sent_before
    assert call_results(live) == []  # the hung-up call is no call of the escalation
    live.call(live.daemon.silence, "test", "cli")
    wait_until(lambda: not emulator.ringing, timeout=15, what="hung up")
