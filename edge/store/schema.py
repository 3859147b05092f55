"""The store's tables, the columns added to them since the first release, and what
counts as a corrupt file."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# meta: the last DC-09 message number reserved (edge/sia/sequence.py)
SIA_SEQUENCE = "sia_sequence"

_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_FULL = 13

SCHEMA = """
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
-- What each transport still owes the platform: pending → accepted | rejected |
-- unverified (acknowledged without authentication: counts for no SMS fallback).
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


def is_corruption(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES
        or "malformed" in str(exc) or "not a database" in str(exc))


def is_full(exc: BaseException | None) -> bool:
    """The disk (or the file's size limit) is full."""
    return isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "is full" in str(exc))


def add_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


# What a corrupt store still owes, by table: the rows a fresh store that goes on with its
# numbering takes over, with their events.
_OWED = {"deliveries": "state = 'pending'", "sms": "state IN ('pending', 'waiting')"}

# Rows read from a corrupt store: (table, its columns, the rows), in the order to insert.
Salvaged = list[tuple[str, list[str], list[tuple[Any, ...]]]]


@contextmanager
def _corrupt_file(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to a corrupt store, None when it cannot be opened. An empty
    file is not opened: SQLite would delete the log beside it, which is kept aside."""
    if not path.exists() or path.stat().st_size == 0:
        yield None
        return
    try:
        old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        yield None
        return
    try:
        yield old
    finally:
        old.close()


def salvage_meta(path: Path) -> dict[str, str]:
    """What can still be read of a corrupt store's meta table (nothing: {})."""
    with _corrupt_file(path) as old:
        try:
            return {} if old is None else {
                str(k): str(v) for k, v in old.execute("SELECT key, value FROM meta")}
        except sqlite3.Error:
            return {}


def salvage_owed(path: Path) -> Salvaged:
    """What can still be read of a corrupt store's owed rows (deliveries not made, SMS
    not sent) and of their events: the events first. A table that cannot be read gives
    nothing, and a row whose event cannot be read is left out."""
    with _corrupt_file(path) as old:
        if old is None:
            return []
        owed = [_read_rows(old, table, f"WHERE {where}") for table, where in _OWED.items()]
        seqs = sorted({row[columns.index("seq")] for _, columns, rows in owed for row in rows})
        events: list[tuple[Any, ...]] = []
        columns: list[str] = []
        for seq in seqs:  # one by one: a damaged page loses only the events on it
            _, columns, found = _read_rows(old, "events", "WHERE seq = ?", (seq,))
            events += found
        kept = {row[columns.index("seq")] for row in events}
        return [("events", columns, events)] + [
            (table, cols, [r for r in rows if r[cols.index("seq")] in kept])
            for table, cols, rows in owed]


def _read_rows(conn: sqlite3.Connection, table: str, where: str, args: tuple[Any, ...] = ()
               ) -> tuple[str, list[str], list[tuple[Any, ...]]]:
    """``table``'s rows matching ``where`` with every column; none when they cannot be
    read."""
    try:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        if not columns:
            return table, [], []
        return table, columns, conn.execute(
            f"SELECT {', '.join(columns)} FROM {table} {where}", args).fetchall()
    except sqlite3.Error:
        return table, [], []

