"""The control socket: how the CLI (status, sim, silence…) talks to the running daemon.

Wire protocol (ours, not part of the interface): one JSON object per line each way over a
Unix stream socket. Request ``{"cmd": "status", "args": {...}}``; answer
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "...", "refused": true}``.
The socket is mode 0660 so that the admin group, not everyone, may silence an alarm; the
account of each caller (SO_PEERCRED) is recorded with the commands that change anything.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError
from edge.status_doc import StatusDoc

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
# The whole request line must arrive within this, however slowly its bytes trickle in.
REQUEST_DEADLINE_S = 10.0
ANSWER_SEND_S = 5.0
# Requests answered at once; more get an immediate "busy" answer. The kernel's listen
# backlog bounds those not yet accepted.
MAX_CONNECTIONS = 8
LISTEN_BACKLOG = 16
# When accept() or a thread start fails for want of resources (EMFILE, ENFILE, threads):
# wait, doubling, and report a `fault` once it keeps failing this many times in a row
# (after about 1.5 s).
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
FAULT_AFTER_FAILURES = 6
# accept() errors about one connection that went away before it was taken: take the next.
_CONNECTION_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR})
DRILL_FOR_RANGE_S = (60, 86400)  # drill and walk test --for
# How a silence or an acknowledgement on the socket was given (data.via): the CLI, or
# the guard-room page.
SOCKET_VIA = ("cli", "web")

Handler = Callable[[dict, str], object]  # (checked args, the caller's account) → result
NoneType = type(None)
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", NoneType: "null"}


@dataclass(frozen=True)
class Command:
    """One command the socket answers: its handler and each argument's allowed types
    (exact types: true is not an integer, "false" is not false); an argument that may be
    null may also be left out."""

    handler: Handler
    args: dict[str, tuple[type, ...]]


class ControlPathTaken(EdgeAlarmError, FileExistsError):
    """Something that is not a socket is where the control socket belongs."""


class ControlServer:
    def __init__(self, path: Path, commands: dict[str, Command], *,
                 on_fault: Callable[[str, str], None] | None = None,
                 on_recovered: Callable[[], None] | None = None,
                 thread_factory: Callable[..., threading.Thread] = threading.Thread,
                 max_connections: int = MAX_CONNECTIONS):
        """``on_fault(reason, detail)`` / ``on_recovered()``: the accept loop cannot take
        connections for a while / takes them again. ``thread_factory`` makes the thread
        of each connection (threading.Thread's signature)."""
        self.path = Path(path)
        self.commands = commands
        self._on_fault = on_fault or (lambda reason, detail: None)
        self._on_recovered = on_recovered or (lambda: None)
        self._thread_factory = thread_factory
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self._closing = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_daemon(cls, path: Path, daemon, **kwargs) -> ControlServer:
        """The daemon's commands, and its `fault`/`recovered` events for part "control"."""
        health = daemon.port.health("control")
        return cls(path, daemon_handlers(daemon), on_fault=health.failed,
                   on_recovered=health.ok, **kwargs)

    def in_use(self) -> bool:
        """Whether another daemon already answers on this socket."""
        return _answers(self.path)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):  # never ours to delete: someone put it there
                raise ControlPathTaken(f"{self.path} exists and is not a socket; move it "
                                       "away and restart edge-alarm")
            if self.in_use():
                raise EdgeAlarmError(f"another edge-alarm daemon answers on {self.path}")
            self.path.unlink()  # left behind by a daemon that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Not umask: it is process-wide, and other threads create files meanwhile. The
        # runtime directory (0750) keeps others out during the instant before chmod.
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(LISTEN_BACKLOG)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,),
                                        name="control", daemon=True)
        self._thread.start()

    def _accept_loop(self, sock: socket.socket) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                conn, _ = sock.accept()
            except OSError as e:
                if self._closing.is_set():
                    return
                if e.errno not in _CONNECTION_GONE:
                    failures = self._failed(failures, f"accept: {e}")
                continue
            if self._dispatch(conn):
                failures = self._succeeded(failures)
            else:
                failures = self._failed(failures, "cannot start a thread for a request")

    def _failed(self, failures: int, why: str) -> int:
        """Back off after the ``failures``-th failure in a row; the count now."""
        failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
        if failures == 1:
            log.warning("control socket: %s; retrying", why)
        if failures == FAULT_AFTER_FAILURES:
            log.error("control socket keeps failing: %s", why)
            self._on_fault("accept_failing", why)
        self._closing.wait(delay)
        return failures

    def _succeeded(self, failures: int) -> int:
        if failures >= FAULT_AFTER_FAILURES:
            log.info("control socket answers again")
            self._on_recovered()
        return 0

    def _dispatch(self, conn: socket.socket) -> bool:
        """Hand the connection to a thread of its own, or answer it at once (busy); False
        when no thread could be started."""
        if not self._slots.acquire(blocking=False):
            _answer_and_close(conn, _failure(f"busy: {self.max_connections} requests are "
                                             "being answered; try again"))
            return True
        try:
            self._thread_factory(target=self._serve, args=(conn,), name="control-conn",
                                 daemon=True).start()
        except RuntimeError as e:  # "can't start new thread"
            self._slots.release()
            _answer_and_close(conn, _failure(f"the daemon cannot answer now: {e}"))
            return False
        return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            _answer_and_close(conn, self._answer(conn))
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> dict:
        try:
            name, args = self._parse(_read_line(conn, time.monotonic() + REQUEST_DEADLINE_S))
        except TimeoutError:
            return {"ok": False, "refused": True, "error": "bad request: not sent whole "
                                                           f"within {REQUEST_DEADLINE_S:g} s"}
        except (ValueError, OSError, RecursionError) as e:  # RecursionError: nested JSON
            return {"ok": False, "error": f"bad request: {e}", "refused": True}
        command = self.commands[name]
        try:
            return {"ok": True, "result": command.handler(args, _peer_account(conn))}
        except CommandRefused as e:
            return {"ok": False, "error": str(e), "refused": True}
        except (EdgeAlarmError, TimeoutError) as e:  # the part failed (a modem error)
            return _failure(str(e) or type(e).__name__)
        except Exception as e:  # the daemon itself failed the command
            log.exception("control command %s failed", name)
            return _failure(f"{type(e).__name__}: {e}")

    def _parse(self, line: bytes) -> tuple[str, dict]:
        """The command's name and its checked arguments; CommandRefused (a ValueError)
        for anything else."""
        request = json.loads(line)
        if not isinstance(request, dict) or set(request) - {"cmd", "args"}:
            raise CommandRefused('a request is {"cmd": ..., "args": {...}}')
        name = request.get("cmd")
        if not isinstance(name, str) or name not in self.commands:
            raise CommandRefused(f"unknown command {str(name)[:40]!r}")
        return name, _checked_args(name, request.get("args"), self.commands[name].args)

    def close(self) -> None:
        self._closing.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _checked_args(name: str, args, allowed: dict[str, tuple[type, ...]]) -> dict:
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise CommandRefused(f"{name}: args must be an object")
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise CommandRefused(f"{name}: unknown argument {unknown[0][:40]!r}")
    for key, types in allowed.items():
        value = args.get(key)
        if type(value) not in types:
            raise CommandRefused(f"{name}: {key} must be "
                                 f"{' or '.join(_TYPE_NAMES[t] for t in types)}, not "
                                 f"{json.dumps(value)[:40]}")
        if isinstance(value, str) and not _is_text(value):
            raise CommandRefused(f"{name}: {key} is not valid UTF-8 text: "
                                 f"{json.dumps(value)[:40]}")
    return {key: args.get(key) for key in allowed}


