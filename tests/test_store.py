"""The durable event store on a real SQLite file: WAL + FULL, gap-free seq, one
transaction per event with what it owes, retention, corruption quarantine, and a writer
killed with SIGKILL mid-loop."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from edge.errors import StorageError
from edge.store import ESCALATION_DUE, SmsRequest, Store, device_of_store
from edge.store.schema import SIA_SEQUENCE

T0 = dt.datetime(2026, 11, 23, 7, 42, 15, tzinfo=dt.timezone(dt.timedelta(hours=8)))
PRINCIPAL = SmsRequest("principal", "+8613800138000", T0.timestamp(), fallback=False)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "var" / "events.db"


@pytest.fixture
def store(db):
    s = Store(db)
    yield s
    s.close()


def raw(db: Path) -> sqlite3.Connection:
    """A plain connection of our own, to look at the file without the Store's help."""
    return sqlite3.connect(db, isolation_level=None)


def test_opens_in_wal_with_synchronous_full(store, db):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    with raw(db) as conn:  # WAL is a property of the file, seen by every connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_creates_its_directory(db):
    assert not db.parent.exists()
    Store(db).close()
    assert db.is_file()


def test_seq_is_gap_free_and_ids_are_uuids(store):
    events = [store.append("gate_open", "main_gate", T0 + dt.timedelta(seconds=n), {"n": n})
              for n in range(20)]
    assert [e.seq for e in events] == list(range(1, 21))
    assert len({e.id for e in events}) == 20
    assert all(uuid.UUID(e.id).version == 4 for e in events)
    assert [e.seq for e in store.events()] == list(range(1, 21))
    assert store.last_seq() == 20
    again = store.event(7)
    assert (again.id, again.kind, again.subject, again.time, again.data) == (
        events[6].id, "gate_open", "main_gate", T0 + dt.timedelta(seconds=6),
        {"n": 6, "store_id": store.store_id})


def test_a_given_event_id_is_kept(store):
    event_id = str(uuid.uuid4())
    assert store.append("panic", "guard_room", T0, {}, event_id=event_id).id == event_id


def test_delivery_and_sms_rows_are_written_with_the_event(store, db):
    event = store.append("panic", "guard_room", T0, {"label": "门卫室"},
                         transports=("uplink",), sms=[PRINCIPAL])
    with raw(db) as conn:
        assert conn.execute("SELECT seq, transport, state FROM deliveries").fetchall() == [
            (event.seq, "uplink", "pending")]
        assert conn.execute("SELECT seq, contact, phone, state, fallback FROM sms").fetchall() \
            == [(event.seq, "principal", "+8613800138000", "pending", 0)]
    assert store.pending_count("uplink") == (1, T0.timestamp())


def test_outbox_rows_are_read_by_name(store, tmp_path):
    event = store.append("panic", "guard_room", T0, {}, transports=("uplink",))
    store.mark_retry("uplink", [event.seq], "503", T0.timestamp() + 30)
    (owed,) = store.pending_deliveries("uplink", 10)
    assert (owed.event.id, owed.attempts, owed.next_try) == (event.id, 1, T0.timestamp() + 30)
    backlog = store.pending_count("uplink")
    assert (backlog.pending, backlog.oldest_ts) == (1, T0.timestamp())
    picture = tmp_path / "snapshot.jpg"
    store.attach(event.seq, [("snapshot", str(picture), "ab" * 32, 10)], {})
    store.mark_accepted("uplink", [event.seq], "202", T0.timestamp())
    (upload,) = store.attachments_to_upload("uplink")
    assert (upload.seq, upload.event_id, upload.name, upload.path) == (
        event.seq, event.id, "snapshot", str(picture))


