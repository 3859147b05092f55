"""A damaged store at start: the database file truncated or with a page of garbage, the
write-ahead log with a flipped bit or a damaged header, the database emptied beside its
log, the -shm index full of garbage. A real `edge-alarm run` (mock pins, the emulated modem)
starts on it: whatever lost committed data is moved aside (kept, byte for byte), a `storage`
fault says so, a fresh store takes the events, and a press still sounds the siren and
sends the SMS. The -shm file is only an index that SQLite rebuilds from the log when the
first connection opens the store, so garbage there loses nothing and is no fault."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from reliability._crash_rig import (PRINCIPAL, crash_site, event_sms_time, quarantined,
                                    stored_events)
from conftest import RunningDaemon, _wait_until, start_daemon, stop_daemon
from edge.control import request_status, request
from edge.event_writer import STORAGE_RETRY_S
from edge.sim.site import SITE_NAME
from edge.worker import IDLE_WAIT_S

pytestmark = pytest.mark.reliability

HISTORY = 40       # gate events in the store before the damage
CHECKPOINTED = 10  # of which folded into the database file; the rest are in the log
PAGE = 4096

# Writes the history as the daemon would and dies without closing, as at a power cut:
# the last commits stay in the log.
_WRITER = """
import datetime as dt, os, sys
from pathlib import Path
from edge.store import Store
store = Store(Path(sys.argv[1]), autocheckpoint=False)
store.claim_device("test-gate-1")
now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
for n in range(int(sys.argv[2])):
    store.append("gate_open" if n % 2 == 0 else "gate_closed", "main_gate", now,
                 {"site": sys.argv[4], "label": "校门", "clock_synced": True, "history": n})
    if n + 1 == int(sys.argv[3]):
        store.pragma("wal_checkpoint(TRUNCATE)")
