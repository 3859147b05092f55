"""A mode that is on for a while and ends by itself (drill mode, walk test): its end kept
in monotonic time, so a clock step neither ends it early nor stretches it, and in the
store's meta in wall time, so a restart carries it on."""

from __future__ import annotations

import datetime as dt

from edge.clock import Clock
from edge.store import Store

MAX_MODE_S = 86400  # never longer than a day, whatever a stored end says


class TimedMode:
    """``name``: the prefix of its meta keys (``drill`` → drill_until, drill_account)."""

    def __init__(self, name: str, clock: Clock, tz: dt.tzinfo):
        self.name = name
        self._clock = clock
        self._tz = tz
        self.ends: float | None = None  # monotonic
        self.account: str | None = None  # who turned it on (control socket)
        self.by: str | None = None  # the name given (walk test --by)

    def active(self) -> bool:
        ends = self.ends  # read once: the owner may end it meanwhile (gpiozero's thread)
        return ends is not None and self._clock.monotonic() < ends

    def set(self, for_s: float | None, account: str | None, by: str | None = None) -> None:
        """On for ``for_s`` seconds, or off (None)."""
        on = for_s is not None
        self.ends = self._clock.monotonic() + for_s if for_s is not None else None
        self.account = account if on else None
        self.by = by if on else None

    def save(self, store: Store) -> None:
        ends = self.ends
        left = ends - self._clock.monotonic() if ends is not None else 0
        until = self._clock.now().timestamp() + left if left > 0 else 0
        store.set_meta(f"{self.name}_until", str(until))
        store.set_meta(f"{self.name}_account", self.account or "")
        store.set_meta(f"{self.name}_by", self.by or "")

    def restore(self, store: Store, now: dt.datetime, mono: float) -> None:
        """At start. Never longer than a day: a clock stepped back must not leave the mode
        on for days."""
        left = float(store.get_meta(f"{self.name}_until") or 0) - now.timestamp()
        self.ends = mono + left if 0 < left <= MAX_MODE_S else None
        self.account = store.get_meta(f"{self.name}_account") or None
        self.by = store.get_meta(f"{self.name}_by") or None

    def until(self) -> str | None:
        """When it ends, said in the wall clock's terms of now (ISO 8601, the site's
        offset), whatever the clock did since; None when off."""
        ends = self.ends
        if ends is None or not self.active():
            return None
        left = dt.timedelta(seconds=ends - self._clock.monotonic())
        return (self._clock.now() + left).astimezone(self._tz).isoformat(timespec="seconds")
