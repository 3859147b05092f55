"""Events acted on while the store could not be written, held in memory until it can be:
written back in creation order (the platform's `sequence` follows it), within a bound."""

from __future__ import annotations

import collections
import logging
from typing import Callable, Iterator

from edge.events import ALARM_KINDS, Event

log = logging.getLogger(__name__)

# Events kept in memory while the store cannot be written, at most (a few MB): beyond it
# the oldest event that is not an alarm goes first.
MAX_UNSTORED = 10_000
# Held events written per turn of the owner loop (each is a synchronous commit): the rest
# follow on the next turns, so a long backlog never holds up an edge or a timer.
FLUSH_BATCH = 100


class UnstoredEvents:
    """The held events, oldest first, and how many were dropped for want of room. Owner
    thread only. ``post``: runs a function on the owner loop's next turn; ``retry``: writes
    the rest of a backlog there (the daemon's storage retry)."""

    def __init__(self, post: Callable[[Callable[[], None]], None],
                 retry: Callable[[], None]):
        self._events: collections.deque[Event] = collections.deque()
        self.dropped = 0
        self._post = post
        self._retry = retry
        self._retry_posted = False

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def make_room(self) -> Event | None:
        """Before holding one more: when MAX_UNSTORED are held, drop the oldest that is not
        an alarm (the oldest of all if only alarms are held) and return it."""
        if len(self._events) < MAX_UNSTORED:
            return None
        lost = next((e for e in self._events if e.kind not in ALARM_KINDS), self._events[0])
        self._events.remove(lost)
        self.dropped += 1
        log.error("memory holds %d unstored events: %s event %s dropped (%d so far)",
                  MAX_UNSTORED, lost.kind, lost.id, self.dropped)
        return lost

    def hold(self, event: Event) -> None:
        self._events.append(event)

    def flush(self, write: Callable[[Event], Event | None]) -> bool:
        """Write the held events, oldest first, FLUSH_BATCH of them now and the rest on the
        loop's next turns; ``write`` returns None when the store refused. True when none is
        left."""
        for _ in range(min(FLUSH_BATCH, len(self._events))):
            if write(self._events[0]) is None:
                return False
            self._events.popleft()
        if self._events and not self._retry_posted:
            self._retry_posted = True
            self._post(self._write_more)
        return not self._events

    def _write_more(self) -> None:
        self._retry_posted = False
        self._retry()
