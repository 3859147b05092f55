"""A mode that is on for a while and ends by itself (drill mode, walk test): its end kept
in monotonic time, so a clock step neither ends it early nor stretches it, and in the
store's meta in wall time, so a restart carries it on. That wall time is one of the
store's deadlines (edge.clock.ClockSteps): written under ``deadlines()`` and moved with
every clock step a daemon notices."""

from __future__ import annotations

import datetime as dt
import logging

from edge.clock import Clock, ClockSteps
from edge.store import WALL_TIME_META, Store

log = logging.getLogger(__name__)

MAX_MODE_S = 86400  # never longer than a day, whatever a stored end says


class TimedMode:
    """``name``: the prefix of its meta keys (``drill`` → drill_until, drill_for_s,
    drill_account, drill_by)."""

    def __init__(self, name: str, clock: Clock, clock_steps: ClockSteps, tz: dt.tzinfo):
        self.name = name
        self._until_key = f"{name}_until"
        assert self._until_key in WALL_TIME_META, "its end would not move with a clock step"
        self._clock = clock
        self._clock_steps = clock_steps
        self._tz = tz
        self.ends: float | None = None  # monotonic
        self.for_s: float | None = None  # how long it was turned on for
        self.account: str | None = None  # who turned it on (control socket)
        self.by: str | None = None  # the name given (walk test --by)

    def active(self) -> bool:
        ends = self.ends  # read once: the owner may end it meanwhile (gpiozero's thread)
        return ends is not None and self._clock.monotonic() < ends

    def set(self, for_s: float | None, account: str | None, by: str | None = None) -> None:
        """On for ``for_s`` seconds, or off (None)."""
        on = for_s is not None
        self.ends = self._clock.monotonic() + for_s if for_s is not None else None
        self.for_s = for_s
        self.account = account if on else None
        self.by = by if on else None

    def save(self, store: Store) -> None:
        """Its end in the wall time of the store's other deadlines, from the time left."""
        with self._clock_steps.deadlines(store) as now:
            ends = self.ends
            left = ends - self._clock.monotonic() if ends is not None else 0.0
            store.set_meta_values({
                self._until_key: str(now + left) if left > 0 else "",
                f"{self.name}_for_s": str(self.for_s) if left > 0 else "",
                f"{self.name}_account": self.account or "",
                f"{self.name}_by": self.by or ""})

    def restore(self, store: Store) -> None:
        """At start: on for what is left of it. An end further ahead than the length it
        was turned on for cannot have been set so: the clock was stepped back while no
        daemon ran to move it, and the mode ends now. Kept on, it would treat a real press
        as a drill or a test for as long as nobody knows (for a day at most when the store
        kept no length)."""
        with self._clock_steps.deadlines(store) as now:
            mono = self._clock.monotonic()
            until, for_s, account, by = (store.get_meta(f"{self.name}_{key}")
                                         for key in ("until", "for_s", "account", "by"))
        try:
            left = float(until or 0.0) - now
            longest = float(for_s) if for_s else MAX_MODE_S
        except ValueError as e:
            log.warning("%s end unreadable, ended: %s", self.name, e)
            left = longest = 0.0
        if left > min(longest, MAX_MODE_S):
            log.warning("%s end kept %.0f s ahead, past its %.0f s: the clock was stepped "
                        "back while no daemon ran; ended", self.name, left, longest)
            left = 0.0
        on = left > 0
        self.ends = mono + left if on else None
        self.for_s = longest if on else None
        self.account = (account or None) if on else None
        self.by = (by or None) if on else None

    def until(self) -> str | None:
        """When it ends, said in the wall clock's terms of now (ISO 8601, the site's
        offset), whatever the clock did since; None when off."""
        ends = self.ends
        if ends is None or not self.active():
            return None
        left = dt.timedelta(seconds=ends - self._clock.monotonic())
        return (self._clock.now() + left).astimezone(self._tz).isoformat(timespec="seconds")
