"""WAL checkpoints off the owner thread."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


# A busy store is folded back once its WAL has changed in this many ticks (seconds), so
# the WAL holds a few seconds of commits and is rewound, not grown.
FOLD_AFTER_CHANGES = 10
# An idle one waits this long after its oldest change not folded back: a heartbeat every
# few minutes would otherwise write its pages twice more (into the database, then a new
# WAL header) with three more fsyncs each time, the most of an idle daemon's SD-card wear.
# What waits is in the WAL, synced: as durable as folded back.
FOLD_AFTER_S = 1800.0


class Checkpointer:
    """Folds the WAL back into the database on a thread of its own (looking every
    ``every_s``), so that the owner's commits (autocheckpoint off) never pay for a
    checkpoint, and the WAL stays small enough to be rewound and overwritten instead of
    growing with every commit."""

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._wal = path.with_name(path.name + "-wal")
        # The WAL's (size, mtime) as last seen, the ticks it changed in and the monotonic
        # time of its first change since the last full checkpoint (None: none since).
        self._seen: tuple[int, int] | None = None
        self._changes = 0
        self._first_change: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self._due():
                self.checkpoint()
        self.checkpoint()

    def _due(self) -> bool:
        """Whether the WAL holds changes to fold back: FOLD_AFTER_CHANGES ticks of them,
        or one FOLD_AFTER_S old."""
        try:
            wal = self._wal.stat()
        except OSError:
            return False  # no WAL: nothing committed since the store was opened
        seen = (wal.st_size, wal.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            self._changes += 1
            if self._first_change is None:
                self._first_change = time.monotonic()
        return self._first_change is not None and (
            self._changes >= FOLD_AFTER_CHANGES
            or time.monotonic() - self._first_change >= FOLD_AFTER_S)

    def checkpoint(self) -> None:
        """Fold the WAL back into the database (as much as readers allow)."""
        try:
            conn = sqlite3.connect(self.path, timeout=5)
            try:
                _, wal_frames, folded = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as e:
            log.warning("WAL checkpoint failed: %s", e)
            return
        if folded == wal_frames:  # not all of it when a reader held frames: again next tick
            # A commit during the checkpoint changed the WAL since it was last seen: the
            # next tick counts it as a change still to fold back.
            self._changes, self._first_change = 0, None
