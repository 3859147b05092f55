"""The SIA DC-09 transmitter against pysiaalarm, an independent implementation (PyPI; the
library behind Home Assistant's `sia` integration), as the alarm receiving centre on
127.0.0.1 (tests/sia_receiver.py): its parser, CRC, length, AES and timestamp window
check every message the daemon sends, over TCP and UDP, in clear and encrypted."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import sqlite3
import threading
import time
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from gpiozero.pins.mock import MockFactory
from pysiaalarm import SIAAccount
from pysiaalarm.event import SIAEvent

from conftest import start_daemon, stop_daemon
from edge.clock import Clock
from edge.errors import SiaError
from edge.kinds import KINDS
from edge.service import WorkerOptions
from edge.sia.contact_id import KIND_CODES, NOT_SENT
from edge.sia.crypto import AesCbc
from edge.sia.frame import (ADM_CID, MAX_FRAME, NULL, Header, crc16, frames, message,
                            parse_answer)
from edge.sia.link import MAX_EXCHANGE_BYTES, TcpLink, UdpLink
from edge.sia.lookup import NameLookup
from edge.sia.sequence import Sequence, stored_number
from edge.sia.worker import SIA
from edge.sim.site import GATE_PIN, PANIC_PIN, TAMPER_PIN, SimSite, start_site
from edge.store import Store
from edge.store.schema import SIA_SEQUENCE
from sia_receiver import Receiver, dc09_frame

ACCOUNT = "12AB"
KEYS = {"aes128": "0123456789ABCDEF", "aes192": "0123456789ABCDEF01234567",
        "aes256": "0123456789ABCDEF0123456789abcdef"}
NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)  # when time does not matter
JITTER = 0.05  # backoff draws a twentieth of each ceiling: quick retries, in a known order
PANIC_ZONE, GATE_ZONE, TAMPER_ZONE = 100 + PANIC_PIN, 100 + GATE_PIN, 100 + TAMPER_PIN


# ---------------------------------------------------------------------- framing

def parsed(raw: bytes, key: str | None = None) -> SIAEvent:
    """``raw`` as pysiaalarm's TCP handler reads it (between LF and CR)."""
    assert raw[:1] == b"\n" and raw[-1:] == b"\r"
    return SIAEvent.from_line(raw[1:-1].decode("ascii"), {ACCOUNT: SIAAccount(ACCOUNT, key)})


def test_the_crc_is_dc09s_crc16_arc():
    assert crc16(b"123456789") == 0xBB3D  # CRC-16/ARC's check value
    for text in ('"NULL"0001R0L0#1234[]', '"ADM-CID"9999R1L1#ABCDEF[#ABCDEF|1602 01 000]'):
        assert f"{crc16(text.encode()):04X}" == SIAEvent._crc_calc(text)


@pytest.mark.parametrize("key", [None, *KEYS.values()], ids=["plain", *KEYS])
def test_messages_are_valid_dc09_to_pysiaalarm(key):
    cipher = AesCbc(key.encode()) if key else None
    header = Header(ACCOUNT.lower(), "0", "1")
    now = dt.datetime.now(dt.timezone.utc)
    event = parsed(message(ADM_CID, 42, header, "#12AB|1120 01 117]", now, cipher), key)
    assert event.valid_message and int(event.length, 16) == len(event.full_message)
    assert (event.encrypted, event.sequence, event.receiver, event.line) == \
        (key is not None, "0042", "R0", "L1")
    assert (event.account, event.event_qualifier, event.event_type, event.partition,
            event.ri, event.code) == (ACCOUNT, "1", "120", "01", "117", "PA")
    assert abs((event.timestamp - now).total_seconds()) < 1
    assert event.valid_timestamp and event.response.value == "ACK"
    # Its ACK is ours to take; an answer to another number is not.
    ack = event.create_response()[1:-1]
    assert parse_answer(ack, 42, ACCOUNT, cipher, now).token == "ACK"
    assert parse_answer(ack, 43, ACCOUNT, cipher, now) is None

    null = parsed(message(NULL, 9999, header, "]", now, cipher), key)
    assert null.valid_message and null.message_type.value == "NULL"
    assert null.response.value == "ACK"


