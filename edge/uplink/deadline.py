"""One deadline over a whole HTTP request: RequestDeadline, which shuts the request's
socket down when time is up, the one watcher thread that keeps every request's deadline,
and watched_pools, which makes an urllib3 pool manager open connections that show their
sockets to the deadline of the request in progress on their thread.
"""

import heapq
import itertools
import math
import socket
import threading
import time
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class RequestDeadline:
    """One request's deadline over connect, send and the whole answer.

    urllib3's timeouts bound each wait on the socket, not the request: a server that sends
    a byte within every read timeout keeps a header line or a body going for ever. So the
    watcher thread shuts the request's socket down at the deadline, which wakes the recv
    or send blocked on it and fails the request. The socket is held through a duplicate of
    its file descriptor, taken as the connection is made (before any TLS handshake) or
    reused: ours to shut down and to close, whatever urllib3 does with its own meanwhile.
    """

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None  # guarded by _lock, as below
        self._passed = False
        self._ended = False

    def start(self) -> None:
        """Start the clock (RuntimeError when no thread can be had for the watcher)."""
        _WATCHER.add(self, time.monotonic() + self._seconds)
        _this_thread.deadline = self

    def end(self) -> bool:
        """Stop watching; True when the deadline passed before the request ended."""
        _this_thread.deadline = None
        _WATCHER.remove(self)
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

    def pass_now(self) -> None:
        """The deadline is here (the watcher's thread): shut the socket, if any."""
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


class _Watcher:
    """The one thread of the process that passes every request's deadline at its time.

    A thread per request would cost a thread's creation, its stack and a contention for
    the interpreter lock per request: a backlog drains in a hundred of them while the
    alarm path wants the lock. Started by the first request; idle, it sleeps with no
    timeout. Only requests in progress are held (end() takes its deadline out), so the
    heap is as long as the number of requests in flight.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        # (monotonic time, tie-break, deadline), guarded by _changed
        self._heap: list[tuple[float, int, RequestDeadline]] = []
        self._order = itertools.count()
        self._wakes_at = math.inf  # when the watcher wakes unless notified
        self._thread: threading.Thread | None = None

    def add(self, deadline: RequestDeadline, at: float) -> None:
        with self._changed:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="request-deadlines",
                                          daemon=True)
                thread.start()  # RuntimeError: no thread now; the next request tries again
                self._thread = thread
            heapq.heappush(self._heap, (at, next(self._order), deadline))
            # Woken only when it would sleep past this deadline: a request that ends in
            # time leaves the watcher asleep, to wake once at the old time and find none due.
            if at < self._wakes_at:
                self._changed.notify()

    def remove(self, deadline: RequestDeadline) -> None:
        with self._changed:
            for i, (_, _, held) in enumerate(self._heap):
                if held is deadline:
                    del self._heap[i]
                    heapq.heapify(self._heap)
                    return

    def _run(self) -> None:
        while True:
            self._next_due().pass_now()

    def _next_due(self) -> RequestDeadline:
        with self._changed:
            while True:
                self._wakes_at = self._heap[0][0] if self._heap else math.inf
                wait = self._wakes_at - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._changed.wait(None if math.isinf(wait) else wait)


_WATCHER = _Watcher()

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