os._exit(0)
"""


def write_history(db: Path, checkpointed: int = CHECKPOINTED) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _WRITER, str(db), str(HISTORY), str(checkpointed),
                    SITE_NAME], check=True)


def flip(path: Path, offset: int, size: int = 1) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(size)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))


def truncate_database(db: Path) -> None:
    write_history(db, checkpointed=HISTORY)  # everything in the database file
    os.truncate(db, db.stat().st_size // 2 + 100)


def garbage_page(db: Path) -> None:
    write_history(db, checkpointed=HISTORY)
    flip(db, (db.stat().st_size // PAGE - 1) * PAGE, PAGE)  # the last page: events


def flipped_bit_in_the_log(db: Path) -> None:
    write_history(db)
    flip(Path(f"{db}-wal"), 32 + 24 + 100)  # the first frame's page


def damaged_log_header(db: Path) -> None:
    write_history(db)
    flip(Path(f"{db}-wal"), 16)  # a salt: the header's checksum fails


def empty_database_beside_its_log(db: Path) -> None:
    write_history(db)
    os.truncate(db, 0)


def garbage_index(db: Path) -> None:
    write_history(db)
    shm = Path(f"{db}-shm")
    shm.write_bytes(os.urandom(shm.stat().st_size))


@pytest.mark.parametrize("damage", [truncate_database, garbage_page, flipped_bit_in_the_log,
                                    damaged_log_header, empty_database_beside_its_log])
def test_a_damaged_store_is_moved_aside_a_fault_raised_and_alarms_still_work(
        damage, tmp_path, short_dir, emulator):
    config = crash_site(tmp_path, short_dir / "control.sock", modem=emulator,
                        contacts=[PRINCIPAL])
    db = tmp_path / "var" / "events.db"
    damage(db)
    damaged = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        status = request_status(daemon.socket)
        assert status["fault_reasons"].get("storage") == "corrupt", daemon.log_text()
        [moved] = quarantined(db)
        assert moved.read_bytes() == damaged["events.db"]  # kept as it was found
        if "events.db-wal" in damaged:
            assert Path(f"{moved}-wal").read_bytes() == damaged["events.db-wal"]
        press_sounds_and_texts(daemon.socket, emulator)
    finally:
        assert stop_daemon(daemon) == 0
    events = stored_events(db)
    assert [(e.kind, e.subject, e.data.get("reason")) for e in events[:1]] == [
        ("fault", "storage", "corrupt")]
    panic = next(e for e in events if e.kind == "panic")
    assert any(event_sms_time(panic) in sms.text for sms in emulator.sent)


def press_sounds_and_texts(socket: Path, emulator) -> None:
    request(socket, "sim", {"input": "guard_room", "state": "on"})
    status = request_status(socket)
    assert status["alarm"]["active"] and status["siren"]["on"]
    _wait_until(lambda: emulator.sent, 10, what="the panic SMS")


def test_garbage_in_the_shm_index_loses_nothing(tmp_path, short_dir, emulator):
    config = crash_site(tmp_path, short_dir / "control.sock", modem=emulator,
                        contacts=[PRINCIPAL])
    db = tmp_path / "var" / "events.db"
    garbage_index(db)
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        assert "storage" not in request_status(daemon.socket)["faults"]
        press_sounds_and_texts(daemon.socket, emulator)
    finally:
        assert stop_daemon(daemon) == 0
    assert quarantined(db) == []
    assert [e.seq for e in stored_events(db)][:HISTORY + 1] == list(range(1, HISTORY + 2))


def test_a_last_transaction_torn_at_a_power_cut_is_no_damage(tmp_path, short_dir, emulator):
    """Only the last transaction can be torn by a power cut, and it was never acknowledged:
    SQLite drops it, and nothing else was lost, so nothing is moved aside."""
    config = crash_site(tmp_path, short_dir / "control.sock", modem=emulator,
                        contacts=[PRINCIPAL])
    db = tmp_path / "var" / "events.db"
    write_history(db)
    wal = Path(f"{db}-wal")
    flip(wal, wal.stat().st_size - 100)  # the last frame: the last commit's
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        assert "storage" not in request_status(daemon.socket)["faults"]
    finally:
        assert stop_daemon(daemon) == 0
    assert quarantined(db) == []
    # The history's events only: the daemon records the gate's state at its start too.
    kept = [e for e in stored_events(db) if "history" in e.data]
    assert [e.seq for e in kept] == list(range(1, HISTORY))  # all but the torn one


# ------------------------------------------------------------------ damage while running


def garbage_over_the_middle(db: Path) -> dict[int, bytes]:
    """Every page but the first and the last overwritten with garbage under the running
    daemon, as an SD card returning garbage for them: the header still says SQLite, the
    tables and indexes do not. The garbage, by page number."""
    pages = db.stat().st_size // PAGE
    return garbage_over(db, range(2, pages))


def garbage_over_the_event_indexes(db: Path) -> dict[int, bytes]:
    """The root pages of the events' two indexes (by time, by subject) overwritten with
    garbage: the events themselves, and what they are owed, can still be read. The log is
    folded back first (as the daemon's checkpointer does), so the indexes are read from
    the database file."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        roots = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_schema WHERE name "
                                            "IN ('events_ts', 'events_subject')")]
    finally:
        conn.close()
    return garbage_over(db, roots)


def garbage_over(db: Path, pages: Iterable[int]) -> dict[int, bytes]:
    """``pages`` of the live database overwritten with garbage; the garbage by page."""
    garbage = {n: os.urandom(PAGE) for n in pages}
    with open(db, "r+b") as f:
        for n, page in garbage.items():
            f.seek((n - 1) * PAGE)
            f.write(page)
    # Another connection's commit (a worker's, here the test's own, of the header page
    # alone) makes every connection of the daemon read its pages again, from the card.
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"PRAGMA user_version = {os.getpid() & 0xFFFF}")
    finally:
        conn.close()
    return garbage


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_on_history(tmp_path: Path, short_dir: Path, emulator, platform
                     ) -> tuple[RunningDaemon, Path]:
    """A daemon (the emulated modem, the stand-in platform, the principal) started on a
    store of HISTORY events, all in the database file; and that file."""
    socket = short_dir / "control.sock"
    config = crash_site(tmp_path, socket, modem=emulator, platform=platform,
                        contacts=[PRINCIPAL])
    db = tmp_path / "var" / "events.db"
    write_history(db, checkpointed=HISTORY)
    return start_daemon(config, socket, tmp_path / "daemon.log"), db