def test_the_pad_makes_every_encrypted_message_differ_and_whole_blocks():
    cipher = AesCbc(KEYS["aes128"].encode())
    now = dt.datetime.now(dt.timezone.utc)
    sent = {message(NULL, 1, Header(ACCOUNT, "0", "0"), "]", now, cipher) for _ in range(20)}
    assert len(sent) == 20
    assert all(len(m.split(b"[")[1][:-1]) % 32 == 0 for m in sent)


def test_an_ack_must_be_encrypted_under_our_key_when_we_encrypt():
    ours, theirs = AesCbc(KEYS["aes128"].encode()), KEYS["aes256"]
    now = dt.datetime.now(dt.timezone.utc)
    plain_ack = dc09_frame(f'"ACK"0005R0L0#{ACCOUNT}[]')[1:-1]
    assert parse_answer(plain_ack, 5, ACCOUNT, None, now).token == "ACK"
    assert parse_answer(plain_ack, 5, ACCOUNT, ours, now) is None
    forged = parsed(message(NULL, 5, Header(ACCOUNT, "0", "0"), "]", now,
                            AesCbc(theirs.encode())), theirs).create_response()[1:-1]
    assert parse_answer(forged, 5, ACCOUNT, ours, now) is None
    assert parse_answer(plain_ack.replace(b"#12AB", b"#9999"), 5, ACCOUNT, None, now) is None
    assert parse_answer(b"BDD40014" + plain_ack[8:].replace(b"0005", b"0006"), 5,
                        ACCOUNT, None, now) is None  # a CRC that does not hold


def test_an_encrypted_ack_replayed_from_an_earlier_message_is_no_answer():
    # The numbers run 0001-9999 and start again: an ACK recorded an hour ago, to another
    # message with our number, must not acknowledge this one.
    key = KEYS["aes128"]
    cipher, header = AesCbc(key.encode()), Header(ACCOUNT, "0", "0")
    then = dt.datetime.now(dt.timezone.utc)
    old_ack = parsed(message(NULL, 1, header, "]", then, cipher), key).create_response()
    assert parse_answer(old_ack[1:-1], 1, ACCOUNT, cipher, then).token == "ACK"
    an_hour_later = then + dt.timedelta(hours=1)
    assert parse_answer(old_ack[1:-1], 1, ACCOUNT, cipher, an_hour_later) is None


def test_a_nak_tells_the_receivers_time():
    nak = dc09_frame('"NAK"0000R0L0A0[]_23:59:58,12-31-2026')[1:-1]
    answer = parse_answer(nak, 17, ACCOUNT, AesCbc(KEYS["aes128"].encode()), NOW)
    assert answer.token == "NAK"
    assert answer.receiver_time == dt.datetime(2026, 12, 31, 23, 59, 58, tzinfo=dt.timezone.utc)


def test_the_frame_buffer_stays_bounded_whatever_arrives():
    buffer = bytearray()
    for _ in range(1000):
        buffer += b"\nAAAA" + b"A" * 4096  # an endless frame, LFs far apart
        assert frames(buffer) == [] and len(buffer) <= MAX_FRAME + 1
    buffer += b"\r\nGOOD\r"
    assert frames(buffer) == [b"GOOD"]
    buffer += b"junk\n\x00junk\nFIRST\r\rjunk\nSEC"
    assert frames(buffer) == [b"FIRST"] and buffer == b"\nSEC"
    buffer += b"OND\r"
    assert frames(buffer) == [b"SECOND"] and buffer == b""


_ANSWER_SEEDS = [dc09_frame('"ACK"0005R0L0#12AB[]'),
                 dc09_frame('"NAK"0000R0L0A0[]_23:59:58,12-31-2026'),
                 parsed(message(NULL, 5, Header(ACCOUNT, "0", "0"), "]",
                                dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                                AesCbc(KEYS["aes128"].encode())),
                        KEYS["aes128"]).create_response()]


@st.composite
def mutated_answers(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_ANSWER_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=8))


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300), mutated_answers()), max_size=8),
       key=st.sampled_from([None, KEYS["aes128"]]))
