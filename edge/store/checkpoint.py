"""WAL checkpoints off the owner thread."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Checkpointer:
    """Folds the WAL back into the database every second on a thread of its own, so that
    the owner's commits (autocheckpoint off) never pay for a checkpoint, and the WAL stays
    small enough to be rewound and overwritten instead of growing with every commit."""

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._wal = path.with_name(path.name + "-wal")
        # The WAL's (size, mtime) when it was last checkpointed: unchanged, nothing was
        # committed since, and an idle daemon opens no connection and touches no file.
        self._checkpointed: tuple[int, int] | None = None
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
        """A checkpoint, unless the WAL is as it was at the last one (or there is none)."""
        try:
            wal = self._wal.stat()
        except OSError:
            return  # no WAL: nothing committed since the store was opened
        seen = (wal.st_size, wal.st_mtime_ns)
        if seen == self._checkpointed:
            return
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
            # As seen before the checkpoint: a commit during it changed the WAL since, and
            # is folded back at the next tick.
            self._checkpointed = seen
