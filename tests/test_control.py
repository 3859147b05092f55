"""The control socket under stress and bad input: running out of file descriptors or
threads, slow and surplus clients, a foreign file at its path, requests of the wrong shape;
and the account of each caller recorded with what it changed."""

from __future__ import annotations

import errno
import json
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from edge import config, control
from edge.control import Command, ControlPathTaken, ControlServer, request
from edge.daemon import Daemon
from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError
from edge.sdnotify import Notifier

from conftest import _child_env, daemon_in_process, edge_cli

MY_ACCOUNT = pwd.getpwuid(os.getuid()).pw_name


class Server:
    """A ControlServer answering `echo` (its args and the caller's account) and `hold`
    (waits until released), with its fault and recovery reports kept in ``reports``."""

    def __init__(self, path, **kwargs):
        self.released = threading.Event()
        self.reports: list[str] = []
        commands = {"echo": Command(lambda args, account: {"account": account, **args},
                                    {"word": (str, type(None))}),
                    "hold": Command(lambda args, account: self.released.wait(30), {})}
        self.server = ControlServer(path, commands,
                                    on_fault=lambda reason, detail: self.reports.append(reason),
                                    on_recovered=lambda: self.reports.append("recovered"),
                                    **kwargs)
        self.path = path

    def __enter__(self) -> Server:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.close()

    def echo(self, timeout: float = 5.0):
        return request(self.path, "echo", {"word": "hi"}, timeout=timeout)


def exhaust_fds(spare: int) -> list[int]:
    """Open /dev/null until the process may open no more file descriptors (the soft limit
    lowered to keep that quick), then close ``spare`` of them again."""
    held = []
    while True:
        try:
            held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            assert e.errno == errno.EMFILE
            break
    for _ in range(spare):
        os.close(held.pop())
    return held


@pytest.fixture
def low_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------------ the accept loop

def test_the_accept_loop_outlives_emfile_reports_a_fault_and_recovers(
        short_dir, low_fd_limit, wait_until):
    with Server(short_dir / "c.sock") as s:
        held = exhaust_fds(spare=1)
        try:
            # The client takes the one free descriptor; accept() then has none: EMFILE.
            stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stuck.connect(str(s.path))
            wait_until(lambda: s.reports == ["accept_failing"], timeout=30,
                       what="a fault while accept() keeps failing")
        finally:
            for fd in held:
                os.close(fd)
        with stuck:
            stuck.settimeout(10)
            stuck.sendall(b'{"cmd": "echo"}\n')
            assert json.loads(stuck.makefile().readline())["ok"]  # taken once fds are back
        assert s.echo()["word"] == "hi"
        wait_until(lambda: s.reports == ["accept_failing", "recovered"], timeout=5)


class FailingThreads:
    """A thread factory whose first ``failures`` thread starts fail as at the system's
    thread limit."""

    def __init__(self, failures: int = control.FAULT_AFTER_FAILURES):
        self.left = failures

    def __call__(self, **kwargs) -> threading.Thread:
        if self.left:
            self.left -= 1
            raise RuntimeError("can't start new thread")
        return threading.Thread(**kwargs)


def test_a_failed_thread_start_is_answered_and_retried(short_dir, wait_until):
    failing = FailingThreads()
    with Server(short_dir / "c.sock", thread_factory=failing) as s:
        with pytest.raises(EdgeAlarmError, match="can't start new thread"):
            s.echo()
        while failing.left:
            with pytest.raises(EdgeAlarmError, match="cannot answer now"):
                s.echo()
        wait_until(lambda: s.reports == ["accept_failing"], timeout=5)
        assert s.echo()["word"] == "hi"
        wait_until(lambda: s.reports == ["accept_failing", "recovered"], timeout=5)


def test_the_daemon_records_the_control_fault_and_its_recovery(write_config, wait_until):
    cfg = config.load(str(write_config()))
    daemon = Daemon(cfg, pin_factory=MockFactory(), notifier=Notifier(environ={}))
    server = ControlServer.for_daemon(cfg.control.socket, daemon,
                                      thread_factory=FailingThreads())

    def control_events():
        return [(e.kind, e.data["reason"]) for e in daemon.loop.call(daemon.store.events)
                if e.subject == "control"]
    with daemon_in_process(daemon, server, timeout=30):  # answers after the failed starts
        wait_until(lambda: len(control_events()) == 2, timeout=5, what="two control events")
        assert control_events() == [("fault", "accept_failing"), ("recovered", "accept_failing")]