def test_any_bytes_from_a_receiver_are_an_answer_or_nothing(chunks, key):
    """A receiver's bytes, whatever they are, never raise: each frame is an answer to our
    message 5 or None, and the buffer stays bounded."""
    cipher = AesCbc(key.encode()) if key else None
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        for raw in frames(buffer):
            answer = parse_answer(raw, 5, ACCOUNT, cipher, NOW)
            assert answer is None or answer.token in ("ACK", "NAK", "DUH", "RSP")
        assert len(buffer) <= MAX_FRAME + 1


# ---------------------------------------------------------------------- the link, hostile

class Hostile:
    """A TCP server on 127.0.0.1 that sends ``junk`` for ever to whoever connects, with
    ``pause`` seconds between sends."""

    def __init__(self, junk: bytes, pause: float = 0.0):
        self.junk = junk
        self.pause = pause
        self.sent = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                while not self._stop.is_set():
                    try:
                        self.sent += conn.send(self.junk)
                        time.sleep(self.pause)
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.mark.parametrize("junk", [b"A" * 4096, bytes(range(256)) * 16,
                                  dc09_frame('"ACK"0002R0L0#12AB[]') * 50],
                         ids=["endless", "garbage", "answers-to-another-message"])
def test_a_hostile_receiver_is_given_up_after_a_bounded_read(junk):
    """Bytes that hold no answer end the exchange once MAX_EXCHANGE_BYTES are read, long
    before the deadline: a flood neither grows a buffer nor holds the worker."""
    hostile = Hostile(junk)
    link = TcpLink("127.0.0.1", hostile.port)
    try:
        started = time.monotonic()
        with pytest.raises(SiaError, match="bytes and no answer to our message"):
            link.exchange(b"\nmessage\r", 30.0,
                          lambda raw: parse_answer(raw, 1, ACCOUNT, None, NOW))
        took = time.monotonic() - started
    finally:
        link.close()
        hostile.close()
    assert took < 5.0
    assert MAX_EXCHANGE_BYTES <= hostile.sent


def test_a_receiver_that_trickles_costs_one_deadline():
    """A byte now and then, never an answer: the exchange's one deadline ends it."""
    hostile = Hostile(b"\n", pause=0.05)
    link = TcpLink("127.0.0.1", hostile.port)
    try:
        started = time.monotonic()
        with pytest.raises(SiaError, match="deadline"):
            link.exchange(b"\nmessage\r", 1.0, lambda raw: None)
        took = time.monotonic() - started
    finally:
        link.close()
        hostile.close()
    assert 1.0 <= took < 3.0


def test_a_udp_receiver_that_floods_costs_one_deadline():
    with Receiver("udp") as receiver:
        receiver.hostile = "endless"
        link = UdpLink("127.0.0.1", receiver.port)
        started = time.monotonic()
        with pytest.raises(SiaError):
            link.exchange(b"\nmessage\r", 1.0, lambda raw: parse_answer(raw, 1, ACCOUNT, None, NOW))
        link.close()
    assert time.monotonic() - started < 2.0


def null_acked(raw: bytes) -> str | None:
    answer = parse_answer(raw, 1, ACCOUNT, None, dt.datetime.now(dt.timezone.utc))
    return None if answer is None else answer.token


def null_message() -> bytes:
    return message(NULL, 1, Header(ACCOUNT, "0", "0"), "]",
                   dt.datetime.now(dt.timezone.utc), None)


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_an_ip_address_is_not_looked_up(protocol):
    looked_up: list[str] = []

    def resolver(host, *args, **kwargs):
        looked_up.append(host)
        raise AssertionError("an IP address was looked up")

    with Receiver(protocol, ACCOUNT) as receiver:
        kind = TcpLink if protocol == "tcp" else UdpLink
        link = kind("127.0.0.1", receiver.port, resolve=resolver)
        try:
            assert link.exchange(null_message(), 5.0, null_acked) == "ACK"
        finally:
            link.close()
    assert NameLookup("::1", 12000, socket.SOCK_STREAM, resolver).addresses(
        time.monotonic())[0][4][:2] == ("::1", 12000)
    assert looked_up == []