def _is_text(value: str) -> bool:
    """False for a string with lone surrogates: argv bytes that were not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _failure(error: str) -> dict:
    return {"ok": False, "error": error, "refused": False}


def _answer_and_close(conn: socket.socket, answer: dict) -> None:
    with conn:
        try:
            conn.settimeout(ANSWER_SEND_S)
            # ASCII: text that is not UTF-8 (lone surrogates) must not stop the answer.
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass  # the client went away


def _peer_account(conn: socket.socket) -> str:
    """The user name of the process at the other end (its uid when it has no name)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return "unknown"
    _, uid, _ = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    """One line, all of it by ``deadline`` (monotonic): TimeoutError otherwise."""
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no whole line in time")
        conn.settimeout(left)
        chunk = conn.recv(4096)
        end = chunk.find(b"\n")
        if end >= 0:
            return bytes(buf + chunk[:end])
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            raise ValueError("request too long")


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def request(path: Path, cmd: str, args: dict | None = None, timeout: float = 10.0) -> Any:
    """Send one command to the daemon and return its result, waiting at most ``timeout``
    for all of it. DaemonUnreachable when none answers; CommandRefused when it says no."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise DaemonUnreachable(f"no edge-alarm daemon is running ({path} does not "
                                    "exist)") from None
        except PermissionError:
            raise DaemonUnreachable(f"permission denied on {path}: run as root or as a "
                                    "member of the edge-alarm group") from None
        except OSError as e:
            if path.exists() and not path.is_socket():
                raise DaemonUnreachable(f"{path} is not a socket: no daemon can listen "
                                        "there until it is moved away") from None
            raise DaemonUnreachable(f"no edge-alarm daemon answers on {path}: "
                                    f"{e.strerror or e}") from None
        try:
            s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered ("busy") and closed before reading: the answer is there to read
        try:
            line = _read_line(s, deadline)
        except TimeoutError:
            raise DaemonUnreachable(f"the daemon did not answer on {path} within "
                                    f"{timeout:g} s") from None
        except (OSError, ValueError) as e:
            raise DaemonUnreachable(f"the daemon did not answer on {path}: {e}") from None
    if not line:
        raise DaemonUnreachable(f"the daemon closed {path} without answering")
    try:
        answer = json.loads(line)
    except ValueError:
        raise EdgeAlarmError(f"the daemon's answer is not JSON: {line[:80]!r}") from None
    if not answer.get("ok"):
        if answer.get("refused"):
            raise CommandRefused(answer.get("error", "refused"))
        raise EdgeAlarmError(answer.get("error", "the daemon failed"))
    return answer.get("result")


def request_status(path: Path, timeout: float = 10.0) -> StatusDoc:
    """The running daemon's status document; raises as ``request``."""
    status: StatusDoc = request(path, "status", timeout=timeout)
    return status