def test_a_trickling_client_is_cut_off_at_the_request_deadline(short_dir, monkeypatch):
    monkeypatch.setattr(control, "REQUEST_DEADLINE_S", 1.0)
    with Server(short_dir / "c.sock") as s, socket.socket(socket.AF_UNIX) as slow:
        slow.connect(str(s.path))
        slow.setblocking(False)
        answer = b""
        for _ in range(50):  # a byte every 0.2 s: each recv() alone would be quick
            slow.send(b" ")
            time.sleep(0.2)
            try:
                answer = slow.recv(4096)
                break
            except BlockingIOError:
                continue
        reply = json.loads(answer)
        assert reply["refused"] and "not sent whole within 1 s" in reply["error"]
        assert s.echo()["word"] == "hi"


def test_connections_beyond_the_cap_are_refused_at_once(short_dir, wait_until):
    with Server(short_dir / "c.sock", max_connections=2) as s:
        holders = [threading.Thread(target=request, args=(s.path, "hold"),
                                    kwargs={"timeout": 30}) for _ in range(2)]
        for t in holders:
            t.start()
        wait_until(lambda: s.server._slots._value == 0, timeout=5, what="two requests held")
        with pytest.raises(EdgeAlarmError, match="busy: 2 requests"):
            s.echo(timeout=5)
        s.released.set()
        for t in holders:
            t.join(10)
        assert s.echo()["word"] == "hi"


# ------------------------------------------------------------------ the socket's path

def test_a_file_at_the_socket_path_is_refused_and_kept(short_dir):
    path = short_dir / "c.sock"
    path.write_text("notes someone keeps here\n")
    server = Server(path).server
    with pytest.raises(ControlPathTaken, match="is not a socket"):
        server.start()
    assert path.read_text() == "notes someone keeps here\n"


def test_a_daemon_with_a_file_at_its_socket_path_keeps_it_and_says_so(
        write_config, short_dir, tmp_path, wait_until):
    config = write_config()
    path = short_dir / "control.sock"
    path.write_text("keep me\n")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_child_env())
    try:
        wait_until(lambda: "is not a socket" in log.read_text(), timeout=20,
                   what="the daemon's error about the socket path")
        assert proc.poll() is None  # the alarm goes on without its control socket
        faults = json.loads(edge_cli("events", "--json", "--kind", "fault",
                                     config=config).stdout)
        assert [(f["subject"], f["data"]["reason"]) for f in faults] == [
            ("control", "unavailable")]
        status = edge_cli("status", config=config)
        assert status.returncode == 3 and "is not a socket" in status.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert path.read_text() == "keep me\n"


# ------------------------------------------------------------------ requests

@pytest.mark.parametrize("cmd, args, why", [
    ("drill", {"on": "false"}, "on must be true or false"),
    ("drill", {"on": 1}, "on must be true or false"),
    ("drill", {"on": True, "for_s": 600.5}, "for_s must be an integer or null"),
    ("drill", {"on": True, "for_s": True}, "for_s must be an integer or null"),
    ("walktest", {"on": True, "for_s": 99999, "by": None}, "walktest --for must be from"),
    ("walktest", {"on": True, "for_s": None, "by": 5}, "by must be a string or null"),
    ("sim", {"input": "guard_room", "state": True}, "state must be a string"),
    ("sim", {"input": "guard_room", "state": "on", "force": True}, "unknown argument 'force'"),
    ("silence", {"by": ["x"]}, "by must be a string or null"),
    ("silence", {"by": "x", "via": "sms"}, "via must be one of cli, web"),
    ("silence", {"by": "x", "via": True}, "via must be a string or null"),
    ("acknowledge", {"by": None}, "by must be a string"),
    ("acknowledge", {"by": "x", "via": "button"}, "via must be one of cli, web"),
    ("test-sms", {"number": 13800138000, "text": "x"}, "number must be a string"),
    ("status", {"verbose": True}, "unknown argument 'verbose'"),
    ("status", ["x"], "args must be an object"),
    ("reboot", {}, "unknown command 'reboot'"),
])
def test_requests_are_checked_strictly(running_daemon, cmd, args, why):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(running_daemon.socket))
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        answer = json.loads(s.makefile().readline())
    assert answer["ok"] is False and answer["refused"] is True
    assert why in answer["error"]
    status = request(running_daemon.socket, "status")
    assert not status["drill"]["active"] and not status["alarm"]["active"]
    assert not status["walktest"]["active"]