def test_a_name_lookup_that_hangs_costs_the_exchange_its_deadline_and_no_more(wait_until):
    """getaddrinfo takes no timeout: a DNS server that never answers would hold the SIA
    worker for the resolver's own timeouts. The exchange gives up at its deadline; the
    lookup goes on, once, and its late answer serves the next exchange."""
    calls: list[str] = []
    answer_now = threading.Event()

    def hanging_resolver(host, port, **kwargs):  # a stand-in for a DNS server that hangs
        calls.append(host)
        answer_now.wait(10)
        return socket.getaddrinfo("127.0.0.1", port, **kwargs)

    with Receiver("tcp", ACCOUNT) as receiver:
        link = TcpLink("receiver.invalid", receiver.port, resolve=hanging_resolver)
        try:
            for _ in range(2):  # the second waits for the same lookup, starts none
                started = time.monotonic()
                with pytest.raises(SiaError, match="no address within the deadline"):
                    link.exchange(null_message(), 1.0, null_acked)
                assert 1.0 <= time.monotonic() - started < 3.0
            assert calls == ["receiver.invalid"]
            answer_now.set()
            assert link.exchange(null_message(), 5.0, null_acked) == "ACK"
            assert calls == ["receiver.invalid"] and receiver.connections == 1
        finally:
            answer_now.set()
            link.close()
    wait_until(lambda: "sia-lookup" not in {t.name for t in threading.enumerate()}, 5,
               what="the lookup's thread gone")


def test_a_name_that_does_not_resolve_is_a_sia_error_naming_the_host():
    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    link = UdpLink("receiver.invalid", 12000, resolve=no_such_name)
    with pytest.raises(SiaError, match="receiver.invalid:12000: Name or service not known"):
        link.exchange(null_message(), 2.0, null_acked)


# ---------------------------------------------------------------------- Contact ID

def test_every_kind_has_a_contact_id_code_or_is_documented_as_not_sent():
    assert set(KIND_CODES) | NOT_SENT | {"fault", "recovered"} == set(KINDS)
    assert not set(KIND_CODES) & NOT_SENT
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("| event | Contact ID |")[1].split("\n\n")[0]
    for kind in KINDS:
        assert f"`{kind}`" in table, f"{kind} is not in the README's Contact ID table"


# ---------------------------------------------------------------------- the daemon

class Site:
    """The daemon in this process, as `edge-alarm run` builds it, on simulated pins,
    sending to ``receiver``."""

    def __init__(self, root: Path, receiver_port: int, *, protocol: str = "tcp",
                 key: str | None = None, supervision_s: int = 3600, exchange_s: float = 2.0,
                 clock: Clock | None = None, jitter: float = JITTER):
        keys = {"host": "127.0.0.1", "port": receiver_port, "protocol": protocol,
                "account": ACCOUNT, "receiver": "0", "line": "1",
                "supervision_s": supervision_s}
        if key is not None:
            key_file = root / "sia.key"
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
            keys["key_file"] = key_file
        self.sim = SimSite(root / "var", None, school_hours=False, sia_keys=keys)
        self.root = root
        self.exchange_s = exchange_s
        self.clock = clock
        self.jitter = jitter
        self._stack = contextlib.ExitStack()

    def start(self) -> "Site":
        self.running = start_site(self.sim, self.root, self._stack, control=False,
                                  pin_factory=MockFactory(), clock=self.clock,
                                  options=WorkerOptions(uplink_rng=lambda: self.jitter,
                                                        sia_exchange_s=self.exchange_s))
        self.daemon = self.running.daemon
        self.store = Store(self.running.cfg.storage.db_path)
        return self

    def stop(self) -> None:
        self._stack.close()
        self.store.close()

    def call(self, fn, *args):
        return self.daemon.loop.call(fn, *args)

    def press(self, name: str) -> None:
        self.call(self.daemon.simulate, name, True)
        self.call(self.daemon.simulate, name, False)

    def status(self) -> dict:
        return self.call(self.daemon.status)

    def events(self, kind: str | None = None):
        return self.store.events(kind=kind)

    def states(self) -> dict[int, str]:
        return delivery_states(self.running.cfg.storage.db_path)


def delivery_states(db: Path) -> dict[int, str]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute(
            "SELECT seq, state FROM deliveries WHERE transport=? ORDER BY seq", (SIA,)))


@pytest.fixture
def make_site(short_dir):
    sites = []

    def make(receiver_port: int, **options) -> Site:
        site = Site(short_dir, receiver_port, **options).start()
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


