"""The durable event store: one SQLite file, storage.path/events.db.

Every event is committed here before anything else is done with it, together with the rows
that say what is still owed for it: one delivery row per transport and one SMS row per
contact that routing names. Workers read those rows, do their slow I/O, and write the
outcome back in one transaction, so a crash anywhere leaves rows the next start picks up.

WAL with synchronous=FULL: a commit that returned survives a power cut. A store that SQLite
finds corrupt is moved aside (kept for forensics, never deleted) and a fresh one started.

One Store object per thread (an sqlite3 connection is not shared between threads).

The parts: schema.py (tables, migrations, corruption), connection.py (opening, recovery,
meta, transactions), event_log.py (events, pictures added, retention), outbox.py (SMS
rows), deliveries.py (what each transport owes, pictures to upload), rows.py (the row
types), checkpoint.py (WAL checkpoints off the owner thread).
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import StorageError
from edge.store.checkpoint import Checkpointer
from edge.store.connection import ESCALATION_DUE, WALL_TIME_META, CorruptionSeen, OpenReport
from edge.store.deliveries import Deliveries
from edge.store.event_log import EventLog
from edge.store.outbox import SmsOutbox
from edge.store.rows import (Backlog, Delivery, Reach, SmsRecord, SmsRequest, SmsRow,
                             Upload)
from edge.store.schema import is_corruption, is_full

__all__ = ["Backlog", "Checkpointer", "CorruptionSeen", "Delivery", "ESCALATION_DUE",
           "OpenReport", "Reach", "SmsRecord", "SmsRequest", "SmsRow", "Store", "Upload",
           "WALL_TIME_META", "device_of_store", "is_corruption", "is_full"]


class Store(EventLog, SmsOutbox, Deliveries):
    """The store: one connection to the file, with every part's reads and writes."""


def device_of_store(path: Path) -> str | None:
    """The device_id the store at ``path`` was written for, None when there is no store,
    it is unreadable, or it predates the record (the daemon then claims it). An empty
    file is not opened: SQLite would drop the log beside it, which the daemon's open
    must still find (edge.store.wal)."""
    if not Path(path).exists() or Path(path).stat().st_size == 0:
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