def test_text_that_is_not_utf8_is_refused_in_one_line(running_daemon):
    result = subprocess.run([sys.executable.encode(), b"-m", b"edge", b"silence", b"--by",
                             "王老师".encode("gbk"), b"-c", bytes(running_daemon.config)],
                            capture_output=True, timeout=20, env=_child_env())
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "by is not valid UTF-8 text" in stderr and stderr.count("\n") == 1
    # A sender of its own with a lone surrogate in a string: answered, not dropped.
    with pytest.raises(CommandRefused, match="input is not valid UTF-8"):
        request(running_daemon.socket, "sim", {"input": "gate\udcff", "state": "on"})


def test_a_deeply_nested_request_is_a_bad_request(running_daemon):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(running_daemon.socket))
        s.sendall(b"[" * 50000 + b"\n")
        answer = json.loads(s.makefile().readline())
    assert answer["refused"] and answer["error"].startswith("bad request")
    assert request(running_daemon.socket, "status")["device_id"]


def test_silence_and_drill_record_the_callers_account(running_daemon, wait_until):
    daemon = running_daemon
    assert daemon.cli("drill", "on", "--for", "10m").returncode == 0
    assert daemon.cli("sim", "guard_room", "on").returncode == 0
    assert daemon.cli("drill", "off").returncode == 0
    assert daemon.cli("sim", "box", "on").returncode == 0  # the tamper switch: an alarm
    wait_until(lambda: request(daemon.socket, "status")["alarm"]["active"], timeout=5)
    assert daemon.cli("silence", "--by", "王老师").returncode == 0
    events = {e["kind"]: e for e in json.loads(daemon.cli("events", "--json").stdout)}
    assert events["drill"]["data"]["account"] == MY_ACCOUNT
    silenced = events["silenced"]["data"]
    assert (silenced["by"], silenced["account"]) == ("王老师", MY_ACCOUNT)


def test_a_walk_test_records_each_input_with_who_and_the_callers_account(running_daemon,
                                                                        wait_until):
    daemon = running_daemon
    on = daemon.cli("walktest", "on", "--for", "10m", "--by", "李师傅")
    assert on.returncode == 0 and "walk test on until" in on.stdout, on.stderr
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["walktest"]["active"] and status["walktest"]["by"] == "李师傅"
    assert daemon.cli("sim", "guard_room", "on").returncode == 0
    assert daemon.cli("sim", "box", "on").returncode == 0  # the tamper switch: tested too
    wait_until(lambda: len(json.loads(daemon.cli("events", "--json", "--kind",
                                                 "input_tested").stdout)) == 2, timeout=10)
    assert daemon.cli("walktest", "off").returncode == 0
    events = json.loads(daemon.cli("events", "--json").stdout)
    tested = [e for e in events if e["kind"] == "input_tested"]
    assert [e["subject"] for e in tested] == ["guard_room", "box"]
    assert all(e["data"]["by"] == "李师傅" and e["data"]["account"] == MY_ACCOUNT
               for e in tested)
    assert not {"panic", "tamper"} & {e["kind"] for e in events}
    status = request(daemon.socket, "status")
    assert not status["alarm"]["active"] and not status["walktest"]["active"]


def test_no_daemon_is_still_exit_3_for_a_path_that_is_no_socket(short_dir):
    path = short_dir / "c.sock"
    path.write_text("")
    with pytest.raises(DaemonUnreachable, match="is not a socket"):
        request(path, "status")
