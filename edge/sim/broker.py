"""A real Mosquitto broker (Debian's `mosquitto`) on a loopback port, for the MQTT tests
and bench: persistence on (saved every second, so a session survives kill -9), an
optional password file, ACL file and TLS certificate. Each Broker is one process."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from edge.errors import EdgeAlarmError

MOSQUITTO = shutil.which("mosquitto")
START_S = 10.0


class BrokerNotStarted(EdgeAlarmError, RuntimeError):
    """mosquitto did not start, or is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:``port`` (a free port, kept across restarts), its files in
    ``folder``. ``account``: (username, password), then anonymous clients are refused;
    ``acl``: the ACL file's text (see acl); ``tls``: (certificate, key)."""

    def __init__(self, folder: Path, *, account: tuple[str, str] | None = None,
                 acl: str | None = None, tls: tuple[Path, Path] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1",
                 f"user {getpass.getuser()}",  # root stays root; another user is kept
                 "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 1", f"log_dest file {self.log}"]
        if account is None:
            lines.append("allow_anonymous true")
        else:
            passwords = folder / "passwd"
            passwords.touch(mode=0o600)
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), *account],
                           check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        self.acl = folder / "acl"  # read again on reload()
        if acl is not None:
            self.acl.write_text(acl)
            lines.append(f"acl_file {self.acl}")
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        """Started, and accepting connections; BrokerNotStarted otherwise."""
        if MOSQUITTO is None:
            raise BrokerNotStarted("mosquitto is not installed (apt-get install mosquitto)")
        proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = proc
        deadline = time.monotonic() + START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    said = self.log.read_text() if self.log.exists() else ""
                    raise BrokerNotStarted(f"mosquitto did not start: {said}") from None
                time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its ACL file again."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """kill -9: no goodbye to anyone, nothing saved beyond what already was."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