def daemon_handlers(daemon) -> dict[str, Command]:
    """The commands the daemon answers; each runs on the owner thread."""
    call = daemon.loop.call

    def status(args, account):
        return call(daemon.status)

    def sim(args, account):
        if args["state"] not in ("on", "off"):
            raise CommandRefused("sim needs an input name and on or off")
        log.info("sim %s %s (account %s)", args["input"], args["state"], account)
        call(daemon.simulate, args["input"], args["state"] == "on")
        return {"input": args["input"], "state": args["state"]}

    def checked_via(args, command: str) -> str:
        via = args["via"] or "cli"
        if via not in SOCKET_VIA:
            raise CommandRefused(f"{command}: via must be one of {', '.join(SOCKET_VIA)}")
        return via

    def silence(args, account):
        by = (args["by"] or "cli")[:64]
        return [e.to_json() for e in call(daemon.silence, by, checked_via(args, "silence"),
                                          None, account)]

    def acknowledge(args, account):
        """Only acknowledges (the guard page's 收到); the siren sounds on."""
        by = args["by"][:64] or account
        return [e.to_json() for e in call(daemon.acknowledge, by,
                                          checked_via(args, "acknowledge"), None, account)]

    def test_sms(args, account):
        sms = daemon.handoffs.direct_sms
        if sms is None:
            raise EdgeAlarmError("no [modem] is configured")
        deadline = sms.send_deadline_s  # no command waits longer than the modem may
        try:
            refs = sms.send_direct(args["number"], args["text"]).result(deadline)
        except TimeoutError:
            raise EdgeAlarmError(f"the modem did not confirm the SMS within {deadline:g} s"
                                 "; it may still go") from None
        return {"refs": refs}

    def checked_for_s(args, command: str) -> int | None:
        low, high = DRILL_FOR_RANGE_S
        if args["for_s"] is not None and not low <= args["for_s"] <= high:
            raise CommandRefused(f"{command} --for must be from 1m to 24h")
        return args["for_s"]

    def drill(args, account):
        return call(daemon.set_drill, args["on"], checked_for_s(args, "drill"), account)

    def walktest(args, account):
        by = (args["by"] or account)[:64]
        return call(daemon.set_walktest, args["on"], checked_for_s(args, "walktest"), by,
                    account)

    return {"status": Command(status, {}),
            "sim": Command(sim, {"input": (str,), "state": (str,)}),
            "silence": Command(silence, {"by": (str, NoneType), "via": (str, NoneType)}),
            "acknowledge": Command(acknowledge, {"by": (str,), "via": (str, NoneType)}),
            "test-sms": Command(test_sms, {"number": (str,), "text": (str,)}),
            "drill": Command(drill, {"on": (bool,), "for_s": (int, NoneType)}),
            "walktest": Command(walktest, {"on": (bool,), "for_s": (int, NoneType),
                                           "by": (str, NoneType)})}
