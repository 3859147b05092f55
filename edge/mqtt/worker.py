"""The MQTT outbox: every stored event, as the CloudEvent the HTTP uplink posts, published
at QoS 1 on `{topic_prefix}/{device_id}/events/{kind}`, in creation order, and the
device's retained status beside them (status_message.py).

The event store stays the source of truth: paho holds unacknowledged messages only in
memory. At most IN_FLIGHT_WINDOW events are published and not yet acknowledged; each is
marked delivered in the store on its PUBACK, and nothing sooner. When the connection
drops, whatever was not acknowledged is still pending in the store and is published again
on the next connection, under the same CloudEvent id: a subscriber may see an id twice,
never miss one.

A broker that cannot be reached (three connection attempts in a row), refuses the
device's credentials or fails the TLS check is an `mqtt` fault; the worker keeps trying
with capped, jittered backoff, and the daemon runs on. A CONNACK alone proves little (a
broken broker, or a man in the middle, may send one and then nothing), so a connection
counts as a failed attempt when it ends before the broker acknowledged any message, or
when a message's PUBACK is PUBACK_TIMEOUT_S late (then it is dropped, and what it held is
published again on the next); the fault recovers on the PUBACK that shows the broker
takes what it is sent.
"""

from __future__ import annotations

import logging
import random
from typing import Callable

from edge.config import Config, Mqtt
from edge.errors import MqttError, MqttTlsError, SecretFileError, StorageError
from edge.events import Event, cloudevents_body
from edge.mqtt.link import CONNECT_TIMEOUT_S, Bell, MqttLink, read_password
from edge.mqtt.status_message import (StatusPacer, event_topic, offline, online, payload,
                                      status_topic)
from edge.port import FailureStreak, WorkerPort
from edge.routing import MQTT
from edge.snapshot_wait import SnapshotWait
from edge.uplink.backoff import backoff_delay
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

# Events published and not yet acknowledged, at most: enough to drain a backlog at the
# broker's pace over a slow mobile link, few enough that a reconnect repeats little.
IN_FLIGHT_WINDOW = 20
# A message's PUBACK is due this long after its PUBLISH, else the connection is a failed
# attempt. Longer than the CONNACK's CONNECT_TIMEOUT_S: a whole window of events (~20 KB)
# may go first over GPRS (~10 s); shorter than paho's keepalive, which notices a silent
# broker only after twice KEEPALIVE_S; as long as the SMS fallback's default wait.
PUBACK_TIMEOUT_S = 20.0
# Failed connection attempts in a row before the broker counts as unreachable (a fault):
# a broker restart is weather, not news for the principal.
FAULT_AFTER_FAILURES = 3
RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 60.0
RECONNECT_MIN_S = 0.5  # full jitter may draw 0: never a tight loop of connects
# The daemon's status must come from the owner thread within this.
STATUS_CALL_S = 1.0
# On a clean stop, how long the offline status may take to be acknowledged; without its
# PUBACK the link is dropped without DISCONNECT, and the broker's Last Will says offline.
OFFLINE_WAIT_S = 0.5


