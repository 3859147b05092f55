"""The guard-room page's tests' rig: a real `edge-alarm run` on mock pins with a
test-pattern camera, and a real `edge-alarm web` beside it on 127.0.0.1, as two processes
that share only the store (read-only for the page) and the control socket."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import RunningDaemon, _child_env, _wait_until, start_daemon, stop_daemon
from edge.sim.site import SimSite

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(tmp_path: Path, short_dir: Path, *, listen: str, password: bool = True) -> Path:
    web = {"listen": listen}
    if password:
        (tmp_path / "web-password").write_text(PASSWORD + "\n", encoding="utf-8")
        web["password_file"] = str(tmp_path / "web-password")
    extra = "\n[web]\n" + "".join(f'{key} = "{value}"\n' for key, value in web.items())
    site = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                   debounce_s=0.05, camera_pre_trigger_s=1, extra=extra)
    return site.write(tmp_path / "config.toml")


@dataclass
class GuardSite:
    config: Path
    url: str
    daemon: RunningDaemon
    web: subprocess.Popen
    web_log: Path


def start_web(config: Path, url: str, log: Path) -> subprocess.Popen:
    """`python -m edge web -c CONFIG`, returned once it answers."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "web", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_child_env())

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"edge-alarm web exited {proc.returncode}:\n"
                        f"{log.read_text(errors='replace')}")
        try:
            return requests.get(f"{url}/api/session", timeout=2).ok
        except requests.ConnectionError:
            return False
    _wait_until(answers, 15, interval=0.05, what="edge-alarm web answering")
    return proc


def stop_web(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture
def guard_site(tmp_path, short_dir):
    """The daemon and the page (password PASSWORD, listening on 127.0.0.1)."""
    port = free_port()
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{port}")
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{port}"
    try:
        web = start_web(config, url, tmp_path / "web.log")
    except BaseException:
        stop_daemon(daemon)
        raise
    yield GuardSite(config, url, daemon, web, tmp_path / "web.log")
    assert stop_web(web) == 0, (tmp_path / "web.log").read_text(errors="replace")
    stop_daemon(daemon)