def cid(event: SIAEvent) -> tuple[str, str, str]:
    return (event.event_qualifier, event.event_type, event.ri)


def admcid(receiver: Receiver) -> list[tuple[str, str, str]]:
    return [cid(e) for e in receiver.events_of("ADM-CID")]


@pytest.mark.parametrize("protocol, key", [("tcp", None), ("udp", None), ("tcp", "aes128"),
                                           ("udp", "aes256"), ("tcp", "aes256")])
def test_alarms_faults_and_heartbeats_reach_the_centre_with_their_codes(
        make_site, wait_until, caplog, protocol, key):
    caplog.set_level(logging.DEBUG)
    secret = KEYS.get(key)
    with Receiver(protocol, ACCOUNT, secret) as receiver:
        site = make_site(receiver.port, protocol=protocol, key=secret)
        wait_until(lambda: ("1", "602", "000") in admcid(receiver), 5, what="heartbeat")
        site.press("guard_room")
        site.call(site.daemon.simulate, "box", True)
        site.call(site.daemon.part_failed, "camera", "capture_failed", "test")
        site.call(site.daemon.part_ok, "camera")
        site.call(site.daemon.simulate, "main_gate", True)     # gate_open: not sent
        site.call(site.daemon.part_failed, "main_gate", "unavailable", "test")
        site.call(site.daemon.part_ok, "main_gate")
        expected = [("1", "602", "000"), ("1", "120", f"{PANIC_ZONE:03d}"),
                    ("1", "137", f"{TAMPER_ZONE:03d}"), ("1", "330", "000"),
                    ("3", "330", "000"), ("1", "380", f"{GATE_ZONE:03d}"),
                    ("3", "380", f"{GATE_ZONE:03d}")]
        wait_until(lambda: admcid(receiver) == expected, 10,
                   what=f"{expected}, got {admcid(receiver)}")
        assert all(e.encrypted == (key is not None) for e in receiver.events)
        assert {e.account for e in receiver.events} == {ACCOUNT}
        assert [e.sequence for e in receiver.events_of("ADM-CID")] == \
            [f"{n:04d}" for n in range(1, 8)]
        states = site.states()
        gate_open = [e.seq for e in site.events("gate_open")]
        # Without a key an ACK may be a stranger's: it moves the queue on but cancels no
        # SMS fallback.
        acked = "accepted" if key is not None else "unverified"
        wait_until(lambda: set(site.states().values()) <= {acked, "rejected"}, 5)
        states = site.states()
        assert [seq for seq, s in states.items() if s == "rejected"] == gate_open
        sia = site.status()["sia"]
        assert sia["ok"] is True and sia["pending"] == 0 and sia["last_error"] is None
    if secret is not None:
        assert not [r for r in caplog.records if secret in r.getMessage()]


def test_null_messages_keep_an_idle_link_supervised(make_site, wait_until):
    with Receiver("tcp", ACCOUNT) as receiver:
        site = make_site(receiver.port, supervision_s=1)
        wait_until(lambda: len(receiver.events_of("NULL")) >= 3, 6, what="three NULLs")
        arrived = []
        for _ in range(2):
            count = len(receiver.events_of("NULL"))
            wait_until(lambda: len(receiver.events_of("NULL")) > count, 3)
            arrived.append(time.monotonic())
        assert arrived[1] - arrived[0] <= 1 + 1.0  # each within supervision_s (and slack)
        assert receiver.connections == 1  # one connection, kept open
        assert site.status()["sia"]["ok"] is True


def test_a_nak_is_answered_by_a_resend_on_the_receivers_time(make_site, wait_until):
    # The centre's clock reads an hour ahead of ours: it NAKs our time, and takes its own.
    with Receiver("tcp", ACCOUNT, KEYS["aes128"], clock_offset_s=3600) as receiver:
        site = make_site(receiver.port, key=KEYS["aes128"])
        wait_until(lambda: receiver.events_of("ADM-CID"), 5, what="the heartbeat")
        assert receiver.answers[:2] == ["NAK", "ACK"]
        [beat] = receiver.events_of("ADM-CID")
        ahead = beat.timestamp - dt.datetime.now(dt.timezone.utc)
        assert 3600 - 30 < ahead.total_seconds() < 3600 + 30
        site.press("guard_room")  # on the receiver's time from the start now
        wait_until(lambda: len(receiver.events_of("ADM-CID")) == 2, 5)
        assert receiver.answers[2:] == ["ACK"]
        assert not site.events("fault")