class MqttWorker(ThreadWorker):
    part = MQTT

    def __init__(self, cfg: Config, port: WorkerPort, *, puback_s: float = PUBACK_TIMEOUT_S,
                 rng: Callable[[], float] = random.random):
        super().__init__(cfg.storage.db_path, port.store_corrupt)
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.port = port
        self._settings: Mqtt = cfg.mqtt
        self._device_id = cfg.site.device_id
        self._rng = rng
        self._puback_s = puback_s
        # Failing with the mqtt fault: connection attempts and refused events in a row.
        self._streak = FailureStreak(port.health(self.part), FAULT_AFTER_FAILURES)
        self._bell = Bell()
        self._link: MqttLink | None = None
        self._connack_by = 0.0       # monotonic deadline of the CONNACK awaited
        self._retry_at = 0.0         # monotonic: no connection attempt before this
        self._hold_until = 0.0       # monotonic: the broker refused a message; no events before
        self._in_flight: dict[int, int] = {}  # message id → seq, on this connection
        # Message id → monotonic deadline of its PUBACK, every message on this connection
        # (events and status; in publishing order, so the first is due first).
        self._puback_due: dict[int, float] = {}
        self._answered = False       # the broker acknowledged a message on this connection
        self._acked: list[int] = []  # seqs the broker acknowledged, not yet marked in the store
        self._offline_mid: int | None = None
        self._offline_acked = False
        self._pacer = StatusPacer()
        self._snapshot_wait = SnapshotWait(cfg, port.clock)
        self._event_waits_until = 0.0  # monotonic: the head event waits for its picture

    # ------------------------------------------------------------------ owner side

    def status(self) -> dict:
        # ok until it fails: the broker counts as working before the first attempt.
        link = self._link  # read once: the worker thread may drop it meanwhile
        return {"ok": not self._streak.failing,
                "connected": link is not None and link.connected,
                "last_error": self._streak.last_error}

    def notify(self, event: Event) -> None:
        self._pacer.stale()
        self.wake()

    def wake(self) -> None:
        super().wake()
        self._bell.ring()

    # ------------------------------------------------------------------ worker thread

    def step(self) -> float:
        mono = self.port.clock.monotonic()
        self._record_acks()
        if self._link is None:
            if mono < self._retry_at:
                return self._retry_at - mono
            self._connect(mono)
            if self._link is None:
                return self._retry_at - mono
        link = self._link
        wait = IDLE_WAIT_S
        if link.connected:
            overdue = self._puback_overdue(mono)
            if overdue is not None:
                self._drop(goodbye=False)
                self._attempt_failed("unreachable", overdue)
                return 0.0
            self._publish_events(link, mono)
            self._publish_status(link, mono)
            wait = min(wait, self._pacer.due_in(mono))
            if self._puback_due:
                wait = min(wait, next(iter(self._puback_due.values())) - mono)
            for until in (self._hold_until, self._event_waits_until):
                if until > mono:
                    wait = min(wait, until - mono)
        elif mono >= self._connack_by:
            self._drop(goodbye=False)
            self._attempt_failed("unreachable", "the broker sent no CONNACK within "
                                 f"{CONNECT_TIMEOUT_S:g} s")
            return 0.0
        else:
            wait = min(wait, self._connack_by - mono)
        link.serve(wait, self._bell)
        return 0.0

    def teardown(self) -> None:
        link = self._link
        if link is not None and link.connected:
            self._say_offline(link)
        link, self._link = self._link, None
        if link is not None:
            link.close(goodbye=self._offline_acked)
        self._record_acks()
        self.close_store()
        self._bell.close()

    def _connect(self, mono: float) -> None:
        try:
            will = (self._status_topic,
                    payload(offline(self._device_id, self.cfg.site.name, "connection_lost")))
            link = MqttLink(self._settings, self._device_id, read_password(self._settings),
                            will, self)
        except (SecretFileError, MqttError) as e:
            # Nothing can go until someone fixes the files: a fault now, not after tries.
            self._attempt_failed("misconfigured", str(e), at_once=True)
            return
        try:
            link.open()
        except MqttTlsError as e:  # the device's CA or the broker's certificate: news now
            self._attempt_failed("tls", str(e), at_once=True)
            return
        except MqttError as e:
            self._attempt_failed("unreachable", str(e))
            return
        self._link = link
        self._connack_by = mono + CONNECT_TIMEOUT_S

    def _publish_events(self, link: MqttLink, mono: float) -> None:
        room = IN_FLIGHT_WINDOW - len(self._in_flight)
        if room <= 0 or mono < self._hold_until:
            return
        store = self.store()
        if store is None:
            return
        try:
            rows = store.pending_deliveries(MQTT, IN_FLIGHT_WINDOW + len(self._acked))
        except StorageError as e:
            log.warning("mqtt cannot read the outbox: %s", e)
            return
        busy = {*self._in_flight.values(), *self._acked}
        now = self.port.clock.now().timestamp()
        for event, _, _ in rows:
            if room <= 0:
                break
            if event.seq in busy:
                continue
            # In order: an alarm waiting for its picture holds back the events after it.
            picture_wait = self._snapshot_wait.remaining(event, now)
            if picture_wait > 0:
                self._event_waits_until = mono + picture_wait
                break
            topic = event_topic(self._settings.topic_prefix, self._device_id, event.kind)
            body = cloudevents_body(event.to_cloudevent(self._device_id))
            mid = self._publish(link, topic, body, mono)
            if mid is None:
                return
            self._in_flight[mid] = event.seq
            room -= 1

    def _publish_status(self, link: MqttLink, mono: float) -> None:
        if self._pacer.due_in(mono) > 0:
            return
        message = None
        try:
            status = self.port.call(self.port.commands.status, timeout=STATUS_CALL_S)
            message = online(status, self._backlog())
        except (TimeoutError, StorageError) as e:
            log.debug("mqtt: no status to publish now: %s", e)
        if self._pacer.looked(mono, message) and message is not None:
            self._publish(link, self._status_topic, payload(message), mono, retain=True)

    def _publish(self, link: MqttLink, topic: str, body: bytes, mono: float, *,
                 retain: bool = False) -> int | None:
        """The message id, or None when the connection ended within the call (paho reports
        a write that fails there): its ids are no longer this connection's, and one kept
        would take the next connection's PUBACK of the same id for this message's."""
        mid = link.publish(topic, body, retain=retain)
        if link is not self._link:
            return None
        self._puback_due[mid] = mono + self._puback_s
        return mid

    def _puback_overdue(self, mono: float) -> str | None:
        """Why the connection has failed, when the oldest message's PUBACK is late."""
        oldest = next(iter(self._puback_due.items()), None)
        if oldest is None or mono < oldest[1]:
            return None
        seq = self._in_flight.get(oldest[0])
        what = "the status" if seq is None else f"event seq {seq}"
        return f"no PUBACK for {what} within {self._puback_s:g} s"

    def _backlog(self) -> dict[str, int]:
        store = self.require_store()
        return {transport: store.pending_count(transport).pending
                for transport in self.cfg.transports}

    def _say_offline(self, link: MqttLink) -> None:
        """A clean stop: the retained status says offline, acknowledged within
        OFFLINE_WAIT_S or left to the Will."""
        now = self.port.clock.now().astimezone(self.cfg.site.tz)
        message = offline(self._device_id, self.cfg.site.name, "stopped",
                          now.isoformat(timespec="seconds"))
        self._offline_mid = link.publish(self._status_topic, payload(message), retain=True)
        start = self.port.clock.monotonic()
        while link.connected and not self._offline_acked:
            left = start + OFFLINE_WAIT_S - self.port.clock.monotonic()
            if left <= 0:
                break
            link.serve(left, self._bell)

    def _record_acks(self) -> None:
        if not self._acked:
            return
        store = self.store()
        if store is None:
            return
        try:
            # Without TLS, anyone on the path can send the PUBACK.
            store.mark_accepted(MQTT, self._acked, "puback", self.port.clock.now().timestamp(),
                                verified=self._settings.tls)
        except StorageError as e:  # kept, and not published again, until it can be written
            log.warning("mqtt cannot record %d delivered event(s): %s", len(self._acked), e)
            return
        self._acked = []
        self._pacer.stale()  # the backlog changed

    def _drop(self, *, goodbye: bool) -> None:
        link, self._link = self._link, None  # what the closing link reports is not news
        if link is not None:
            link.close(goodbye=goodbye)
        # Not acknowledged on this connection: still pending in the store, sent again.
        self._in_flight.clear()
        self._puback_due.clear()
        self._answered = False
        self._pacer.new_connection()

    def _attempt_failed(self, reason: str, detail: str, at_once: bool = False) -> None:
        self._streak.failed(reason, detail, at_once)
        delay = self._backoff()
        self._retry_at = self.port.clock.monotonic() + delay
        log.warning("mqtt broker %s: %s; trying again in %.1f s", self._settings.url,
                    detail, delay)

    def _backoff(self) -> float:
        """Capped, jittered, growing with the failures in a row: a restarted broker is
        not hit by every school at once."""
        return max(RECONNECT_MIN_S, backoff_delay(max(1, self._streak.failures),
                                                  base_s=RECONNECT_BASE_S,
                                                  cap_s=RECONNECT_CAP_S, rng=self._rng))

    @property
    def _status_topic(self) -> str:
        return status_topic(self._settings.topic_prefix, self._device_id)

    # ------------------------------------------------------------------ link listener

    def connack(self, refused: str | None) -> None:
        if refused is not None:
            self._drop(goodbye=False)
            self._attempt_failed("refused", f"the broker refused the connection: {refused}",
                                 at_once=True)
            return
        log.info("mqtt connected to %s as %s", self._settings.url, self._device_id)
        self._pacer.new_connection()

    def puback(self, mid: int, refused: str | None) -> None:
        if mid == self._offline_mid:
            self._offline_acked = refused is None
            return
        if self._puback_due.pop(mid, None) is None:
            return  # no message of this connection's
        self._answered = True
        seq = self._in_flight.pop(mid, None)
        if seq is None:  # the retained status
            # Its PUBACK, taken or refused (our status is not the link's fault), shows
            # the broker works, unless events still wait for theirs (a broker answers
            # in order: an honest one's come soon, and say so) or it refused one (only
            # an event's own PUBACK ends that).
            if not self._in_flight and self.port.clock.monotonic() >= self._hold_until:
                self._streak.ok()
            return
        if refused is None:
            self._acked.append(seq)
            self._streak.ok()
            return
        # Not the event's fault but the broker's rules (an ACL, a quota): it stays
        # owed, and the queue waits, as the uplink waits on a refused token.
        detail = f"the broker refused event seq {seq}: {refused}"
        self._streak.failed("refused", detail, at_once=True)
        delay = self._backoff()
        self._hold_until = self.port.clock.monotonic() + delay
        log.error("mqtt: %s; holding the queue %.1f s", detail, delay)

    def lost(self, why: str, was_connected: bool) -> None:
        if self._link is None:
            return  # already dropped (a refused CONNACK)
        answered = self._answered
        self._drop(goodbye=False)
        if answered:
            log.warning("mqtt connection to %s lost: %s", self._settings.url, why)
            self._retry_at = self.port.clock.monotonic() + RECONNECT_MIN_S
        elif was_connected:  # a CONNACK, and then nothing: no better than none
            self._attempt_failed("unreachable", "connection closed before the broker "
                                 f"acknowledged a message: {why}")
        else:
            self._attempt_failed("unreachable", f"connection closed before CONNACK: {why}")
