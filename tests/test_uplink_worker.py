"""The uplink outbox end to end: the real daemon (simulated pins) posting to the platform
stand-in, a real http.server on 127.0.0.1, with a real SQLite store and, for the SMS
fallback, the emulated modem on a pty. One daemon runs as a subprocess, to be killed
with SIGKILL in the middle of a drain."""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import subprocess
import sqlite3
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import (PLATFORM_TOKEN, SITE_NAME, refuse_writes, start_daemon, stop_daemon,
                      write_token)
from edge.sim.slow_platform import TRICKLE_HEAD, SlowPlatform
from edge.config import load
from edge.events import new_event_id
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, SimSite
from edge.routing import UPLINK
from edge.service import WorkerOptions, build_daemon
from edge.sms_text import FALLBACK_NOTE
from edge.store import Store
from edge.uplink.http import CLOUDEVENT_BATCH_TYPE, CLOUDEVENT_TYPE
from edge.uplink.worker import BATCH_MAX_BYTES, BATCH_MAX_EVENTS

pytestmark = pytest.mark.usefixtures("token_never_logged")

DEVICE_ID = "gaoshan-gate-1"
PRINCIPAL = "+8613800138000"
SHANGHAI = dt.timedelta(hours=8)
# The backoff draws a twentieth of each ceiling instead of a random share: retries come
# quickly and in a known order (0.05 s, 0.1 s, 0.2 s …), and still grow.
JITTER = 0.05
# What the daemon puts in a gate event, for events a test stores itself.
GATE_DATA = {"site": SITE_NAME, "label": "校门", "clock_synced": True}


def config_text(root: Path, url: str, *, modem_port: str | None = None,
                fallback_s: int = 20, heartbeat_s: int = 3600,
                connect_timeout_s: float = 2.0, read_timeout_s: float = 5.0) -> str:
    """The simulated school gate (edge.sim.site) without tamper switch and siren, its gate
    allowed at any hour (no after-hours alerts, whatever the hour the tests run at); a
    modem and the principal when ``modem_port``."""
    return SimSite(
        root / "var", root / "control.sock", device_id=DEVICE_ID, tamper=False, siren=False,
        school_hours=False, held_open_alert_s=1, debounce_s=0,
        platform_url=url, token_file=root / "token", sms_fallback_after_s=fallback_s,
        uplink_keys={"heartbeat_s": heartbeat_s, "connect_timeout_s": connect_timeout_s,
                     "read_timeout_s": read_timeout_s},
        modem_port=modem_port,
        contacts=[] if modem_port is None else
        [Contact("principal", PRINCIPAL, ["panic", "gate_held_open"])]).text()


def write_site(root: Path, url: str, **options) -> Path:
    write_token(root / "token")
    path = root / "config.toml"
    path.write_text(config_text(root, url, **options), encoding="utf-8")
    return path


class Site:
    """The daemon in this process, as `edge-alarm run` builds it, on simulated pins."""

    def __init__(self, config: Path):
        self.cfg = load(str(config))
        self.daemon = None
        self._thread: threading.Thread | None = None
        self.store = Store(self.cfg.storage.db_path)  # the test thread's own connection

    def start(self) -> "Site":
        daemon = build_daemon(self.cfg, pin_factory=MockFactory(),
                              options=WorkerOptions(uplink_rng=lambda: JITTER))
        ready = threading.Event()
        self._thread = threading.Thread(target=daemon.run, kwargs={"on_ready": ready.set},
                                        name="owner", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the daemon did not start"
        self.daemon = daemon
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.request_stop()
            self._thread.join(10)
            self.daemon.close()
            self.daemon = None

    def call(self, fn, *args):
        return self.daemon.loop.call(fn, *args)

    def record(self, kind: str, subject: str = "main_gate", label: str = "校门", extra=None):
        return self.call(self.daemon.record, kind, subject, label, extra)

    def sim(self, name: str, active: bool) -> None:
        self.call(self.daemon.simulate, name, active)

    def status(self) -> dict:
        return self.call(self.daemon.status)

    def events(self, kind: str | None = None):
        return self.store.events(kind=kind)

    def delivery(self, seq: int) -> dict:
        return delivery_row(self.cfg.storage.db_path, seq)

    def pending(self) -> int:
        return self.store.pending_count(UPLINK)[0]


def delivery_row(db: Path, seq: int) -> dict:
    """The event's uplink delivery row (state, attempts, last_status…), read directly:
    the store has no reader for it, the worker being its only user."""
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM deliveries WHERE seq=? AND transport=?",
                           (seq, UPLINK)).fetchone()
    return dict(row) if row else {}


