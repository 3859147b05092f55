"""The camera worker: a picture of who stood at the gate when the alarm went, taken off the
alarm path. The event is stored and acted on first; the picture is attached when it exists
(its sha256 added to the event's data), with the pre-trigger frames of the seconds before.

Files: storage.path/snapshots/YYYY-MM-DD/<event id>.jpg and <event id>-frame-<k>.jpg.
Limits: older than retention_days goes; above max_snapshots_mb the oldest go first, the
pictures the platform has not received yet last. No picture takes the last [storage]
min_free_mb (the event store's room). A full disk is a storage fault, never a stop: the
siren and the SMS do not need the picture.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from edge.camera import Camera
from edge.camera.process import CameraProcess
from edge.config import Camera as CameraSection
from edge.config import Config
from edge.errors import CameraError, StorageError
from edge.events import Event
from edge.port import WorkerPort
from edge.routing import snapshot_wanted
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

CAPTURE_TIMEOUT_S = 5.0
CAMERA_RETRY_S = 30.0
PRUNE_EVERY_S = 600.0
STALE_EVENT_S = 30.0
# While the disk is full every alarm loses its picture: look for space this often.
FULL_RECHECK_S = 1.0


class LowSpace(OSError):
    """A picture would leave less than [storage] min_free_mb free: the store's room."""


