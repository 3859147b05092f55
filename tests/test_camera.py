"""Camera backends: the test pattern end to end (real JPEG bytes through Pillow), the pre-trigger
ring, and the picamera2 backend's own logic against a stand-in ``picamera2`` module whose
behaviour each test steers (picamera2 itself exists only on Raspberry Pi OS)."""

import functools
import io
import os
import subprocess
import sys
import threading
import time
import types

import pytest
from PIL import Image

from edge.camera import open_camera, probe
from edge.camera.frame_ring import FrameRing
from edge.camera.jpeg import yuv420_to_jpeg
from edge.camera.pi_camera import Picamera2Camera
from edge.camera.pattern import CJK_FONT_PATHS, TestPatternCamera
from edge.errors import CameraError, ConfigError

DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def wait_until(condition, what, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    image.load()
    return image


def thread_running(name: str) -> bool:
    return any(thread.name == name for thread in threading.enumerate())


# --- open_camera ---------------------------------------------------------------------------

def test_backend_none_means_no_camera():
    assert open_camera("none", pre_trigger_s=5) is None


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown camera backend 'usb'") as refused:
        open_camera("usb", pre_trigger_s=0)
    assert isinstance(refused.value, ConfigError)


def test_picamera2_backend_opens_without_picamera2_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # as on a laptop: the import fails
    camera = open_camera("picamera2", pre_trigger_s=0)
    assert isinstance(camera, Picamera2Camera)
    with pytest.raises(CameraError, match=r"picamera2 is not installed \(sudo apt install python3-picamera2"):
        camera.start()
    assert camera.ok is False and "picamera2" in camera.last_error
    ok, message = probe(camera)
    assert not ok and message.startswith("picamera2: camera down")
    camera.close()


def test_a_pi_camera_daemon_does_not_import_the_test_pattern():
    # Its drawing and fonts (ImageDraw, FreeType) are memory a Pi's daemon never needs
    # (bench/bench_idle.py measures the daemon's RSS on a Pi against its target).
    probe_imports = ("import sys; import edge.service, edge.snapshots; "
                     "from edge.camera import open_camera; "
                     "open_camera('picamera2', pre_trigger_s=5); "
                     "print(sorted(m for m in ('edge.camera.pattern', 'PIL.ImageDraw', "
                     "'PIL.ImageFont') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe_imports], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# --- test pattern --------------------------------------------------------------------------

def test_test_pattern_still_is_a_real_jpeg():
    camera = open_camera("test-pattern", pre_trigger_s=0, overlay=lambda: ["gaoshan-gate-1", "07:42:15"])
    image = decode(camera.capture_jpeg())
    assert image.size == (1280, 720)
    red, green, blue = image.getpixel((20, 20))  # the first colour bar is grey
    assert abs(red - 192) < 12 and abs(green - 192) < 12 and abs(blue - 192) < 12
    assert camera.ok and camera.last_error is None
    assert camera.pre_trigger_frames() == []
    camera.close()


def test_overlay_text_is_drawn_into_the_image():
    lines = ["gaoshan-gate-1", "main gate", "07:42:15"]
    camera = TestPatternCamera(pre_trigger_s=0, overlay=lambda: lines)
    first = camera.capture_jpeg()
    assert camera.capture_jpeg() == first  # same text, same image
    lines[2] = "07:42:16"
    assert camera.capture_jpeg() != first


@pytest.mark.parametrize("fonts", [(), CJK_FONT_PATHS, (DEJAVU,)], ids=["no-cjk-font", "system-cjk", "ttf"])
def test_chinese_overlay_never_crashes(fonts):
    if fonts == (DEJAVU,) and not os.path.exists(DEJAVU):
        pytest.skip("no DejaVu font on this system")
    camera = TestPatternCamera(pre_trigger_s=0, font_paths=fonts,
                               overlay=lambda: ["【高山小学】 gaoshan-gate-1", "门卫室一键报警", "2024-05-06 07:42:15"])
    assert decode(camera.capture_jpeg()).size == (1280, 720)


def test_without_a_cjk_font_non_ascii_is_drawn_as_question_marks():
    def still(text):
        return TestPatternCamera(pre_trigger_s=0, font_paths=(), overlay=lambda: [text]).capture_jpeg()

    assert still("高山小学 gate 1") == still("???? gate 1")


def test_pre_trigger_ring_fills_stays_bounded_and_stops_on_close():
    renders = []

    def overlay():
        renders.append(None)
        return ["frame", str(len(renders))]

    camera = TestPatternCamera(pre_trigger_s=3, overlay=overlay, frame_interval_s=0.01)
    camera.start()
    wait_until(lambda: len(renders) >= 8, "eight frames")
    frames = camera.pre_trigger_frames()
    assert len(frames) == 3
    assert all(decode(frame).size == (320, 180) for frame in frames)
    assert len(set(frames)) == 3  # each second's frame has its own text
    camera.close()
    assert not thread_running("test-pattern-frames")
    assert len(camera.pre_trigger_frames()) == 3


def test_frame_ring_keeps_the_newest_oldest_first_and_hands_out_a_copy():
    count = 0

    def grab():
        nonlocal count
        count += 1
        return str(count).encode()

    ring = FrameRing(grab, 4, interval_s=0.001, name="ring-under-test")
    ring.start()
    wait_until(lambda: count >= 10, "ten grabs")
    ring.stop()
    assert not thread_running("ring-under-test")
    frames = ring.frames()
    assert frames == [str(n).encode() for n in range(count - 3, count + 1)]
    frames.clear()
    assert len(ring.frames()) == 4


def test_frame_ring_drops_frames_after_a_camera_error_and_keeps_them_on_a_skip():
    script = [b"1", b"2", None, b"3", CameraError("gone"), b"4", None, b"5"]
    done = threading.Event()

    def grab():
        if not script:
            done.set()
            return None
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    ring = FrameRing(grab, 5, interval_s=0.001, name="ring-with-gaps")
    ring.start()
    assert done.wait(5)
    ring.stop()
    assert ring.frames() == [b"4", b"5"]


def test_probe_reports_a_healthy_camera():
    ok, message = probe(TestPatternCamera(pre_trigger_s=0))
    assert ok
    assert message.startswith("test-pattern: ok, 1280x720 JPEG")


# --- YUV420 lores frames -------------------------------------------------------------------

def yuv420(size, stride, y, u, v, padding=0):
    """A frame laid out as libcamera does; the bytes past each row's width hold `padding`."""
    width, height = size
    half = stride // 2

    def plane(value, w, h, row):
        return (bytes([value]) * w + bytes([padding]) * (row - w)) * h

    return plane(y, width, height, stride) + plane(u, width // 2, height // 2, half) + \
        plane(v, width // 2, height // 2, half)


def test_yuv420_frame_becomes_a_colour_jpeg_honouring_the_stride():
    # JPEG's YCbCr for pure red is about (76, 85, 255); rows are padded to 384 bytes with white.
    image = decode(yuv420_to_jpeg(yuv420((320, 180), 384, 76, 85, 255, padding=255), (320, 180), 384))
    assert image.size == (320, 180)
    for x, y in ((5, 5), (160, 90), (315, 175)):
        red, green, blue = image.convert("RGB").getpixel((x, y))
        assert red > 220 and green < 40 and blue < 40, (x, y)


# --- picamera2 backend, against a stand-in module ------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Rig:
    """What the stand-in Picamera2 does, set by each test."""

    def __init__(self):
        self.sensor_resolution = (1280, 720)
        self.open_errors = []  # raised by the next constructions, in order
        self.captures = []  # the next captures: "hang" or an exception; afterwards they succeed
        self.release = threading.Event()  # ends a hanging capture
        self.attempts = 0
        self.cameras = []


class FakePicamera2:
    def __init__(self, rig, camera_num=0):
        rig.attempts += 1
        if rig.open_errors:
            raise rig.open_errors.pop(0)
        self.rig = rig
        self.sensor_resolution = rig.sensor_resolution
        self.configured = []
        self.starts = 0
        self.closed = False
        self.camera_config = None
        rig.cameras.append(self)

    def create_still_configuration(self, main={}, lores=None, **rest):
        return {"use_case": "still", "buffer_count": 1,
                "main": {"format": "BGR888", "size": self.sensor_resolution, **main},
                "lores": None if lores is None else {"format": "YUV420", **lores}, **rest}

    def configure(self, config):
        self.configured.append(config)
        self.camera_config = {name: dict(stream) if isinstance(stream, dict) else stream
                              for name, stream in config.items()}
        if config["lores"]:
            width = config["lores"]["size"][0]
            self.camera_config["lores"]["stride"] = -(-width // 64) * 64 + 64  # padded rows

    def start(self):
        self.starts += 1

    def _next_capture(self):
        assert self.starts and not self.closed, "capture on a camera that is not running"
        step = self.rig.captures.pop(0) if self.rig.captures else None
        if step == "hang":
            self.rig.release.wait()
        elif step is not None:
            raise step

    def capture_file(self, file_output, name="main", format=None, wait=None, signal_function=None):
        self._next_capture()
        Image.new("RGB", self.camera_config[name]["size"], "green").save(file_output, format)

    def capture_buffer(self, name="main", wait=None, signal_function=None):
        self._next_capture()
        stream = self.camera_config[name]
        return yuv420(stream["size"], stream["stride"], 76, 85, 255, padding=255)

    def close(self):
        self.closed = True


@pytest.fixture
def rig(monkeypatch):
    rig = Rig()
    module = types.ModuleType("picamera2")
    module.Picamera2 = functools.partial(FakePicamera2, rig)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    yield rig
    rig.release.set()


@pytest.fixture
def clock():
    return Clock()


def test_picamera2_is_configured_once_for_stills_and_kept_running(rig, clock):
    camera = Picamera2Camera(pre_trigger_s=0, clock=clock)
    camera.start()
    for _ in range(3):
        assert decode(camera.capture_jpeg()).size == (1280, 720)  # the full-resolution main stream
    assert len(rig.cameras) == 1
    fake = rig.cameras[0]
    assert len(fake.configured) == 1 and fake.starts == 1
    config = fake.configured[0]
    assert config["use_case"] == "still" and config["lores"] is None
    assert camera.ok and camera.last_error is None
    assert probe(camera)[0]
    camera.close()
    assert fake.closed


def test_picamera2_keeps_pre_trigger_frames_from_the_lores_stream(rig, clock):
    rig.sensor_resolution = (1640, 1232)  # 4:3
    camera = Picamera2Camera(pre_trigger_s=2, frame_interval_s=0.01, clock=clock)
    camera.start()
    wait_until(lambda: len(camera.pre_trigger_frames()) == 2, "two pre-trigger frames")
    lores = rig.cameras[0].configured[0]["lores"]
    assert lores == {"format": "YUV420", "size": (320, 240)}  # the sensor's aspect ratio
    for frame in camera.pre_trigger_frames():
        image = decode(frame).convert("RGB")
        assert image.size == (320, 240)
        red, green, blue = image.getpixel((160, 120))
        assert red > 220 and green < 40 and blue < 40
    assert decode(camera.capture_jpeg()).size == (1640, 1232)
    camera.close()
    assert not thread_running("picamera2-frames")
    assert rig.cameras[0].closed and rig.cameras[0].starts == 1


def test_camera_held_by_another_process_is_retried_after_a_backoff(rig, clock):
    rig.open_errors = [RuntimeError("Pipeline handler in use by another process")]
    camera = Picamera2Camera(pre_trigger_s=0, backoff_s=(10, 60), clock=clock)
    with pytest.raises(CameraError, match="Pipeline handler in use by another process"):
        camera.start()
    assert camera.ok is False
    assert "in use by another process" in camera.last_error

    with pytest.raises(CameraError, match="camera down .* next restart in 10 s"):
        camera.capture_jpeg()
    assert rig.attempts == 1  # no restart before the backoff is over

    clock.now += 10
    assert decode(camera.capture_jpeg()).size == (1280, 720)
    assert camera.ok and camera.last_error is None
    assert rig.attempts == 2
    camera.close()


def test_hanging_capture_times_out_and_the_camera_is_reopened(rig, clock):
    camera = Picamera2Camera(pre_trigger_s=0, backoff_s=(10, 60), clock=clock)
    camera.start()
    rig.captures = ["hang"]
    started = time.monotonic()
    with pytest.raises(CameraError, match="capturing a still did not finish within 0.3 s"):
        camera.capture_jpeg(timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert camera.ok is False and "did not finish" in camera.last_error

    # The stuck camera still holds the device: no second camera is opened while it does.
    clock.now += 10
    with pytest.raises(CameraError, match="previous camera has not closed"):
        camera.capture_jpeg(timeout_s=0.3)
    assert len(rig.cameras) == 1

    rig.release.set()  # the hung call returns; its thread then closes its camera
    wait_until(lambda: rig.cameras[0].closed, "the stuck camera to close")
    clock.now += 20  # the backoff doubled
    assert decode(camera.capture_jpeg()).size == (1280, 720)
    assert camera.ok
    assert len(rig.cameras) == 2 and rig.cameras[1].starts == 1 and not rig.cameras[1].closed
    camera.close()
    assert rig.cameras[1].closed


def test_failing_capture_closes_and_reopens_with_growing_backoff(rig, clock):
    camera = Picamera2Camera(pre_trigger_s=0, backoff_s=(10, 60), clock=clock)
    camera.start()
    rig.captures = [RuntimeError("Camera frontend has timed out!"), RuntimeError("Camera frontend has timed out!")]
    with pytest.raises(CameraError, match="capturing a still failed: RuntimeError: Camera frontend has timed out"):
        camera.capture_jpeg()
    wait_until(lambda: rig.cameras[0].closed, "the failed camera to close")

    clock.now += 10
    with pytest.raises(CameraError, match="frontend has timed out"):
        camera.capture_jpeg()  # reopened, and failed again
    assert len(rig.cameras) == 2

    clock.now += 10
    with pytest.raises(CameraError, match="next restart in 10 s"):
        camera.capture_jpeg()  # the backoff is now 20 s

    clock.now += 10
    assert decode(camera.capture_jpeg()).size == (1280, 720)
    assert camera.ok and camera.last_error is None
    assert [fake.closed for fake in rig.cameras] == [True, True, False]
    assert all(len(fake.configured) == 1 and fake.starts == 1 for fake in rig.cameras)
    camera.close()


def test_capture_after_close_is_refused(rig, clock):
    camera = Picamera2Camera(pre_trigger_s=0, clock=clock)
    camera.start()
    camera.close()
    with pytest.raises(CameraError, match="closed"):
        camera.capture_jpeg()
