"""One deadline over a whole HTTP request: RequestDeadline, the timer that shuts the
request's socket down when time is up, and watched_pools, which makes an urllib3 pool manager
open connections that show their sockets to the deadline of the request in progress on
their thread.
"""

import socket
import threading
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class RequestDeadline:
    """One request's deadline over connect, send and the whole answer.

    urllib3's timeouts bound each wait on the socket, not the request: a server that sends
    a byte within every read timeout keeps a header line or a body going for ever. So a
    timer shuts the request's socket down at the deadline, which wakes the recv or send
    blocked on it and fails the request. The socket is held through a duplicate of its
    file descriptor, taken as the connection is made (before any TLS handshake) or reused:
    ours to shut down and to close, whatever urllib3 does with its own meanwhile.
    """

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None  # guarded by _lock, as below
        self._passed = False
        self._ended = False
        self._timer = threading.Timer(seconds, self._on_deadline)
        self._timer.daemon = True

    def start(self) -> None:
        """Start the clock (RuntimeError when no thread can be had for it)."""
        self._timer.start()
        _this_thread.deadline = self

    def end(self) -> bool:
        """Stop watching; True when the deadline passed before the request ended."""
        _this_thread.deadline = None
        self._timer.cancel()
        with self._lock:
            self._ended = True
            self._forget_socket()
            return self._passed

    def watch(self, sock: socket.socket) -> None:
        """``sock`` is the one the request now uses."""
        with self._lock:
            if self._ended:
                return
            self._forget_socket()
            try:
                self._socket = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:  # closed already, or no descriptor left: the timeouts remain
                return
            if self._passed:  # connected after the deadline (a slow name lookup)
                self._shut(self._socket)

    def _on_deadline(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._passed = True
            if self._socket is not None:
                self._shut(self._socket)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # the peer is gone already
            pass

    def _forget_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


_this_thread = threading.local()  # .deadline: the RequestDeadline of the request in progress


def _watch(sock: socket.socket) -> None:
    deadline = getattr(_this_thread, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedConnection(HTTPConnection):
    """An urllib3 connection that shows its socket to the deadline of the request (and,
    mixed in before HTTPSConnection, an HTTPS one)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive connection, used again
            _watch(self.sock)
        return super().request(*args, **kwargs)


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def watched_pools(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """``manager``, its connections (through an HTTP proxy too) watched by the deadline."""
    manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return manager