def test_a_failing_part_of_the_transaction_stores_nothing(store, db):
    store.append("gate_open", "main_gate", T0, {})
    with pytest.raises(StorageError):  # the second delivery row breaks its primary key
        store.append("panic", "guard_room", T0, {}, transports=("uplink", "uplink"),
                     sms=[PRINCIPAL])
    with raw(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM sms").fetchone()[0] == 0
    # The seq the failed event would have had is not lost: no gap.
    assert store.append("panic", "guard_room", T0, {}).seq == 2


def test_one_sms_per_event_and_contact(store, db):
    event = store.append("panic", "guard_room", T0, {}, sms=[PRINCIPAL])
    later = SmsRequest("principal", "+8613800138000", T0.timestamp() + 20, fallback=True)
    store.add_sms(event.seq, [later, SmsRequest("deputy", "13900139000", 0, fallback=True)])
    with raw(db) as conn:
        rows = conn.execute("SELECT contact, state, due FROM sms ORDER BY contact").fetchall()
    assert rows == [("deputy", "waiting", 0), ("principal", "pending", T0.timestamp())]
    with raw(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO sms(seq, contact, phone, state, due) VALUES(?,?,?,?,?)",
                     (event.seq, "principal", "+8613800138000", "pending", 0))


def test_events_filter_by_time_and_kind(store):
    for n, kind in enumerate(["gate_open", "panic", "gate_closed", "panic"]):
        store.append(kind, "x", T0 + dt.timedelta(hours=n), {})
    assert [e.seq for e in store.events(kind="panic")] == [2, 4]
    assert [e.seq for e in store.events(since=(T0 + dt.timedelta(hours=2)).timestamp())] == [3, 4]
    assert [e.seq for e in store.events(after_seq=1, limit=2)] == [2, 3]


def test_purge_keeps_what_is_still_owed(store, db):
    old = T0 - dt.timedelta(days=100)
    cutoff = (T0 - dt.timedelta(days=90)).timestamp()
    gone_old = store.append("gate_open", "main_gate", old, {})
    owed_upload = store.append("panic", "guard_room", old, {}, transports=("uplink",))
    owed_sms = store.append("panic", "guard_room", old, {},
                            sms=[SmsRequest("principal", "+8613800138000", 0, fallback=True)])
    uploaded_old = store.append("tamper", "box", old, {}, transports=("uplink",))
    silenced_old = store.append("silenced", "box", old, {})  # the box's latest state
    recent = store.append("gate_open", "main_gate", T0, {}, transports=("uplink",))
    beat_done = store.append("heartbeat", "test-gate-1", T0, {}, transports=("uplink",))
    beat_owed = store.append("heartbeat", "test-gate-1", T0, {}, transports=("uplink",))
    with raw(db) as conn:
        conn.execute("UPDATE deliveries SET state='accepted' WHERE seq IN (?, ?, ?)",
                     (uploaded_old.seq, recent.seq, beat_done.seq))
    assert store.purge(cutoff) == 3
    kept = [e.seq for e in store.events()]
    assert kept == [owed_upload.seq, owed_sms.seq, silenced_old.seq, recent.seq,
                    beat_owed.seq]
    assert gone_old.seq not in kept
    with raw(db) as conn:  # their delivery rows went with them
        assert conn.execute("SELECT count(*) FROM deliveries WHERE seq IN (?, ?)",
                            (uploaded_old.seq, beat_done.seq)).fetchone()[0] == 0
    # Purging never reuses a seq.
    assert store.append("panic", "guard_room", T0, {}).seq == beat_owed.seq + 1


def test_purge_keeps_each_inputs_latest_state_whatever_its_age(store):
    old = T0 - dt.timedelta(days=100)
    latched = store.append("panic", "guard_room", old, {})  # never silenced
    store.append("gate_open", "main_gate", old, {})
    held = store.append("gate_held_open", "main_gate", old, {})  # open for 100 days
    store.append("tamper", "box", old, {})
    box_silenced = store.append("silenced", "box", old, {})
    mains = store.append("power_lost", "ups", old, {})
    store.append("gate_after_hours", "main_gate", old, {})
    store.append("fault", "modem", old, {})
    assert store.purge(T0.timestamp()) == 4
    assert [e.seq for e in store.events()] == [latched.seq, held.seq, box_silenced.seq,
                                               mains.seq]
    assert store.last_event("guard_room", ("panic", "tamper", "silenced")).seq == latched.seq


def test_purge_without_a_cutoff_removes_only_delivered_heartbeats(store):
    old = T0 - dt.timedelta(days=100)
    gate = store.append("gate_closed", "main_gate", old, {})
    store.append("gate_open", "main_gate", old, {})
    beat = store.append("heartbeat", "test-gate-1", old, {})
    assert store.purge(None) == 1
    assert beat.seq not in [e.seq for e in store.events()]
    assert gate.seq in [e.seq for e in store.events()]


# ------------------------------------------------------------------ corruption

def quarantined(db: Path) -> list[Path]:
    return sorted(p for p in db.parent.iterdir() if p.name.startswith("events.db.corrupt-")
                  and not p.name.endswith(("-wal", "-shm")))


def test_a_file_of_garbage_is_moved_aside_and_a_fresh_store_works(db):
    db.parent.mkdir(parents=True)
    garbage = os.urandom(3 * 4096)
    db.write_bytes(garbage)
    store = Store(db, check_integrity=True)
    try:
        [moved] = quarantined(db)
        assert store.report.quarantined == moved
        assert store.report.reason
        assert moved.read_bytes() == garbage  # kept for whoever investigates
        assert store.integrity_ok()
        assert store.append("fault", "storage", T0, {"reason": "corrupt"}).seq == 1
    finally:
        store.close()


def test_a_readable_file_is_not_quarantined(db):
    Store(db).close()
    store = Store(db, check_integrity=True)
    store.close()
    assert store.report.quarantined is None and quarantined(db) == []


def fill_and_close(db: Path, n: int) -> None:
    store = Store(db)
    for i in range(n):
        store.append("gate_open", "main_gate", T0, {"pad": "x" * 300, "i": i})
    store.close()  # the last connection checkpoints the WAL into the main file


def test_a_damaged_page_is_quarantined_and_seq_goes_on(db):
    fill_and_close(db, 200)
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    with raw(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        meta_pages = {r[0] for r in conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE tbl_name='meta'")}
    victim = pages - 1  # an events or index page, far from page 1 and the meta table
    assert victim not in meta_pages and victim > 1
    with open(db, "r+b") as f:
        f.seek((victim - 1) * page_size)
        f.write(b"\xa5" * page_size)
    store = Store(db, check_integrity=True)
    try:
        assert store.report.quarantined is not None and store.report.quarantined.exists()
        assert store.integrity_ok()
        assert store.events() == []
        # The old last seq was still readable: the fresh store goes on from it, so the
        # platform never sees the same seq for two events.
        assert store.append("fault", "storage", T0, {}).seq == 201
    finally:
        store.close()


def test_a_page_damaged_under_an_open_store_is_told_by_its_reads_and_writes(db):
    """The damage a running daemon meets: every read or write that finds it tells
    on_corrupt which file (its inode) and what SQLite said, and raises StorageError; the
    file stays where it is (the daemon's writer sets it aside)."""
    fill_and_close(db, 200)
    seen: list[tuple[int, str]] = []
    store = Store(db, on_corrupt=lambda inode, detail: seen.append((inode, detail)))
    try:
        with raw(db) as conn:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        with open(db, "r+b") as f:
            for page in range(2, pages + 1):  # all but the header page
                f.seek((page - 1) * page_size)
                f.write(b"\xa5" * page_size)
            os.fsync(f.fileno())
        with raw(db) as conn:  # another connection's commit: the store reads from disk again
            conn.execute("PRAGMA user_version = 7")
        with pytest.raises(StorageError):
            store.events()
        with pytest.raises(StorageError):
            store.append("panic", "guard_room", T0, {})
        assert [inode for inode, _ in seen] == [os.stat(db).st_ino] * 2
        assert all("malformed" in detail for _, detail in seen)
        assert quarantined(db) == []
    finally:
        store.close()


def test_what_a_damaged_store_owes_is_taken_over_by_the_fresh_one(db):
    """Events not yet delivered or texted stay owed across the quarantine, under their
    old seq and id; what was delivered stays with the file moved aside."""
    store = Store(db)
    for n in range(5):  # owed to nobody
        store.append("gate_open", "main_gate", T0, {"n": n})
    uploads = [store.append("gate_open", "main_gate", T0, {"n": n}, transports=["uplink"])
               for n in range(5, 8)]
    store.mark_accepted("uplink", [uploads[0].seq], "200", T0.timestamp())
    texted = store.append("panic", "guard_room", T0, {}, sms=[PRINCIPAL])
    store.close()
    with raw(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        [index_page] = [r[0] for r in conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name='events_subject'")]
    with open(db, "r+b") as f:  # an index the salvage does without
        f.seek((index_page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    store = Store(db, check_integrity=True)
    try:
        assert store.report.quarantined is not None
        assert [(e.seq, e.id) for e in store.events()] == [
            (e.seq, e.id) for e in (*uploads[1:], texted)]
        assert [d.event.seq for d in store.pending_deliveries("uplink", 10)] == [
            e.seq for e in uploads[1:]]
        assert [(r["contact"], r["state"]) for r in store.sms_rows(texted.seq)] == [
            ("principal", "pending")]
        assert store.append("fault", "storage", T0, {}).seq == texted.seq + 1
    finally:
        store.close()


def test_a_reader_does_not_quarantine(db):
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(4096))
    with pytest.raises(StorageError):
        Store(db)
    assert quarantined(db) == []


def test_a_path_that_cannot_be_a_directory_is_a_storage_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError):
        Store(blocker / "var" / "events.db", check_integrity=True)


# ------------------------------------------------------------------ SIGKILL mid-loop

WRITER = """
import datetime as dt, sys
from pathlib import Path
from edge.store import SmsRequest, Store, device_of_store
store = Store(Path(sys.argv[1]), check_integrity=True)
when = dt.datetime.now(dt.timezone.utc)
sms = [SmsRequest("principal", "+8613800138000", 0.0, fallback=False)]
while True:
    event = store.append("panic", "guard_room", when, {"label": "x"},
                         transports=("uplink",), sms=sms)
    print(event.seq, flush=True)
"""


def test_every_confirmed_insert_survives_sigkill(db):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    confirmed = []
    try:
        for line in writer.stdout:
            confirmed.append(int(line))
            if len(confirmed) >= 300:
                writer.send_signal(signal.SIGKILL)
                break
        # Lines already in the pipe were also confirmed before the kill.
        confirmed += [int(line) for line in writer.stdout.read().split()]
    finally:
        writer.kill()
        writer.wait(10)
        writer.stdout.close()
        writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL
    assert len(confirmed) >= 300, "the writer died before 300 inserts"

    store = Store(db, check_integrity=True)
    try:
        assert store.report.quarantined is None
        assert store.pragma("integrity_check") == "ok"
        seqs = [e.seq for e in store.events()]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free from 1
        assert set(confirmed) <= set(seqs)
        assert confirmed == list(range(1, len(confirmed) + 1))
        with raw(db) as conn:  # every stored event came with its rows, never without
            assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == len(seqs)
            assert conn.execute("SELECT count(*) FROM sms").fetchone()[0] == len(seqs)
        assert store.append("panic", "guard_room", T0, {}).seq == len(seqs) + 1
    finally:
        store.close()


def test_sms_times_far_ahead_are_due_now_after_the_clock_stepped_back(store):
    now = T0.timestamp()
    retry = store.append("panic", "guard_room", T0, {}, sms=[PRINCIPAL])
    store.mark_sms(retry.seq, "principal", "pending", now=now, error="+CMS ERROR: 38",
                   next_try=now + 60)
    fallback = store.append("gate_held_open", "main_gate", T0, {}, transports=["uplink"],
                            sms=[SmsRequest("principal", "+8613800138000", now + 20,
                                            fallback=True)])
    assert store.due_sms(now, horizon_s=600) == []  # a minute and 20 s ahead: not yet
    # The clock is stepped back a week: both times now lie far ahead, which we never set.
    week_ago = now - 7 * 86400
    assert [r.seq for r in store.due_sms(week_ago, horizon_s=600)] == [retry.seq,
                                                                       fallback.seq]



def test_a_clock_step_moves_the_escalation_call_kept_in_meta_and_nothing_else(store):
    store.set_meta_values({ESCALATION_DUE: "1000.5", "drill_account": "1000"})
    assert store.shift_wall_times(-300.0) == 1
    assert float(store.get_meta(ESCALATION_DUE) or "") == 700.5
    assert store.get_meta("drill_account") == "1000"
    store.set_meta(ESCALATION_DUE, "")  # no call waits
    assert store.shift_wall_times(50400.0) == 0
    assert store.get_meta(ESCALATION_DUE) == ""

def test_a_clock_step_moves_the_drills_and_walk_tests_ends_not_their_lengths(store):
    store.set_meta_values({"drill_until": "1000.5", "drill_for_s": "600",
                           "walktest_until": "2000", "walktest_for_s": "1800"})
    assert store.shift_wall_times(-300.0) == 2
    assert [float(store.get_meta(key) or "") for key in (
        "drill_until", "drill_for_s", "walktest_until", "walktest_for_s")] == [
        700.5, 600, 1700, 1800]


NOBODY = 65534  # uid and gid of nobody/nogroup on Debian


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_a_group_member_reads_the_store_of_a_stopped_daemon():
    # As the unit lays it out: the state directory 0750 and the files 0640, owned by the
    # daemon's user, the CLI user only in its group. A stopped daemon leaves no -wal/-shm.
    top = Path(tempfile.mkdtemp(prefix="edge-group-reader-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)  # pytest's own temporary directories are 0700: nobody gets in
        state = top / "var"
        store = Store(state / "events.db")
        store.append("panic", "guard_room", dt.datetime.now(dt.timezone.utc),
                     {"label": "门卫室"})
        store.close()
        assert sorted(p.name for p in state.iterdir()) == ["events.db"]
        for path, mode in ((state, 0o750), (state / "events.db", 0o640)):
            os.chown(path, 0, NOBODY)
            os.chmod(path, mode)
        assert _exit_status_as_nobody(lambda: [e.kind for e in Store(
            state / "events.db", readonly=True).events()] == ["panic"]) == 0
        assert sorted(p.name for p in state.iterdir()) == ["events.db"]  # nothing left
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _exit_status_as_nobody(check) -> int:
    """Run ``check()`` in a child process that has become nobody in group nogroup: 0 when
    it returned true, 1 when false, 2 when it raised."""
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([NOBODY])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(0 if check() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def test_due_sms_come_most_urgent_first_then_oldest(store):
    kinds = ["gate_open", "gate_held_open", "recovered", "panic", "gate_open", "tamper"]
    seqs = {store.append(kind, "x", T0, {}, sms=[PRINCIPAL]).seq: kind for kind in kinds}
    rows = store.due_sms(T0.timestamp(), ranks={"panic": 0, "tamper": 0,
                                                "gate_held_open": 1})
    assert [seqs[r.seq] for r in rows] == ["panic", "tamper", "gate_held_open", "gate_open",
                                          "recovered", "gate_open"]
    assert [r.kind for r in rows] == [seqs[r.seq] for r in rows]
    assert [r.seq for r in store.due_sms(T0.timestamp())] == sorted(seqs)  # no ranks


def test_a_lost_confirmation_is_kept_in_the_sms_row(store):
    seq = store.append("panic", "guard_room", T0, {}, sms=[PRINCIPAL]).seq
    (row,) = store.due_sms(T0.timestamp())
    assert not row.maybe_sent
    store.mark_sms(seq, "principal", "pending", now=T0.timestamp(), refs=[],
                   maybe_sent=True)
    store.mark_sms(seq, "principal", "pending", now=T0.timestamp(), refs=[7])  # stays set
    (row,) = store.due_sms(T0.timestamp())
    assert row.maybe_sent and row.refs == [7]
    assert store.sms_rows(seq)[0]["maybe_sent"] == 1


def test_a_store_made_before_maybe_sent_gets_the_column_and_keeps_its_rows(db):
    db.parent.mkdir(parents=True)
    with raw(db) as conn:  # the sms table as the first release made it
        conn.executescript("""
            CREATE TABLE events(seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL, subject TEXT NOT NULL, time TEXT NOT NULL,
                ts REAL NOT NULL, data TEXT NOT NULL);
            CREATE TABLE sms(seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
                contact TEXT NOT NULL, phone TEXT NOT NULL, state TEXT NOT NULL,
                due REAL NOT NULL, fallback INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
                refs TEXT, last_error TEXT, done_ts REAL,
                PRIMARY KEY(seq, contact)) WITHOUT ROWID;
            INSERT INTO events VALUES(1, 'old-1', 'panic', 'guard_room',
                '2026-11-23T07:42:15+08:00', 1763854935.0, '{}');
            INSERT INTO sms(seq, contact, phone, state, due) VALUES(1, 'principal',
                '+8613800138000', 'pending', 0);
        """)
    store = Store(db)
    try:
        (row,) = store.due_sms(T0.timestamp())
        assert (row.seq, row.kind, row.maybe_sent) == (1, "panic", False)
        store.mark_sms(1, "principal", "pending", now=T0.timestamp(), maybe_sent=True)
        assert store.due_sms(T0.timestamp())[0].maybe_sent
    finally:
        store.close()


def test_every_event_names_its_stores_numbering_and_a_new_store_a_new_one(db, tmp_path):
    """data.store_id: the same across reopening, kept when a corrupt store is replaced
    and seq goes on, and new when seq starts again from 1 (a new or wiped card)."""
    fill_and_close(db, 2)
    with raw(db) as conn:
        store_id = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
    assert uuid.UUID(store_id)
    store = Store(db)
    try:
        later = store.append("gate_closed", "main_gate", T0, {})
        assert [e.data["store_id"] for e in store.events()] == [store_id] * 3
        assert later.data["store_id"] == store_id and later.seq == 3
        store.recover_from_corruption()  # seq goes on: the same numbering, the same name
        assert store.append("fault", "storage", T0, {}).data["store_id"] == store_id
    finally:
        store.close()
    other = Store(tmp_path / "new-card" / "events.db")
    try:
        first = other.append("heartbeat", "gate-1", T0, {})
        assert first.seq == 1 and first.data["store_id"] != store_id
    finally:
        other.close()


def test_the_store_remembers_the_first_device_that_writes_it(db):
    store = Store(db)
    try:
        assert device_of_store(db) is None
        store.claim_device("gaoshan-gate-1")
        store.claim_device("lishan-gate-1")  # a claim never changes the owner
        assert device_of_store(db) == "gaoshan-gate-1"
        store.recover_from_corruption()
    finally:
        store.close()
    assert device_of_store(db) == "gaoshan-gate-1"
    assert device_of_store(db.with_name("none.db")) is None


def test_a_fresh_store_goes_on_with_the_alarm_centres_message_numbers(db):
    """A receiver would drop messages numbered as recent ones (edge/sia/sequence.py)."""
    store = Store(db)
    try:
        store.set_meta(SIA_SEQUENCE, "4200")
        store.recover_from_corruption()
        assert store.get_meta(SIA_SEQUENCE) == "4200"
    finally:
        store.close()


def test_an_unverified_acceptance_neither_cancels_the_fallback_sms_nor_counts_as_delivered(
        store):
    # A receiver's answer anyone could have forged (SIA without a key, mqtt:// in clear):
    # the transport's queue moves on, but the safety net stays.
    fallback = SmsRequest("principal", "+8613800138000", T0.timestamp() + 20, fallback=True)
    event = store.append("gate_held_open", "main_gate", T0, {}, transports=("sia", "mqtt"),
                         sms=[fallback])
    store.mark_accepted("sia", [event.seq], "ACK", T0.timestamp(), verified=False)
    assert store.pending_deliveries("sia", 10) == []
    assert [r.seq for r in store.due_sms(T0.timestamp() + 30)] == [event.seq]
    assert not store.delivered_anywhere(event.seq)
    assert store.reach(event.seq).accepted_by == ()
    store.mark_accepted("mqtt", [event.seq], "puback", T0.timestamp())  # over TLS: verified
    assert store.due_sms(T0.timestamp() + 30) == []
    assert store.delivered_anywhere(event.seq)
    assert store.reach(event.seq).accepted_by == ("mqtt",)
