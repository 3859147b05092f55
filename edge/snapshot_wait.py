"""How long a transport holds an event back for its snapshot, so that the CloudEvent it
sends carries snapshot_sha256 (every transport sends the same document of an event)."""

from __future__ import annotations

from edge.clock import Clock
from edge.config import Config
from edge.events import Event
from edge.routing import snapshot_wanted

# The camera normally answers within a second, and the SMS never waits for it.
SNAPSHOT_WAIT_S = 10.0


class SnapshotWait:
    """One transport's wait for the picture of the event at the head of its queue."""

    def __init__(self, cfg: Config, clock: Clock):
        self._cfg = cfg
        self._clock = clock
        # (seq, monotonic time) of the event first found waiting for its picture: the
        # wait is bounded on the monotonic clock too, whatever the wall clock does.
        self._waiting_since: tuple[int, float] | None = None

    def remaining(self, event: Event, now: float) -> float:
        """Seconds ``event`` should still wait for its snapshot (0: send it now); ``now``
        the unix time."""
        if not snapshot_wanted(event, self._cfg):
            return 0.0
        if "snapshot_sha256" in event.data or "snapshot_error" in event.data:
            return 0.0
        mono = self._clock.monotonic()
        if self._waiting_since is None or self._waiting_since[0] != event.seq:
            self._waiting_since = (event.seq, mono)
        waited = mono - self._waiting_since[1]
        # A time stamped ahead of the clock (stepped back since) has no age to go by.
        age = max(waited, now - event.ts)
        return max(0.0, SNAPSHOT_WAIT_S - age)
