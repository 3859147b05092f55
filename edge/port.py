"""The worker port: all a worker (modem, uplink, camera) may ask of the daemon, from its
own thread. The daemon builds one and hands it to every worker; a worker never holds the
Daemon, so it can touch the owner's state only by handing work to the owner loop."""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

from edge.clock import Clock
from edge.events import Event
from edge.owner import OwnerLoop
from edge.status_doc import StatusDoc
from edge.store import Store

T = TypeVar("T")

# The longest a worker waits for the owner thread to answer a call.
OWNER_CALL_TIMEOUT_S = 5.0


class ClockStepWatch(Protocol):
    """Moves the outbox's wall-time deadlines when the wall clock is stepped, and gives
    the wall time they agree with (edge.clock.ClockSteps)."""

    def follow(self, store: Store) -> float: ...

    def deadlines(self, store: Store) -> AbstractContextManager[float]: ...


class Record(Protocol):
    """The daemon's record(): store an event and what it owes, then tell the workers."""

    def __call__(self, kind: str, subject: str, label: str,
                 extra: dict[str, Any] | None = None) -> Event: ...


class Command(Protocol):
    """A command given on someone's behalf (silence, acknowledge): ``by`` whom, ``via``
    which way, ``sent_at`` when it was written (None: now); the events it recorded."""

    def __call__(self, by: str, via: str, sent_at: float | None = None) -> list[Event]: ...


@dataclass(frozen=True)
class OwnerCommands:
    """The daemon's commands a worker may give for a contact (an SMS command); each runs
    on the owner thread, through WorkerPort.call."""

    silence: Command
    acknowledge: Command
    status: Callable[[], StatusDoc]


class WorkerPort:
    """What a worker may do with the daemon. Every method may be called from any thread:
    what touches the owner's state is posted to (or called on) the owner loop."""

    def __init__(self, loop: OwnerLoop, clock: Clock, clock_steps: ClockStepWatch, *,
                 record: Record, part_ok: Callable[[str], None],
                 part_failed: Callable[[str, str, str | None], None],
                 storage_trouble: Callable[[str, str | None, str], None],
                 store_corrupt: Callable[[int, str], None],
                 clock_synced: Callable[[], bool], commands: OwnerCommands):
        self._loop = loop
        self.clock = clock
        self.clock_steps = clock_steps
        self._record = record
        self._part_ok = part_ok
        self._part_failed = part_failed
        self._storage_trouble = storage_trouble
        self._store_corrupt = store_corrupt
        self.clock_synced = clock_synced
        self.commands = commands

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the owner thread, soon; never blocks."""
        self._loop.post(fn, *args)

    def call(self, fn: Callable[..., T], *args: object,
             timeout: float = OWNER_CALL_TIMEOUT_S) -> T:
        """Run ``fn(*args)`` on the owner thread and wait at most ``timeout`` for its
        result (TimeoutError)."""
        result: T = self._loop.call(fn, *args, timeout=timeout)
        return result

    def record(self, kind: str, subject: str, label: str,
               data: dict[str, Any] | None = None) -> None:
        """An event, stored and acted on by the owner thread."""
        self._loop.post(self._record, kind, subject, label, data)

    def part_ok(self, part: str) -> None:
        """``part`` passes its check: one `recovered` event if it was failing."""
        self._loop.post(self._part_ok, part)

    def part_failed(self, part: str, reason: str, detail: str | None = None) -> None:
        """``part`` fails: one `fault` event when it starts failing."""
        self._loop.post(self._part_failed, part, reason, detail)

    def storage_trouble(self, source: str, reason: str | None, detail: str = "") -> None:
        """What fails in storage, by source (the camera's "pictures"); ``reason`` None:
        that source works again."""
        self._loop.post(self._storage_trouble, source, reason, detail)

    def store_corrupt(self, inode: int, detail: str) -> None:
        """A worker's read or write found the store's file (``inode``) damaged: the owner
        raises the fault and sets the file aside (a CorruptionSeen; it posts to the owner
        loop)."""
        self._store_corrupt(inode, detail)

    def health(self, part: str) -> Health:
        """``part``'s health, reported as its `fault` and `recovered` events."""
        return Health(lambda: self.part_ok(part),
                      lambda reason, detail: self.part_failed(part, reason, detail))

    def storage_health(self, source: str) -> Health:
        """A storage source's health, reported as part of the storage fault."""
        return Health(lambda: self.storage_trouble(source, None),
                      lambda reason, detail: self.storage_trouble(source, reason,
                                                                  detail or ""))


class Health:
    """One part's (or storage source's) health as the thread that checks it sees it:
    reported only when it changes (ok, failing, or failing for another reason), so a
    worker that checks every few seconds posts nothing while nothing changes."""

    def __init__(self, report_ok: Callable[[], None],
                 report_failed: Callable[[str, str | None], None]):
        self._report_ok = report_ok
        self._report_failed = report_failed
        self.ok_now: bool | None = None  # None: not checked yet
        self.reason: str | None = None

    def ok(self) -> bool:
        """It works; True if that is news."""
        if self.ok_now is True:
            return False
        self.ok_now, self.reason = True, None
        self._report_ok()
        return True

    def failed(self, reason: str, detail: str | None = None) -> bool:
        """It fails for ``reason``; True if that is news."""
        if self.ok_now is False and self.reason == reason:
            return False
        self.ok_now, self.reason = False, reason
        self._report_failed(reason, detail)
        return True


class FailureStreak:
    """A link's health from its attempts (the uplink's, the SIA link's): its fault after
    ``fault_after`` failures in a row, or at once for what no retry mends; ok again with
    the next success. Keeps the last failure's detail for the status."""

    def __init__(self, health: Health, fault_after: int):
        self._health = health
        self._fault_after = fault_after
        self._failures = 0
        self.last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self._health.ok_now is False

    @property
    def failures(self) -> int:
        """Failures in a row, for a backoff that grows with them."""
        return self._failures

    def ok(self) -> None:
        self._failures = 0
        self.last_error = None
        self._health.ok()

    def failed(self, reason: str, detail: str, at_once: bool = False) -> None:
        self._failures += 1
        self.last_error = detail
        if at_once or self._failures >= self._fault_after:
            self._health.failed(reason, detail)


def no_contacts(event_id: str) -> set[str]:
    """No SMS of this event went from memory (no modem is configured)."""
    return set()


class DirectSms(Protocol):
    """The SMS worker's queue of SMS that are no event's (test-sms, replies)."""

    @property
    def send_deadline_s(self) -> float:
        """The longest the modem takes to confirm one SMS."""
        ...

    def send_direct(self, number: str, text: str) -> Future[list[int]]: ...


@dataclass
class Handoffs:
    """What the parts offer each other, wired where the daemon is built (edge.service):
    the daemon and the control socket reach a worker through these, never by looking
    for it among the workers."""

    # The contacts that got an (once unstored) event's SMS from memory: the store owes
    # them nothing when the event is finally written.
    sent_from_memory: Callable[[str], set[str]] = no_contacts
    # `edge-alarm test-sms`: None without a modem.
    direct_sms: DirectSms | None = None
    # SIGHUP: what reads its files again (the uplink's token), run on the owner thread.
    reloads: list[Callable[[], None]] = field(default_factory=list)
    # The daily summary was decided: the SMS worker looks at once (edge.summary).
    summary_decided: Callable[[], None] = lambda: None
