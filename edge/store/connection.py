"""The store's file: opening it (creating, migrating, checking), moving a corrupt one aside
and starting afresh, its meta table, and the transaction and read wrappers the other
parts of the store write and read through."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Concatenate, Literal, Mapping, ParamSpec, TypeVar

from edge.errors import StorageError
from edge.store.schema import (SCHEMA, SIA_SEQUENCE, Salvaged, add_columns, is_corruption,
                               salvage_meta, salvage_owed)
from edge.store.wal import wal_damage

log = logging.getLogger(__name__)

# Meta values that are a wall-clock time some timer counts down to (unix seconds, "" when
# none): moved with a clock step as the outbox's deadlines are (shift_wall_times).
ESCALATION_DUE = "escalation_due"  # when the escalation's next call rings (edge.escalation)
# When drill mode and a walk test end (edge.timed_mode: a mode's name + "_until").
TIMED_MODE_ENDS = ("drill_until", "walktest_until")
WALL_TIME_META = (ESCALATION_DUE, *TIMED_MODE_ENDS)


@dataclass(frozen=True)
class OpenReport:
    """What happened while opening: a quarantined file is a storage fault to raise."""

    quarantined: Path | None = None
    reason: str | None = None


# Told when a read or a write of a connection finds its file damaged (SQLITE_CORRUPT,
# SQLITE_NOTADB), on the thread that found it: the file's inode (which store: one moved
# aside is not the one in use) and what SQLite said.
CorruptionSeen = Callable[[int, str], None]

_Self = TypeVar("_Self", bound="StoreFile")
_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


def reads(method: Callable[Concatenate[_Self, _Args], _Result]
          ) -> Callable[Concatenate[_Self, _Args], _Result]:
    """A read that fails in SQLite (I/O error, corruption) raises StorageError, which
    every caller handles, instead of a raw sqlite3 error that would kill its thread."""
    @functools.wraps(method)
    def read(self: _Self, *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self.failure(e, f"cannot read {self.path}: {e}") from e
    return read


class StoreFile:
    """One connection to the store's file; the Store's parts add what they read and write."""

    def __init__(self, path: Path, *, check_integrity: bool = False, readonly: bool = False,
                 autocheckpoint: bool = True, on_corrupt: CorruptionSeen | None = None
                 ) -> None:
        """Open (creating) the store at ``path``. ``check_integrity``: run quick_check and
        quarantine a corrupt file (the daemon's first open does; readers do not).
        ``readonly``: for the CLI's readers (events, report, check), which may run as a
        member of the edge-alarm group that cannot write the daemon's files.
        ``autocheckpoint=False``: this connection's commits never run a WAL checkpoint
        (the owner thread's: a checkpoint on the alarm path costs a multi-MB write); a
        Checkpointer thread does it instead. ``on_corrupt``: told when a read or write
        finds the file damaged (the daemon's and its workers' connections)."""
        self._autocheckpoint = autocheckpoint
        self._on_corrupt = on_corrupt
        self.path = Path(path)
        self.store_id: str | None = None  # read when opened for writing
        self.inode = 0  # of the file opened for writing
        self.report = OpenReport()
        if readonly:
            try:
                self._conn = self._open_readonly()
            except sqlite3.Error as e:
                raise StorageError(f"cannot read {self.path}: {e}") from e
            return
        try:
            # A damaged log is found before SQLite opens the store and drops what follows
            # the damage; the numbers of the commits lost with it are not known.
            damage = wal_damage(self.path) if check_integrity else None
            numbering_known = damage is None
            if damage is None:
                self._conn = self._open(check_integrity)
            else:
                damage = f"the write-ahead log {self.path.name}-wal: {damage}"
        except sqlite3.DatabaseError as e:
            if not (check_integrity and is_corruption(e)):
                raise StorageError(f"cannot open {self.path}: {e}") from e
            damage = str(e)
        except StorageError:
            raise
        except OSError as e:  # the directory cannot be made: a file in the way, read-only fs
            raise StorageError(f"cannot open {self.path}: {e}") from e
        if damage is not None:
            try:
                self._start_fresh(f"corrupt: {damage}", numbering_known=numbering_known)
            except (OSError, sqlite3.Error) as e:
                raise StorageError(f"cannot start a fresh {self.path}: {e}") from e

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
            conn.executescript(SCHEMA)
            add_columns(conn)
            # Names this store's numbering of events: created with the database, it changes
            # exactly when `seq` starts again from 1 (see docs/platform.md).
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('store_id', ?)",
                         (str(uuid.uuid4()),))
            self.store_id = conn.execute(
                "SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
            self.inode = os.stat(self.path).st_ino
        except BaseException:
            conn.close()
            raise
        return conn

    def _start_fresh(self, reason: str, *, numbering_known: bool = True) -> Path:
        """Move the corrupt store aside and open a fresh one that goes on from the old
        last seq when that is still readable (and, with ``numbering_known`` False, not
        perhaps lost with the damage), so the platform never sees a seq twice: otherwise
        the fresh store starts a new numbering under a new store_id. When it goes on, the
        fresh store takes over what can still be read of what the old one owed (events not
        yet delivered or texted, with those rows, under their old seq)."""
        salvaged = salvage_meta(self.path)
        last_seq = salvaged.get("last_seq", "")
        goes_on = numbering_known and last_seq.isdigit() and int(last_seq) > 0
        owed = salvage_owed(self.path) if goes_on else []
        moved = self._quarantine(reason)
        self._conn = self._open(False)
        # The device's name, and the alarm centre's message numbers, which a receiver
        # must not see start again (edge/sia/sequence.py).
        for key in ("device_id", SIA_SEQUENCE):
            if salvaged.get(key):
                self._set_meta(key, salvaged[key])
        if goes_on:
            # The numbering goes on, so it keeps its name.
            self._set_meta("last_seq", last_seq)
            if salvaged.get("store_id"):
                self._set_meta("store_id", salvaged["store_id"])
                self.store_id = salvaged["store_id"]
            self._take_over(owed)
        self.report = OpenReport(moved, reason)
        return moved

    def _take_over(self, owed: Salvaged) -> None:
        """The rows salvaged from a corrupt store, into this fresh one (the fresh store
        goes on without them when it cannot take them)."""
        try:
            with self._transaction() as c:
                for table, columns, rows in owed:
                    if rows:
                        c.executemany(f"INSERT OR IGNORE INTO {table}({', '.join(columns)}) "
                                      f"VALUES({', '.join('?' * len(columns))})", rows)
        except StorageError as e:
            log.error("what the damaged store owed is not taken over: %s", e)
            return
        events = next((rows for table, _, rows in owed if table == "events"), [])
        if events:
            log.error("%d events still owed to the platform or by SMS taken over from the "
                      "damaged store", len(events))

    def _quarantine(self, reason: str) -> Path:
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
        log.error("store %s is %s; moved aside to %s", self.path, reason, target)
        return target

    def recover_from_corruption(self) -> Path:
        """The store went corrupt while running: move it aside and start a fresh one, as
        the first open does with a store found corrupt. Raises StorageError when that fails
        (this connection is then closed)."""
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

    def failure(self, error: sqlite3.Error, message: str) -> StorageError:
        """The StorageError a read or write that failed in SQLite raises; a damaged file is
        told to ``on_corrupt`` first."""
        if self._on_corrupt is not None and is_corruption(error):
            self._on_corrupt(self.inode, str(error))
        return StorageError(message)

    def replaced(self) -> bool:
        """Whether the file at ``path`` is no longer the one this connection has open."""
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def pragma(self, name: str) -> Any:
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def integrity_ok(self) -> bool:
        try:
            return self._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    # ------------------------------------------------------------------ meta

    @reads
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
        self.set_meta_values({key: value})

    def set_meta_values(self, values: Mapping[str, str]) -> None:
        """Several meta values, in one transaction."""
        with self._transaction():
            for key, value in values.items():
                self._set_meta(key, value)

    def _shift_meta_times(self, conn: sqlite3.Connection, step_s: float) -> int:
        """Inside the caller's transaction: the WALL_TIME_META values set moved by
        ``step_s``; how many."""
        keys = ",".join("?" * len(WALL_TIME_META))
        return conn.execute(f"UPDATE meta SET value=CAST(value AS REAL)+? WHERE key IN "
                            f"({keys}) AND value != ''", (step_s, *WALL_TIME_META)).rowcount

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) "
                           "DO UPDATE SET value=excluded.value", (key, value))

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    def __init__(self, store: StoreFile) -> None:
        self.store = store
        self.conn = store._conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self.store.failure(e, str(e)) from e
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self.conn.in_transaction:  # SQLite may have rolled back already
                    self.conn.execute("ROLLBACK")
                raise self.store.failure(e, str(e)) from e
        else:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.store.failure(exc, str(exc)) from exc
        return False