def test_duh_and_silence_are_retried_with_backoff_and_a_sia_fault_then_recovered(
        make_site, wait_until):
    with Receiver("tcp", ACCOUNT) as receiver:
        receiver.script.extend(["DUH", "silence", "DUH"])
        site = make_site(receiver.port, exchange_s=0.5)
        [fault] = wait_until(lambda: site.events("fault"), 10, what="the sia fault")
        assert (fault.subject, fault.data["reason"]) == ("sia", "refused")
        [recovered] = wait_until(lambda: site.events("recovered"), 10, what="recovery")
        assert recovered.subject == "sia"
        # The heartbeat once, after its three failed attempts; then the fault and recovery.
        wait_until(lambda: len(receiver.events_of("ADM-CID")) == 3, 5)
        assert admcid(receiver) == [("1", "602", "000"), ("1", "354", "000"),
                                    ("3", "354", "000")]
        assert receiver.answers[:4] == ["DUH", "silence", "DUH", "ACK"]
        assert len({line.split("[")[0][-12:] for line in receiver.lines[:4]}) == 1, \
            "a retry keeps its sequence number"
        assert site.status()["sia"]["ok"] is True and site.status()["faults"] == []


def test_an_event_the_centre_keeps_refusing_is_set_aside_and_the_queue_moves_on(
        make_site, wait_until):
    with Receiver("tcp", ACCOUNT) as receiver:
        receiver.script.extend(["DUH"] * 5)
        site = make_site(receiver.port)
        wait_until(lambda: site.events("fault"), 10, what="the sia fault")
        [beat] = site.events("heartbeat")
        wait_until(lambda: site.states().get(beat.seq) == "rejected", 5)
        wait_until(lambda: admcid(receiver) == [("1", "354", "000"), ("3", "354", "000")],
                   10)


