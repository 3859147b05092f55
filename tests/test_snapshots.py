"""Camera snapshots end to end: the real daemon (simulated pins, a real SQLite store) with
its CameraWorker writing real JPEG files, and its UplinkWorker PUTting them to the platform
stand-in (a real http.server on 127.0.0.1). A broken camera is a small stand-in for the
hardware that raises CameraError; a full disk is a real tmpfs mounted over the snapshot
directory (the tests that need it are skipped when mounting is not permitted)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from PIL import Image

from conftest import PLATFORM_TOKEN, SITE_NAME, SyncedKernel, write_token
from edge import snapshots
from edge.clock import Clock
from edge.config import load
from edge.daemon import Daemon
from edge.errors import CameraError
from edge.events import Event
from edge.service import WorkerOptions, build_daemon
from edge.sim.site import Contact
from edge.snapshots import CameraWorker
from edge.store import Store
from edge.snapshot_wait import SNAPSHOT_WAIT_S

PRINCIPAL = "+8613800138000"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MONDAY_MORNING = dt.datetime(2025, 3, 3, 7, 0, tzinfo=SHANGHAI)   # the gate may open
SUNDAY_NIGHT = dt.datetime(2025, 3, 2, 22, 0, tzinfo=SHANGHAI)    # after hours


# ---------------------------------------------------------------------- helpers

def camera_options(*, pre_trigger_s: int = 0, on_gate_open: bool | None = None) -> dict:
    """SimSite options for a test-pattern camera."""
    keys = {} if on_gate_open is None else {"snapshot_on_gate_open": on_gate_open}
    return {"camera_pre_trigger_s": pre_trigger_s, "camera_keys": keys}


def uplink_options(url: str, token_file: Path) -> dict:
    """SimSite options for the platform at ``url``, its token written to ``token_file``."""
    return {"platform_url": url, "token_file": write_token(token_file),
            "uplink_keys": {"heartbeat_s": 3600}}


def modem_options(port: str) -> dict:
    """SimSite options for the modem on ``port`` and the principal told of panics."""
    return {"modem_port": port, "contacts": [Contact("principal", PRINCIPAL, ["panic"])]}


def jpeg_of(level: int, size=(64, 36)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(out, format="JPEG")
    return out.getvalue()


def grey_level(jpeg: bytes) -> int:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return image.convert("L").getpixel((image.width // 2, image.height // 2))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BrokenableCamera:
    """Stands in for camera hardware that can break and be mended: real JPEG bytes while
    it works (a grey still; pre-trigger frames grey levels 40, 80, 120…, oldest darkest),
    CameraError while broken. start() may be called once, as the real backends allow
    (a second start would start their pre-trigger thread twice)."""

    name = "stand-in"

    def __init__(self, frames: int = 3, broken: bool = False):
        self.broken = broken
        self.ok = not broken
        self.last_error: str | None = None
        self.starts = 0
        self.captures = 0
        self._frames = frames

    def start(self) -> None:
        self.starts += 1
        if self.starts > 1:
            raise RuntimeError("threads can only be started once")
        if self.broken:
            self._fail("opening the camera failed: Pipeline handler in use by another process")

    def capture_jpeg(self, timeout_s: float = 5.0) -> bytes:
        self.captures += 1
        if self.broken:
            self._fail("capturing a still did not finish within 5.0 s")
        self.ok, self.last_error = True, None
        return jpeg_of(200, (320, 180))

    def pre_trigger_frames(self) -> list[bytes]:
        return [] if self.broken else [jpeg_of(40 * k) for k in range(1, self._frames + 1)]

    def close(self) -> None:
        pass

    def _fail(self, message: str):
        self.ok, self.last_error = False, message
        raise CameraError(f"stand-in: {message}")


class ShiftedClock(Clock):
    """Real time, moved so that it starts at ``start``: timers run as usual, and events
    fall on a chosen weekday and hour (in or out of the gate's open_hours)."""

    def __init__(self, start: dt.datetime):
        self._offset = start - dt.datetime.now(dt.timezone.utc)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self._offset


class Site:
    """The daemon in this process as `edge-alarm run` builds it, on simulated pins; with
    ``camera`` its CameraWorker takes pictures with that camera."""

    def __init__(self, config: Path, *, camera=None, clock: Clock | None = None):
        self.cfg = load(str(config))
        self.daemon = build_daemon(self.cfg, pin_factory=MockFactory(), clock=clock,
                                   options=WorkerOptions(camera=camera))
        ready = threading.Event()
        self._thread = threading.Thread(target=self.daemon.run, kwargs={"on_ready": ready.set},
                                        name="owner", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the daemon did not start"
        self.store = Store(self.cfg.storage.db_path)  # the test thread's own connection

    def stop(self) -> None:
        self.daemon.request_stop()
        self._thread.join(10)
        self.daemon.close()
        self.store.close()

    @property
    def camera_worker(self) -> CameraWorker:
        return next(w for w in self.daemon.workers if isinstance(w, CameraWorker))

    def sim(self, name: str, active: bool) -> None:
        self.daemon.loop.call(self.daemon.simulate, name, active)

    def status(self) -> dict:
        return self.daemon.loop.call(self.daemon.status)

    def events(self, kind: str | None = None, subject: str | None = None) -> list[Event]:
        return [e for e in self.store.events(kind=kind)
                if subject is None or e.subject == subject]

    def one(self, kind: str, subject: str | None = None) -> Event | None:
        found = self.events(kind, subject)
        return found[-1] if found else None

    def has(self, kind: str, key: str = "snapshot_sha256"):
        """For wait_until: the latest ``kind`` event once its data holds ``key``."""
        return lambda: (e := self.one(kind)) is not None and key in e.data and e

    def snapshot_dir(self, event: Event) -> Path:
        return self.cfg.storage.snapshots_path / event.time.astimezone(
            self.cfg.site.tz).strftime("%Y-%m-%d")


@pytest.fixture
def sites():
    started: list[Site] = []

    def make(config: Path, **options) -> Site:
        site = Site(config, **options)
        started.append(site)
        return site

    yield make
    for site in started:
        site.stop()


def fill_bytes(directory: Path) -> Path:
    """Write one file until the filesystem refuses more: ENOSPC, for real."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == 28, e
    return filler


def fill_inodes(directory: Path) -> list[Path]:
    """Create empty files until the filesystem has no inode left."""
    made = []
    try:
        while True:
            path = directory / f"inode-{len(made)}"
            path.touch()
            made.append(path)
    except OSError as e:
        assert e.errno == 28, e
    return made


# ---------------------------------------------------------------------- done-when

def test_a_panic_yields_a_jpeg_whose_sha_is_in_the_event_and_reaches_the_platform_with_its_frames(
        write_config, tmp_path, sites, platform, cli, wait_until):
    pre_trigger_s = 3
    config = write_config(**camera_options(pre_trigger_s=pre_trigger_s),
                          **uplink_options(platform.url, tmp_path / "token"))
    site = sites(config)
    # The ring holds pre_trigger_s frames once the camera has run that many seconds.
    wait_until(lambda: site.status()["camera"]["ok"], 5, what="the camera started")
    ring = site.camera_worker._camera
    wait_until(lambda: len(ring.pre_trigger_frames()) == pre_trigger_s, pre_trigger_s + 2,
               what="the pre-trigger ring full")

    site.sim("guard_room", True)
    assert site.status()["siren"]["on"]
    panic = wait_until(site.has("panic"), 5, what="the snapshot attached to the panic")

    still = (site.snapshot_dir(panic) / f"{panic.id}.jpg").read_bytes()
    assert sha256(still) == panic.data["snapshot_sha256"]
    with Image.open(io.BytesIO(still)) as image:
        assert (image.format, image.size) == ("JPEG", (1280, 720))
    assert panic.data["frames"] == pre_trigger_s
    frames = [(site.snapshot_dir(panic) / f"{panic.id}-frame-{k}.jpg").read_bytes()
              for k in range(1, pre_trigger_s + 1)]
    for frame in frames:
        with Image.open(io.BytesIO(frame)) as image:
            assert (image.format, image.size) == ("JPEG", (320, 180))
    assert not list(site.snapshot_dir(panic).glob("*.tmp"))

    # The platform: the CloudEvent carries the sha, then the same bytes arrive.
    assert platform.wait_for(lambda: len(platform.frames.get(panic.id, {})) == pre_trigger_s
                             and panic.id in platform.snapshots, 5)
    posted = next(e for e in platform.events if e.id == panic.id)
    assert posted.document["data"]["snapshot_sha256"] == sha256(still)
    assert platform.snapshots[panic.id] == still
    assert [platform.frames[panic.id][k] for k in range(1, pre_trigger_s + 1)] == frames
    for request in platform.requests:
        if request.method == "PUT":
            assert request.headers["Content-Type"] == "image/jpeg"
            assert request.headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"

    # The CLI reads the same sha from the store while the daemon runs.
    listed = cli("events", "--kind", "panic", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["id"] == panic.id and row["data"]["snapshot_sha256"] == sha256(still)


def test_frames_are_numbered_oldest_first_on_disk_and_on_the_platform(
        write_config, tmp_path, sites, platform, wait_until):
    camera = BrokenableCamera(frames=4)
    site = sites(write_config(**camera_options(pre_trigger_s=4),
                              **uplink_options(platform.url, tmp_path / "token")), camera=camera)
    site.sim("guard_room", True)
    panic = wait_until(site.has("panic"), 5, what="the snapshot attached")
    on_disk = [grey_level((site.snapshot_dir(panic) / f"{panic.id}-frame-{k}.jpg").read_bytes())
               for k in range(1, 5)]
    assert platform.wait_for(lambda: len(platform.frames.get(panic.id, {})) == 4, 5)
    uploaded = [grey_level(platform.frames[panic.id][k]) for k in range(1, 5)]
    for levels in (on_disk, uploaded):
        assert all(abs(level - 40 * k) <= 6 for k, level in enumerate(levels, 1)), levels


# ---------------------------------------------------------------------- a failing camera

def test_a_failing_camera_raises_a_fault_and_the_alarm_goes_out_at_once(
        write_config, tmp_path, sites, platform, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(snapshots, "CAMERA_RETRY_S", 0.2)
    camera = BrokenableCamera()
    config = write_config(**camera_options(pre_trigger_s=3),
                          **uplink_options(platform.url, tmp_path / "token"),
                          **modem_options(emulator.port))
    site = sites(config, camera=camera)
    wait_until(lambda: site.status()["camera"]["ok"], 5, what="the camera up")
    camera.broken = True

    pressed = time.monotonic()
    site.sim("guard_room", True)
    assert site.status()["siren"]["on"]
    panic = site.one("panic")
    assert panic is not None, "the panic is stored before the picture is tried"
    [sms] = emulator.wait_sent(1, timeout=5)
    assert sms.number == PRINCIPAL and "门卫室一键报警" in sms.text
    assert platform.wait_for(lambda: panic.id in [e.id for e in platform.events], 5)
    took = time.monotonic() - pressed
    assert took < SNAPSHOT_WAIT_S / 2, f"the platform had the alarm only after {took:.1f} s"

    posted = next(e for e in platform.events if e.id == panic.id)
    assert "stand-in" in posted.document["data"]["snapshot_error"]
    assert "snapshot_sha256" not in posted.document["data"]
    fault = wait_until(lambda: site.one("fault", "camera"), 2, what="a camera fault")
    assert fault.data["reason"] == "capture_failed" and "stand-in" in fault.data["detail"]
    assert "camera" in site.status()["faults"]
    assert not site.snapshot_dir(panic).exists() or not list(site.snapshot_dir(panic).iterdir())

    # Mended: the worker's retry between alarms finds it, and the next alarm has a picture.
    camera.broken = False
    recovered = wait_until(lambda: site.one("recovered", "camera"), 3, what="camera recovered")
    assert recovered.seq > fault.seq
    assert "camera" not in site.status()["faults"]
    site.sim("box", True)
    tamper = wait_until(site.has("tamper"), 5, what="the tamper's snapshot")
    assert platform.wait_for(lambda: tamper.id in platform.snapshots, 5)
    assert sha256(platform.snapshots[tamper.id]) == tamper.data["snapshot_sha256"]
    assert camera.starts == 1


def test_a_camera_that_fails_to_start_is_a_fault_and_recovers_without_a_second_start(
        write_config, sites, wait_until, monkeypatch):
    monkeypatch.setattr(snapshots, "CAMERA_RETRY_S", 0.2)
    camera = BrokenableCamera(broken=True)
    site = sites(write_config(**camera_options()), camera=camera)
    fault = wait_until(lambda: site.one("fault", "camera"), 3, what="a camera fault at start")
    assert "Pipeline handler in use" in fault.data["detail"]
    retries = camera.captures
    wait_until(lambda: camera.captures > retries, 2, what="a retry between alarms")
    assert site.one("recovered", "camera") is None
    camera.broken = False
    wait_until(lambda: site.one("recovered", "camera"), 3, what="camera recovered")
    assert camera.starts == 1


# ---------------------------------------------------------------------- upload order

def test_a_new_alarm_goes_to_the_platform_before_the_last_alarms_pictures(
        write_config, tmp_path, sites, platform, wait_until):
    camera = BrokenableCamera(frames=8)  # nine pictures per alarm
    site = sites(write_config(**camera_options(pre_trigger_s=8),
                              **uplink_options(platform.url, tmp_path / "token")), camera=camera)
    platform.set_delay(0.1)  # a slow link: each request takes a tenth of a second
    site.sim("guard_room", True)
    panic = wait_until(lambda: site.one("panic"), 2, what="the panic stored")
    assert platform.wait_for(lambda: panic.id in [e.id for e in platform.events], 5)
    site.sim("box", True)
    tamper = wait_until(lambda: site.one("tamper"), 2, what="the tamper stored")
    assert platform.wait_for(lambda: tamper.id in [e.id for e in platform.events], 5)

    requests = platform.requests
    posted_at = next(i for i, r in enumerate(requests)
                     if r.method == "POST" and tamper.id.encode() in r.body)
    puts_before = [r for r in requests[:posted_at] if r.method == "PUT"]
    assert len(puts_before) <= 2, f"the tamper waited behind {len(puts_before)} picture PUTs"
    assert platform.wait_for(lambda: len(platform.frames.get(panic.id, {})) == 8
                             and len(platform.frames.get(tamper.id, {})) == 8, 10)


def test_pictures_refused_for_the_token_are_held_not_dropped(
        write_config, tmp_path, sites, platform, wait_until):
    site = sites(write_config(**camera_options(pre_trigger_s=0),
                              **uplink_options(platform.url, tmp_path / "token")),
                 camera=BrokenableCamera(frames=0))
    platform.set_delay(0.3)  # the snapshot's PUT is checked 0.3 s after it arrives
    site.sim("guard_room", True)
    panic = wait_until(lambda: site.one("panic"), 2, what="the panic stored")
    assert platform.wait_for(lambda: panic.id in [e.id for e in platform.events], 5)
    platform.set_token("a-new-token-the-device-does-not-have-yet")
    assert platform.wait_for(lambda: any(r.method == "PUT" and r.status == 401
                                         for r in platform.requests), 5)
    platform.set_delay(0)
    platform.set_token(PLATFORM_TOKEN)
    assert platform.wait_for(lambda: panic.id in platform.snapshots, 5), \
        "a picture refused for the token was given up"


# ---------------------------------------------------------------------- which events

@pytest.mark.parametrize("on_gate_open, when, pictured", [
    (False, MONDAY_MORNING, set()),
    (True, MONDAY_MORNING, {"gate_open"}),
    (False, SUNDAY_NIGHT, {"gate_after_hours"}),
], ids=["gate_open-off", "gate_open-on", "after-hours"])
def test_which_gate_events_get_a_snapshot(write_config, sites, wait_until, on_gate_open,
                                          when, pictured):
    site = sites(write_config(**camera_options(on_gate_open=on_gate_open)),
                 clock=ShiftedClock(when))
    site.sim("main_gate", True)
    wait_until(lambda: site.one("gate_open"), 3, what="gate_open")
    site.sim("main_gate", False)
    wait_until(lambda: site.one("gate_closed"), 3, what="gate_closed")
    # The worker takes events in order: once the panic has its picture, the gate's are done.
    site.sim("guard_room", True)
    panic = wait_until(site.has("panic"), 5, what="the panic's snapshot")

    gate_events = site.events(subject="main_gate")
    kinds = [e.kind for e in gate_events]
    assert ("gate_after_hours" in kinds) == (when == SUNDAY_NIGHT)
    with_picture = {e.kind for e in gate_events if "snapshot_sha256" in e.data}
    assert with_picture == pictured
    files = {p.name for p in site.snapshot_dir(panic).iterdir()}
    assert files == {f"{e.id}.jpg" for e in gate_events if e.kind in pictured} | {
        f"{panic.id}.jpg"}


# ---------------------------------------------------------------------- prune()

@pytest.fixture
def pruner(write_config, tmp_path):
    """make(retention_days, max_snapshots_mb, synced) → (CameraWorker set up on this
    thread, its config); the daemon it belongs to is built but not started, its clock
    synchronised unless ``synced`` is false."""
    made = []

    def make(retention_days: int = 90, max_snapshots_mb: int = 2048, synced: bool = True):
        config = write_config(**camera_options(),
                              storage_keys=f"retention_days = {retention_days}\n"
                                           f"max_snapshots_mb = {max_snapshots_mb}")
        cfg = load(str(config))
        daemon = Daemon(cfg)
        daemon._sync = SyncedKernel(synced)
        worker = CameraWorker(cfg, daemon.port, camera=BrokenableCamera())
        worker.setup()
        made.append(worker)
        return worker, cfg

    yield make
    for worker in made:
        worker.teardown()


def picture(cfg, day: str, name: str, *, size: int = 300 * 1024, age_s: float = 0.0) -> Path:
    path = cfg.storage.snapshots_path / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_prune_removes_pictures_older_than_retention_days_and_empty_days(pruner):
    worker, cfg = pruner(retention_days=7)
    old = [picture(cfg, "2025-01-01", "a.jpg", age_s=8 * 86400),
           picture(cfg, "2025-01-01", "a-frame-1.jpg", age_s=8 * 86400),
           picture(cfg, "2025-01-09", "b.jpg", age_s=7 * 86400 + 60)]
    kept = [picture(cfg, "2025-01-09", "c.jpg", age_s=7 * 86400 - 60),
            picture(cfg, "2025-01-15", "d.jpg")]
    worker.prune()
    assert [p.exists() for p in old] == [False] * 3
    assert [p.exists() for p in kept] == [True] * 2
    assert sorted(p.name for p in cfg.storage.snapshots_path.iterdir()) == [
        "2025-01-09", "2025-01-15"]


def test_pictures_outlive_retention_while_the_clock_is_not_synchronised(pruner):
    # A Pi that booted years ahead of the pictures' times: retention waits for the clock.
    worker, cfg = pruner(retention_days=7, synced=False)
    old = picture(cfg, "2025-01-01", "a.jpg", age_s=8 * 86400)
    worker.prune()
    assert old.exists()


def test_the_cap_removes_uploaded_pictures_first_then_the_oldest(pruner):
    worker, cfg = pruner(max_snapshots_mb=1)
    # Six of 300 KB (1.76 MiB), oldest first; #3 and #4 (newer) are on the platform.
    days = ["2025-02-01", "2025-02-02", "2025-02-02", "2025-02-02", "2025-02-03", "2025-02-03"]
    paths = [picture(cfg, day, f"p{i}.jpg", age_s=600 - 60 * i) for i, day in enumerate(days)]
    store = Store(cfg.storage.db_path)
    try:
        for i in (3, 4):
            event = store.append("panic", "guard_room", dt.datetime.now(SHANGHAI),
                                 {"label": "门卫室一键报警"})
            store.attach(event.seq, [("snapshot", str(paths[i]), sha256(b""), 300 * 1024)], {})
            store.mark_uploaded(event.seq, "snapshot")
    finally:
        store.close()
    worker.prune()
    # Removed: #3 and #4 (uploaded), then #0 (oldest); 3 × 300 KB fit in 1 MiB.
    assert [p.exists() for p in paths] == [False, True, True, False, False, True]
    assert not (cfg.storage.snapshots_path / "2025-02-01").exists()
    total = sum(p.stat().st_size for p in paths if p.exists())
    assert total <= 1024 * 1024


# ---------------------------------------------------------------------- a full disk

def test_a_full_disk_is_a_storage_fault_and_never_stops_the_alarm(
        write_config, tmp_path, tiny_fs, sites, platform, wait_until):
    """A real tmpfs over the snapshot directory, filled to ENOSPC with a file: the
    worker finds less than [storage] min_free_mb free (the same OSError path a failed
    write takes)."""
    config = write_config(**camera_options(pre_trigger_s=0),
                          **uplink_options(platform.url, tmp_path / "token"),
                          storage_keys="min_free_mb = 10")
    shots = tiny_fs(tmp_path / "var" / "snapshots", "size=28m")
    filler = fill_bytes(shots)
    site = sites(config)

    site.sim("guard_room", True)
    assert site.status()["siren"]["on"]
    panic = site.one("panic")
    assert panic is not None
    fault = wait_until(lambda: site.one("fault", "storage"), 5, what="a storage fault")
    assert fault.data["reason"] == "low_space"
    assert site.status()["siren"]["on"]
    assert platform.wait_for(lambda: panic.id in [e.id for e in platform.events], 5)
    posted = next(e for e in platform.events if e.id == panic.id)
    assert posted.document["data"]["snapshot_error"].startswith("not saved")
    assert sorted(p.name for p in shots.iterdir()) == ["filler"]  # no stray file

    filler.unlink()
    recovered = wait_until(lambda: site.one("recovered", "storage"), 5,
                           what="storage recovered")
    assert recovered.data["reason"] == "low_space"
    site.sim("box", True)
    wait_until(site.has("tamper"), 5,
               what="a snapshot once space returned")


def test_a_disk_out_of_inodes_stays_faulted_until_files_can_be_made_again(
        write_config, tmp_path, tiny_fs, sites, wait_until):
    """Bytes free, no inode left: the kernel's own ENOSPC. Free bytes alone must not
    count as recovery, or every alarm would raise the fault again."""
    config = write_config(**camera_options(pre_trigger_s=0))
    shots = tiny_fs(tmp_path / "var" / "snapshots",
                    "size=80m,nr_inodes=32")
    fillers = fill_inodes(shots)
    site = sites(config)

    site.sim("guard_room", True)
    assert site.status()["siren"]["on"]
    fault = wait_until(lambda: site.one("fault", "storage"), 5, what="a storage fault")
    assert fault.data["reason"] == "full" and "No space left" in fault.data["detail"]
    wait_until(site.has("panic", "snapshot_error"), 3,
               what="the panic's snapshot_error")
    # The worker rechecks the disk right after a failed save, so by the time the next
    # alarm's picture fails too, a recovery on free bytes alone would be on record.
    site.sim("box", True)
    wait_until(site.has("tamper", "snapshot_error"), 5,
               what="the tamper's snapshot_error")
    site.status()  # the owner has recorded whatever the worker posted before
    assert [e.kind for e in site.events(subject="storage")] == ["fault"]

    for path in fillers:
        path.unlink()
    wait_until(lambda: site.one("recovered", "storage"), 5, what="storage recovered")
    assert [e.kind for e in site.events(subject="storage")] == ["fault", "recovered"]


@pytest.mark.parametrize("camera_works", [True, False])
def test_the_camera_worker_tells_the_callback_it_was_given_once_the_picture_is_recorded(
        write_config, camera_works):
    """The camera worker gets the daemon's port and a callback (where the daemon is built
    it wakes the uplink); it looks for no other worker. The callback comes once the
    picture, or why there is none, is in the store."""
    cfg = load(str(write_config(**camera_options())))
    daemon = Daemon(cfg)
    told: list[dict] = []
    store = Store(cfg.storage.db_path)
    camera = BrokenableCamera(broken=not camera_works)
    worker = CameraWorker(cfg, daemon.port, camera=camera,
                          picture_attached=lambda: told.append(store.event(panic.seq).data))
    try:
        worker.setup()
        data = {"site": SITE_NAME, "label": "门卫室", "clock_synced": True}
        panic = store.append("panic", "guard_room", daemon.clock.now(), data)
        worker.notify(panic)
        worker.step()
        assert len(told) == 1
        assert ("snapshot_sha256" if camera_works else "snapshot_error") in told[0]
    finally:
        worker.teardown()
        store.close()
