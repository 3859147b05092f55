"""The owner loop: the one thread that holds the daemon's state. Other threads (gpiozero's
callbacks, the control socket, workers) never touch that state; they hand it work with
``post`` or ``call``. Timers are entries on the same loop, in monotonic time from the
daemon's clock, so tests move them with a FakeClock instead of sleeping."""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Callable

from edge.clock import Clock

log = logging.getLogger(__name__)

# The loop wakes at least this often, so the watchdog ping and timers on a FakeClock that
# was advanced from another thread are never later than this.
MAX_WAIT_S = 0.5


class Timer:
    __slots__ = ("deadline", "fn", "cancelled")

    def __init__(self, deadline: float, fn: Callable[[], None]):
        self.deadline = deadline
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class OwnerLoop:
    def __init__(self, clock: Clock):
        self.clock = clock
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._timers: list = []
        self._order = itertools.count()
        self.thread: threading.Thread | None = None  # the thread that runs process()

    # ---------------------------------------------------------------- from any thread

    def post(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the owner thread, soon. Never blocks."""
        self._queue.put((fn, args, None))

    def call(self, fn: Callable, *args, timeout: float = 5.0):
        """Run ``fn(*args)`` on the owner thread and wait for its result (control socket).
        On the owner thread itself it runs at once."""
        if threading.current_thread() is self.thread:
            return fn(*args)
        future: Future = Future()
        self._queue.put((fn, args, future))
        try:
            return future.result(timeout)
        except TimeoutError:
            # Not run later either: the caller has answered "failed" (a CLI silence, an
            # SMS command), so a silence that comes true after that would be a lie.
            if future.cancel():
                raise
            return future.result(timeout)  # already running: it ends soon, or fails

    # ---------------------------------------------------------------- owner thread only

    def at(self, deadline: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(deadline, fn)
        heapq.heappush(self._timers, (deadline, next(self._order), timer))
        return timer

    def after(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        return self.at(self.clock.monotonic() + delay_s, fn)

    def process(self, timeout: float = 0.0) -> None:
        """Wait up to ``timeout`` (less when a timer is due sooner) for work, run all that
        is queued, then the timers that are due. Queued work goes first: it happened
        before now, and a timer must not fire past an edge that came before its deadline.
        The daemon calls this in its loop; tests call it directly."""
        wait = timeout
        if self._timers:
            wait = max(0.0, min(wait, self._timers[0][0] - self.clock.monotonic()))
        try:
            item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            self._run(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        self._run_due_timers()

    def _run(self, item) -> None:
        fn, args, future = item
        if future is not None and not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args)
        except Exception as e:
            if future is not None:
                future.set_exception(e)
            else:
                log.exception("owner task %s failed", getattr(fn, "__name__", fn))
            return
        if future is not None:
            future.set_result(result)

    def _run_due_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            try:
                timer.fn()
            except Exception:
                log.exception("owner timer %s failed", getattr(timer.fn, "__name__", timer.fn))
