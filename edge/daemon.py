"""The daemon: one owner thread takes edges, timers and commands off one queue; it stores,
decides and acts. Slow parts (modem, platform, camera) live in workers on their own
threads and hear of events only after the siren is on and the event is stored."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from typing import Protocol

from edge.alarm_rule import AlarmRule
from edge.clock import Clock, ClockSteps, SyncState
from edge.config import Config
from edge.errors import CommandRefused, StorageError
# PURGE_EVERY_S, STORAGE_RETRY_S: importable from here as before the writer had its module.
from edge.event_writer import PURGE_EVERY_S, STORAGE_RETRY_S, EventWriter  # noqa: F401
from edge.events import Event, new_event_id
from edge.indicator import GuardLamp
from edge.input_handler import InputHandler
from edge.input_kinds import HANDLERS
from edge.inputs import SIM_REFUSED, InputPins, PinFactoryError, make_pin_factory
from edge.owner import MAX_WAIT_S, OwnerLoop
from edge.port import Handoffs, OwnerCommands, WorkerPort
from edge.sdnotify import Notifier
from edge.siren import Siren
# install_signal_handlers: importable from here as before it joined start_signals.py.
from edge.start_signals import install_signal_handlers  # noqa: F401
from edge.daemon_status import build_status
from edge.status_doc import DrillStatus, StatusDoc, WalktestStatus
from edge.storage_health import StorageHealth
from edge.store import Store
from edge.summary import DailySummary
from edge.unstored import UnstoredEvents
from edge.walk_test import note_installed, overdue_inputs

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 60.0
# A Pi has no RTC: give NTP this long after start before the clock counts as a fault.
CLOCK_GRACE_S = 600.0
# How far a service centre's clock may be behind ours when an SMS's time is compared with
# an alarm's.
SMS_CLOCK_SLACK_S = 300.0
# A press comes on gpiozero's thread, which must first take the interpreter's lock from
# whichever thread holds it (a worker encoding a batch, drawing a picture). Python makes a
# thread that asks for it wait up to its switch interval (5 ms by default) before the
# holder must let go; the siren waits at most this long instead (bench/bench_busy.py).
GIL_SWITCH_S = 0.0005
WALKTEST_S = 1800.0  # a walk test ends by itself after this long unless told (--for)


class Worker(Protocol):
    """A part with slow I/O of its own (modem, uplink, camera), running on its own thread."""

    part: str

    def start(self) -> None: ...
    def notify(self, event: Event) -> None: ...  # from the owner thread; must not block
    def wake(self) -> None: ...  # from any thread: look at the store now
    def status(self) -> dict: ...
    def stop(self, timeout: float) -> None: ...


class Daemon:
    def __init__(self, cfg: Config, *, clock: Clock | None = None, pin_factory=None,
                 notifier: Notifier | None = None):
        self.cfg = cfg
        self.clock = clock or Clock()
        self.loop = OwnerLoop(self.clock)
        self.notifier = notifier or Notifier()
        self.tz = cfg.site.tz
        self._sync = SyncState()
        self.clock_steps = ClockSteps(self.clock)
        self._pin_factory = pin_factory
        self.pins: InputPins | None = None
        self.workers: list[Worker] = []
        self.handoffs = Handoffs()  # what the workers offer; wired by edge.service
        self.storage_health = StorageHealth(cfg.storage, self.part_failed, self.part_ok)
        self.writer = EventWriter(
            cfg, self.loop, self.clock, self.clock_steps, self.storage_health,
            notify=self._notify_workers,
            sent_from_memory=self._sent_from_memory)
        # All a worker may ask of the daemon.
        self.port = WorkerPort(
            self.loop, self.clock, self.clock_steps, record=self.record,
            part_ok=self.part_ok, part_failed=self.part_failed,
            storage_trouble=self.storage_trouble,
            store_corrupt=self.writer.corrupt_seen,
            clock_synced=self.clock_synced,
            commands=OwnerCommands(self.silence, self.acknowledge, self.status))
        # What each input's edges mean, by its kind.
        self.inputs: dict[str, InputHandler] = {i.name: HANDLERS[i.kind](self, i)
                                                for i in cfg.inputs}
        # Whether the siren sounds: the presses of the inputs that trip it, drill mode.
        self.rule = AlarmRule({name: h.drill_applies for name, h in self.inputs.items()
                               if h.trips_siren}, cfg.drill, self.clock, self.clock_steps,
                              self.loop, self.tz)
        self.faults: dict[str, str] = {}  # part → reason
        self.lamp = GuardLamp(  # the guard's lamp: how the alarms got through, faults
            self.loop, alarms=lambda: self.rule.latched.values(),
            in_fault=lambda: bool(self.faults), store=lambda: self.store,
            sent_from_memory=self._sent_from_memory)
        self._started_mono = 0.0
        self._stop_requested = threading.Event()
        self._closed = False

    @property
    def siren(self) -> Siren | None:
        return self.rule.siren

    @property
    def store(self) -> Store | None:
        """The event store; None while it cannot be opened."""
        return self.writer.store

    @property
    def unstored(self) -> UnstoredEvents:
        """Events acted on, not yet written (storage failing)."""
        return self.writer.unstored

    @property
    def latched(self) -> dict[str, Event]:
        """Input name → the alarm that latched it."""
        return self.rule.latched

    # ================================================================ start / stop

    def start(self) -> None:
        """Open the store, arm the pins, restore what was latched. Runs on the thread that
        will own the state (it becomes the owner thread)."""
        self.loop.thread = threading.current_thread()
        self._started_mono = self.clock.monotonic()
        self.writer.open()
        self._arm_pins()
        try:
            self._restore()
        except StorageError as e:  # an unreadable store must not keep the alarm from arming
            log.error("state not restored from the store: %s", e)
            self.storage_trouble("store", "unreadable", str(e))
        self.lamp.update()
        self.storage_health.check_free_space()
        self.loop.after(HOUSEKEEPING_S, self._housekeeping)
        if self.cfg.has_transport:
            self._heartbeat()
        for worker in self.workers:
            worker.start()
        if self.cfg.summary is not None and self.cfg.modem is not None:
            self._start_summary()

    def _arm_pins(self) -> None:
        factory = self._pin_factory
        if factory is None:
            try:
                factory = make_pin_factory(self.cfg.gpio.pin_factory)
            except PinFactoryError as e:
                log.error("%s", e)
                # The faults are the parts that do not work: every input, and the siren.
                parts = [i.name for i in self.cfg.inputs]
                if self.cfg.siren is not None:
                    parts.append("siren")
                if self.cfg.indicator is not None:
                    parts.append("indicator")
                for part in parts:
                    self.part_failed(part, "unavailable", str(e))
                return
        self._pin_factory = factory
        if self.cfg.siren is not None:
            try:
                self.rule.siren = Siren(self.cfg.siren, factory)
            except Exception as e:  # the pin is busy or missing
                log.error("siren relay on pin %d unusable: %s", self.cfg.siren.pin, e)
                self.part_failed("siren", "unavailable", str(e))
        if self.cfg.indicator is not None:
            try:
                self.lamp.claim(self.cfg.indicator, factory)
            except Exception as e:  # the pin is busy or missing
                log.error("indicator lamp on pin %d unusable: %s", self.cfg.indicator.pin, e)
                self.part_failed("indicator", "unavailable", str(e))
        self.pins = InputPins(self.cfg.inputs, factory, self.on_edge, self.clock,
                              simulated=self.cfg.gpio.pin_factory == "mock")
        for name, why in self.pins.failed.items():
            self.part_failed(name, "unavailable", why)

    def _restore(self) -> None:
        """Recompute latched alarms, gate states and their timers from the stored events,
        so a restart (watchdog, power) forgets nothing."""
        now = self.clock.now()
        mono = self.clock.monotonic()
        if self.store is not None:
            # The store keeps the drill's and the walk test's ends in wall time.
            self.rule.drill.restore(self.store)
            self.rule.walktest.restore(self.store)
            note_installed(self.cfg, self.store, now)
        for handler in self.inputs.values():
            handler.restore(now, mono)

    def last_event(self, subject: str, kinds: tuple[str, ...]) -> Event | None:
        return self.store.last_event(subject, kinds) if self.store is not None else None

    def pin_active(self, name: str) -> bool | None:
        return self.pins.active(name) if self.pins is not None else None

    def _start_summary(self) -> None:
        """The daily summary's timer; one missed while the device was off is decided now."""
        summary = DailySummary(self.cfg, self.loop, lambda: self.store,
                               lambda: sorted(self.faults),
                               lambda: self.handoffs.summary_decided(),
                               overdue_inputs=self.overdue)
        self.loop.after(0, summary.check)

    def request_stop(self) -> None:
        """From any thread or a signal handler."""
        self._stop_requested.set()
        self.loop.post(lambda: None)  # wake the loop

    def run(self, on_ready=None) -> None:
        """The owner loop, on the calling thread, until request_stop()."""
        sys.setswitchinterval(GIL_SWITCH_S)
        self.start()
        if on_ready is not None:
            on_ready()
        self.notifier.ready()
        interval = self.notifier.watchdog_interval_s
        next_ping = 0.0
        while not self._stop_requested.is_set():
            wait = MAX_WAIT_S
            if interval is not None:
                wait = min(wait, max(0.0, next_ping - time.monotonic()))
            self.loop.process(wait)
            # Real time, not the daemon's clock: systemd's watchdog runs on real time.
            if interval is not None and time.monotonic() >= next_ping:
                self.notifier.watchdog()
                next_ping = time.monotonic() + interval
        self.notifier.stopping()

    def close(self, timeout: float = 3.0) -> None:
        """Stop workers, release pins, close the store. Nothing owed is lost: the rows the
        workers did not finish stay in the store for the next start, their deadlines
        moved with a clock step nothing noticed yet (the next start could not tell)."""
        if self._closed:
            return
        self._closed = True
        self.loop.process(0)
        for worker in self.workers:
            worker.stop(timeout / max(1, len(self.workers)))
        if self.store is not None:
            self.clock_steps.follow(self.store)
        if self.pins is not None:
            self.pins.close()
        if self.rule.siren is not None:
            self.rule.siren.close()
        self.lamp.close()
        self.writer.close()

    # ================================================================ events

    def record(self, kind: str, subject: str, label: str, extra: dict | None = None,
               time: dt.datetime | None = None) -> Event:
        """Store an event with what it owes (deliveries, SMS) in one transaction, then
        tell the workers. When the store cannot be written the event is still acted on
        and kept in memory until it can be."""
        when = (time or self.clock.now()).astimezone(self.tz)
        data = {"site": self.cfg.site.name, "label": label,
                "clock_synced": self._sync.synced(), **(extra or {})}
        event = self.writer.write(kind, subject, when, data, new_event_id())
        log.info("event %s %s %s", event.kind, event.subject, event.data)
        self._notify_workers(event)
        return event

    def _sent_from_memory(self, event_id: str) -> set[str]:
        """The contacts an event's SMS went to while it could not be stored (the SMS
        worker's record, once edge.service has wired it)."""
        return self.handoffs.sent_from_memory(event_id)

    def _notify_workers(self, event: Event) -> None:
        for worker in self.workers:
            worker.notify(event)

    def storage_trouble(self, source: str, reason: str | None, detail: str = "") -> None:
        """What fails in storage, by source (StorageHealth.trouble)."""
        self.storage_health.trouble(source, reason, detail)

    def part_failed(self, part: str, reason: str, detail: str | None = None) -> None:
        """A part failed a check: one `fault` event when it starts failing (storage: see
        storage_trouble)."""
        already = part in self.faults
        self.faults[part] = reason
        if not already:
            extra = {"reason": reason}
            if detail:
                extra["detail"] = detail
            self.record("fault", part, self.cfg.label_of(part), extra)
            self.lamp.update()

    def part_ok(self, part: str) -> None:
        """A part passes its check again: one `recovered` event if it was failing."""
        reason = self.faults.pop(part, None)
        if reason is not None:
            self.record("recovered", part, self.cfg.label_of(part), {"reason": reason})
            self.lamp.update()

    # ================================================================ inputs

    def on_edge(self, name: str, active: bool, mono: float, wall: dt.datetime) -> None:
        """gpiozero's thread: trip the siren if the alarm rule says the press sounds, hand
        the edge to the owner and return."""
        if active:
            self.rule.trip_at_once(name, mono)
        self.loop.post(self._edge, name, active, mono, wall)

    def _edge(self, name: str, active: bool, mono: float, wall: dt.datetime) -> None:
        handler = self.inputs[name]
        if (active and not handler.trips_siren and self.rule.walktest.active()
                and self.rule.tested(name, mono)):
            # (an alarm input's press is judged a test by the rule itself)
            self.tested(name, wall)
        handler.edge(active, mono, wall)
        self.lamp.update()

    # ================================================================ commands

    def silence(self, by: str, via: str, sent_at: float | None = None,
                account: str | None = None) -> list[Event]:
        """Silence the siren and acknowledge every latched alarm: one `silenced` event
        per alarm, saying who and how. ``sent_at``: when the command was given (an SMS's
        service-centre time): it acknowledges only the alarms its sender could have known
        of, so an SMS delayed for hours cannot silence a new alarm. ``account``: the
        system account that gave a command on the control socket."""
        done = self._answer_alarms("silenced", by, via, sent_at, account)
        for event in done:
            del self.rule.latched[event.subject]
        self.rule.stop_if_none_latched()
        self.lamp.update()
        return done

    def clock_synced(self) -> bool:
        return self._sync.synced()

    def acknowledge(self, by: str, via: str, sent_at: float | None = None,
                    account: str | None = None) -> list[Event]:
        """Record that ``by`` knows of every latched alarm (an SMS 收到, the guard page):
        one `acknowledged` event per alarm. The alarms stay latched and the siren sounds
        on: whoever replies from afar has not seen the gate. ``sent_at`` and ``account``
        as for silence()."""
        return self._answer_alarms("acknowledged", by, via, sent_at, account)

    def _answer_alarms(self, kind: str, by: str, via: str, sent_at: float | None,
                       account: str | None) -> list[Event]:
        """One ``kind`` event per latched alarm known at ``sent_at``: who, how, which."""
        done = []
        for name, alarm in self._alarms_known_at(sent_at):
            data = {"by": by, "via": via, "alarm_id": alarm.id, "alarm_kind": alarm.kind}
            if account is not None:
                data["account"] = account
            done.append(self.record(kind, name, self.cfg.label_of(name), data))
        return done

    def _alarms_known_at(self, sent_at: float | None) -> list[tuple[str, Event]]:
        """The latched alarms (input name, alarm) raised before a command given at
        ``sent_at`` (None: all), with slack for a service centre's clock."""
        cutoff = None
        if sent_at is not None and self._sync.synced():
            cutoff = sent_at + SMS_CLOCK_SLACK_S
        return [(name, alarm) for name, alarm in self.rule.latched.items()
                if cutoff is None or alarm.ts <= cutoff]

    def set_drill(self, on: bool, for_s: int | None = None,
                  account: str | None = None) -> DrillStatus:
        """Drill mode on for ``for_s`` (default [drill] default_for_s), or off. Kept in the
        store, so a restart in the middle of a drill does not turn a drill press real.
        ``account``: who asked (the control socket's caller), kept with the drill events."""
        for_s = for_s or self.cfg.drill.default_for_s
        self.rule.set_drill(for_s if on else None, account)
        if self.store is not None:
            self.rule.drill.save(self.store)
        status = self.rule.drill_status()
        log.warning("drill mode %s (account %s)", f"on until {status['until']}: "
                    "panic presses are recorded as drills" if on else "off", account)
        return status

    def set_walktest(self, on: bool, for_s: int | None = None, by: str | None = None,
                     account: str | None = None) -> WalktestStatus:
        """Walk test on for ``for_s`` (default WALKTEST_S), or off; kept in the store like
        drill mode. ``by``: who walks round (data.by of each input_tested event)."""
        self.rule.walktest.set((for_s or WALKTEST_S) if on else None, account, by or account)
        if self.store is not None:
            self.rule.walktest.save(self.store)
        status = self.rule.walktest_status()
        log.warning("walk test %s (by %s, account %s)", f"on until {status['until']}: "
                    "presses are tests, not alarms" if on else "off", by, account)
        return status

    def tested(self, name: str, wall: dt.datetime) -> Event:
        """An input went active during a walk test: one `input_tested` event."""
        walk = self.rule.walktest
        data = {"by": walk.by or "walktest"}
        if walk.account:
            data["account"] = walk.account
        return self.record("input_tested", name, self.cfg.label_of(name), data, time=wall)

    def overdue(self) -> list[str]:
        """The inputs not walk-tested within [walktest] due_days."""
        if self.store is None:
            return []
        try:
            return overdue_inputs(self.cfg, self.store, self.clock.now())
        except StorageError as e:
            log.warning("walk-test dates unreadable: %s", e)
            return []

    def simulate(self, name: str, active: bool) -> None:
        if self.cfg.gpio.pin_factory != "mock":
            raise CommandRefused(SIM_REFUSED)
        if self.pins is None:
            raise CommandRefused("the simulated pins are not available")
        self.pins.simulate(name, active)

    def status(self) -> StatusDoc:
        return build_status(self)

    # ================================================================ timers

    def _heartbeat(self) -> None:
        uptime = round(self.clock.monotonic() - self._started_mono)
        self.record("heartbeat", self.cfg.site.device_id, self.cfg.site.name,
                    {"uptime_s": uptime, "faults": sorted(self.faults),
                     # the platform judges the device offline after a few missed intervals
                     "interval_s": self.cfg.heartbeat_s})
        self.loop.after(self.cfg.heartbeat_s, self._heartbeat)

    def _housekeeping(self) -> None:
        self.loop.after(HOUSEKEEPING_S, self._housekeeping)
        if self.unstored or "storage" in self.faults:
            self.writer.retry()
        self.storage_health.check_free_space()
        if self._sync.synced():
            self.part_ok("clock")
        elif self.clock.monotonic() - self._started_mono >= CLOCK_GRACE_S:
            self.part_failed("clock", "not_synchronised")
        self.writer.purge_if_due(self.clock_synced())

