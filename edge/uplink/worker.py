"""The uplink outbox: delivers every stored event to the platform, once, in seq order.

Live, one event per request so an alarm is on the platform within milliseconds; while a
backlog drains, batches of up to 100 events or 256 KB. A failure backs off (capped
exponential, full jitter, Retry-After honoured) and holds the queue, since the platform
relies on order; a permanent rejection (4xx) dead-letters only the event it names and the
queue moves on. A refused token or a wrong URL is the device's fault, not the events': it
holds the queue like a failure. The outcome is written in the same transaction that records
the answer.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Callable

from edge.config import Config
from edge.errors import StorageError, UplinkError
from edge.port import FailureStreak, WorkerPort
from edge.routing import UPLINK
from edge.snapshot_wait import SnapshotWait
from edge.store import Delivery, Store
from edge.uplink.backoff import MAX_DELAY_S, next_delay
from edge.uplink.http import (ACCEPTED, REJECTED, RETRY, HttpUplink, refuses_the_events,
                              refuses_the_picture)
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

BATCH_MAX_EVENTS = 100
BATCH_MAX_BYTES = 256 * 1024
# Consecutive failed attempts before the uplink counts as a fault: one lost request is
# weather, three in a row is an outage worth telling the principal about.
FAULT_AFTER_FAILURES = 3
CLIENT_RETRY_S = 30.0


class UplinkWorker(ThreadWorker):
    part = "uplink"

    def __init__(self, cfg: Config, port: WorkerPort, *, client: HttpUplink | None = None,
                 rng: Callable[[], float] = random.random):
        super().__init__(cfg.storage.db_path, port.store_corrupt)
        self.cfg = cfg
        self.port = port
        self._client = client
        self._rng = rng
        self._single_through = 0  # after a batch was rejected: one by one up to this seq
        # Failing with the uplink fault.
        self._streak = FailureStreak(port.health(self.part), FAULT_AFTER_FAILURES)
        self._pictures_retry_at = 0.0
        self._picture_attempts = 0
        # An alarm waits for its snapshot so its CloudEvent carries snapshot_sha256.
        self._snapshot_wait = SnapshotWait(cfg, port.clock)

    # ------------------------------------------------------------------ owner side

    def status(self) -> dict:
        # ok until it fails: the uplink counts as working before its first request.
        return {"ok": not self._streak.failing, "last_error": self._streak.last_error}

    def reload(self) -> None:
        """SIGHUP: read the token file again (or, if it was unusable at start, try the
        client again now)."""
        if self._client is None:
            self.wake()
        else:
            try:
                self._client.reload_token()
                log.info("uplink token reloaded")
            except UplinkError as e:
                log.error("uplink token not reloaded: %s", e)

    # ------------------------------------------------------------------ worker thread

    def teardown(self) -> None:
        self.close_store()
        if self._client is not None:
            self._client.close()

    def _ensure_client(self) -> HttpUplink | None:
        if self._client is not None:
            return self._client
        try:
            self._client = HttpUplink.from_config(self.cfg.uplink)
        except UplinkError as e:
            # No token, no CA file: nothing can go until someone fixes the files, so
            # the fault is raised now rather than after FAULT_AFTER_FAILURES tries.
            self._streak.failed("misconfigured", str(e), at_once=True)
            return None
        return self._client

    def step(self) -> float:
        client = self._ensure_client()
        if client is None:
            return CLIENT_RETRY_S
        owed = self.owed(UPLINK, BATCH_MAX_EVENTS, self.port.clock_steps)
        if owed is None:
            return IDLE_WAIT_S
        store, rows, now = owed
        # Events first: a picture PUT (a megabyte over a slow mobile link) never holds
        # up an alarm; pictures go one per step while no event can be sent.
        if not rows:
            return self._upload_picture(store, client)
        # A retry time beyond the longest backoff was set before the clock stepped back.
        if now < rows[0].next_try <= now + MAX_DELAY_S:
            return min(rows[0].next_try - now, self._upload_picture(store, client))
        picture_wait = self._snapshot_wait.remaining(rows[0].event, now)
        if picture_wait > 0:
            return min(picture_wait, self._upload_picture(store, client))
        batch, docs = self._batch(rows, now)
        result = client.post_events(docs)
        seqs = [event.seq for event, _, _ in batch]
        status = str(result.status) if result.status is not None else result.detail[:60]
        if result.outcome == ACCEPTED:
            store.mark_accepted(UPLINK, seqs, status, self._now())
            self._streak.ok()
        elif result.outcome == REJECTED and refuses_the_events(result):
            if len(batch) > 1:
                # Which event offends is unknown: send these one by one to find out.
                self._single_through = seqs[-1]
            else:
                event = batch[0].event
                store.mark_rejected(UPLINK, event.seq, status, self._now())
                log.error("platform rejected event %s (seq %d, %s): %s", event.id, event.seq,
                          event.kind, result.detail)
                self._streak.failed("rejected", f"event {event.id}: {result.detail}",
                                    at_once=True)
        else:
            attempts = max(a for _, a, _ in batch) + 1
            delay = next_delay(attempts, result.retry_after_s, rng=self._rng)
            with self.port.clock_steps.deadlines(store) as retry_from:
                store.mark_retry(UPLINK, seqs, status, retry_from + delay)
            if result.outcome == REJECTED:
                log.error("platform refuses this device (%s); the events wait, retry in "
                          "%.1f s", result.detail, delay)
                self._streak.failed("misconfigured", result.detail, at_once=True)
            else:
                log.warning("platform did not take %d event(s) (%s); retry in %.1f s",
                            len(seqs), result.detail, delay)
                self._streak.failed("unreachable", result.detail)
        return 0

    def _batch(self, rows: list[Delivery], now: float
               ) -> tuple[list[Delivery], list[dict[str, Any]]]:
        """The next request's events: one while live (or while isolating a rejected
        batch), else as many as fit in a batch."""
        if len(rows) == 1 or rows[0].event.seq <= self._single_through:
            first = rows[0].event
            return rows[:1], [first.to_cloudevent(self.cfg.site.device_id)]
        batch: list[Delivery] = []
        docs: list[dict[str, Any]] = []
        size = 2
        for row in rows:
            if batch and self._snapshot_wait.remaining(row.event, now) > 0:
                break
            doc = row.event.to_cloudevent(self.cfg.site.device_id)
            doc_size = len(json.dumps(doc, ensure_ascii=False).encode()) + 1
            if docs and size + doc_size > BATCH_MAX_BYTES:
                break
            batch.append(row)
            docs.append(doc)
            size += doc_size
        return batch, docs

    def _upload_picture(self, store: Store, client: HttpUplink) -> float:
        """PUT one snapshot or frame of an accepted event; returns how long to wait
        before the next (0: more are waiting)."""
        # On the monotonic clock: held in memory, no clock step moves it.
        mono = self.port.clock.monotonic()
        if mono < self._pictures_retry_at:
            return self._pictures_retry_at - mono
        try:
            pending = store.attachments_to_upload(UPLINK, limit=1)
        except StorageError as e:
            log.warning("uplink cannot read the pictures to upload: %s", e)
            return IDLE_WAIT_S
        if not pending:
            return IDLE_WAIT_S
        seq, event_id, name, path = pending[0]
        try:
            jpeg = Path(path).read_bytes()
        except OSError as e:
            log.warning("picture %s of event %s is gone (%s); not uploaded", name,
                        event_id, e)
            store.mark_uploaded(seq, name)
            return 0.0
        if name == "snapshot":
            result = client.put_snapshot(event_id, jpeg)
        else:
            result = client.put_frame(event_id, int(name.split("-")[1]), jpeg)
        # A refused token refuses every picture alike: hold them, as the events are held.
        if result.outcome == RETRY or (result.outcome == REJECTED
                                       and not refuses_the_picture(result)):
            self._picture_attempts += 1
            delay = next_delay(self._picture_attempts, result.retry_after_s, rng=self._rng)
            self._pictures_retry_at = mono + delay
            return delay
        if result.outcome == REJECTED:
            log.error("platform refused picture %s of event %s: %s", name, event_id,
                      result.detail)
        self._picture_attempts = 0
        store.mark_uploaded(seq, name)
        return 0.0

    def _now(self) -> float:
        return self.port.clock.now().timestamp()