class CameraWorker(ThreadWorker):
    part = "camera"

    def __init__(self, cfg: Config, port: WorkerPort, *,
                 picture_attached: Callable[[], None] = lambda: None,
                 camera: Camera | None = None):
        """``picture_attached``: called when an event's picture (or why it has none) is
        in the store: the uplink holds an alarm back until then."""
        super().__init__(cfg.storage.db_path, port.store_corrupt)
        self.cfg = cfg
        self.port = port
        self._picture_attached = picture_attached
        self.root = cfg.storage.snapshots_path
        self._camera = camera
        self._queue: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._overlay_event: list[str] = []  # the lines of the alarm being captured
        self._camera_health = port.health(self.part)
        self._disk_health = port.storage_health("pictures")
        self._next_prune = 0.0
        self._next_check = 0.0

    # ------------------------------------------------------------------ owner side

    def notify(self, event: Event) -> None:
        # An event written late (the store was failing) gets no picture: one taken now
        # would not show what happened then.
        fresh = self.port.clock.now().timestamp() - event.ts < STALE_EVENT_S
        if event.seq and fresh and snapshot_wanted(event, self.cfg):
            with self._lock:
                self._queue.append(event)
            self.wake()

    @property
    def _camera_cfg(self) -> CameraSection:
        assert self.cfg.camera is not None  # a CameraWorker is made only with a [camera]
        return self.cfg.camera

    def status(self) -> dict:
        # ok is None until the camera's first start has been tried.
        return {"configured": True, "backend": self._camera_cfg.backend,
                "ok": self._camera_health.ok_now}

    # ------------------------------------------------------------------ worker thread

    def setup(self) -> None:
        if self._camera is None:
            self._camera = CameraProcess(self._camera_cfg.backend,
                                         pre_trigger_s=self._camera_cfg.pre_trigger_s,
                                         head=self.cfg.site.device_id,
                                         tz=self.cfg.site.tz.key,
                                         overlay=self._overlay_lines)
        # Once only: a backend's start() also starts its pre-trigger thread, and a camera
        # that failed to start is retried by capturing (the backend reopens it itself).
        try:
            self._opened.start()
            self._camera_health.ok()
        except CameraError as e:
            self._camera_failed(str(e))

    def teardown(self) -> None:
        if self._camera is not None:
            self._camera.close()
        self.close_store()

    @property
    def _opened(self) -> Camera:
        # setup() opened it: a CameraWorker is made only for a backend other than "none".
        assert self._camera is not None
        return self._camera

    def _overlay_lines(self) -> list[str]:
        """What the test pattern draws: the alarm's lines while its still is taken, and
        the time of the picture itself (a pre-trigger frame shows its own second)."""
        now = self.port.clock.now().astimezone(self.cfg.site.tz)
        head = list(self._overlay_event) or [self.cfg.site.device_id]
        return [*head, now.strftime("%Y-%m-%d %H:%M:%S %z")]

    def _camera_failed(self, error: str) -> None:
        if self._camera_health.failed("capture_failed", error):
            log.error("camera fault: %s", error)
        self._next_check = time.monotonic() + CAMERA_RETRY_S

    def _check_camera(self) -> None:
        """Between alarms, a camera that failed is tried with one capture."""
        try:
            self._opened.capture_jpeg(CAPTURE_TIMEOUT_S)
        except CameraError as e:
            self._camera_failed(str(e))
        else:
            self._camera_health.ok()

    def step(self) -> float:
        if (not self._camera_health.ok_now and not self._queue
                and time.monotonic() >= self._next_check):
            self._check_camera()
        while True:
            with self._lock:
                event = self._queue.popleft() if self._queue else None
            if event is None:
                break
            self._snapshot(event)
        mono = time.monotonic()
        if mono >= self._next_prune:
            self._next_prune = mono + PRUNE_EVERY_S
            self.prune()
        waits = [IDLE_WAIT_S, self._next_prune - mono]
        if self._disk_health.ok_now is False:
            if self._space_returned():
                self._disk_health.ok()
            else:
                waits.append(FULL_RECHECK_S)
        if not self._camera_health.ok_now:
            waits.append(self._next_check - mono)
        return max(0.0, min(waits))

    def _snapshot(self, event: Event) -> None:
        frames = self._opened.pre_trigger_frames()
        self._overlay_event = [f"{self.cfg.site.device_id}  {event.kind}  {event.subject}",
                               event.data.get("label", "")]
        try:
            jpeg = self._opened.capture_jpeg(CAPTURE_TIMEOUT_S)
        except CameraError as e:
            self._camera_failed(str(e))
            self._record_data(event, {"snapshot_error": str(e)[:200]})
            return
        finally:
            self._overlay_event = []
        self._camera_health.ok()
        try:
            files = self._save(event, jpeg, frames)
        except OSError as e:
            reason = ("low_space" if isinstance(e, LowSpace) else
                      "full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "unwritable")
            log.error("snapshot of event %s not saved: %s", event.id, e)
            self._disk_health.failed(reason, str(e))
            self._next_prune = 0.0  # pictures beyond the cap may be what filled it
            self._record_data(event, {"snapshot_error": f"not saved: {e.strerror or e}"})
            return
        self._disk_health.ok()
        update = {"snapshot_sha256": files[0][2]}
        if len(files) > 1:
            update["frames"] = len(files) - 1
        try:
            self.require_store().attach(event.seq, files, update)
        except StorageError as e:
            log.error("snapshot of event %s saved but not recorded: %s", event.id, e)
            return
        self._picture_attached()
        log.info("snapshot of %s event %d saved (%d bytes, %d frames)", event.kind, event.seq,
                 len(jpeg), len(frames))

    def _save(self, event: Event, jpeg: bytes, frames: list[bytes]):
        day = self.root / event.time.astimezone(self.cfg.site.tz).strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(day).free
        if self.cfg.storage.space_low(free - len(jpeg) - sum(map(len, frames))):
            raise LowSpace(errno.ENOSPC, "it would leave less than [storage] min_free_mb "
                                         "free", str(day))
        files = []
        try:
            files.append(("snapshot", *_write(day / f"{event.id}.jpg", jpeg)))
            for k, frame in enumerate(frames, 1):
                files.append((f"frame-{k}", *_write(day / f"{event.id}-frame-{k}.jpg", frame)))
        except OSError:
            # Pictures no event row points at would never be uploaded, only pruned last.
            for _, path, _, _ in files:
                Path(path).unlink(missing_ok=True)
            raise
        return files

    def _record_data(self, event: Event, update: dict) -> None:
        try:
            self.require_store().update_event_data(event.seq, update)
        except StorageError as e:
            log.error("cannot note %s on event %s: %s", update, event.id, e)
        self._picture_attached()

    def _space_returned(self) -> bool:
        """Free space above the minimum and its margin, and a file can be created there
        (a disk out of inodes or over quota has bytes free and still refuses every file)."""
        probe = self.root / ".space-probe"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self.cfg.storage.space_low(shutil.disk_usage(self.root).free, was_low=True):
                return False
            _write(probe, b"\0")
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------ limits

    def prune(self) -> None:
        """Apply retention_days and max_snapshots_mb to the picture files. A clock not
        set dates nothing: retention waits for it, the cap does not."""
        if not self.root.exists():
            return
        cutoff = (time.time() - self.cfg.storage.retention_days * 86400
                  if self.port.clock_synced() else -math.inf)
        days = [day for day in self.root.iterdir() if day.is_dir()]
        files = []
        for day in days:
            for f in day.iterdir():
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime < cutoff:
                    f.unlink(missing_ok=True)
                else:
                    files.append((f, st.st_size, st.st_mtime))
        cap = self.cfg.storage.max_snapshots_mb * 1024 * 1024
        total = sum(size for _, size, _ in files)
        if total > cap:
            try:
                uploaded = self.require_store().uploaded_paths()
            except StorageError:
                uploaded = set()
            # Uploaded pictures go first (the platform has them), oldest first within each.
            files.sort(key=lambda f: (str(f[0]) not in uploaded, f[2]))
            for path, size, _ in files:
                if total <= cap:
                    break
                path.unlink(missing_ok=True)
                total -= size
                log.info("snapshot cap: removed %s", path)
        for day in days:
            if not any(day.iterdir()):
                day.rmdir()


def _write(path: Path, data: bytes) -> tuple[str, str, int]:
    """Write atomically (temp file, fsync, rename): a power cut leaves no half picture."""
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a half-written file would only take space
        raise
    return str(path), hashlib.sha256(data).hexdigest(), len(data)