def test_a_hostile_receiver_neither_stalls_the_daemon_nor_grows_its_memory(
        make_site, wait_until):
    with Receiver("tcp", ACCOUNT) as receiver:
        receiver.hostile = "garbage"
        tracemalloc.start()
        try:
            site = make_site(receiver.port, exchange_s=0.5)
            [fault] = wait_until(lambda: site.events("fault"), 10, what="the sia fault")
            for _ in range(20):  # the owner answers at once all along
                started = time.monotonic()
                site.status()
                assert time.monotonic() - started < 0.5
                time.sleep(0.1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024 * 1024
        assert fault.data["reason"] == "unreachable"
        receiver.hostile = None
        wait_until(lambda: site.events("recovered"), 15, what="recovery")
        wait_until(lambda: ("1", "602", "000") in admcid(receiver), 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_is_lost_while_the_centre_is_down_across_a_restart(tmp_path, short_dir,
                                                                    wait_until):
    port = free_port()
    config = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                     sia_keys={"host": "127.0.0.1", "port": port, "account": ACCOUNT,
                               "supervision_s": 3600}).write(tmp_path / "config.toml")
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    try:
        for name in ("guard_room", "box"):
            assert daemon.cli("sim", name, "on").returncode == 0
        assert daemon.cli("silence", "--by", "王老师").returncode == 0
        assert daemon.cli("sim", "main_gate", "on").returncode == 0
        db = tmp_path / "var" / "events.db"
        wait_until(lambda: len(delivery_states(db)) >= 7, 5)
    finally:
        assert stop_daemon(daemon) == 0
    assert set(delivery_states(db).values()) == {"pending"}

    with Receiver("tcp", ACCOUNT, port=port) as receiver:
        daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon2.log")
        try:
            with closing(Store(db, readonly=True)) as store:
                def all_done():
                    states = delivery_states(db)
                    return "pending" not in states.values() and states
                wait_until(all_done, 20, what="every delivery done")
                events = store.events()
        finally:
            stop_daemon(daemon)
    sent = [e for e in events if e.kind not in NOT_SENT]
    # Only the newest heartbeat of the two goes (one per start): the older is superseded.
    beats = [e for e in sent if e.kind == "heartbeat"]
    assert len(beats) == 2
    sent.remove(beats[0])
    # The sia fault of the first run (three failed attempts) goes too, once the link is back.
    codes = {"heartbeat": "602", "panic": "120", "tamper": "137", "silenced": "406",
             "fault": "354"}
    assert [c[1] for c in admcid(receiver)] == [codes[e.kind] for e in sent]
    assert [c[1] for c in admcid(receiver)].count("406") == 2  # one per silenced alarm


def test_numbers_are_reserved_in_the_store_a_block_at_a_time_and_wrap(tmp_path):
    store = Store(tmp_path / "events.db")
    writes: list[int] = []

    def reserve(last: int) -> bool:
        writes.append(last)
        store.set_meta(SIA_SEQUENCE, str(last))
        return True

    try:
        first = Sequence(stored_number(store.get_meta(SIA_SEQUENCE)), reserve)
        assert [first.next() for _ in range(150)] == list(range(1, 151))
        assert writes == [100, 200]  # before 0001 and before 0101 went
        # A start goes on after the last block reserved (the rest of it skipped).
        again = Sequence(stored_number(store.get_meta(SIA_SEQUENCE)), reserve)
        assert again.next() == 201
        store.set_meta(SIA_SEQUENCE, "9950")
        late = Sequence(stored_number(store.get_meta(SIA_SEQUENCE)), reserve)
        assert [late.next() for _ in range(50)] == [*range(9951, 10000), 1]
        assert writes[-1] == 51
    finally:
        store.close()
    assert [stored_number(text) for text in (None, "", "abc", "0", "10000", "-5", "77")] == \
        [0, 0, 0, 0, 0, 0, 77]


def test_a_reservation_that_fails_holds_back_no_message_and_is_tried_again():
    tried: list[int] = []

    def store_full(last: int) -> bool:
        tried.append(last)
        return False

    sequence = Sequence(0, store_full)
    assert [sequence.next() for _ in range(3)] == [1, 2, 3]
    assert tried == [100, 101, 102]


def test_the_message_numbers_go_on_across_a_restart(tmp_path, short_dir, wait_until):
    """A receiver de-duplicates by sequence number within a window: a daemon restarted
    within it and counting from 0001 again would have its first messages taken for
    repeats and dropped. So the numbering goes on where the last start left it."""
    with Receiver("tcp", ACCOUNT) as receiver:
        config = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                         sia_keys={"host": "127.0.0.1", "port": receiver.port,
                                   "account": ACCOUNT, "supervision_s": 3600}
                         ).write(tmp_path / "config.toml")
        # The first start: its heartbeat and a panic; the second: its heartbeat.
        for run, messages in ((1, 2), (2, 3)):
            daemon = start_daemon(config, short_dir / "control.sock",
                                  tmp_path / f"daemon{run}.log")
            try:
                if run == 1:
                    assert daemon.cli("sim", "guard_room", "on").returncode == 0
                wait_until(lambda: len(receiver.events_of("ADM-CID")) == messages, 10,
                           what=f"the messages of start {run}")
            finally:
                assert stop_daemon(daemon) == 0
        numbers = [int(e.sequence) for e in receiver.events_of("ADM-CID")]
    assert numbers[:2] == [1, 2]
    assert numbers[2] > 2, f"the second start numbered its heartbeat {numbers[2]:04d}"


# ---------------------------------------------------------------------- [sia] config

def sia_problems(tmp_path: Path, keys: str) -> list[str]:
    from edge import config
    from edge.errors import ConfigError
    text = SimSite(tmp_path / "var", None).text() + "\n[sia]\n" + keys
    with pytest.raises(ConfigError) as caught:
        config.parse(__import__("tomllib").loads(text), "config.toml")
    return caught.value.problems


GOOD = 'host = "127.0.0.1"\nport = 12000\naccount = "12AB"\n'