def met_by_a_press(daemon) -> list[tuple[str, str, str | None]]:
    """The press's write meets the damage: the fault comes after the press."""
    request(daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    return [("panic", "guard_room", None), ("fault", "storage", "corrupt")]


def met_by_status(daemon) -> list[tuple[str, str, str | None]]:
    """`status` reads first: it answers, the fault follows at once, before any press."""
    request_status(daemon.socket)
    _wait_until(lambda: request_status(daemon.socket)["fault_reasons"].get("storage")
                == "corrupt", 2, what="the fault, at once")
    request(daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    return [("fault", "storage", "corrupt"), ("panic", "guard_room", None)]


def met_by_a_worker(daemon) -> list[tuple[str, str, str | None]]:
    """Nobody asks: the workers' own reads (what the platform is owed, the SMS outbox) meet
    the damage within their idle wait, and the fault comes before the press."""
    _wait_until(lambda: "event fault storage" in daemon.log_text(), 3 * IDLE_WAIT_S,
                interval=0.1, what="the fault, from a worker's read")
    request(daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    return [("fault", "storage", "corrupt"), ("panic", "guard_room", None)]


@pytest.mark.parametrize("first", [met_by_a_press, met_by_status, met_by_a_worker])
def test_a_store_damaged_while_running_is_a_fault_at_once_and_loses_no_alarm(
        first, tmp_path, short_dir, emulator, platform):
    """Pages of the live database turn to garbage: the next read or write that meets them
    (a press's, or `status`'s) raises the `storage` fault (`corrupt`) at once; the press
    still sounds the siren and its SMS goes; `status` answers; the damaged file is moved
    aside as at start and a fresh store takes the events held meanwhile, in the order they
    were made, and the platform gets them."""
    daemon, db = start_on_history(tmp_path, short_dir, emulator, platform)
    socket = daemon.socket
    try:
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 20,
                    interval=0.1, what="the start's events delivered")
        garbage = garbage_over_the_middle(db)
        first_events = first(daemon)
        status = request_status(socket)
        assert status["alarm"]["active"] and status["siren"]["on"]
        _wait_until(lambda: request_status(socket)["fault_reasons"].get("storage")
                    == "corrupt", 2, what="the fault, at once")
        for state in ("on", "off", "on"):
            request(socket, "sim", {"input": "main_gate", "state": state})
            time.sleep(0.2)  # longer than the debounce: each one an event
        status = request_status(socket)
        assert status["alarm"]["active"] and status["siren"]["on"]
        _wait_until(lambda: emulator.sent, 10, what="the panic SMS")
        _wait_until(lambda: quarantined(db), 10, interval=0.1, what="the store moved aside")
        _wait_until(lambda: request_status(socket)["storage"]["unstored"] == 0, 20,
                    interval=0.2, what="the held events written")
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 30,
                    interval=0.2, what="every event delivered")
        before = cpu_seconds(daemon.proc.pid)
        time.sleep(2)
        assert cpu_seconds(daemon.proc.pid) - before < 1.0  # it does not spin
        assert daemon.proc.poll() is None
    finally:
        assert stop_daemon(daemon) == 0
    assert "Traceback" not in daemon.log_text()
    [moved] = quarantined(db)
    kept = moved.read_bytes()
    middle = len(garbage) // 2 + 2  # a page of old history: nothing wrote it since
    assert kept[(middle - 1) * PAGE:middle * PAGE] == garbage[middle]
    events = stored_events(db)
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    kinds = [(e.kind, e.subject, e.data.get("reason")) for e in events]
    assert kinds[:2] == first_events
    assert [e.kind for e in events if e.subject == "main_gate"][-3:] == [
        "gate_open", "gate_closed", "gate_open"]
    delivered = {e.id for e in platform.events}
    assert [e for e in events if e.id not in delivered] == []
    panic_sms = [sms for sms in emulator.sent if "报警" in sms.text]
    assert len(panic_sms) == 1, [s.text for s in emulator.sent]


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` read-only for every path looked up from now (a bind mount of itself,
    made read-only; files already open stay writable): what a card the kernel remounted
    read-only does to a rename. Skips the test where mounting is not allowed."""
    done = subprocess.run(["mount", "--bind", str(directory), str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip() or done.returncode}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_damaged_store_that_cannot_be_moved_aside_yet_keeps_the_events_in_memory(
        tmp_path, short_dir, emulator, platform):
    """The damage is met while the card takes no rename (read-only): the fault comes at
    once, the file stays where it is, the press sounds and its SMS goes from memory, the
    events wait in memory, and the daemon tries again every STORAGE_RETRY_S. Once the card
    takes writes again, the next try moves the file aside the way a start does and the
    fresh store takes the held events in order."""
    daemon, db = start_on_history(tmp_path, short_dir, emulator, platform)
    socket = daemon.socket
    try:
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 20,
                    interval=0.1, what="the start's events delivered")
        garbage_over_the_middle(db)
        with read_only(db.parent):
            request_status(socket)  # its reads meet the damage
            _wait_until(lambda: request_status(socket)["fault_reasons"].get("storage")
                        == "corrupt", 2, what="the fault, at once")
            request(socket, "sim", {"input": "guard_room", "state": "on"})
            status = request_status(socket)
            assert status["alarm"]["active"] and status["siren"]["on"]
            _wait_until(lambda: emulator.sent, 10, what="the panic SMS, from memory")
            assert request_status(socket)["storage"]["unstored"] >= 2  # the fault, the press
            assert quarantined(db) == []
        _wait_until(lambda: quarantined(db), STORAGE_RETRY_S + 10, interval=0.2,
                    what="the store moved aside once it can be")
        _wait_until(lambda: request_status(socket)["storage"]["unstored"] == 0, 20,
                    interval=0.2, what="the held events written")
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 30,
                    interval=0.2, what="every event delivered")
        assert daemon.proc.poll() is None
    finally:
        assert stop_daemon(daemon) == 0
    assert "Traceback" not in daemon.log_text()
    events = stored_events(db)
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    kinds = [(e.kind, e.subject, e.data.get("reason")) for e in events]
    assert kinds[:2] == [("fault", "storage", "corrupt"), ("panic", "guard_room", None)]
    delivered = {e.id for e in platform.events}
    assert [e for e in events if e.id not in delivered] == []
    panic_sms = [sms for sms in emulator.sent if "报警" in sms.text]
    assert len(panic_sms) == 1, [s.text for s in emulator.sent]


def test_what_the_damaged_store_still_owed_reaches_the_platform_from_the_fresh_one(
        tmp_path, short_dir, emulator, platform):
    """A gate event stored just before the damage, its upload refused once (503): the
    fresh store takes it over under its seq and id, and the platform gets it."""
    daemon, db = start_on_history(tmp_path, short_dir, emulator, platform)
    socket = daemon.socket
    try:
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 20,
                    interval=0.1, what="the start's events delivered")
        platform.respond_with(503, retry_after=3)
        asked = len(platform.requests)
        request(socket, "sim", {"input": "main_gate", "state": "on"})
        _wait_until(lambda: len(platform.requests) > asked, 5,
                    what="the gate event's upload refused")
        owed = request_status(socket)["storage"]["last_seq"]
        assert request_status(socket)["uplink"]["pending"] == 1
        garbage_over_the_event_indexes(db)
        request_status(socket)  # its reads meet the damage
        _wait_until(lambda: quarantined(db), 5, interval=0.1, what="the store moved aside")
        _wait_until(lambda: any(e.type.endswith(".gate_open") for e in platform.events), 15,
                    interval=0.2, what="the owed gate event delivered")
    finally:
        assert stop_daemon(daemon) == 0
    [gate] = [e for e in platform.events if e.type.endswith(".gate_open")]
    assert int(gate.sequence or 0) == owed
    assert [(e.seq, e.kind) for e in stored_events(db)][0] == (owed, "gate_open")
