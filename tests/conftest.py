"""Shared test helpers: a mock-pin config on disk, a deadline poller, and a real
`edge-alarm run` subprocess. Nothing here is autouse; a test asks for what it needs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

# The pins of mock_config_text(), as the example config wires them.
PANIC_PIN, GATE_PIN, TAMPER_PIN, SIREN_PIN = 17, 27, 5, 22


def mock_config_text(storage: Path, socket: Path, *, pin_factory: str = "mock",
                     extra: str = "", tamper: bool = True) -> str:
    """A school gate on simulated pins: one panic button, one gate (school hours on
    weekdays, Asia/Shanghai), one tamper switch (unless ``tamper`` is false) and a siren;
    ``extra`` is appended."""
    tamper_table = f"""
[[tamper]]
name = "box"
label = "报警主机防拆"
pin = {TAMPER_PIN}
""" if tamper else ""
    return f"""\
[site]
name = "高山小学"
device_id = "test-gate-1"
timezone = "Asia/Shanghai"

[storage]
path = "{storage}"

[gpio]
pin_factory = "{pin_factory}"

[[panic_button]]
name = "guard_room"
label = "门卫室一键报警"
pin = {PANIC_PIN}

[[gate]]
name = "main_gate"
label = "校门"
pin = {GATE_PIN}
held_open_alert_s = 300
debounce_s = 0.3
open_hours = ["06:30-08:30", "11:00-13:30", "15:30-18:30"]
open_days = ["mon", "tue", "wed", "thu", "fri"]

{tamper_table}
[siren]
pin = {SIREN_PIN}
max_on_s = 180

[control]
socket = "{socket}"
""" + extra


@pytest.fixture
def short_dir():
    """A directory with a short path under /tmp: a Unix socket path must stay under
    ~100 bytes, which pytest's tmp_path does not promise."""
    path = Path(tempfile.mkdtemp(prefix="ea-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def write_config(tmp_path, short_dir) -> Callable[..., Path]:
    """write_config(name="config.toml", storage=None, **mock_config_text options) → the
    file's path; storage by default tmp_path/"var", the control socket under short_dir."""
    def write(name: str = "config.toml", storage: Path | None = None, **options) -> Path:
        path = tmp_path / name
        path.write_text(mock_config_text(storage or tmp_path / "var",
                                         short_dir / "control.sock", **options),
                        encoding="utf-8")
        return path
    return write


def _wait_until(predicate: Callable[[], object], timeout: float = 2.0,
                interval: float = 0.01, what: str | None = None):
    """Poll ``predicate`` until it returns something truthy (returned) or fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


@pytest.fixture
def wait_until():
    """wait_until(predicate, timeout=2.0, interval=0.01, what=None) → the truthy result."""
    return _wait_until


def _child_env() -> dict:
    env = dict(os.environ)
    # Never let a child daemon talk to a real systemd or pick up a real config.
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "EDGE_ALARM_CONFIG"):
        env.pop(key, None)
    return env


def edge_cli(*args: str, config: Path | None = None, timeout: float = 20.0,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m edge ARGS [-c CONFIG]` as a real subprocess, output captured as text."""
    argv = [sys.executable, "-m", "edge", *args]
    if config is not None:
        argv += ["-c", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=_child_env(), cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def cli():
    """cli(*args, config=None, timeout=20, cwd=None) → CompletedProcess of `python -m edge`."""
    return edge_cli


@dataclass
class RunningDaemon:
    proc: subprocess.Popen
    config: Path
    socket: Path
    log: Path

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return edge_cli(*args, config=self.config, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(config: Path, socket: Path, log: Path, timeout: float = 10.0,
                 env: dict | None = None) -> RunningDaemon:
    """`python -m edge run -c CONFIG` (``env`` added to a clean environment), returned
    once its control socket answers `status`."""
    from edge.control import request
    from edge.errors import DaemonUnreachable

    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**_child_env(), **(env or {})})
    daemon = RunningDaemon(proc, config, socket, log)

    def answers():
        if proc.poll() is not None:
            pytest.fail(f"edge-alarm run exited {proc.returncode}:\n{daemon.log_text()}")
        try:
            return request(socket, "status", timeout=2) is not None
        except DaemonUnreachable:
            return False
    _wait_until(answers, timeout, interval=0.02, what="edge-alarm run answering status")
    return daemon


def stop_daemon(daemon: RunningDaemon, timeout: float = 5.0) -> int:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout``; its exit status."""
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()
    return daemon.proc.returncode


@pytest.fixture
def running_daemon(write_config, tmp_path, short_dir):
    """A real `edge-alarm run` on the mock config of write_config(), answering `status`;
    stopped (SIGTERM, then SIGKILL) at teardown."""
    config = write_config()
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    yield daemon
    stop_daemon(daemon)
