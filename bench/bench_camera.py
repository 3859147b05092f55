"""What a camera snapshot costs: the time from a panic press until its JPEG is on disk, and the
memory the pre-trigger ring holds.

    .venv/bin/python bench/bench_camera.py [--presses N] [--pre-trigger S] [--dir DIR]

Press → snapshot on disk: the real daemon (edge.service.build_daemon, gpiozero MockFactory
pins, the test-pattern camera at its 1280x720 still size in its own process, as `run` has
it, a real SQLite store) with twenty panic buttons. The clock starts just before the bench drives a button's mock pin low and
stops when <event id>.jpg appears in the day's snapshot directory (the worker writes a
temporary file and renames it, so the name appears only once the bytes are fsynced), found
by polling that directory every 0.5 ms. "Recorded" stops when the event's data holds
snapshot_sha256 (the pre-trigger frames are written between the two). Each alarm is silenced
before the next press, and a button is pressed again only after the daemon's
PANIC_LOCKOUT_S. No transport is configured, so nothing but the camera worker competes.

Pre-trigger memory: tracemalloc's count of live Python allocations, after a test-pattern
camera with pre_trigger_s = 0, 5 and 30 has filled its ring (frames generated every 5 ms
instead of every second, so a 30 s ring fills at once; what is kept is the same) and been
stopped, less the same for pre_trigger_s = 0. The picamera2 ring keeps JPEGs of its lores
stream (320 wide, the sensor's aspect ratio); its cost is computed for the common Pi
camera modules from yuv420_to_jpeg, the function the backend uses, on a test-pattern frame
and on noise (a busy scene: the worst case for JPEG).

Prints numbers; the exit status is 0 unless the daemon failed to take a snapshot.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from _common import (Figure, arg_parser, bench_main, p50_p99, site_config,
                     spread, start_on_mock_pins, wait_for, work_dir)
from PIL import Image

from edge.camera.jpeg import yuv420_to_jpeg
from edge.camera.pi_camera import Picamera2Camera
from edge.camera.pattern import TestPatternCamera
from edge.config import Config
from edge.store import Store

POLL_S = 0.0005
WAIT_S = 10.0  # a press without a snapshot in this long is a failure
RING_SIZES = (0, 5, 30)
# (module, sensor resolution) as picamera2 reports camera.sensor_resolution.
SENSORS = (
    ("Camera Module 3 (IMX708)", (4608, 2592)),
    ("Camera Module 2 (IMX219)", (3280, 2464)),
    ("HQ Camera (IMX477)", (4056, 3040)),
    ("Global Shutter (IMX296)", (1456, 1088)),
)


def bench_config(root: Path, pre_trigger_s: int) -> Config:
    return site_config(root / "var", "bench-1",
                       camera_pre_trigger_s=pre_trigger_s)


def poll(predicate, what: str, timeout: float = WAIT_S):
    return wait_for(predicate, what, timeout, POLL_S)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


# ---------------------------------------------------------------- press → snapshot


def new_still(day: Path, known: set[str]) -> str | None:
    """The name of a snapshot (not a frame) in ``day`` that is not in ``known``."""
    try:
        names = [e.name for e in os.scandir(day)]
    except FileNotFoundError:
        return None
    return next((n for n in names if n.endswith(".jpg") and "-frame-" not in n
                 and n not in known), None)


def press_to_snapshot(root: Path, presses: int, pre_trigger_s: int):
    cfg = bench_config(root, pre_trigger_s)
    owner, buttons = start_on_mock_pins(cfg, WAIT_S)
    daemon = owner.daemon
    reader = Store(cfg.storage.db_path)
    on_disk, recorded, known = [], [], set()
    try:
        worker = next(w for w in daemon.workers if w.part == "camera")
        poll(lambda: worker.status()["ok"], "the camera started")
        # Presses start once the ring is full, as at a gate where the camera runs all day.
        poll(lambda: len(worker._camera.pre_trigger_frames()) == pre_trigger_s,
             "the pre-trigger ring full", pre_trigger_s + WAIT_S)
        for n in range(presses):
            i = n % len(buttons)
            day = cfg.storage.snapshots_path / daemon.clock.now().astimezone(
                cfg.site.tz).strftime("%Y-%m-%d")
            t0 = buttons.press(i)
            name = poll(lambda: new_still(day, known), f"press {n}: the snapshot on disk")
            on_disk.append(time.perf_counter() - t0)
            known.add(name)
            event_id = name.removesuffix(".jpg")
            poll(lambda: any(e.id == event_id and "snapshot_sha256" in e.data
                             for e in reader.events(kind="panic", after_seq=max(
                                 0, reader.last_seq() - 5))),
                 f"press {n}: the snapshot recorded")
            recorded.append(time.perf_counter() - t0)
            buttons.release(i)
            daemon.loop.call(daemon.silence, "bench", "cli")
        frames = [e.data.get("frames", 0) for e in reader.events(kind="panic")]
    finally:
        reader.close()
        owner.close()
    return on_disk, recorded, frames


def still_render_time(samples: int = 20) -> float:
    camera = TestPatternCamera(pre_trigger_s=0)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        camera.capture_jpeg()
        times.append(time.perf_counter() - t0)
    camera.close()
    return statistics.median(times)


# ---------------------------------------------------------------- pre-trigger memory


def ring_memory(pre_trigger_s: int) -> tuple[int, int]:
    """(bytes tracemalloc counts live after the ring filled, bytes of the frames in it)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        camera = TestPatternCamera(pre_trigger_s=pre_trigger_s, frame_interval_s=0.005)
        camera.start()
        if pre_trigger_s:
            # Full, then round once more: the first frames have been dropped again, as on
            # a camera that runs all day.
            first = poll(lambda: len(f := camera.pre_trigger_frames()) == pre_trigger_s
                         and f, "the ring full", 60)
            seen = {id(frame) for frame in first}
            poll(lambda: seen.isdisjoint(map(id, camera.pre_trigger_frames())),
                 "the ring round once more", 60)
            del first
        camera.close()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    frames = camera.pre_trigger_frames()
    if len(frames) != pre_trigger_s:
        raise RuntimeError(f"the ring holds {len(frames)} frames, not {pre_trigger_s}")
    return used, sum(map(len, frames))


