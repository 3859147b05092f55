"""The durable event store: one SQLite file, storage.path/events.db.

Every event is committed here before anything else is done with it, together with the rows
that say what is still owed for it: one delivery row per transport and one SMS row per
contact that routing names. Workers read those rows, do their slow I/O, and write the
outcome back in one transaction, so a crash anywhere leaves rows the next start picks up.

WAL with synchronous=FULL: a commit that returned survives a power cut. A store that SQLite
finds corrupt is moved aside (kept for forensics, never deleted) and a fresh one started.

One Store object per thread (an sqlite3 connection is not shared between threads).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import (TYPE_CHECKING, Any, Callable, Concatenate, Iterable, Literal, Mapping,
                    NamedTuple, ParamSpec, Sequence, TypedDict, TypeVar)

from edge.errors import StorageError
from edge.events import STATE_FAMILIES, Event, data_json, new_event_id

if TYPE_CHECKING:
    from edge.clock import Clock

log = logging.getLogger(__name__)

_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events(
    seq     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    time    TEXT NOT NULL,
    ts      REAL NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_subject ON events(subject, seq);
-- What each transport still owes the platform: pending → accepted | rejected.
CREATE TABLE IF NOT EXISTS deliveries(
    seq         INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    transport   TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try    REAL NOT NULL DEFAULT 0,
    last_status TEXT,
    done_ts     REAL,
    PRIMARY KEY(seq, transport)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(transport, state, seq);
-- One SMS per (event, contact), ever: the primary key is the promise.
-- state: waiting (fallback: sent only if no transport accepts the event by `due`),
--        pending (to send), sent, failed (gave up), cancelled (a transport accepted in time).
CREATE TABLE IF NOT EXISTS sms(
    seq        INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    contact    TEXT NOT NULL,
    phone      TEXT NOT NULL,
    state      TEXT NOT NULL,
    due        REAL NOT NULL,
    fallback   INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL NOT NULL DEFAULT 0,
    refs       TEXT,
    last_error TEXT,
    done_ts    REAL,
    maybe_sent INTEGER NOT NULL DEFAULT 0, -- an attempt's confirmation was lost
    PRIMARY KEY(seq, contact)
) WITHOUT ROWID;
-- Pictures attached to an event after it was stored (snapshot, pre-trigger frames).
CREATE TABLE IF NOT EXISTS attachments(
    seq      INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(seq, name)
) WITHOUT ROWID;
"""
# Columns added since the first release, (table, column, definition): a store made by an
# older version gets them when it is opened.
_ADDED_COLUMNS = (
    ("sms", "maybe_sent", "INTEGER NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True)
class SmsRequest:
    """An SMS that routing asks for when an event is stored."""

    contact: str
    phone: str
    due: float  # unix time from which it may go
    fallback: bool  # only if no transport has accepted the event by `due`


@dataclass(frozen=True)
class SmsRow:
    seq: int
    contact: str
    phone: str
    fallback: bool
    attempts: int
    refs: list[int]  # +CMGS references of the parts already sent (a torn multipart SMS)
    kind: str  # the event's
    maybe_sent: bool  # an earlier attempt may have reached the network: this one resends


class Delivery(NamedTuple):
    """An event a transport still owes the platform."""

    event: Event
    attempts: int  # tries so far
    next_try: float  # unix time before which it is not tried again


class Backlog(NamedTuple):
    """What a transport still owes: how many events, and since when."""

    pending: int
    oldest_ts: float | None  # unix time of the oldest event owed; None when none is


class Upload(NamedTuple):
    """A picture of an accepted event, still to be uploaded."""

    seq: int
    event_id: str
    name: str  # "snapshot", or "frame-N" for the Nth pre-trigger frame
    path: str


class SmsRecord(TypedDict):
    """One SMS row of an event as stored (``Store.sms_rows``): for reports and tests."""

    contact: str
    phone: str
    state: str  # waiting, pending, sent, failed, cancelled (see the schema)
    fallback: int  # 0 or 1
    attempts: int
    refs: str | None  # JSON list of +CMGS references
    last_error: str | None
    maybe_sent: int  # 0 or 1


@dataclass(frozen=True)
class OpenReport:
    """What happened while opening: a quarantined file is a storage fault to raise."""

    quarantined: Path | None = None
    reason: str | None = None


def is_corruption(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES
        or "malformed" in str(exc) or "not a database" in str(exc))


_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


def _reads(method: Callable[Concatenate[Store, _Args], _Result]
           ) -> Callable[Concatenate[Store, _Args], _Result]:
    """A read that fails in SQLite (I/O error, corruption) raises StorageError, which
    every caller handles, instead of a raw sqlite3 error that would kill its thread."""
    @functools.wraps(method)
    def read(self: Store, *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise StorageError(f"cannot read {self.path}: {e}") from e
    return read


class Store:
    def __init__(self, path: Path, *, check_integrity: bool = False, readonly: bool = False,
                 autocheckpoint: bool = True) -> None:
        """Open (creating) the store at ``path``. ``check_integrity``: run quick_check and
        quarantine a corrupt file (the daemon's first open does; readers do not).
        ``readonly``: for the CLI's readers (events, report, check), which may run as a
        member of the edge-alarm group that cannot write the daemon's files.
        ``autocheckpoint=False``: this connection's commits never run a WAL checkpoint
        (the owner thread's: a checkpoint on the alarm path costs a multi-MB write); a
        Checkpointer thread does it instead."""
        self._autocheckpoint = autocheckpoint
        self.path = Path(path)
        self.store_id: str | None = None  # read when opened for writing
        self._inode = 0
        self.report = OpenReport()
        if readonly:
            try:
                self._conn = self._open_readonly()
            except sqlite3.Error as e:
                raise StorageError(f"cannot read {self.path}: {e}") from e
            return
        try:
            self._conn = self._open(check_integrity)
        except sqlite3.DatabaseError as e:
            if not (check_integrity and is_corruption(e)):
                raise StorageError(f"cannot open {self.path}: {e}") from e
            self._start_fresh(f"corrupt: {e}")
        except StorageError:
            raise
        except OSError as e:  # the directory cannot be made: a file in the way, read-only fs
            raise StorageError(f"cannot open {self.path}: {e}") from e

    # ------------------------------------------------------------------ open / close

    def _open_readonly(self) -> sqlite3.Connection:
        """A reading connection for someone who may not write the directory. A WAL reader
        needs the -shm file, which the daemon's last connection removes when it stops: a
        group member could then not read at all. With no -wal file there is no writer and
        nothing beyond the main file to read, so the file is opened as immutable (no
        -shm, no locks) instead."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            conn.execute("SELECT 1 FROM events LIMIT 1")
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if Path(f"{self.path}-wal").exists() or not os.access(self.path, os.R_OK):
                raise
        conn = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, timeout=10)
        conn.execute("SELECT 1 FROM events LIMIT 1")
        return conn

    def _open(self, check_integrity: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                               check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            if mode.lower() != "wal" or sync != 2:
                raise StorageError(f"{self.path}: journal_mode={mode}, synchronous={sync}; "
                                   "need wal and FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not self._autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            if check_integrity:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {result}")
            conn.executescript(_SCHEMA)
            _add_columns(conn)
            # Names this store's numbering of events: created with the database, it changes
            # exactly when `seq` starts again from 1 (see docs/platform.md).
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('store_id', ?)",
                         (str(uuid.uuid4()),))
            self.store_id = conn.execute(
                "SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_fresh(self, reason: str) -> Path:
        """Move the corrupt store aside and open a fresh one that goes on from the old
        last seq when that is still readable, so the platform never sees a seq twice."""
        salvaged = _salvage_meta(self.path)
        moved = self._quarantine()
        self._conn = self._open(False)
        if salvaged.get("device_id"):
            self._set_meta("device_id", salvaged["device_id"])
        last_seq = salvaged.get("last_seq", "")
        if last_seq.isdigit() and int(last_seq) > 0:
            # The numbering goes on, so it keeps its name.
            self._set_meta("last_seq", last_seq)
            if salvaged.get("store_id"):
                self._set_meta("store_id", salvaged["store_id"])
                self.store_id = salvaged["store_id"]
        self.report = OpenReport(moved, reason)
        return moved

    def _quarantine(self) -> Path:
        """Move a corrupt store aside, keeping it for whoever investigates."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        log.error("store %s is corrupt; moved aside to %s", self.path, target)
        return target

    def recover_from_corruption(self) -> Path:
        """The store went corrupt while running: move it aside and start a fresh one.
        Raises StorageError when that fails too."""
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        try:
            return self._start_fresh("corrupt while running")
        except StorageError:
            raise
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot start a fresh {self.path}: {e}") from e

    def close(self) -> None:
        self._conn.close()

    def replaced(self) -> bool:
        """Whether the file at ``path`` is no longer the one this connection has open."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def pragma(self, name: str) -> Any:
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def integrity_ok(self) -> bool:
        try:
            return self._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    # ------------------------------------------------------------------ writing

    @_reads
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def claim_device(self, device_id: str) -> None:
        """Remember which device writes this store, the first time one does: a card
        cloned to another school is then refused at start (edge.cli)."""
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('device_id', ?)",
                               (device_id,))

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) "
                           "DO UPDATE SET value=excluded.value", (key, value))

    def append(self, kind: str, subject: str, time_: dt.datetime, data: dict[str, Any], *,
               transports: Iterable[str] = (), sms: Iterable[SmsRequest] = (),
               event_id: str | None = None) -> Event:
        """Commit one event with its delivery and SMS rows in one transaction; return it
        with its id and gap-free seq. ``event_id`` keeps the id of an event that was acted
        on while the store could not be written. Raises StorageError (the caller keeps the
        alarm path going regardless)."""
        event_id = event_id or new_event_id()
        payload = data_json({**data, "store_id": self.store_id})
        try:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
                seq = (int(row[0]) if row else 0) + 1
                c.execute("INSERT INTO events(seq, id, kind, subject, time, ts, data) "
                          "VALUES(?,?,?,?,?,?,?)",
                          (seq, event_id, kind, subject, time_.isoformat(),
                           time_.timestamp(), payload))
                self._set_meta("last_seq", str(seq))
                c.executemany("INSERT INTO deliveries(seq, transport) VALUES(?, ?)",
                              [(seq, t) for t in transports])
                self._insert_sms(seq, sms)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StorageError(f"cannot store {kind} event: {e}") from e
        return Event(seq=seq, id=event_id, kind=kind, subject=subject, time=time_,
                     data=json.loads(payload))

    def add_sms(self, seq: int, requests: Iterable[SmsRequest]) -> None:
        """SMS rows for an already stored event (the fallback of an event whose routing is
        decided later). Ignored for a (seq, contact) pair that already has one."""
        with self._transaction():
            self._insert_sms(seq, requests)

    def _insert_sms(self, seq: int, requests: Iterable[SmsRequest]) -> None:
        self._conn.executemany(
            "INSERT OR IGNORE INTO sms(seq, contact, phone, state, due, fallback) "
            "VALUES(?,?,?,?,?,?)",
            [(seq, r.contact, r.phone, "waiting" if r.fallback else "pending", r.due,
              int(r.fallback)) for r in requests])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # ------------------------------------------------------------------ reading

    @_reads
    def events(self, *, since: float | None = None, kind: str | None = None,
               after_seq: int = 0, limit: int | None = None,
               by_time: bool = False) -> list[Event]:
        """Events in seq (creation) order, or with ``by_time`` in the order they happened:
        a gate event carries its first edge's time, before its debounce ended."""
        sql = "SELECT seq, id, kind, subject, time, data FROM events WHERE seq > ?"
        args: list[object] = [after_seq]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY ts, seq" if by_time else " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_event(r) for r in self._conn.execute(sql, args)]

    @_reads
    def event(self, seq: int) -> Event | None:
        row = self._conn.execute("SELECT seq, id, kind, subject, time, data FROM events "
                                 "WHERE seq=?", (seq,)).fetchone()
        return _event(row) if row else None

    @_reads
    def last_event(self, subject: str, kinds: Iterable[str]) -> Event | None:
        kinds = list(kinds)
        row = self._conn.execute(
            f"SELECT seq, id, kind, subject, time, data FROM events WHERE subject=? AND kind IN "
            f"({','.join('?' * len(kinds))}) ORDER BY seq DESC LIMIT 1",
            [subject, *kinds]).fetchone()
        return _event(row) if row else None

    @_reads
    def last_seq(self) -> int:
        return int(self.get_meta("last_seq") or 0)

    @_reads
    def pending_count(self, transport: str) -> Backlog:
        """Events not yet accepted by ``transport``, and the unix time of the oldest."""
        row = self._conn.execute(
            "SELECT count(*), min(e.ts) FROM deliveries d JOIN events e ON e.seq=d.seq "
            "WHERE d.transport=? AND d.state='pending'", (transport,)).fetchone()
        return Backlog(*row)

    # ------------------------------------------------------------------ deliveries

    @_reads
    def pending_deliveries(self, transport: str, limit: int) -> list[Delivery]:
        """The oldest events ``transport`` still owes, in seq order."""
        rows = self._conn.execute(
            "SELECT e.seq, e.id, e.kind, e.subject, e.time, e.data, d.attempts, d.next_try "
            "FROM deliveries d JOIN events e ON e.seq = d.seq "
            "WHERE d.transport=? AND d.state='pending' ORDER BY d.seq LIMIT ?",
            (transport, limit)).fetchall()
        return [Delivery(_event(event), attempts, next_try)
                for *event, attempts, next_try in rows]

    def mark_accepted(self, transport: str, seqs: list[int], status: str, now: float) -> None:
        """Delivered: and, in the same transaction, the SMS fallbacks that were waiting
        for this acceptance are no longer owed."""
        with self._transaction() as c:
            c.executemany("UPDATE deliveries SET state='accepted', last_status=?, done_ts=?, "
                          "attempts=attempts+1 WHERE seq=? AND transport=?",
                          [(status, now, s, transport) for s in seqs])
            c.executemany("UPDATE sms SET state='cancelled', done_ts=? "
                          "WHERE seq=? AND state='waiting'", [(now, s) for s in seqs])

    def mark_retry(self, transport: str, seqs: list[int], status: str, next_try: float) -> None:
        with self._transaction() as c:
            c.executemany("UPDATE deliveries SET attempts=attempts+1, last_status=?, next_try=? "
                          "WHERE seq=? AND transport=?",
                          [(status, next_try, s, transport) for s in seqs])

    def mark_rejected(self, transport: str, seq: int, status: str, now: float) -> None:
        with self._transaction() as c:
            c.execute("UPDATE deliveries SET state='rejected', last_status=?, done_ts=?, "
                      "attempts=attempts+1 WHERE seq=? AND transport=?",
                      (status, now, seq, transport))

    # ------------------------------------------------------------------ SMS outbox

    @_reads
    def due_sms(self, now: float, limit: int = 20, horizon_s: float = 3600.0,
                ranks: Mapping[str, int] | None = None) -> list[SmsRow]:
        """SMS to send now: pending ones whose retry time has come, and fallbacks whose
        deadline passed with no transport having accepted the event. Most urgent first,
        by ``ranks`` of the event's kind (lowest first; kinds not in it after all others),
        then oldest event first. A time more than ``horizon_s`` ahead cannot have been
        set by us: the clock was stepped back since, and the row is due now rather than
        days from now."""
        later = now + horizon_s
        ranks = dict(ranks or {})
        by_rank = ""
        if ranks:
            whens = " ".join("WHEN ? THEN ?" for _ in ranks)
            by_rank = f"CASE e.kind {whens} ELSE {int(max(ranks.values())) + 1} END, "
        rows = self._conn.execute(
            "SELECT s.seq, s.contact, s.phone, s.fallback, s.attempts, s.refs, e.kind, "
            "s.maybe_sent FROM sms s JOIN events e ON e.seq = s.seq "
            "WHERE (s.next_try <= ? OR s.next_try > ?) AND (s.state='pending' OR "
            "(s.state='waiting' AND (s.due <= ? OR s.due > ?) "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq=s.seq "
            f"AND d.state='accepted'))) ORDER BY {by_rank}s.seq, s.contact LIMIT ?",
            (now, later, now, later, *itertools.chain(*ranks.items()), limit)).fetchall()
        return [SmsRow(seq=seq, contact=contact, phone=phone, fallback=bool(fallback),
                       attempts=attempts, refs=json.loads(refs) if refs else [], kind=kind,
                       maybe_sent=bool(maybe_sent))
                for seq, contact, phone, fallback, attempts, refs, kind, maybe_sent in rows]

    def shift_sms_times(self, step_s: float) -> int:
        """The wall clock was stepped by ``step_s``: SMS not yet sent keep the same time
        left until their fallback deadline and retry (a clock set forward at boot must not
        send every waiting fallback at once). Returns how many rows moved."""
        with self._transaction() as c:
            return c.execute(
                "UPDATE sms SET due=due+?, next_try=CASE WHEN next_try > 0 THEN next_try+? "
                "ELSE 0 END WHERE state IN ('pending','waiting')", (step_s, step_s)).rowcount

    @_reads
    def next_sms_due(self) -> float | None:
        row = self._conn.execute(
            "SELECT min(max(due, next_try)) FROM sms WHERE state IN ('pending','waiting')"
        ).fetchone()
        return row[0]

    def mark_sms(self, seq: int, contact: str, state: str, *, now: float,
                 refs: list[int] | None = None, error: str | None = None,
                 next_try: float = 0.0, maybe_sent: bool = False) -> None:
        """Record the outcome of one send: 'sent' (with the +CMGS references), 'pending'
        (retry at next_try, with the references of the parts that did go) or 'failed'
        (given up). ``maybe_sent``: this attempt's confirmation was lost (the network may
        have the message); once set, it stays."""
        with self._transaction() as c:
            c.execute("UPDATE sms SET state=?, attempts=attempts+1, refs=?, last_error=?, "
                      "next_try=?, done_ts=?, maybe_sent=max(maybe_sent, ?) "
                      "WHERE seq=? AND contact=?",
                      (state, json.dumps(refs) if refs is not None else None, error, next_try,
                       now if state != "pending" else None, int(maybe_sent), seq, contact))

    @_reads
    def delivered_anywhere(self, seq: int) -> bool:
        """Whether a transport accepted event ``seq`` or the network took one of its SMS
        (+CMGS): the guard's lamp goes steady."""
        return self._conn.execute(
            "SELECT EXISTS(SELECT 1 FROM deliveries WHERE seq=? AND state='accepted') OR "
            "EXISTS(SELECT 1 FROM sms WHERE seq=? AND state='sent')", (seq, seq)
        ).fetchone()[0] == 1

    @_reads
    def sms_rows(self, seq: int) -> list[SmsRecord]:
        cur = self._conn.execute("SELECT contact, phone, state, fallback, attempts, refs, "
                                 "last_error, maybe_sent FROM sms WHERE seq=? ORDER BY "
                                 "contact", (seq,))
        return [SmsRecord(contact=contact, phone=phone, state=state, fallback=fallback,
                          attempts=attempts, refs=refs, last_error=last_error,
                          maybe_sent=maybe_sent)
                for contact, phone, state, fallback, attempts, refs, last_error, maybe_sent
                in cur.fetchall()]

    # ------------------------------------------------------------------ attachments

    def attach(self, seq: int, files: list[tuple[str, str, str, int]],
               data_update: dict[str, Any]) -> None:
        """Record pictures of event ``seq`` ((name, path, sha256, bytes) each) and add
        ``data_update`` (snapshot_sha256…) to its data, in one transaction."""
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO attachments(seq, name, path, sha256, bytes) "
                          "VALUES(?,?,?,?,?)", [(seq, *f) for f in files])
            self._merge_data(seq, data_update)

    def update_event_data(self, seq: int, data_update: dict[str, Any]) -> None:
        with self._transaction():
            self._merge_data(seq, data_update)

    def _merge_data(self, seq: int, data_update: dict[str, Any]) -> None:
        row = self._conn.execute("SELECT data FROM events WHERE seq=?", (seq,)).fetchone()
        if row is not None:
            data = json.loads(row[0])
            data.update(data_update)
            self._conn.execute("UPDATE events SET data=? WHERE seq=?", (data_json(data), seq))

    @_reads
    def attachments_to_upload(self, transport: str, limit: int = 10) -> list[Upload]:
        """Pictures whose event ``transport`` has accepted but which are not uploaded yet,
        oldest first."""
        return [Upload(*row) for row in self._conn.execute(
            "SELECT a.seq, e.id, a.name, a.path FROM attachments a "
            "JOIN events e ON e.seq = a.seq JOIN deliveries d ON d.seq = a.seq "
            "WHERE a.uploaded = 0 AND d.transport = ? AND d.state = 'accepted' "
            # The snapshot first, then frames 1, 2 … 10 in number order (not as text).
            "ORDER BY a.seq, a.name != 'snapshot', CAST(substr(a.name, 7) AS INTEGER) "
            "LIMIT ?", (transport, limit))]

    def mark_uploaded(self, seq: int, name: str) -> None:
        with self._transaction() as c:
            c.execute("UPDATE attachments SET uploaded=1 WHERE seq=? AND name=?", (seq, name))

    @_reads
    def uploaded_paths(self) -> set[str]:
        return {r[0] for r in self._conn.execute(
            "SELECT path FROM attachments WHERE uploaded=1")}

    # ------------------------------------------------------------------ retention

    def purge(self, older_than: float | None) -> int:
        """Delete events older than ``older_than`` (unix time; None: none for their age),
        and heartbeats of any age, that owe nothing any more (no pending delivery, no SMS
        still to send) and hold no state restored at start: the latest event of each
        STATE_FAMILIES kind group per subject stays whatever its age (a latched alarm, a
        gate open for weeks). Returns how many went."""
        latest = " UNION ALL ".join(
            f"SELECT max(seq) FROM events WHERE kind IN ({','.join('?' * len(kinds))}) "
            "GROUP BY subject" for kinds in STATE_FAMILIES)
        with self._transaction():
            cur = self._conn.execute(
                "DELETE FROM events WHERE (ts < ? OR kind = 'heartbeat') AND seq NOT IN "
                "(SELECT seq FROM deliveries WHERE state='pending') AND seq NOT IN "
                "(SELECT seq FROM sms WHERE state IN ('pending','waiting')) AND seq NOT IN "
                f"({latest})",
                (-math.inf if older_than is None else older_than,
                 *(kind for kinds in STATE_FAMILIES for kind in kinds)))
            return cur.rowcount


class Checkpointer:
    """Folds the WAL back into the database every second on a thread of its own, so that
    the owner's commits (autocheckpoint off) never pay for a checkpoint, and the WAL stays
    small enough to be rewound and overwritten instead of growing with every commit."""

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.checkpoint()
        self.checkpoint()

    def checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=5)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error as e:
            log.warning("WAL checkpoint failed: %s", e)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StorageError(str(e)) from e
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self.conn.in_transaction:  # SQLite may have rolled back already
                    self.conn.execute("ROLLBACK")
                raise StorageError(str(e)) from e
        else:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(str(exc)) from exc
        return False


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _salvage_meta(path: Path) -> dict[str, str]:
    """What can still be read of a corrupt store's meta table (nothing: {})."""
    try:
        old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {str(k): str(v) for k, v in old.execute("SELECT key, value FROM meta")}
        finally:
            old.close()
    except sqlite3.Error:
        return {}


def device_of_store(path: Path) -> str | None:
    """The device_id the store at ``path`` was written for, None when there is no store,
    it is unreadable, or it predates the record (the daemon then claims it)."""
    if not Path(path).exists():
        return None
    try:
        store = Store(path, readonly=True)
    except StorageError:
        return None
    try:
        return store.get_meta("device_id")
    except StorageError:
        return None
    finally:
        store.close()


def _event(row: Sequence[Any]) -> Event:
    seq, id_, kind, subject, time_, data = row
    return Event(seq=seq, id=id_, kind=kind, subject=subject,
                 time=dt.datetime.fromisoformat(time_), data=json.loads(data))
