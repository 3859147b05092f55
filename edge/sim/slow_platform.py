"""A platform that answers badly on purpose: a real TCP server on 127.0.0.1 that reads each
request whole, then trickles its answer a byte at a time or floods it. (The platform stand-in,
edge.sim.platform, answers through http.server, which writes each answer at once.)"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

TRICKLE_HEAD = "head"  # the status line, then a header line that never ends, a byte at a time
TRICKLE_BODY = "body"  # the head at once, then a long body a byte at a time
HUGE_BODY = "huge"     # a 200 with a 1 GiB body, as fast as the client takes it

_HEADS = {
    TRICKLE_HEAD: b"HTTP/1.1 200 OK\r\nX-Slow: ",
    TRICKLE_BODY: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n",
    HUGE_BODY: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1073741824\r\n\r\n",
}
_BLOCK = b"x" * 65536


class SlowPlatform:
    """``with SlowPlatform(mode) as slow:`` events go to ``slow.url``; with ``tls`` (a
    certificate file and its key) over HTTPS. ``requests``: how many requests it has read;
    ``sent``: the bytes it has sent. It gives up on a client after ``give_up_s``, so a
    client without a deadline hangs that long, not for ever."""

    def __init__(self, mode: str, byte_every_s: float = 0.05, give_up_s: float = 20.0,
                 tls: tuple[Path, Path] | None = None):
        self.mode = mode
        self._tls = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        self.byte_every_s = byte_every_s
        self.give_up_s = give_up_s
        self.requests = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}/api/v1/events"

    def __enter__(self) -> "SlowPlatform":
        self._start(self._accept)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() does not
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="slow-platform")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: stopping
                return
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        give_up_at = time.monotonic() + self.give_up_s
        with conn:
            conn.settimeout(5)
            try:
                if self._tls is not None:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                self._read_request(conn)
                with self._lock:
                    self.requests += 1
                self._send(conn, _HEADS[self.mode])
                while time.monotonic() < give_up_at:
                    if self.mode == HUGE_BODY:
                        self._send(conn, _BLOCK)
                    elif self._stopping.wait(self.byte_every_s):
                        return
                    else:
                        self._send(conn, b"a")
            except OSError:  # the client went away
                pass

    def _send(self, conn: socket.socket, data: bytes) -> None:
        if self._stopping.is_set():
            raise ConnectionAbortedError("the server is stopping")
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv(conn)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += self._recv(conn)

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("the client closed before its request was whole")
        return chunk
