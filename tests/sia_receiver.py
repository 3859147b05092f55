"""An alarm receiving centre on 127.0.0.1 for the SIA tests, over TCP or UDP.

pysiaalarm (PyPI; the library behind Home Assistant's `sia` integration) is the judge: it
parses every message, checks its CRC, length, account, AES and timestamp window, and writes
the answer (ACK, or NAK with its own time). A test may script the next answers instead
("DUH", "silence") and give the receiver a clock that differs from ours, and a hostile
mode sends what no receiver should (endless bytes, garbage) to whoever connects.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections import deque

from pysiaalarm import SIAAccount
from pysiaalarm.errors import EventFormatError, NoAccountError
from pysiaalarm.event import NAKEvent, SIAEvent
from pysiaalarm.utils import ResponseType

WINDOW = (40, 20)  # pysiaalarm's default: a timestamp 40 s behind to 20 s ahead


def dc09_frame(body: str) -> bytes:
    return f"\n{SIAEvent._crc_calc(body)}{len(body):04X}{body}\r".encode("ascii")


class Receiver:
    """``events``: the messages pysiaalarm found valid and acknowledged (NULL included);
    ``lines``: every message received; ``answers``: what was answered ("silence" too)."""

    def __init__(self, protocol: str = "tcp", account: str = "1234", key: str | None = None,
                 clock_offset_s: float = 0, port: int = 0):
        self.protocol = protocol
        zone = dt.timezone(dt.timedelta(seconds=clock_offset_s))
        # A receiver whose clock reads clock_offset_s ahead: its NAK tells that time, and
        # it takes timestamps within its window around it.
        self.accounts = {account.upper(): SIAAccount(
            account, key, allowed_timeband=(WINDOW[0] - clock_offset_s,
                                            WINDOW[1] + clock_offset_s),
            device_timezone=zone)}
        self.events: list[SIAEvent] = []
        self.lines: list[str] = []
        self.answers: list[str] = []
        self.script: deque[str] = deque()
        self.hostile: str | None = None  # "endless" or "garbage"
        self.hostile_bytes = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        self._sock = socket.socket(socket.AF_INET, kind)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        if protocol == "tcp":
            self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "Receiver":
        target = self._accept if self.protocol == "tcp" else self._datagrams
        self._spawn(target)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._sock.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def events_of(self, message_type: str) -> list[SIAEvent]:
        with self._lock:
            return [e for e in self.events if e.message_type.value == message_type]

    # ------------------------------------------------------------------ serving

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                if self.hostile is not None:
                    self._be_hostile(conn)
                    continue
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r" in buffer:
                    raw, buffer = buffer.split(b"\r", 1)
                    answer = self._answer(raw)
                    try:
                        if answer is not None:
                            conn.sendall(answer)
                    except OSError:  # the daemon gave up on this connection
                        return

    def _be_hostile(self, conn: socket.socket) -> None:
        junk = b"A" * 4096 if self.hostile == "endless" else bytes(range(256)) * 16
        try:
            conn.sendall(junk)
            self.hostile_bytes += len(junk)
        except OSError:
            time.sleep(0.05)

    def _datagrams(self) -> None:
        while not self._stop.is_set():
            try:
                raw, sender = self._sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            if self.hostile is not None:
                for _ in range(8):
                    self._sock.sendto(b"\n" + b"A" * 1400, sender)
                    self.hostile_bytes += 1401
                continue
            answer = self._answer(raw.rstrip(b"\r"))
            if answer is not None:
                self._sock.sendto(answer, sender)

    def _answer(self, raw: bytes) -> bytes | None:
        line = raw.strip().decode("ascii", "replace")
        with self._lock:
            self.lines.append(line)
            forced = self.script.popleft() if self.script else None
        if forced == "silence":
            self.answers.append("silence")
            return None
        try:
            event = SIAEvent.from_line(line, self.accounts)
        except (EventFormatError, NoAccountError):
            self.answers.append("NAK")
            return NAKEvent().create_response()
        if forced == "DUH":
            self.answers.append("DUH")
            return dc09_frame(f'"DUH"{event.sequence}{event.receiver}{event.line}'
                              f'#{event.account}[]')
        response = event.response
        self.answers.append(response.value if response else "none")
        if response == ResponseType.ACK:
            with self._lock:
                self.events.append(event)
        return event.create_response()
