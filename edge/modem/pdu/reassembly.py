"""Concatenated SMS made whole again, with a bound on what is held."""

from __future__ import annotations

import dataclasses

from edge.modem.pdu.message import Deliver


class Reassembler:
    """Collects the parts of concatenated messages until each is whole.

    Incomplete sets are dropped after ``max_age`` seconds, and beyond ``max_pending`` sets
    the oldest goes first, so a stranger sending first parts cannot fill the memory.
    ``now`` is any clock the caller uses consistently (time.monotonic()).
    """

    def __init__(self, max_age: float = 24 * 3600, max_pending: int = 64) -> None:
        self._max_age = max_age
        self._max_pending = max_pending
        # (sender, type of number, reference, total) -> (time of the first part, index -> part)
        self._pending: dict[tuple[str, int, int, int], tuple[float, dict[int, Deliver]]] = {}

    def add(self, part: Deliver, now: float) -> Deliver | None:
        """Return the whole message (concat None) once its last part is added, else None."""
        self._forget_older_than(now - self._max_age)
        if part.concat is None or part.concat[1] == 1:
            return dataclasses.replace(part, concat=None)
        reference, total, index = part.concat
        # A name and a number of the same characters are two senders.
        key = (part.sender, part.type_of_number, reference, total)
        if key not in self._pending:
            while len(self._pending) >= self._max_pending:
                del self._pending[next(iter(self._pending))]  # dicts keep insertion order
            self._pending[key] = (now, {})
        parts = self._pending[key][1]
        parts.setdefault(index, part)  # a repeated part changes nothing
        if len(parts) < total:
            return None
        del self._pending[key]
        ordered = [parts[i] for i in range(1, total + 1)]
        return dataclasses.replace(ordered[0], text="".join(p.text for p in ordered), concat=None)

    @property
    def pending(self) -> int:
        """How many incomplete messages are held."""
        return len(self._pending)

    def _forget_older_than(self, oldest: float) -> None:
        for key in [key for key, (first_seen, _) in self._pending.items() if first_seen < oldest]:
            del self._pending[key]
