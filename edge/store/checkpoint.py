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
