"""The health of the `storage` part: what fails in storage, by source, reported as one
part in fault with the latest reason, recovered once no source fails."""

from __future__ import annotations

import logging
import shutil
from typing import Callable

from edge.config import Storage

log = logging.getLogger(__name__)

# Store failures that end as soon as one write succeeds.
WRITE_FAILURES = ("unwritable", "full", "events_dropped")


class StorageHealth:
    """Owner thread only. ``failed(part, reason, detail)`` and ``ok(part)`` report the part
    (the daemon's part_failed and part_ok)."""

    def __init__(self, cfg: Storage, failed: Callable[[str, str, str], None],
                 ok: Callable[[str], None]):
        self._cfg = cfg
        self._failed = failed
        self._ok = ok
        # What fails, by source ("store", "space", "pictures"): (reason, detail).
        self._troubles: dict[str, tuple[str, str]] = {}

    def failing(self, source: str) -> bool:
        return source in self._troubles

    def trouble(self, source: str, reason: str | None, detail: str = "") -> None:
        """What fails in storage, by source: "store" (the event store: unwritable, full,
        corrupt, unreadable, events_dropped), "space" (low_space), "pictures" (the camera
        worker's files); ``reason`` None: that source works again. The part is in fault
        while any source fails, with the latest reason; recovered once none does."""
        known = self._troubles.get(source)
        if reason is None:
            if known is None:
                return
            del self._troubles[source]
        elif known is not None and known[0] == reason:
            self._troubles[source] = (reason, detail)  # nothing new to report
            return
        else:
            self._troubles.pop(source, None)  # the latest reason is the one shown
            self._troubles[source] = (reason, detail)
        if self._troubles:
            reason, detail = list(self._troubles.values())[-1]
            self._failed("storage", reason, detail)
        else:
            self._ok("storage")

    def writes_work(self, *reasons: str) -> None:
        """The store took a write: its trouble ends if it was one of ``reasons``."""
        if self._troubles.get("store", ("",))[0] in reasons:
            self.trouble("store", None)

    def check_free_space(self) -> None:
        """Low free space is a fault of its own ([storage] min_free_mb), even while every
        write still succeeds; it clears with a margin (Storage.space_low)."""
        try:
            free = shutil.disk_usage(self._cfg.path).free
        except OSError:
            return  # no directory: opening the store fails and says so
        if self._cfg.space_low(free, was_low=self.failing("space")):
            if not self.failing("space"):
                log.error("%d MB free on %s, below [storage] min_free_mb", free >> 20,
                          self._cfg.path)
            self.trouble("space", "low_space", f"{free >> 20} MB free, below "
                         f"min_free_mb = {self._cfg.min_free_mb}")
        else:
            self.trouble("space", None)
