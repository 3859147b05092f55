"""The daily summary SMS ([summary]): a daemon on mock pins with a FakeClock, its SMS worker
talking to the ModemEmulator through a real pty; what the principal's phone shows is read
back with Gammu (test_sms_worker's helpers). Restarts are daemons rebuilt on the same
store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import pytest

from edge import config as config_mod
from edge.clock import FakeClock
from edge.errors import ConfigError
from edge.report import day_summary, summary_text
from edge.sim.site import Contact, SimSite
from edge.store import Store
from edge.summary import SUMMARY_META, owed, summary_body, with_signal
from test_sms_worker import DEPUTY, PRINCIPAL, SHANGHAI, LiveDaemon, texts_to

DAY = dt.date(2026, 12, 2)


def site_time(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), SHANGHAI)


@pytest.fixture
def summary_config(tmp_path, short_dir, emulator):
    """The simulated gate with an emulated modem and `[summary] time = "18:00"`: the
    principal receives the summary, the deputy does not."""
    path = tmp_path / "config.toml"
    path.write_text(SimSite(
        tmp_path / "var", short_dir / "control.sock", device_id="summary-test-1",
        school_hours=False, debounce_s=0.05, modem_port=emulator.port,
        contacts=[Contact("principal", PRINCIPAL, ["panic", "summary"], may_command=True),
                  Contact("deputy", DEPUTY, ["tamper"])],
        extra='\n[summary]\ntime = "18:00"\n').text(), encoding="utf-8")
    return config_mod.load(str(path))


@pytest.fixture
def start(summary_config, wait_until):
    """start(clock) → a LiveDaemon on the summary config, stopped at teardown."""
    started: list[LiveDaemon] = []

    def make(clock: FakeClock) -> LiveDaemon:
        daemon = LiveDaemon(summary_config, clock).start(wait_until)
        started.append(daemon)
        return daemon
    yield make
    for daemon in started:
        if daemon.thread.is_alive():
            daemon.stop()


def summaries(emulator) -> list[str]:
    return [t for t in texts_to(emulator, PRINCIPAL) if "日报" in t]


def timers_run(d: LiveDaemon) -> None:
    """Returns once the owner loop has run the timers that were due when it was called:
    it runs queued work, then due timers, in each turn."""
    for _ in range(2):
        d.call(lambda: None)


def store_state(cfg):
    store = Store(cfg.storage.db_path)
    try:
        return store.get_meta(SUMMARY_META), owed(cfg, store, set())
    finally:
        store.close()


def test_the_summary_goes_at_its_minute_with_the_reports_numbers(start, emulator,
                                                                  wait_until):
    clock = FakeClock(site_time(17, 58))
    d = start(clock)
    d.call(d.daemon.simulate, "main_gate", True)
    clock.advance(1)  # past its debounce
    wait_until(lambda: d.events("gate_open"), what="the gate opening")
    clock.advance(89)  # 17:59:30
    timers_run(d)
    assert store_state(d.cfg)[0] is None, "decided before its minute"
    clock.advance(30)  # 18:00:00
    (text,) = wait_until(lambda: summaries(emulator), what="the summary SMS")
    report = summary_text(day_summary(d.cfg, DAY), d.cfg).removesuffix("。")
    assert text.startswith(report + "；") and "开门1次" in report
    assert f"{DAY.isoformat()} 日报" in text and text.startswith("【")
    assert re.fullmatch(re.escape(report) + "；未恢复故障0项；未巡检0项；信号[0-9]+。", text)
    assert not [t for t in texts_to(emulator, DEPUTY) if "日报" in t]
    wait_until(lambda: store_state(d.cfg)[1] is None, what="the send noted")


def test_a_missed_summary_goes_at_start_and_never_twice_across_restarts(
        start, emulator, wait_until):
    d = start(FakeClock(site_time(19, 0)))  # off at 18:00: that day's goes now
    wait_until(lambda: summaries(emulator), what="the missed summary")
    wait_until(lambda: store_state(d.cfg)[1] is None, what="the send noted")
    decided = store_state(d.cfg)[0]
    d.stop()
    again = start(FakeClock(site_time(19, 30)))
    timers_run(again)
    assert store_state(again.cfg) == (decided, None)
    # The modem still works for everything else, and no second summary went with it.
    again.sms.send_direct(PRINCIPAL, "after the restart").result(10)
    assert len(summaries(emulator)) == 1


def test_a_stepped_clock_sends_each_day_once(start, emulator, wait_until):
    clock = FakeClock(site_time(17, 0))  # the saved time at boot, before NTP
    d = start(clock)
    clock.cut_to(site_time(18, 30))  # NTP steps the wall clock past the minute
    clock.advance(60)  # the timer reads the wall clock again within a minute
    wait_until(lambda: summaries(emulator), what="the stepped day's summary")
    clock.cut_to(site_time(18, 10))  # stepped back: still the same day, decided
    clock.advance(120)
    timers_run(d)
    clock.cut_to(site_time(17, 59, DAY + dt.timedelta(days=1)))
    clock.advance(60)  # the next day's minute
    texts = wait_until(lambda: len(summaries(emulator)) == 2 and summaries(emulator),
                       what="the next day's summary")
    assert [DAY.isoformat() in texts[0], (DAY + dt.timedelta(days=1)).isoformat() in texts[1]
            ] == [True, True]
    assert json.loads(store_state(d.cfg)[0])["day"] == (DAY + dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize("value", ['"6pm"', '"24:00"', '"7:05"', "1800"])
def test_a_bad_summary_time_is_refused_naming_the_key(tmp_path, value):
    path = tmp_path / "config.toml"
    path.write_text(SimSite(tmp_path / "var", extra=f"\n[summary]\ntime = {value}\n").text(),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.toml: \[summary\] time: "):
        config_mod.load(str(path))



def test_the_summary_names_open_faults_and_overdue_inputs_while_they_fit(summary_config):
    cfg = summary_config
    body = summary_body(cfg, DAY, ["modem", "box"], ["main_gate"])
    assert body.endswith("；未恢复故障：短信模块、报警主机防拆；未巡检：校门")
    one_part = dataclasses.replace(cfg, sms=dataclasses.replace(cfg.sms, max_parts=1))
    assert summary_body(one_part, DAY, ["modem", "box"], ["main_gate"]).endswith(
        "；未恢复故障2项；未巡检1项")
    assert with_signal(body, None).endswith("；信号未知。")


def test_a_summary_decided_but_not_sent_goes_after_a_restart(start, emulator, wait_until):
    emulator.fail_next_sends(500)
    d = start(FakeClock(site_time(19, 0)))
    wait_until(lambda: any(c.startswith("AT+CMGS=") for c in emulator.commands),
               what="the failed send")
    decided, still_owed = store_state(d.cfg)
    assert decided is not None and still_owed is not None and not summaries(emulator)
    d.stop()
    again = start(FakeClock(site_time(19, 5)))
    wait_until(lambda: summaries(emulator), what="the summary after the restart")
    wait_until(lambda: store_state(again.cfg) == (decided, None), what="the send noted")
    assert len(summaries(emulator)) == 1
