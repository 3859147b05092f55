"""Time, passed in as an object so timers can be tested without sleeping, and whether the
system clock has been synchronised since boot."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import logging
import threading
import time
from typing import Iterator, Protocol

from edge.errors import StorageError

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised (STA_UNSYNC)


class Clock:
    """The real clocks: wall time for events, monotonic time for timers."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to (tests, the demo's fast-forward)."""

    def __init__(self, start: dt.datetime, monotonic: float = 1000.0):
        self._now = start
        self._mono = monotonic
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._mono += seconds

    def cut_to(self, when: dt.datetime) -> None:
        """Move the wall clock only, as a story cuts to another time of day: the monotonic
        clock (and every timer on it) does not see the skipped hours."""
        with self._lock:
            self._now = when.astimezone(dt.timezone.utc)

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self._mono += (when - self._now).total_seconds()
            self._now = when


class SyncState:
    """Whether the kernel considers the clock synchronised (what timedatectl's
    "System clock synchronized" reads), cached because every event asks."""

    def __init__(self, ttl_s: float = 30.0):
        self._ttl = ttl_s
        self._checked = -1e9
        self._value = False
        try:
            # The C library the interpreter already has loaded (dlopen(NULL)); finding it by
            # name (ctypes.util) would cost the daemon its imports for good.
            self._libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
        except OSError:
            self._libc = None

    def synced(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self._ttl:
            self._value = self._read()
            self._checked = now
        return self._value

    def _read(self) -> bool:
        if self._libc is None:
            return False
        buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0 reads only
        state = self._libc.adjtimex(buf)
        return 0 <= state != _TIME_ERROR


class WallDeadlines(Protocol):
    """What ClockSteps moves: the store's wall-time deadlines (edge.store.Store)."""

    def shift_wall_times(self, step_s: float) -> int: ...


class ClockSteps:
    """Notices the wall clock being stepped against the monotonic one (NTP setting a Pi's
    clock at boot, hours after the last saved time) and moves the store's wall-time
    deadlines (SMS fallbacks and retries, upload and alarm-centre retries, the escalation's
    next call, the ends of drill mode and a walk test) with it. One is shared by the
    threads that use those deadlines (the owner before it stores an event, the
    escalation's plan or a timed mode's end, the SMS worker before it sends, the uplink and
    SIA workers before they deliver, the daemon as it stops): the first to notice a step
    moves the deadlines, once.

    A deadline is only right when it is read, computed and written in the same frame as
    the rows around it: a retry time computed from a clock read after a step, but written
    before that step was moved, would be moved again. So every reading of the wall clock
    that deadlines are compared with or computed from comes from here, and a deadline is
    written under ``deadlines()``, which no step is moved during."""

    def __init__(self, clock: Clock, threshold_s: float = 2.0):
        self._clock = clock
        self.threshold_s = threshold_s
        self._lock = threading.Lock()
        self._wall_minus_mono: float | None = None

    def follow(self, store: WallDeadlines) -> float:
        """Move the deadlines if the clock stepped since the last call; returns the wall
        time (unix seconds) that the stored deadlines now agree with. When the store
        refuses, the step is moved at the next call (by whichever thread makes it); the
        caller goes on meanwhile, on the time the unmoved deadlines agree with."""
        with self.deadlines(store) as now:
            return now

    @contextlib.contextmanager
    def deadlines(self, store: WallDeadlines) -> Iterator[float]:
        """``with clock_steps.deadlines(store) as now:`` write deadlines computed from
        ``now`` (as follow() gives it); no step is moved until they are written, so a step
        after ``now`` was read moves them too, and one before it is not moved into them.
        Not to be nested: a thread inside waits for itself."""
        with self._lock:
            mono = self._clock.monotonic()
            wall = self._clock.now().timestamp()
            offset = wall - mono
            step = 0.0 if self._wall_minus_mono is None else offset - self._wall_minus_mono
            if abs(step) >= self.threshold_s:
                try:
                    moved = store.shift_wall_times(step)
                except StorageError as e:
                    log.warning("deadlines not moved with a clock step yet: %s", e)
                    yield wall - step  # the time the unmoved deadlines were set in
                    return
                log.warning("the clock was stepped by %+.0f s: %d SMS, delivery, "
                            "escalation and timed-mode deadline(s) moved with it", step,
                            moved)
            self._wall_minus_mono = offset
            yield wall


class LocalTime(dt.datetime):
    """A time for SMS templates: "07:42:15" as it stands, or formatted as the template
    asks ({time:%m月%d日 %H:%M})."""

    def __str__(self) -> str:
        return self.strftime("%H:%M:%S")

    def __format__(self, spec: str) -> str:
        return self.strftime(spec) if spec else str(self)

    @classmethod
    def of(cls, t: dt.datetime) -> "LocalTime":
        return cls(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, t.tzinfo)


class DatedLocalTime(LocalTime):
    """A LocalTime that shows its date too ("12月2日 23:59:58"): for an SMS about an event
    of another day than the one it is sent on."""

    def __str__(self) -> str:
        return f"{self.month}月{self.day}日 " + super().__str__()
