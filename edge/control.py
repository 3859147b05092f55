"""The control socket: how the CLI (status, sim, silence…) talks to the running daemon.

Wire protocol (ours, not part of the interface): one JSON object per line each way over a
Unix stream socket. Request ``{"cmd": "status", "args": {...}}``; answer
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "...", "refused": true}``.
The socket is mode 0660 so that the admin group, not everyone, may silence an alarm.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable

from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
# A test SMS waits behind a modem re-initialisation at worst, and the network's +CMGS.
TEST_SMS_TIMEOUT_S = 150.0
Handler = Callable[[dict], object]


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = Path(path)
        self.handlers = handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def in_use(self) -> bool:
        """Whether another daemon already answers on this socket."""
        return _answers(self.path)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if self.in_use():
                raise EdgeAlarmError(f"another edge-alarm daemon answers on {self.path}")
            self.path.unlink()  # left behind by a daemon that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Not umask: it is process-wide, and other threads create files meanwhile. The
        # runtime directory (0750) keeps others out during the instant before chmod.
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control",
                                        daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="control-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                request = json.loads(_read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                handler = self.handlers.get(request.get("cmd"))
                if handler is None:
                    raise CommandRefused(f"unknown command {request.get('cmd')!r}")
                args = request.get("args") or {}
                answer = {"ok": True, "result": handler(args)}
            except CommandRefused as e:
                answer = {"ok": False, "error": str(e), "refused": True}
            except (EdgeAlarmError, TimeoutError) as e:  # the part failed (a modem error)
                answer = {"ok": False, "error": str(e) or type(e).__name__, "refused": False}
            except (ValueError, OSError) as e:
                answer = {"ok": False, "error": f"bad request: {e}", "refused": True}
            except Exception as e:  # the daemon itself failed the command
                log.exception("control command failed")
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}", "refused": False}
            try:
                conn.sendall(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            except OSError:
                pass  # the client went away

    def close(self) -> None:
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


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            raise ValueError("request too long")
    return buf.split(b"\n", 1)[0]


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def request(path: Path, cmd: str, args: dict | None = None, timeout: float = 10.0):
    """Send one command to the daemon and return its result.
    DaemonUnreachable when none answers; CommandRefused when it says no."""
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
            raise DaemonUnreachable(f"no edge-alarm daemon answers on {path}: "
                                    f"{e.strerror or e}") from None
        try:
            s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
            line = _read_line(s)
        except OSError as e:
            raise DaemonUnreachable(f"the daemon did not answer on {path}: {e}") from None
    if not line:
        raise DaemonUnreachable(f"the daemon closed {path} without answering")
    answer = json.loads(line)
    if not answer.get("ok"):
        if answer.get("refused"):
            raise CommandRefused(answer.get("error", "refused"))
        raise EdgeAlarmError(answer.get("error", "the daemon failed"))
    return answer.get("result")


def daemon_handlers(daemon) -> dict[str, Handler]:
    """The commands the daemon answers; each runs on the owner thread."""
    call = daemon.loop.call

    def status(args):
        return call(daemon.status)

    def sim(args):
        name, state = args.get("input"), args.get("state")
        if not isinstance(name, str) or state not in ("on", "off"):
            raise CommandRefused("sim needs an input name and on or off")
        call(daemon.simulate, name, state == "on")
        return {"input": name, "state": state}

    def silence(args):
        by = str(args.get("by") or "cli")[:64]
        return [e.to_json() for e in call(daemon.silence, by, "cli")]

    def test_sms(args):
        worker = next((w for w in daemon.workers if w.part == "modem"), None)
        if worker is None:
            raise EdgeAlarmError("no [modem] is configured")
        refs = worker.send_direct(str(args["number"]), str(args["text"])).result(
            TEST_SMS_TIMEOUT_S)
        return {"refs": refs}

    def drill(args):
        for_s = args.get("for_s")
        if for_s is not None and (not isinstance(for_s, int) or not 60 <= for_s <= 86400):
            raise CommandRefused("drill --for must be from 1m to 24h")
        return call(daemon.set_drill, bool(args.get("on")), for_s)

    return {"status": status, "sim": sim, "silence": silence, "test-sms": test_sms,
            "drill": drill}