@pytest.fixture
def make_site(short_dir, platform, wait_until):
    """make_site(**config_text options) → a started Site whose start-up heartbeat has
    reached the platform (so scripted answers meet the test's own events)."""
    sites = []

    def make(**options) -> Site:
        site = Site(write_site(short_dir, platform.url, **options))
        sites.append(site)
        site.start()
        wait_until(lambda: site.pending() == 0 and site.status()["uplink"]["ok"], 5,
                   what="start-up heartbeat delivered")
        return site

    yield make
    for site in sites:
        site.stop()
        site.store.close()


def requests_for(platform: PlatformStub, event_id: str):
    """The event POSTs that carried ``event_id``, in order."""
    return [r for r in platform.requests if r.method == "POST" and event_id in
            [doc["id"] for doc in posted(r)]]


def posted(request) -> list[dict]:
    document = json.loads(request.body)
    return document if isinstance(document, list) else [document]


def received_ids(platform: PlatformStub) -> list[str]:
    return [e.id for e in platform.events]


def drained(site: Site, platform: PlatformStub):
    """Nothing pending and the platform holds every event the store holds."""
    return site.pending() == 0 and received_ids(platform) == [e.id for e in site.events()]


# ---------------------------------------------------------------------- the CloudEvent

def test_a_panic_reaches_the_platform_as_a_cloudevent(make_site, platform, wait_until):
    site = make_site()
    site.sim("guard_room", True)
    panic = wait_until(lambda: site.events("panic"), what="panic stored")[0]
    assert platform.wait_for(lambda: panic.id in received_ids(platform))

    doc = next(e.document for e in platform.events if e.id == panic.id)
    assert doc["specversion"] == "1.0"
    assert uuid.UUID(doc["id"]).version == 4 and doc["id"] == panic.id
    assert doc["source"] == f"edge-alarm/{DEVICE_ID}"
    assert doc["type"] == "cn.edu.school.edge-alarm.panic"
    assert doc["subject"] == "guard_room"
    assert doc["sequence"] == f"{panic.seq:012d}"
    assert doc["time"].endswith("+08:00")
    sent_time = dt.datetime.fromisoformat(doc["time"])
    assert sent_time.utcoffset() == SHANGHAI
    assert abs((sent_time - panic.time).total_seconds()) < 0.001
    assert abs(sent_time.timestamp() - time.time()) < 5
    assert doc["data"]["site"] == SITE_NAME and doc["data"]["label"] == "门卫室一键报警"

    [request] = requests_for(platform, panic.id)  # live: one event, one request, once
    assert request.headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"
    assert request.headers["Idempotency-Key"] == panic.id
    assert request.headers["Content-Type"] == CLOUDEVENT_TYPE
    assert request.status == 200


# ---------------------------------------------------------------------- backlog

