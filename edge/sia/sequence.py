"""The DC-09 message numbers, 0001-9999, going on across restarts.

A receiver de-duplicates by sequence number within a window: a daemon restarted within it
that counted from 0001 again would have its first messages taken for repeats of the last
start's and dropped. So numbers are reserved in the store a block at a time, before the
first of them is used, and a start goes on after the last block reserved: one write per
RESERVED_AT_ONCE messages (NULL messages once a minute cost a write every 100 minutes),
never one per message, and a restart skips what was left of its block, which a
receiver takes as it takes any number (it answers with the number it got).
"""

from __future__ import annotations

from typing import Callable

from edge.sia.frame import SEQUENCE_MAX

RESERVED_AT_ONCE = 100


def after(number: int, count: int = 1) -> int:
    """The number ``count`` messages after ``number``: 9999 is followed by 0001."""
    return (number + count - 1) % SEQUENCE_MAX + 1


def stored_number(text: str | None) -> int:
    """The last number reserved, as the store holds it; 0 (none: start at 0001) when
    absent or not a number of 1-9999."""
    if text is None or not text.isdigit() or not 1 <= int(text) <= SEQUENCE_MAX:
        return 0
    return int(text)


class Sequence:
    """Each new message the next number. ``reserve(last)`` keeps ``last`` in the store as
    the last number of a new block; False when it could not (the store is full or gone):
    the numbers are used all the same (an alarm is not held back for its number) and the
    next message tries again."""

    def __init__(self, last_reserved: int, reserve: Callable[[int], bool]):
        self._last = last_reserved
        self._unused = 0  # numbers reserved and not used yet
        self._reserve = reserve

    def next(self) -> int:
        if self._unused == 0 and self._reserve(after(self._last, RESERVED_AT_ONCE)):
            self._unused = RESERVED_AT_ONCE
        self._unused = max(self._unused - 1, 0)
        self._last = after(self._last)
        return self._last
