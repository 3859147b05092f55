"""Shared test helpers: a mock-pin config on disk, a deadline poller, a real
`edge-alarm run` subprocess, the emulated modem and the platform stand-in with its token.
One thing is autouse: every event a daemon stored during a test is checked against the
CloudEvents schema (docs/cloudevents.schema.json); otherwise a test asks for what it needs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jsonschema
import pytest

from edge.errors import StorageError
from edge.sim.modem import ModemEmulator
from edge.modem.modem import ModemTimings
from edge.errors import StorageError
from edge.sim.platform import PlatformStub
from edge.sim.site import (GATE_PIN, PANIC_PIN, SIREN_PIN, SITE_NAME, TAMPER_PIN,  # noqa: F401
                           OwnerThread, SimSite)
from edge.sim.site import write_token as write_token_file
from edge.store import Store

# Unique per run, so "the token appears nowhere" cannot pass by accident.
PLATFORM_TOKEN = f"tok-{uuid.uuid4().hex}"
# Deadlines short enough that a silent modem costs a test a second, not a minute.
SHORT_MODEM_TIMINGS = ModemTimings(command_s=1.0, send_s=3.0, prompt_s=1.0, list_s=3.0,
                                   settle_s=0.02, sim_ready_s=0.5, busy_retry_s=0.02,
                                   reopen_first_s=0.05, reopen_max_s=0.3)


def mock_config_text(storage: Path, socket: Path, *, storage_keys: str = "",
                     **options) -> str:
    """The simulated site's config (edge.sim.site.SimSite: one panic button, one gate open
    in school hours on weekdays, one tamper switch, a siren; ``options`` are SimSite's),
    ``storage_keys`` given as TOML lines for [storage]."""
    return SimSite(storage, socket, storage_keys=tomllib.loads(storage_keys), **options).text()


@pytest.fixture
def short_dir():
    """A directory with a short path under /tmp: a Unix socket path must stay under
    ~100 bytes, which pytest's tmp_path does not promise."""
    path = Path(tempfile.mkdtemp(prefix="ea-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def write_config(tmp_path, short_dir) -> Callable[..., Path]:
    """write_config(name="config.toml", storage=None, **mock_config_text options, which are
    SimSite's) → the file's path; storage by default tmp_path/"var", the control socket
    under short_dir."""
    def write(name: str = "config.toml", storage: Path | None = None, **options) -> Path:
        path = tmp_path / name
        path.write_text(mock_config_text(storage or tmp_path / "var",
                                         short_dir / "control.sock", **options),
                        encoding="utf-8")
        return path
    return write


@pytest.fixture
def tiny_fs():
    """mount_tiny(dir, options) mounts a tmpfs there (skips the test when mounting is
    not permitted); everything mounted is unmounted at teardown. Ask for it before the
    fixtures that start a daemon, so the daemon stops before its disk goes."""
    mounted: list[Path] = []

    def mount_tiny(where: Path, options: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here to fill a disk honestly: "
                        f"{done.stderr.strip() or done.returncode}")
        mounted.append(where)
        return where

    yield mount_tiny
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def refuse_writes(*args, **kwargs):
    """A store method on an SD card that went read-only."""
    raise StorageError("attempt to write a readonly database")


class SyncedKernel:
    """The kernel's word on the clock (adjtimex), as a daemon's ``_sync`` reads it:
    SyncedKernel() is a Pi whose NTP has set the clock, SyncedKernel(False) one that
    booted without it."""

    def __init__(self, synced: bool = True):
        self._synced = synced

    def synced(self) -> bool:
        return self._synced


@pytest.fixture
def emulator():
    """The emulated modem (edge.sim.modem) on a real pty: powered up, SIM ready,
    registered."""
    with ModemEmulator() as emulator:
        yield emulator


@pytest.fixture
def urcs():
    """A queue for an on_urc callback: pass ``urcs.put``."""
    return queue.Queue()


def write_token(path: Path, token: str = PLATFORM_TOKEN, mode: int = 0o600) -> Path:
    """A token file as the installer leaves one, holding PLATFORM_TOKEN unless told."""
    return write_token_file(path, token, mode)


def self_signed_cert(folder: Path, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, made by openssl
    in ``folder`` as {name}.pem and {name}-key.pem."""
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def token_file(tmp_path) -> Path:
    """tmp_path/"token" holding PLATFORM_TOKEN, as write_token() leaves it."""
    return write_token(tmp_path / "token")


@pytest.fixture
def platform():
    """The platform stand-in (a real http.server on 127.0.0.1) taking PLATFORM_TOKEN; the
    test fails when an event it received does not follow the schema."""
    with PlatformStub(token=PLATFORM_TOKEN, check_event=cloudevent_problems) as stub:
        yield stub
    assert stub.invalid_events == []


SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "cloudevents.schema.json"
_schema_validator: list[jsonschema.Draft202012Validator] = []


def cloudevent_problems(document: dict) -> list[str]:
    """Where a CloudEvent departs from docs/cloudevents.schema.json, one line each."""
    if not _schema_validator:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        _schema_validator.append(jsonschema.Draft202012Validator(schema))
    return [f"{document.get('type')} {document.get('id')}: "
            f"{'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}"
            for error in _schema_validator[0].iter_errors(document)]


def stored_event_problems(db: Path) -> list[str]:
    """The schema's findings on every event of a daemon's store (one that records its
    device_id); nothing for a store that tests filled by hand or cannot be read."""
    try:
        store = Store(db, readonly=True)
    except StorageError:
        return []
    try:
        device_id = store.get_meta("device_id")
        events = store.events() if device_id else []
    except StorageError:
        return []
    finally:
        store.close()
    return [line for event in events
            for line in cloudevent_problems(event.to_cloudevent(device_id))]


@pytest.fixture(autouse=True)
def emitted_events_follow_the_schema(tmp_path):
    """After each test: every event a daemon stored under its tmp_path follows the schema
    (as the CloudEvent the uplink would post). Set up before, so torn down after, the
    fixtures that run daemons."""
    yield
    problems = [line for db in sorted(tmp_path.rglob("events.db"))
                for line in stored_event_problems(db)]
    assert problems == [], "events that do not follow docs/cloudevents.schema.json"


@pytest.fixture
def token_never_logged(caplog):
    """Fails the test when PLATFORM_TOKEN is in any log message of its set-up or call, at
    any level (urllib3's request lines included). A module that sends the token asks for
    it in every test: ``pytestmark = pytest.mark.usefixtures("token_never_logged")``."""
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert not [r.getMessage() for r in records if PLATFORM_TOKEN in r.getMessage()]


def _wait_until(predicate: Callable[[], object], timeout: float = 10.0,
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
                 env: dict | None = None, preexec_fn: Callable[[], None] | None = None,
                 on_spawn: Callable[[subprocess.Popen], None] | None = None) -> RunningDaemon:
    """`python -m edge run -c CONFIG` (``env`` added to a clean environment; ``preexec_fn``
    run in the child before exec, ``on_spawn`` given the process at once), returned once
    its control socket answers `status`."""
    from edge.control import request
    from edge.errors import DaemonUnreachable

    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
                                stdin=subprocess.DEVNULL, env={**_child_env(), **(env or {})})
    if on_spawn is not None:
        on_spawn(proc)
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


def children_of(pid: int) -> list[int]:
    """The pids of process ``pid``'s children (of each of its threads), from /proc; a
    thread that ends while they are read has none."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


@contextmanager
def daemon_in_process(daemon, server, timeout: float = 5.0):
    """``daemon`` (a Daemon) on an owner thread, ``server`` (its ControlServer) started
    once it is ready, as `edge-alarm run` has them (edge.sim.site.OwnerThread); entered
    once `status` is answered, stopped and closed at exit."""
    from edge.control import request
    from edge.errors import EdgeAlarmError

    owner = OwnerThread(daemon, server, timeout)
    try:
        def answers():
            try:
                return request(server.path, "status", timeout=1)
            except EdgeAlarmError:  # not yet, or answered "cannot answer now"
                return None
        _wait_until(answers, timeout, what="the in-process daemon answering")
        yield
    finally:
        stopped = owner.close(5)
    assert stopped and owner.crash == []


@pytest.fixture
def running_daemon(write_config, tmp_path, short_dir):
    """A real `edge-alarm run` on the mock config of write_config(), answering `status`;
    stopped (SIGTERM, then SIGKILL) at teardown."""
    config = write_config()
    daemon = start_daemon(config, short_dir / "control.sock", tmp_path / "daemon.log")
    yield daemon
    stop_daemon(daemon)