def yuv420_of(image: Image.Image) -> bytes:
    """The planes libcamera hands over for a YUV420 lores stream (stride = width)."""
    y, u, v = image.convert("YCbCr").split()
    half = (image.width // 2, image.height // 2)
    return y.tobytes() + u.resize(half).tobytes() + v.resize(half).tobytes()


def lores_costs(seconds: int):
    """Per sensor: (name, lores size, raw YUV420 bytes, JPEG of the test pattern, JPEG of
    noise, ms to encode one) for one frame; the caller multiplies by ``seconds``."""
    rows = []
    rng = random.Random(1)
    for name, (sensor_w, sensor_h) in SENSORS:
        width = Picamera2Camera.FRAME_WIDTH
        height = round(width * sensor_h / sensor_w / 2) * 2   # as Picamera2Camera._open
        pattern = TestPatternCamera(pre_trigger_s=0, still_size=(width, height))
        scene = Image.open(io.BytesIO(pattern.capture_jpeg()))
        noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        t0 = time.perf_counter()
        scene_jpeg = yuv420_to_jpeg(yuv420_of(scene), (width, height), width)
        encode_s = time.perf_counter() - t0
        noise_jpeg = yuv420_to_jpeg(yuv420_of(noise), (width, height), width)
        rows.append((name, (width, height), width * height * 3 // 2, len(scene_jpeg),
                     len(noise_jpeg), encode_s))
    return rows


def kb(n: float) -> str:
    return f"{n / 1024:8.1f} KiB"


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--pre-trigger", type=int, default=5,
                        help="[camera] pre_trigger_s of the daemon (default 5)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[Figure]:
    """The details printed; the figures (none has a target). RuntimeError when the daemon
    took no snapshot."""
    with work_dir(args.dir, "bench-camera-") as root:
        print(f"\npress → snapshot, {args.presses} presses, test-pattern 1280x720, "
              f"pre_trigger_s = {args.pre_trigger}")
        on_disk, recorded, frames = press_to_snapshot(root, args.presses, args.pre_trigger)
        for what, times in (("on disk  ", on_disk), ("recorded ", recorded)):
            print(f"  press → {what} {spread(times, 1)}")
        print(f"  frames per snapshot: min {min(frames)}, max {max(frames)}")
        print(f"  for scale: one 1280x720 test-pattern render+encode {ms(still_render_time())}")
    figures = [Figure("press → snapshot on disk (test pattern 1280x720)", p50_p99(on_disk, 1)),
               Figure("press → snapshot recorded in the event", p50_p99(recorded, 1))]

    print("\npre-trigger ring, test-pattern 320x180 JPEG frames (tracemalloc, live bytes)")
    base, _ = ring_memory(0)
    for seconds in RING_SIZES[1:]:
        used, frame_bytes = ring_memory(seconds)
        print(f"  pre_trigger_s = {seconds:2d}: {kb(used - base)} more than pre_trigger_s = 0 "
              f"(the frames themselves: {kb(frame_bytes)}, {frame_bytes / seconds / 1024:.1f} "
              f"KiB each)")
        figures.append(Figure(f"pre-trigger ring memory, {seconds} s of test-pattern frames",
                              f"{(used - base) / 1024:.0f} KiB"))

    seconds = max(RING_SIZES)
    print(f"\npicamera2 ring, {seconds} s of lores frames kept as JPEG (yuv420_to_jpeg, q85)")
    for name, (w, h), raw, scene, noise, encode_s in lores_costs(seconds):
        print(f"  {name:26s} lores {w}x{h}: test pattern {kb(seconds * scene)}, "
              f"noise (worst) {kb(seconds * noise)}; raw YUV420 would be {kb(seconds * raw)}; "
              f"encode {encode_s * 1000:.1f} ms/frame here")
    return figures


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
