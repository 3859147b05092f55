"""A full disk: the store on a real 16 MB tmpfs, filled to the last byte while a real
`edge-alarm run` works on it (the emulated modem, the stand-in platform). Writes fail with
SQLITE_FULL: a `storage` fault (`full`) is raised, the events are held in memory, a press
still sounds the siren and its SMS still goes, at once and from memory. When space
returns, every held event is written in order and reaches the platform, and no SMS goes
twice."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from reliability._crash_rig import (DEPUTY, PRINCIPAL, crash_site, event_sms_time,
                                    stored_events)
from conftest import _wait_until, start_daemon, stop_daemon
from edge.control import request, request_status
from edge.event_writer import STORAGE_RETRY_S

pytestmark = pytest.mark.reliability

CHUNK = 64 * 1024


def fill(directory: Path) -> Path:
    """A file taking every free byte of the file system under ``directory``."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (CHUNK, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def test_a_full_disk_keeps_the_alarm_and_loses_nothing_once_space_returns(
        tiny_fs, tmp_path, short_dir, emulator, platform):
    var = tiny_fs(tmp_path / "var", "size=16m")
    config = crash_site(tmp_path, short_dir / "control.sock", modem=emulator,
                        platform=platform, storage_keys={"min_free_mb": 10})
    socket = short_dir / "control.sock"
    daemon = start_daemon(config, socket, tmp_path / "daemon.log")
    try:
        filler = fill(var)

        def toggle_until_refused():  # the log reuses its written pages for a while
            gate = request_status(socket)["inputs"]["main_gate"]["active"]
            request(socket, "sim", {"input": "main_gate", "state": "off" if gate else "on"})
            time.sleep(0.1)
            return request_status(socket)["storage"]["unstored"]
        _wait_until(toggle_until_refused, 20, interval=0, what="a write refused")
        status = request_status(socket)
        assert status["fault_reasons"].get("storage") == "full", daemon.log_text()

        request(socket, "sim", {"input": "guard_room", "state": "on"})
        status = request_status(socket)
        assert status["alarm"]["active"] and status["siren"]["on"]
        assert status["storage"]["unstored"] >= 2  # the press too, in memory
        sent = _wait_until(lambda: len(emulator.sent) >= 2 and emulator.sent, 10,
                           what="the panic SMS, from memory")

        filler.unlink()  # space returns: the next retry writes what memory holds
        _wait_until(lambda: request_status(socket)["storage"]["unstored"] == 0,
                    STORAGE_RETRY_S + 10, interval=0.2, what="the held events written")
        _wait_until(lambda: request_status(socket)["uplink"]["pending"] == 0, 30,
                    interval=0.2, what="every event delivered")
        assert "storage" not in request_status(socket)["faults"]
        time.sleep(1)  # room for a wrong second SMS
    finally:
        assert stop_daemon(daemon) == 0
    events = stored_events(var / "events.db")
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    assert ("fault", "full") in [(e.kind, e.data.get("reason")) for e in events]
    assert ("recovered", "full") in [(e.kind, e.data.get("reason")) for e in events]
    delivered = {e.id for e in platform.events}
    assert [e for e in events if e.id not in delivered] == []
    [panic] = [e for e in events if e.kind == "panic"]
    to = sorted(sms.number for sms in emulator.sent if event_sms_time(panic) in sms.text)
    assert to == sorted([PRINCIPAL.phone, DEPUTY.phone]) == sorted(s.number for s in sent)
