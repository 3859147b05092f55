"""The daemon's decisions, driven on the test thread: gpiozero MockFactory pins raise the
edges (their callbacks post to the owner loop), `daemon.loop.process(0)` runs them, and a
FakeClock moves the timers. The store is a real SQLite file, read back through a second
connection, so "stored" means committed."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sqlite3
import threading
from contextlib import closing
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import (GATE_PIN, PANIC_PIN, SIREN_PIN, TAMPER_PIN, SyncedKernel,
                      refuse_writes)
from edge import config
from edge import unstored as unstored_module
from edge.alarm_rule import PANIC_LOCKOUT_S
from edge.clock import Clock, FakeClock
from edge.daemon import PURGE_EVERY_S, Daemon
from edge.errors import StorageError
from edge.owner import OwnerLoop
from edge.store import Store
from edge.views import print_status

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_7AM = dt.datetime(2026, 11, 23, 7, 0, tzinfo=SHANGHAI)  # school hours
MB = 1024 * 1024


class Rig:
    """One daemon on mock pins with a fake clock, and what a test does to it."""

    def __init__(self, cfg, clock: FakeClock):
        self.cfg = cfg
        self.clock = clock
        self.factory = MockFactory()
        self.daemon = Daemon(cfg, clock=clock, pin_factory=self.factory)
        self.closed = False

    def start(self) -> Rig:
        self.daemon.start()
        self.run()
        return self

    def run(self) -> None:
        self.daemon.loop.process(0)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run()

    def pin(self, number: int):
        return self.factory.pin(number)

    # Each edge is handed over at once, as the running owner thread (always waiting on
    # its queue) would take it: its timers then start from the edge, not from later.
    def drive(self, number: int, high: bool) -> None:
        pin = self.pin(number)
        pin.drive_high() if high else pin.drive_low()
        self.run()

    def press(self) -> None:
        self.drive(PANIC_PIN, high=False)  # active_low: pressing grounds the pin

    def release(self) -> None:
        self.drive(PANIC_PIN, high=True)

    def open_gate(self) -> None:
        self.drive(GATE_PIN, high=True)  # open_when = "high"

    def close_gate(self) -> None:
        self.drive(GATE_PIN, high=False)

    @property
    def siren_on(self) -> bool:
        return self.pin(SIREN_PIN).state == 1  # the relay's real pin level (active_high)

    def stored(self, *kinds: str):
        """The committed events, through a connection of our own."""
        reader = Store(self.cfg.storage.db_path)
        try:
            return [e for e in reader.events() if not kinds or e.kind in kinds]
        finally:
            reader.close()

    def status(self) -> dict:
        return self.daemon.status()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.daemon.close()


@pytest.fixture
def make_rig(write_config):
    rigs = []

    def make(start: dt.datetime = MONDAY_7AM, clock: FakeClock | None = None,
             **options) -> Rig:
        cfg = config.load(str(write_config(**options)))
        rig = Rig(cfg, clock or FakeClock(start))
        rigs.append(rig)
        return rig
    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig().start()


# ------------------------------------------------------------------ panic

def test_first_edge_raises_the_alarm_at_once(rig):
    assert not rig.siren_on and rig.stored() == []
    when = rig.clock.now()
    rig.pin(PANIC_PIN).drive_low()
    # gpiozero's callback tripped the relay and handed the edge over, nothing more...
    assert rig.siren_on and rig.stored() == []
    rig.run()  # ...the owner acts on it, with no clock movement: no waiting for a level
    assert rig.siren_on and rig.daemon.siren.off_at is not None
    [panic] = rig.stored("panic")
    assert (panic.subject, panic.time) == ("guard_room", when)
    assert panic.time.utcoffset() == dt.timedelta(hours=8)  # the site's offset
    assert panic.data["label"] == "门卫室一键报警" and panic.data["site"] == "高山小学"
    assert isinstance(panic.data["clock_synced"], bool)
    status = rig.status()
    assert status["alarm"] == {"active": True, "inputs": ["guard_room"],
                               "since": panic.time.isoformat(timespec="seconds")}
    assert status["siren"]["on"] and status["inputs"]["guard_room"]["active"]


def bounce(rig, times: int = 5) -> None:
    for _ in range(times):
        rig.press()
        rig.clock.advance(0.002)
        rig.release()
        rig.clock.advance(0.002)


def test_contact_bounce_is_one_press(rig):
    bounce(rig)
    rig.press()
    assert len(rig.stored("panic")) == 1


def test_bounce_after_a_quick_silence_raises_nothing_new(rig):
    # Latching alone would hide bounce while the alarm is up; the lockout is what keeps
    # the chatter of the same press from raising a second alarm once it is silenced.
    bounce(rig, 2)
    rig.daemon.silence("wang", "button")
    bounce(rig, 5)
    assert len(rig.stored("panic")) == 1
    assert not rig.status()["alarm"]["active"] and not rig.siren_on


def test_the_alarm_latches_until_silenced(rig):
    rig.press()
    rig.release()
    rig.advance(3600)  # an hour, released: the alarm never resets itself
    assert rig.status()["alarm"]["active"]
    assert list(rig.daemon.latched) == ["guard_room"]


def test_siren_stops_after_max_on_s_but_the_alarm_stays(rig):
    rig.press()
    rig.release()
    rig.advance(179)
    assert rig.siren_on
    rig.advance(1.5)
    assert not rig.siren_on
    assert rig.status()["alarm"]["active"] and not rig.status()["siren"]["on"]


def test_a_press_while_latched_sounds_again_without_a_new_event(rig):
    rig.press()
    rig.release()
    rig.advance(181)
    assert not rig.siren_on
    rig.press()
    assert rig.siren_on
    assert len(rig.stored("panic")) == 1


def test_silence_ends_each_latched_alarm_with_who_and_how(rig):
    rig.press()
    rig.drive(TAMPER_PIN, high=True)  # the lid comes off
    alarms = {e.subject: e for e in rig.stored("panic", "tamper")}
    assert set(alarms) == {"guard_room", "box"} and rig.siren_on

    done = rig.daemon.silence("wang", "cli")
    rig.run()
    assert not rig.siren_on
    assert not rig.status()["alarm"]["active"]
    silenced = rig.stored("silenced")
    assert sorted(e.subject for e in silenced) == ["box", "guard_room"]
    assert [e.id for e in done] == [e.id for e in silenced]
    for event in silenced:
        alarm = alarms[event.subject]
        assert event.data["by"] == "wang" and event.data["via"] == "cli"
        assert (event.data["alarm_id"], event.data["alarm_kind"]) == (alarm.id, alarm.kind)


def test_silence_with_nothing_latched_records_nothing(rig):
    assert rig.daemon.silence("wang", "cli") == []
    assert rig.stored("silenced") == []


def test_a_press_after_silence_is_a_new_alarm(rig):
    rig.press()
    rig.release()
    rig.daemon.silence("wang", "cli")
    rig.advance(PANIC_LOCKOUT_S + 1)
    rig.press()
    assert len(rig.stored("panic")) == 2 and rig.siren_on


def test_gpiozeros_thread_trips_the_relay_by_the_owners_rule_not_for_a_bounce(rig):
    rig.press()
    rig.release()
    rig.daemon.silence("wang", "cli")
    rig.pin(PANIC_PIN).drive_low()  # a bounce, within the lockout of the press
    # The pin thread asks the same rule as the owner: no click of the relay to undo.
    assert not rig.siren_on
    rig.run()
    assert not rig.siren_on and len(rig.stored("panic")) == 1


def test_tamper_raises_and_latches(rig):
    rig.drive(TAMPER_PIN, high=True)
    [tamper] = rig.stored("tamper")
    assert tamper.subject == "box" and rig.siren_on
    rig.drive(TAMPER_PIN, high=False)  # lid back on: still latched
    rig.advance(10)
    assert rig.daemon.latched["box"].id == tamper.id


def test_workers_hear_of_an_event_only_once_it_is_committed(make_rig):
    rig = make_rig()
    heard = []

    class CommitChecker:
        part = "checker"

        def start(self):
            pass

        def notify(self, event):
            heard.append((event.kind, event.id in {e.id for e in rig.stored()}))

        def status(self):
            return {}

        def stop(self, timeout):
            pass

    rig.daemon.workers.append(CommitChecker())
    rig.start()
    rig.press()
    rig.open_gate()
    rig.advance(0.5)
    assert heard == [("panic", True), ("gate_open", True)]


# ------------------------------------------------------------------ gates

def test_gate_bounce_shorter_than_debounce_is_nothing(rig):
    for _ in range(3):
        rig.open_gate()
        rig.advance(0.1)
        rig.close_gate()
        rig.advance(0.1)
    rig.advance(5)
    assert rig.stored("gate_open", "gate_closed") == []
    assert rig.status()["inputs"]["main_gate"]["open"] is False


def test_a_level_held_for_debounce_s_counts_from_its_first_edge(rig):
    rig.advance(1)
    opened_at = rig.clock.now()
    rig.open_gate()
    rig.advance(0.2)
    assert rig.stored("gate_open") == []
    rig.advance(0.2)
    [opened] = rig.stored("gate_open")
    assert opened.time == opened_at and opened.subject == "main_gate"
    assert rig.status()["inputs"]["main_gate"]["open"] is True
    closed_at = rig.clock.now()
    rig.close_gate()
    rig.advance(0.4)
    [closed] = rig.stored("gate_closed")
    assert closed.time == closed_at
    assert not rig.siren_on  # a gate is not a siren alarm


@pytest.mark.parametrize("local, after_hours", [
    (dt.datetime(2026, 11, 23, 7, 0), False),    # Monday 07:00 (Sunday 23:00 UTC)
    (dt.datetime(2026, 11, 23, 21, 0), True),    # Monday 21:00
    (dt.datetime(2026, 11, 23, 8, 30), True),    # end of a range is exclusive
    (dt.datetime(2026, 11, 28, 7, 0), True),     # Saturday in school hours
    (dt.datetime(2026, 11, 27, 16, 0), False),   # Friday 16:00 (Friday 08:00 UTC)
])
def test_gate_after_hours_in_the_site_timezone(make_rig, local, after_hours):
    utc = local.replace(tzinfo=SHANGHAI).astimezone(dt.timezone.utc)
    rig = make_rig(start=utc).start()
    rig.open_gate()
    rig.advance(0.5)
    assert len(rig.stored("gate_open")) == 1
    alerts = rig.stored("gate_after_hours")
    assert len(alerts) == int(after_hours)
    if after_hours:
        assert alerts[0].data["local_time"] == local.strftime("%H:%M:%S")
        assert alerts[0].time == utc


def test_one_held_open_alert_per_opening(rig):
    rig.open_gate()
    rig.advance(0.5)
    rig.advance(299)
    assert rig.stored("gate_held_open") == []
    rig.advance(1)
    [held] = rig.stored("gate_held_open")
    assert held.data["held_open_alert_s"] == 300
    rig.advance(1000)
    assert len(rig.stored("gate_held_open")) == 1
    rig.close_gate()
    rig.advance(0.5)
    rig.open_gate()
    rig.advance(0.5)
    rig.advance(300)
    assert len(rig.stored("gate_held_open")) == 2


def test_no_held_open_alert_when_closed_in_time(rig):
    rig.open_gate()
    rig.advance(100)
    rig.close_gate()
    rig.advance(1000)
    assert rig.stored("gate_held_open") == []
    assert [e.kind for e in rig.stored("gate_open", "gate_closed")] == ["gate_open",
                                                                        "gate_closed"]


# ------------------------------------------------------------------ restart

def test_a_restart_restores_latched_alarm_gate_and_timers(make_rig):
    # Real-pin semantics (a new factory keeps the wiring's levels, pulled up: gate open,
    # button released), so the gate is still open when the second daemon starts. No
    # tamper switch: an unwired one reads "lid open", an alarm of its own at each start.
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock, pin_factory="lgpio", tamper=False).start()
    first.close_gate()
    first.advance(1)
    assert first.stored() == []  # the open level seen at start never settled
    first.open_gate()
    first.advance(0.5)
    first.press()
    first.release()
    first.advance(100)
    first.close()
    before = first.stored()
    assert [e.kind for e in before] == ["gate_open", "panic"]

    second = make_rig(clock=clock, pin_factory="lgpio", tamper=False).start()
    assert second.siren_on
    assert second.daemon.siren.off_at == pytest.approx(clock.monotonic() + 80)
    assert second.status()["alarm"]["inputs"] == ["guard_room"]
    assert second.daemon.latched["guard_room"].id == before[1].id
    assert second.status()["inputs"]["main_gate"]["open"] is True
    second.advance(79)
    assert second.siren_on
    second.advance(2)
    assert not second.siren_on and second.status()["alarm"]["active"]
    second.advance(300 - 0.5 - 100 - 81 - 1)  # 1 s before the opening is 300 s old
    assert second.stored("gate_held_open") == []
    second.advance(2)
    assert len(second.stored("gate_held_open")) == 1
    assert [e.kind for e in second.stored("gate_open", "panic")] == ["gate_open", "panic"]


def test_a_restart_after_silence_keeps_quiet(make_rig):
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    first.press()
    first.daemon.silence("wang", "cli")
    first.close()
    second = make_rig(clock=clock).start()
    assert not second.siren_on and not second.status()["alarm"]["active"]


def test_a_restart_after_the_siren_ran_out_keeps_it_off_but_latched(make_rig):
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    first.press()
    first.advance(200)
    first.close()
    second = make_rig(clock=clock).start()
    assert not second.siren_on and second.status()["alarm"]["active"]


def test_a_restart_of_a_gate_that_closed_while_down_records_the_close(make_rig):
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    first.open_gate()
    first.advance(0.5)
    assert len(first.stored("gate_open")) == 1
    first.close()
    second = make_rig(clock=clock).start()  # simulated pins start with the gate closed
    second.advance(0.5)
    assert [e.kind for e in second.stored("gate_open", "gate_closed")] == ["gate_open",
                                                                           "gate_closed"]
    second.advance(400)
    assert second.stored("gate_held_open") == []


def test_a_tamper_switch_open_at_start_raises_the_alarm(make_rig):
    # Real-pin semantics: the unwired tamper pin is pulled up, which reads "lid open"
    # (the enclosure was opened while the power was off: cut power, open box, power on).
    rig = make_rig(pin_factory="lgpio").start()
    assert rig.status()["inputs"]["box"]["active"] is True
    assert [e.subject for e in rig.stored("tamper")] == ["box"]
    assert rig.siren_on


# ------------------------------------------------------------------ storage trouble

def test_unwritable_storage_is_a_fault_and_the_alarm_still_works(make_rig, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the storage directory should be")
    rig = make_rig(storage=blocker / "var").start()
    assert rig.daemon.faults == {"storage": "unwritable"}
    rig.press()
    assert rig.siren_on
    status = rig.status()
    assert status["faults"] == ["storage"] and status["alarm"]["active"]
    assert status["storage"]["unstored"] == 2  # the fault and the panic, kept in memory
    alarm_id = rig.daemon.latched["guard_room"].id

    blocker.unlink()  # someone fixes the disk; the next housekeeping writes the backlog
    rig.advance(61)
    assert "storage" not in rig.daemon.faults
    stored = rig.stored()
    assert [(e.kind, e.subject) for e in stored[:3]] == [
        ("fault", "storage"), ("panic", "guard_room"), ("recovered", "storage")]
    assert stored[1].id == alarm_id  # the id it was acted on with, kept for the platform
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))


def test_a_corrupt_store_is_set_aside_and_the_alarm_still_works(make_rig, tmp_path):
    db = tmp_path / "var" / "events.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not an sqlite database" * 200)
    rig = make_rig().start()
    assert rig.daemon.faults == {"storage": "corrupt"}
    assert list(db.parent.glob("events.db.corrupt-*"))
    rig.press()
    assert rig.siren_on
    assert [(e.kind, e.subject) for e in rig.stored()] == [("fault", "storage"),
                                                           ("panic", "guard_room")]
    assert rig.stored("fault")[0].data["reason"] == "corrupt"


def test_a_store_gone_corrupt_while_running_is_set_aside_and_the_alarm_stored(rig):
    """Every page but the header turns to garbage under the running daemon (a card gone
    bad): the press that meets it is held in memory, the fault follows it, the file is
    moved aside and the fresh store takes both, in that order. The fault is raised on the
    loop's next turn, never from inside the append that found the damage (which holds the
    clock steps' deadlines): the owner never waits for itself."""
    db = rig.cfg.storage.db_path
    page = 4096
    with closing(sqlite3.connect(db)) as other:  # every page in the database file
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db, "r+b") as f:
        for n in range(1, db.stat().st_size // page):
            f.seek(n * page)
            f.write(b"\xa5" * page)
    with closing(sqlite3.connect(db)) as other:  # its commit: the daemon reads from disk again
        other.execute("PRAGMA user_version = 7")
    pressing = threading.Thread(target=rig.press, daemon=True)
    pressing.start()
    pressing.join(10)
    assert not pressing.is_alive(), "the owner waits for itself"
    assert rig.siren_on
    assert rig.daemon.faults == {"storage": "corrupt"}
    assert list(db.parent.glob("events.db.corrupt-*"))
    assert [(e.kind, e.subject) for e in rig.stored()] == [("panic", "guard_room"),
                                                           ("fault", "storage")]


def test_unwritable_clears_with_the_first_write_that_succeeds(rig, monkeypatch):
    monkeypatch.setattr(rig.daemon.store, "append", refuse_writes)  # the card goes read-only
    rig.press()
    assert rig.daemon.faults == {"storage": "unwritable"}
    monkeypatch.undo()  # and works again: no retry timer has run (the clock stands still)
    rig.drive(TAMPER_PIN, high=True)
    assert rig.daemon.faults == {}
    assert [(e.kind, e.subject) for e in rig.stored()] == [
        ("panic", "guard_room"), ("fault", "storage"), ("tamper", "box"),
        ("recovered", "storage")]


def test_a_new_event_is_stored_behind_those_waiting_in_memory(rig, monkeypatch):
    monkeypatch.setattr(rig.daemon.store, "append", refuse_writes)
    for _ in range(3):
        rig.open_gate()
        rig.advance(0.5)
        rig.close_gate()
        rig.advance(0.5)
    assert rig.status()["storage"]["unstored"] == 7  # the fault and six gate events
    monkeypatch.undo()
    rig.open_gate()
    rig.advance(0.5)
    stored = rig.stored()
    assert [e.kind for e in stored] == ["gate_open", "fault", "gate_closed",
                                        *["gate_open", "gate_closed"] * 2, "gate_open",
                                        "recovered"]
    gate_times = [e.time for e in stored if e.kind.startswith("gate_")]
    assert gate_times == sorted(gate_times)
    assert rig.status()["storage"]["unstored"] == 0


def test_a_long_backlog_is_written_a_batch_per_turn_of_the_owner_loop(rig, monkeypatch):
    monkeypatch.setattr(unstored_module, "FLUSH_BATCH", 2)
    with monkeypatch.context() as card:
        card.setattr(rig.daemon.store, "append", refuse_writes)
        for n in range(5):
            rig.daemon.record("gate_closed" if n % 2 else "gate_open", "main_gate", "校门")
        rig.run()  # the fault, posted by the first refused write
    assert rig.status()["storage"]["unstored"] == 6
    tamper = rig.daemon.record("tamper", "box", "报警主机防拆")  # queues behind the rest
    assert tamper.seq == 0 and len(rig.stored()) == 2
    rig.run()  # the next turns write the rest, in order
    assert [e.kind for e in rig.stored()] == [
        "gate_open", "gate_closed", "gate_open", "gate_closed", "gate_open", "fault",
        "tamper", "recovered"]


def test_memory_holds_a_bounded_backlog_and_drops_other_kinds_before_alarms(
        make_rig, tmp_path, monkeypatch):
    monkeypatch.setattr(unstored_module, "MAX_UNSTORED", 5)
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the storage directory should be")
    rig = make_rig(storage=blocker / "var").start()  # the fault event waits in memory
    rig.press()
    for n in range(6):
        rig.daemon.record("gate_closed" if n % 2 else "gate_open", "main_gate", "校门")
    status = rig.status()
    assert status["storage"]["unstored"] == 5 and status["storage"]["dropped"] == 3
    assert status["fault_reasons"] == {"storage": "events_dropped"}
    shown = io.StringIO()
    print_status(status, False, shown)
    assert "storage: 5 events held in memory, not yet written; 3 dropped" in shown.getvalue()
    assert [e.kind for e in rig.daemon.unstored] == [
        "fault", "panic", "gate_closed", "gate_open", "gate_closed"]

    blocker.unlink()
    rig.advance(61)
    assert [e.kind for e in rig.stored()] == [
        "fault", "panic", "gate_closed", "gate_open", "gate_closed", "recovered"]
    assert rig.stored("recovered")[0].data["reason"] == "events_dropped"
    assert rig.status()["storage"] == {"ok": True, "unstored": 0, "dropped": 3,
                                       "last_seq": 6}


def free_bytes(path) -> int:
    return shutil.disk_usage(path).free


def test_low_free_space_is_its_own_fault_and_clears_with_a_margin(tiny_fs, make_rig,
                                                                 tmp_path):
    var = tiny_fs(tmp_path / "var", "size=16m")
    rig = make_rig(storage_keys="min_free_mb = 10").start()
    assert rig.daemon.faults == {}
    filler = var / "filler"
    filler.write_bytes(b"\0" * (free_bytes(var) - 6 * MB))
    rig.advance(61)
    assert rig.daemon.faults == {"storage": "low_space"}
    rig.press()  # every write still succeeds: the fault stays, it says what is wrong
    assert rig.stored("panic") and rig.daemon.faults == {"storage": "low_space"}

    def free_mb(mb: float) -> None:
        os.truncate(filler, filler.stat().st_size - (int(mb * MB) - free_bytes(var)))
        rig.advance(61)
    free_mb(10.5)  # above min_free_mb, within its margin: no flapping
    assert rig.daemon.faults == {"storage": "low_space"}
    free_mb(11.5)
    assert rig.daemon.faults == {}
    assert [(e.kind, e.data.get("reason")) for e in rig.stored("fault", "recovered")] == [
        ("fault", "low_space"), ("recovered", "low_space")]


# ------------------------------------------------------------------ retention

def test_an_alarm_never_silenced_outlives_retention_and_a_restart(make_rig):
    clock = FakeClock(MONDAY_7AM - dt.timedelta(days=2))  # the Pi booted two days behind
    first = make_rig(clock=clock, storage_keys="retention_days = 1").start()
    first.daemon._sync = SyncedKernel()
    first.press()
    first.release()
    clock.cut_to(MONDAY_7AM)  # NTP sets the clock right
    first.advance(61)  # housekeeping: the retention purge
    assert [e.kind for e in first.stored("panic")] == ["panic"]
    first.close()

    second = make_rig(clock=clock, storage_keys="retention_days = 1").start()
    assert second.status()["alarm"]["inputs"] == ["guard_room"]
    assert [e.kind for e in second.stored("panic")] == ["panic"]


def test_a_gate_open_longer_than_retention_is_still_open_after_purge_and_restart(make_rig):
    clock = FakeClock(MONDAY_7AM)
    options = dict(clock=clock, pin_factory="lgpio", tamper=False,
                   storage_keys="retention_days = 1")
    first = make_rig(**options).start()
    first.daemon._sync = SyncedKernel()
    first.close_gate()
    first.advance(1)
    first.open_gate()
    first.advance(301)  # gate_open, then gate_held_open
    first.advance(2 * 86400)  # two days later the housekeeping purges
    assert [e.kind for e in first.stored()] == ["gate_held_open"]
    first.close()

    second = make_rig(**options).start()
    assert second.status()["inputs"]["main_gate"]["open"] is True
    second.advance(400)
    assert [e.kind for e in second.stored()] == ["gate_held_open"]  # nothing new


def test_nothing_is_purged_for_its_age_while_the_clock_is_not_synchronised(make_rig):
    clock = FakeClock(MONDAY_7AM)
    rig = make_rig(clock=clock, storage_keys="retention_days = 1").start()
    rig.daemon._sync = SyncedKernel(False)
    rig.daemon.set_drill(True, 60)
    rig.press()  # a drill: no state, retention alone decides when it goes
    clock.cut_to(MONDAY_7AM + dt.timedelta(days=3 * 365))  # a clock years ahead
    rig.advance(61)
    assert [e.kind for e in rig.stored("drill")] == ["drill"]
    rig.daemon._sync = SyncedKernel()  # synchronised (and still years ahead, as it is)
    rig.advance(PURGE_EVERY_S)
    assert rig.stored("drill") == []


# ------------------------------------------------------------------ drill

def test_a_drill_press_is_a_drill_with_a_short_siren_and_no_latch(rig):
    rig.daemon.set_drill(True, 600)
    rig.press()
    assert rig.siren_on
    [drill] = rig.stored("drill")
    assert drill.subject == "guard_room" and rig.stored("panic") == []
    assert not rig.status()["alarm"]["active"] and rig.status()["drill"]["active"]
    rig.release()
    rig.advance(5.1)  # [drill] siren_s defaults to 5
    assert not rig.siren_on
    rig.advance(600)  # drill mode ends by itself: the next press is real
    rig.press()
    assert len(rig.stored("panic")) == 1 and rig.status()["alarm"]["active"]


def test_a_silent_drill_never_sounds_the_siren(make_rig):
    rig = make_rig(extra="[drill]\nsiren_s = 0\n").start()
    rig.daemon.set_drill(True)
    rig.pin(PANIC_PIN).drive_low()
    assert not rig.siren_on  # not even tripped by gpiozero's thread
    rig.run()
    assert not rig.siren_on and len(rig.stored("drill")) == 1


def test_a_silent_drill_never_holds_up_a_tampers_siren(make_rig):
    rig = make_rig(extra="[drill]\nsiren_s = 0\n").start()
    rig.daemon.set_drill(True)
    rig.pin(TAMPER_PIN).drive_high()  # drill mode never hides a tamper
    assert rig.siren_on  # tripped on gpiozero's thread, before the owner saw the edge
    rig.run()
    assert rig.siren_on and len(rig.stored("tamper")) == 1


def test_drill_mode_survives_a_restart(make_rig):
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    first.daemon.set_drill(True, 1800)
    first.close()
    second = make_rig(clock=clock).start()
    second.press()
    assert len(second.stored("drill")) == 1 and second.stored("panic") == []


def test_a_busy_loop_does_not_lose_a_gate_opening_that_held_its_debounce(rig):
    # The gate opens and closes 0.5 s later (> debounce_s 0.3), both edges queued while the
    # owner was busy: the opening still counts, by the edges' own times.
    rig.pin(GATE_PIN).drive_high()
    rig.clock.advance(0.5)
    rig.pin(GATE_PIN).drive_low()
    rig.clock.advance(0.5)
    rig.run()
    assert [e.kind for e in rig.stored("gate_open", "gate_closed")] == ["gate_open",
                                                                        "gate_closed"]


def test_a_bounce_queued_with_its_edge_is_still_a_bounce(rig):
    rig.pin(GATE_PIN).drive_high()
    rig.clock.advance(0.1)
    rig.pin(GATE_PIN).drive_low()
    rig.clock.advance(1)
    rig.run()
    assert rig.stored("gate_open", "gate_closed") == []


# ------------------------------------------------------------------ ack button, power

ACK_AND_POWER = """
[[ack_button]]
name = "guard_key"
label = "门卫室复位钥匙"
pin = 6

[[power_input]]
name = "ups_mains"
label = "市电"
pin = 13
signals = "mains_lost"

[[power_input]]
name = "ups_battery"
label = "备用电池"
pin = 19
signals = "battery_low"
"""


def test_the_ack_key_switch_silences_and_acknowledges(make_rig):
    rig = make_rig(extra=ACK_AND_POWER).start()
    rig.press()
    rig.drive(6, high=False)  # the key turned: active low
    [silenced] = rig.stored("silenced")
    assert silenced.data["by"] == "guard_key" and silenced.data["via"] == "button"
    assert not rig.siren_on and not rig.status()["alarm"]["active"]
    assert rig.status()["inputs"]["guard_key"]["kind"] == "ack"


def test_power_signals_are_debounced_and_recorded(make_rig):
    rig = make_rig(extra=ACK_AND_POWER).start()
    assert rig.status()["inputs"]["ups_mains"]["kind"] == "power"
    rig.drive(13, high=False)  # mains lost, for a flicker only
    rig.advance(0.2)
    rig.drive(13, high=True)
    rig.advance(2)
    assert rig.stored("power_lost") == []
    rig.drive(13, high=False)
    rig.advance(1.5)
    rig.drive(13, high=True)
    rig.advance(1.5)
    rig.drive(19, high=False)
    rig.advance(1.5)
    assert [e.kind for e in rig.stored("power_lost", "power_restored", "battery_low")] == [
        "power_lost", "power_restored", "battery_low"]


def test_ack_and_power_config_errors(write_config):
    bad = write_config(extra=ACK_AND_POWER.replace('signals = "battery_low"',
                                                   'signals = "low"'))
    with pytest.raises(config.ConfigError) as e:
        config.load(str(bad))
    assert any("[[power_input]] ups_battery.signals" in line for line in e.value.problems)


def test_a_drill_press_never_shortens_a_real_alarms_siren(rig):
    rig.drive(TAMPER_PIN, high=True)  # a real tamper alarm: 180 s of siren
    full = rig.daemon.siren.off_at
    rig.daemon.set_drill(True, 600)
    rig.press()  # a drill press sounds for 5 s, but must not cut the tamper's siren
    assert rig.daemon.siren.off_at == full
    rig.advance(10)
    assert rig.siren_on


def test_an_sms_silence_acknowledges_only_the_alarms_its_sender_knew_of(rig):
    rig.daemon._sync = SyncedKernel()
    rig.press()
    sent_at = rig.clock.now().timestamp()
    rig.advance(3600)  # an hour later, a new tamper alarm…
    rig.drive(TAMPER_PIN, high=True)
    # …and only then the principal's SILENCE from an hour ago arrives (delayed network).
    done = rig.daemon.silence("principal", "sms", sent_at)
    assert [e.subject for e in done] == ["guard_room"]
    assert list(rig.daemon.latched) == ["box"] and rig.siren_on


def test_an_sms_ack_acknowledges_the_alarms_its_sender_knew_of_and_silences_none(rig):
    rig.daemon._sync = SyncedKernel()
    rig.press()
    sent_at = rig.clock.now().timestamp()
    rig.advance(3600)
    rig.drive(TAMPER_PIN, high=True)
    done = rig.daemon.acknowledge("principal", "sms", sent_at)
    assert [(e.kind, e.subject, e.data["by"], e.data["via"]) for e in done] == [
        ("acknowledged", "guard_room", "principal", "sms")]
    assert done[0].data["alarm_id"] == rig.daemon.latched["guard_room"].id
    assert sorted(rig.daemon.latched) == ["box", "guard_room"] and rig.siren_on


# ------------------------------------------------------------------ wall-clock steps

def step_wall(rig, hours: float) -> None:
    """NTP (or a person) steps the wall clock; the monotonic clock goes on as it was."""
    rig.clock.cut_to(rig.clock.now() + dt.timedelta(hours=hours))
    rig.run()


WALL_STEPS = [pytest.param(5, id="forward-5h"), pytest.param(-5, id="back-5h")]


@pytest.mark.parametrize("hours", WALL_STEPS)
def test_a_wall_clock_step_neither_cuts_nor_stretches_drill_mode(rig, hours):
    rig.daemon.set_drill(True, 600)
    rig.advance(300)
    step_wall(rig, hours)
    rig.advance(299)
    assert rig.status()["drill"] == {
        "active": True, "until": (rig.clock.now() + dt.timedelta(seconds=1)).astimezone(
            SHANGHAI).isoformat(timespec="seconds")}
    rig.press()
    rig.release()
    assert len(rig.stored("drill")) == 1 and rig.stored("panic") == []
    rig.advance(2)  # 601 s of monotonic time: over, whatever the wall clock says
    assert rig.status()["drill"] == {"active": False, "until": None}
    rig.press()
    assert len(rig.stored("panic")) == 1


TIMED_MODES = [pytest.param("drill", id="drill"), pytest.param("walktest", id="walktest")]


def turn_on(rig, mode: str, for_s: int) -> None:
    """Drill mode or a walk test on for ``for_s``."""
    getattr(rig.daemon, f"set_{mode}")(True, for_s)


@pytest.mark.parametrize("pressed", [pytest.param(True, id="noticed-by-a-press"),
                                     pytest.param(False, id="noticed-at-stop")])
@pytest.mark.parametrize("mode", TIMED_MODES)
@pytest.mark.parametrize("hours", WALL_STEPS)
def test_a_timed_mode_restarted_after_a_wall_clock_step_keeps_its_length(make_rig, mode,
                                                                          hours, pressed):
    """The owner notices the step as it stores a press (a drill, an input tested), or
    else as the daemon stops; the kept end moves with it, so the restarted mode ends 600 s
    after it was turned on."""
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    turn_on(first, mode, 600)
    first.advance(300)
    step_wall(first, hours)
    if pressed:
        first.press()
        first.release()
    first.close()
    second = make_rig(clock=clock).start()
    second.advance(299)
    assert second.status()[mode]["active"]
    second.advance(2)
    assert not second.status()[mode]["active"]


@pytest.mark.parametrize("mode", TIMED_MODES)
def test_a_timed_mode_kept_through_a_step_back_no_daemon_saw_ends_at_the_start(
        make_rig, mode):
    """Its kept end, 5 h further ahead than when it was set, cannot be trusted: kept on, a
    real press would count as a drill or a test for hours; it ends."""
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    turn_on(first, mode, 600)
    first.advance(300)
    first.close()
    clock.cut_to(clock.now() - dt.timedelta(hours=5))  # the kept end is 5 h 5 min ahead
    second = make_rig(clock=clock).start()
    assert not second.status()[mode]["active"]


@pytest.mark.parametrize("hours", WALL_STEPS)
def test_a_wall_clock_step_neither_cuts_nor_stretches_the_sirens_max_on(rig, hours):
    rig.press()
    rig.release()
    rig.advance(60)
    step_wall(rig, hours)
    rig.advance(119)
    assert rig.siren_on
    rig.advance(1.5)  # max_on_s = 180
    assert not rig.siren_on and rig.status()["alarm"]["active"]


@pytest.mark.parametrize("hours", WALL_STEPS)
def test_a_wall_clock_step_neither_cuts_nor_stretches_a_held_open_timer(rig, hours):
    rig.open_gate()
    rig.advance(0.5)  # debounce_s 0.3: the opening counts from its first edge
    rig.advance(100)
    step_wall(rig, hours)
    rig.advance(199)
    assert rig.stored("gate_held_open") == []
    rig.advance(1)  # held_open_alert_s = 300
    assert len(rig.stored("gate_held_open")) == 1


def test_a_restart_on_a_clock_behind_the_store_keeps_timers_within_their_length(make_rig):
    """A Pi that comes back a day behind (no RTC, NTP not there yet): the restored siren
    and held-open timer are no longer than max_on_s and held_open_alert_s."""
    first = make_rig(clock=FakeClock(MONDAY_7AM), pin_factory="lgpio", tamper=False).start()
    first.close_gate()
    first.advance(1)
    first.open_gate()
    first.advance(0.5)
    first.press()
    first.release()
    first.close()

    behind = FakeClock(MONDAY_7AM - dt.timedelta(days=1))
    second = make_rig(clock=behind, pin_factory="lgpio", tamper=False).start()
    assert second.siren_on and second.status()["inputs"]["main_gate"]["open"] is True
    second.advance(181)
    assert not second.siren_on and second.status()["alarm"]["active"]
    second.advance(120)
    assert len(second.stored("gate_held_open")) == 1


def test_a_call_that_timed_out_is_never_run_later():
    """A CLI silence or an SMS command answered "failed" after the owner loop was busy for
    its whole timeout must not come true afterwards."""
    loop = OwnerLoop(Clock())
    done = []
    with pytest.raises(TimeoutError):
        loop.call(done.append, "silenced", timeout=0.05)  # nobody runs the loop meanwhile
    loop.process()
    assert done == []
    worker = threading.Thread(target=lambda: [loop.process(0.5) for _ in range(4)])
    worker.start()
    assert loop.call(lambda: "ran", timeout=5) == "ran"
    worker.join()