def test_a_backlog_drains_in_batches_in_order_each_event_once(make_site, platform,
                                                                wait_until):
    site = make_site()
    platform.stop()
    before = len(platform.requests)
    # Every fifth event carries a long note, so the 256 KB limit cuts batches too.
    created = [site.record("gate_open" if n % 2 else "gate_closed",
                           extra={"note": "x" * 6000} if n % 5 == 0 else None)
               for n in range(300)]
    wait_until(lambda: site.events("fault"), 5, what="uplink fault while down")
    platform.start()
    wait_until(lambda: drained(site, platform), 15, what="backlog drained")

    stored = site.events()
    assert received_ids(platform) == [e.id for e in stored]          # in seq order
    assert [int(e.sequence) for e in platform.events] == [e.seq for e in stored]
    assert {e.id for e in created} <= set(received_ids(platform))

    drain = [r for r in platform.requests[before:] if r.method == "POST"]
    accepted_ids = [doc["id"] for r in drain if r.status == 200 for doc in posted(r)]
    assert sorted(accepted_ids) == sorted(set(accepted_ids))         # each id once
    for request in drain:
        docs = posted(request)
        assert len(docs) <= BATCH_MAX_EVENTS and len(request.body) <= BATCH_MAX_BYTES
        assert request.headers["Content-Type"] == (
            CLOUDEVENT_BATCH_TYPE if len(docs) > 1 else CLOUDEVENT_TYPE)
        assert request.headers["Idempotency-Key"] == docs[0]["id"]
        seqs = [int(doc["sequence"]) for doc in docs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    sizes = [len(posted(r)) for r in drain]
    assert max(sizes) == BATCH_MAX_EVENTS
    # 300 events, 60 of them 6 KB: the byte limit, not only the count, made the batches.
    assert len(drain) >= math.ceil(60 * 6000 / BATCH_MAX_BYTES) + 2
    assert max(len(r.body) for r in drain) > BATCH_MAX_BYTES // 2


def test_events_held_in_memory_reach_the_platform_in_creation_order(
        make_site, platform, wait_until, monkeypatch):
    site = make_site()
    with monkeypatch.context() as card:
        card.setattr(site.daemon.store, "append", refuse_writes)  # the store fails
        for n in range(6):
            site.sim("main_gate", n % 2 == 0)
        wait_until(lambda: site.status()["storage"]["unstored"] == 7, 5,
                   what="the fault and six gate events held in memory")
    for is_open in (True, False):  # the store heals; the gate moves twice more
        site.sim("main_gate", is_open)

    def gate_events():
        return [e for e in platform.events if e.type.endswith((".gate_open", ".gate_closed"))]
    wait_until(lambda: len(gate_events()) == 8, 30, what="eight gate events on the platform")
    docs = [e.document for e in gate_events()]
    assert [d["type"].rsplit(".", 1)[1] for d in docs] == ["gate_open", "gate_closed"] * 4
    times = [dt.datetime.fromisoformat(d["time"]) for d in docs]
    assert times == sorted(times)
    sequences = [int(d["sequence"]) for d in docs]
    assert sequences == sorted(sequences)


# ---------------------------------------------------------------------- answers

@pytest.mark.parametrize("status, retry_after", [(503, 2), (429, 1), (500, None)])
def test_a_refusal_for_now_is_retried_no_sooner_than_retry_after(
        make_site, platform, wait_until, status, retry_after):
    site = make_site()
    platform.respond_with(status, retry_after=retry_after)
    event = site.record("gate_open")
    wait_until(lambda: site.delivery(event.seq)["state"] == "accepted", 5)

    first, second = requests_for(platform, event.id)
    assert (first.status, second.status) == (status, 200)
    waited = second.received_mono - first.received_mono
    assert (retry_after or 0) <= waited < (retry_after or 0) + 1.0
    assert received_ids(platform).count(event.id) == 1
    assert site.delivery(event.seq)["attempts"] == 2
    assert not site.events("fault")      # one refusal is weather, not an outage


def test_a_rejected_event_is_dead_lettered_and_the_queue_moves_on(make_site, platform,
                                                                  wait_until):
    site = make_site()
    platform.respond_with(400, body=b'{"error": "bad event"}')
    bad = site.record("gate_open")
    wait_until(lambda: site.delivery(bad.seq).get("state") == "rejected", 5)
    good = site.record("gate_closed")
    wait_until(lambda: site.delivery(good.seq).get("state") == "accepted", 5)

    assert site.delivery(bad.seq)["last_status"] == "400"
    assert len(requests_for(platform, bad.id)) == 1            # never retried
    assert bad.id not in received_ids(platform)
    [fault] = site.events("fault")
    assert fault.subject == "uplink" and fault.data["reason"] == "rejected"
    assert bad.id in fault.data["detail"]
    assert platform.wait_for(lambda: fault.id in received_ids(platform))


def test_one_rejected_event_in_a_batch_is_the_only_one_dead_lettered(make_site, platform,
                                                                     wait_until):
    site = make_site()
    platform.stop()
    created = [site.record("gate_open" if n % 2 else "gate_closed") for n in range(30)]
    bad = created[11]
    platform.reject_ids({bad.id})
    platform.start()
    wait_until(lambda: site.pending() == 0 and site.events("fault"), 10,
               what="backlog drained")

    assert site.delivery(bad.seq)["state"] == "rejected"
    others = [e for e in site.events() if e.id != bad.id]
    assert all(site.delivery(e.seq)["state"] == "accepted" for e in others)
    wait_until(lambda: received_ids(platform) == [e.id for e in site.events()
                                                  if e.id != bad.id], 5)
    faults = [f for f in site.events("fault") if f.data["reason"] == "rejected"]
    assert len(faults) == 1 and bad.id in faults[0].data["detail"]
    # The batch was refused whole, then the events went one by one: only bad was refused.
    refused = [r for r in platform.requests if r.status == 400]
    assert [len(posted(r)) > 1 for r in refused] == [True, False]
    assert [doc["id"] for doc in posted(refused[1])] == [bad.id]


def test_a_lost_answer_is_retried_and_the_409_counts_as_accepted(make_site, platform,
                                                                 wait_until):
    site = make_site()
    platform.lose_responses(1)
    event = site.record("gate_open")
    wait_until(lambda: site.delivery(event.seq)["state"] == "accepted", 5)

    assert [r.status for r in requests_for(platform, event.id)] == [None, 409]
    assert site.delivery(event.seq)["last_status"] == "409"
    assert received_ids(platform).count(event.id) == 1


def test_an_answer_slower_than_the_read_timeout_is_retried_and_kept_once(
        make_site, platform, wait_until):
    site = make_site(read_timeout_s=0.2)
    platform.set_delay(0.6)             # the platform keeps the event, answers too late
    event = site.record("gate_open")
    wait_until(lambda: "no answer within" in (site.delivery(event.seq)["last_status"] or ""),
               what="a read timeout")
    assert platform.wait_for(lambda: event.id in received_ids(platform))
    platform.set_delay(0.0)
    wait_until(lambda: site.delivery(event.seq)["state"] == "accepted", 5)
    # Kept by the first request, whose answer came too late; sent again until answered.
    assert len(requests_for(platform, event.id)) >= 2
    assert site.delivery(event.seq)["attempts"] >= 2
    assert received_ids(platform).count(event.id) == 1


def test_a_missing_token_file_is_an_uplink_fault_at_once(short_dir, platform, wait_until):
    config = write_site(short_dir, platform.url)
    (short_dir / "token").unlink()
    site = Site(config).start()
    try:
        [fault] = wait_until(lambda: site.events("fault"), 5)
        assert (fault.subject, fault.data["reason"]) == ("uplink", "misconfigured")
        assert "does not exist" in fault.data["detail"]
        assert site.pending() >= 2 and platform.requests == []    # held, not dropped
    finally:
        site.stop()
        site.store.close()


def test_a_refused_token_holds_the_queue_instead_of_dead_lettering_it(
        make_site, platform, wait_until):
    site = make_site()
    platform.set_token("another-token")
    events = [site.record("gate_open"), site.record("gate_closed")]
    [fault] = wait_until(lambda: site.events("fault"), 5)
    assert (fault.subject, fault.data["reason"]) == ("uplink", "misconfigured")
    assert all(site.delivery(e.seq)["state"] == "pending" for e in events)

    platform.set_token(PLATFORM_TOKEN)       # the platform's side fixed (or the file, then SIGHUP)
    wait_until(lambda: site.events("recovered") and drained(site, platform), 10)


def test_a_url_without_an_events_endpoint_holds_the_queue_too(make_site, platform, wait_until):
    site = make_site()
    platform.respond_with(404, times=3)  # uplink.url names no events endpoint (a typo)
    event = site.record("gate_open")
    [fault] = wait_until(lambda: site.events("fault"), 5)
    assert (fault.subject, fault.data["reason"]) == ("uplink", "misconfigured")
    assert "uplink.url is wrong" in fault.data["detail"]
    assert site.delivery(event.seq)["state"] != "rejected"
    # Once the URL is right (here: the platform answers again) nothing was lost.
    wait_until(lambda: event.id in received_ids(platform) and drained(site, platform), 15)


# ---------------------------------------------------------------------- health

def test_uplink_fault_after_three_failures_recovered_after_and_status(
        make_site, platform, wait_until):
    site = make_site()
    platform.respond_with(503, times=2)
    first = site.record("gate_open")
    wait_until(lambda: site.delivery(first.seq)["state"] == "accepted", 5)
    assert not site.events("fault")                   # two failures in a row: no fault

    platform.stop()
    down_at = time.time()
    site.record("gate_closed")
    [fault] = wait_until(lambda: site.events("fault"), 5, what="uplink fault")
    assert (fault.subject, fault.data["reason"]) == ("uplink", "unreachable")
    status = site.status()
    assert status["faults"] == ["uplink"]
    uplink = status["uplink"]
    assert uplink["ok"] is False and uplink["pending"] == 2     # the event and the fault
    assert 0 <= uplink["oldest_pending_s"] <= time.time() - down_at + 0.5
    assert "unreachable" in uplink["last_error"]

    platform.start()
    [recovered] = wait_until(lambda: site.events("recovered"), 5)
    assert recovered.subject == "uplink"
    wait_until(lambda: drained(site, platform), 5)
    uplink = site.status()["uplink"]
    assert (uplink["ok"], uplink["pending"], uplink["oldest_pending_s"]) == (True, 0, None)
    assert site.status()["faults"] == []


def test_a_platform_that_trickles_its_answers_is_an_uplink_fault(short_dir, wait_until):
    # Each answer a byte every 0.05 s, within the 0.5 s read timeout: only the request's
    # deadline (0.5 + 0.5 s) ends each attempt.
    with SlowPlatform(TRICKLE_HEAD) as slow:
        site = Site(write_site(short_dir, slow.url, connect_timeout_s=0.5,
                               read_timeout_s=0.5)).start()
        try:
            [fault] = wait_until(lambda: site.events("fault"), 15, what="uplink fault")
            status = site.status()
        finally:
            site.stop()
            site.store.close()
    assert (fault.subject, fault.data["reason"]) == ("uplink", "unreachable")
    assert "no complete answer within 1 s" in fault.data["detail"]
    assert status["faults"] == ["uplink"] and status["uplink"]["ok"] is False
    assert slow.requests >= 3


def test_heartbeats_at_start_and_every_heartbeat_s_purged_once_delivered(
        make_site, platform, wait_until):
    site = make_site(heartbeat_s=1)
    assert platform.wait_for(lambda: sum(e.type.endswith(".heartbeat")
                                         for e in platform.events) >= 3, 4)
    beats = [e.document for e in platform.events if e.type.endswith(".heartbeat")]
    assert all(b["subject"] == DEVICE_ID for b in beats)
    assert beats[0]["data"]["uptime_s"] == 0
    times = [dt.datetime.fromisoformat(b["time"]) for b in beats]
    assert all(0.8 <= (b - a).total_seconds() <= 1.5 for a, b in zip(times, times[1:]))

    platform.stop()
    # Once the platform is gone, what it received ends up delivered and every later beat
    # waits; wait for both, since the last answer may still be on its way to the store.
    received = {int(e.sequence) for e in platform.events if e.type.endswith(".heartbeat")}

    def settled():
        beats = {e.seq: site.delivery(e.seq)["state"] for e in site.events("heartbeat")}
        waiting = {seq for seq, state in beats.items() if state == "pending"}
        return waiting if waiting and not waiting & received else None
    waiting = wait_until(settled, 4)
    delivered = {e.seq for e in site.events("heartbeat")} - waiting
    assert delivered == received
    assert site.store.purge(older_than=0) >= len(delivered)
    left = {e.seq for e in site.events("heartbeat")}
    assert not left & delivered and waiting <= left
    assert all(site.delivery(seq)["state"] == "pending" for seq in left)


# ---------------------------------------------------------------------- SMS fallback

def sms_texts(emulator: ModemEmulator) -> list[str]:
    return [s.text for s in emulator.sent]


def test_platform_unreachable_the_alert_goes_by_sms_at_the_fallback_deadline(
        emulator, make_site, platform, wait_until):
    site = make_site(modem_port=emulator.port, fallback_s=1)
    wait_until(lambda: site.status()["modem"]["ok"], 5, what="modem ready")
    platform.respond_with(503, times=1000)
    site.sim("main_gate", True)          # held open for held_open_alert_s = 1
    held = wait_until(lambda: site.events("gate_held_open"), 3)[0]

    [sms] = emulator.wait_sent(1, timeout=6)
    late = time.time() - held.ts
    assert 1.0 - 0.05 <= late <= 1.0 + 4.0  # at the deadline (with room for a busy machine)
    assert sms.number == PRINCIPAL
    assert sms.text.startswith(f"【{SITE_NAME}】") and "校门" in sms.text
    assert sms.text.endswith(FALLBACK_NOTE)
    wait_until(lambda: [r["state"] for r in site.store.sms_rows(held.seq)] == ["sent"])


def test_platform_accepting_in_time_no_sms(emulator, make_site, platform, wait_until):
    site = make_site(modem_port=emulator.port, fallback_s=1)
    site.sim("main_gate", True)
    held = wait_until(lambda: site.events("gate_held_open"), 3)[0]
    wait_until(lambda: [r["state"] for r in site.store.sms_rows(held.seq)] == ["cancelled"], 5)
    time.sleep(max(0.0, held.ts + 1.0 + 0.5 - time.time()))  # past the deadline: nothing
    assert emulator.sent == []
    assert held.id in received_ids(platform)


def test_an_immediate_kind_goes_by_sms_at_once_whatever_the_platform(
        emulator, make_site, platform, wait_until):
    site = make_site(modem_port=emulator.port, fallback_s=20)
    wait_until(lambda: site.status()["modem"]["ok"], 5, what="modem ready")
    platform.respond_with(503, times=1000)
    pressed = time.time()
    site.sim("guard_room", True)
    [sms] = emulator.wait_sent(1, timeout=10)
    assert time.time() - pressed < 10.0, "the immediate SMS waited for the 20 s fallback"
    assert "紧急报警" in sms.text and "门卫室一键报警" in sms.text
    assert not sms.text.endswith(FALLBACK_NOTE)


def test_the_fallback_deadline_survives_a_restart(short_dir, platform, emulator, wait_until):
    config = write_site(short_dir, platform.url, modem_port=emulator.port, fallback_s=2)
    site = Site(config).start()
    try:
        platform.respond_with(503, times=1000)
        held = site.record("gate_held_open", extra={"held_open_alert_s": 1})
        site.stop()                      # well before the deadline
        assert emulator.sent == []
        assert [r["state"] for r in site.store.sms_rows(held.seq)] == ["waiting"]
        time.sleep(max(0.0, held.ts + 2.0 + 0.2 - time.time()))

        site.start()                     # after it: the SMS goes, from the stored event
        [sms] = emulator.wait_sent(1, timeout=5)
        assert sms.text.endswith(FALLBACK_NOTE) and "校门" in sms.text
        wait_until(lambda: [r["state"] for r in site.store.sms_rows(held.seq)] == ["sent"], 5)
        site.stop()
        site.start()                     # and never again
        wait_until(lambda: site.status()["modem"]["ok"], 5, what="modem ready again")
    finally:
        site.stop()
        site.store.close()
    assert len(emulator.sent) == 1


# ---------------------------------------------------------------------- SIGKILL mid-drain

def test_sigkill_in_the_middle_of_a_drain_loses_nothing_and_keeps_order(
        short_dir, tmp_path, platform, wait_until):
    config = write_site(short_dir, platform.url)
    cfg = load(str(config))
    store = Store(cfg.storage.db_path)
    start = dt.datetime.now(dt.timezone(SHANGHAI)) - dt.timedelta(hours=2)
    for n in range(1000):
        store.append("gate_open" if n % 2 else "gate_closed", "main_gate",
                     start + dt.timedelta(seconds=n), GATE_DATA,
                     transports=[UPLINK], event_id=new_event_id())
    platform.set_delay(0.15)          # a slow platform: the drain takes a while
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, cfg.control.socket, log)
    try:
        assert platform.wait_for(lambda: len(platform.requests) >= 3, 10)
        during = json.loads(daemon.cli("status", "--json").stdout)["uplink"]
        daemon.proc.kill()              # SIGKILL, a request likely in flight
        daemon.proc.wait(5)
        assert during["ok"] is True and during["configured"] is True
        assert during["pending"] > 0 and during["oldest_pending_s"] >= 6000
        taken = len(platform.events)
        assert 0 < taken < 1000

        platform.set_delay(0.0)
        daemon = start_daemon(config, cfg.control.socket, log)
        wait_until(lambda: store.pending_count(UPLINK)[0] == 0, 20, what="drain after restart")
        stored = store.events()
        wait_until(lambda: received_ids(platform) == [e.id for e in stored], 5)
    finally:
        stop_daemon(daemon)
        store.close()

    assert [int(e.sequence) for e in platform.events] == [e.seq for e in stored]
    # On the wire: each request holds consecutive seqs, and no request skips ahead of
    # what was already sent (a re-send after the kill starts at or before it).
    highest = 0
    for request in (r for r in platform.requests if r.method == "POST"):
        seqs = [int(doc["sequence"]) for doc in posted(request)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert seqs[0] <= highest + 1
        highest = max(highest, seqs[-1])
    assert PLATFORM_TOKEN not in log.read_text(errors="replace")


def test_sighup_rereads_the_token_file(short_dir, tmp_path, platform, wait_until):
    config = write_site(short_dir, platform.url)
    cfg = load(str(config))
    log = tmp_path / "daemon.log"
    new_token = f"tok-{uuid.uuid4().hex}"
    daemon = start_daemon(config, cfg.control.socket, log)
    store = Store(cfg.storage.db_path)
    try:
        wait_until(lambda: store.pending_count(UPLINK)[0] == 0, 5, what="heartbeat delivered")
        platform.set_token(new_token)
        (short_dir / "token").write_text(new_token + "\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "uplink token reloaded" in log.read_text(errors="replace"), 5)
        assert daemon.cli("sim", "main_gate", "on").returncode == 0
        [opened] = wait_until(lambda: store.events(kind="gate_open"), 5)
        assert platform.wait_for(lambda: opened.id in received_ids(platform))
    finally:
        stop_daemon(daemon)
        store.close()
    [request] = requests_for(platform, opened.id)
    assert request.headers["Authorization"] == f"Bearer {new_token}"
    text = log.read_text(errors="replace")
    assert PLATFORM_TOKEN not in text and new_token not in text


def test_an_alarm_stamped_ahead_of_the_clock_holds_the_queue_no_longer_than_its_picture_wait(
        short_dir, platform, wait_until):
    config = write_site(short_dir, platform.url)
    with config.open("a", encoding="utf-8") as f:
        f.write('\n[camera]\nbackend = "test-pattern"\npre_trigger_s = 0\n')
    site = Site(config)
    # The previous run stored an after-hours opening by a clock that was right, and the
    # power went before its picture was noted; the Pi boots 40 minutes behind
    # (fake-hwclock saves the time hourly).
    stamped = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=40)
    old = site.store.append("gate_after_hours", "main_gate", stamped,
                            {**GATE_DATA, "local_time": "23:10:00"},
                            transports=[UPLINK])
    site.start()
    try:
        site.sim("guard_room", True)  # a new panic after the restart
        (new,) = wait_until(lambda: site.events("panic"))
        assert platform.wait_for(lambda: new.id in received_ids(platform), 20), (
            "the new panic waits behind an event whose picture wait would end 40 min on")
        assert received_ids(platform).index(old.id) < received_ids(platform).index(new.id)
    finally:
        site.stop()
        site.store.close()


def test_a_picture_the_platform_has_no_event_for_is_dropped_not_retried_forever(
        short_dir, tmp_path, platform):
    config = write_site(short_dir, platform.url)
    site = Site(config)
    now = dt.datetime.now(dt.timezone.utc)
    # The first event was accepted in an earlier life the platform has since forgotten
    # (answers 404 to its picture); the second is new.
    forgotten, new = (site.store.append("gate_open", "main_gate", now, GATE_DATA,
                                        transports=[UPLINK]) for _ in range(2))
    site.store.mark_accepted(UPLINK, [forgotten.seq], "200", now.timestamp())
    for event in (forgotten, new):
        picture = tmp_path / f"{event.id}.jpg"
        picture.write_bytes(b"\xff\xd8\xff\xe0" + b"0" * 100)
        site.store.attach(event.seq, [("snapshot", str(picture), "sha", 104)], {})
    site.start()
    try:
        assert platform.wait_for(lambda: new.id in platform.snapshots, 10), (
            "one picture answered 404 holds every picture behind it")
        assert forgotten.id not in platform.snapshots
    finally:
        site.stop()
        site.store.close()


def test_the_uplink_imports_neither_the_camera_nor_pillow():
    """Whether an event waits for its picture is a routing decision (edge.routing): the
    uplink runs, and starts quickly, on a device without a camera or Pillow."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edge.uplink.worker; print(*sorted(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] == "PIL"
            or m in ("edge.camera", "edge.snapshots")] == []