@pytest.mark.parametrize("keys, line", [
    ('host = "127.0.0.1"\nport = 12000\naccount = "12G4"\n',
     "[sia] account: must be 3-16 hexadecimal digits"),
    ('host = "127.0.0.1"\nport = 12000\naccount = "12"\n',
     "[sia] account: must be 3-16 hexadecimal digits"),
    ('host = "127.0.0.1"\nport = 12000\n', "[sia] account: missing (required)"),
    (GOOD + 'protocol = "sctp"\n', "[sia] protocol: must be one of 'tcp', 'udp'"),
    (GOOD + "receiver = 12\n", '[sia] receiver: must be 1-6 hexadecimal digits, written as '
                               'a quoted string ("1")'),
    (GOOD + 'line = "1234567"\n', "[sia] line: must be 1-6 hexadecimal digits"),
    (GOOD + "port_s = 3\n", "[sia] port_s: unknown key"),
    (GOOD.replace("12000", "0"), "[sia] port: must be from 1 to 65535"),
    (GOOD + 'key_file = "sia.key"\n', "[sia] key_file: must be an absolute path"),
    (GOOD + 'key_file = "/nonexistent/sia.key"\n',
     "[sia] key_file: key file /nonexistent/sia.key does not exist"),
])
def test_a_bad_sia_table_is_refused_naming_the_key(tmp_path, keys, line):
    lines = sia_problems(tmp_path, keys)
    assert len(lines) == 1 and lines[0].startswith(f"config error: config.toml: {line}"), lines


@pytest.mark.parametrize("content", ["0123456789ABCDE", "0123456789ABCDEF0",
                                     "0123456789ABCDEG", "", "0123456789abcdef" * 3])
def test_a_key_file_without_a_16_24_or_32_hex_key_is_refused_never_shown(tmp_path, content):
    key_file = tmp_path / "sia.key"
    key_file.write_text(content + "\n")
    [line] = sia_problems(tmp_path, GOOD + f'key_file = "{key_file}"\n')
    assert line.startswith("config error: config.toml: [sia] key_file: ")
    if content:
        assert "16, 24 or 32 hexadecimal characters" in line and content not in line
    else:
        assert "is empty: its first line must hold the key" in line


def test_a_good_sia_table_is_read(tmp_path):
    from edge import config
    key_file = tmp_path / "sia.key"
    key_file.write_text(KEYS["aes192"] + "\n")
    text = SimSite(tmp_path / "var", None).text() + "\n[sia]\n" + GOOD + \
        f'protocol = "udp"\nreceiver = "1A"\nline = "2"\nkey_file = "{key_file}"\n'
    cfg = config.parse(__import__("tomllib").loads(text))
    assert cfg.sia == config.Sia(host="127.0.0.1", port=12000, protocol="udp",
                                 account="12AB", receiver="1A", line="2", key_file=key_file,
                                 supervision_s=60)
    assert "sia" in cfg.transports


def test_check_sends_a_link_test_to_the_centre(tmp_path, short_dir, cli):
    with Receiver("tcp", ACCOUNT) as receiver:
        site = SimSite(tmp_path / "var", short_dir / "c.sock",
                       sia_keys={"host": "127.0.0.1", "port": receiver.port,
                                 "account": ACCOUNT})
        done = cli("check", config=site.write(tmp_path / "config.toml"))
        assert receiver.events_of("NULL")
    [line] = [line for line in done.stdout.splitlines() if " sia " in line]
    assert line.startswith("✓ sia") and "link test acknowledged" in line

    site.sia_keys = {**site.sia_keys, "port": free_port()}
    done = cli("check", config=site.write(tmp_path / "config.toml"))
    [line] = [line for line in done.stdout.splitlines() if " sia " in line]
    assert line.startswith("✗ sia") and done.returncode == 1


def test_a_key_file_gone_since_the_start_is_a_sia_fault_at_once(short_dir, wait_until):
    from edge.service import build_daemon
    from edge.sim.site import OwnerThread
    site = Site(short_dir, free_port(), key=KEYS["aes128"])
    cfg = site.sim.load(short_dir / "config.toml")  # the key file checked here
    (short_dir / "sia.key").unlink()
    owner = OwnerThread(build_daemon(cfg, pin_factory=MockFactory()))
    try:
        with closing(Store(cfg.storage.db_path)) as store:
            [fault] = wait_until(lambda: store.events(kind="fault"), 5, what="the sia fault")
    finally:
        owner.close()
    assert (fault.subject, fault.data["reason"]) == ("sia", "misconfigured")
    assert fault.data["detail"] == f"key file {short_dir / 'sia.key'} does not exist"
