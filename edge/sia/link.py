"""The link to the receiver, over TCP (one connection kept open) or UDP (a datagram each
way), with one deadline per exchange and bounded reads: a receiver that trickles, floods
or never ends a frame costs us at most the deadline and MAX_EXCHANGE_BYTES, never memory
or a stalled worker. The receiver's name is looked up within that deadline too
(lookup.py).

An exchange sends one message and reads until ``accept`` takes a frame as its answer;
frames it does not take (a late answer to an earlier message, garbage) are skipped.
SiaError for everything else: no connection, the deadline passed, the connection closed,
too many bytes without an answer.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import Callable, Iterator, Protocol, TypeVar

from edge.errors import SiaError
from edge.sia.frame import frames
from edge.sia.lookup import AddressInfo, NameLookup, Resolve

A = TypeVar("A")

# What one exchange reads at most before giving the receiver up as hostile.
MAX_EXCHANGE_BYTES = 16 * 1024
_RECV_BYTES = 2048


class Link(Protocol):
    def exchange(self, message: bytes, timeout: float,
                 accept: Callable[[bytes], A | None]) -> A: ...

    def close(self) -> None: ...


def open_link(protocol: str, host: str, port: int) -> Link:
    return TcpLink(host, port) if protocol == "tcp" else UdpLink(host, port)


def _connect(addresses: list[AddressInfo], deadline: float) -> socket.socket:
    """A socket connected to the first of ``addresses`` that takes a connection within
    ``deadline`` (monotonic); OSError from the last when none does."""
    error: OSError = SiaError("the name has no address")  # getaddrinfo raises first
    for family, kind, proto, _, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SiaError("no answer within the deadline")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class _Closed(SiaError):
    """The receiver closed the connection (or reset it)."""


def _await_answer(sock: socket.socket, deadline: float,
                  accept: Callable[[bytes], A | None]) -> A:
    """Read from ``sock`` until ``accept`` takes a frame, within ``deadline`` (monotonic)
    and MAX_EXCHANGE_BYTES."""
    buffer = bytearray()
    read = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SiaError("no answer within the deadline")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(_RECV_BYTES)
        except TimeoutError:
            raise SiaError("no answer within the deadline") from None
        except (ConnectionResetError, ConnectionRefusedError) as exc:
            raise _Closed(f"no answer: {exc.strerror}") from None
        if not chunk:
            raise _Closed("the receiver closed the connection without an answer")
        read += len(chunk)
        buffer += chunk
        for raw in frames(buffer):
            answer = accept(raw)
            if answer is not None:
                return answer
        if read >= MAX_EXCHANGE_BYTES:
            raise SiaError(f"the receiver sent {read} bytes and no answer to our message")


class _SocketLink:
    """What both links share: the receiver's address, the socket, and the rule that an
    attempt that failed closes it (the next starts afresh) and says why as a SiaError.
    ``resolve``: socket.getaddrinfo, or a stand-in for it (lookup.py)."""

    _KIND = socket.SOCK_STREAM

    def __init__(self, host: str, port: int, resolve: Resolve = socket.getaddrinfo):
        self._address = (host, port)
        self._lookup = NameLookup(host, port, self._KIND, resolve)
        self._sock: socket.socket | None = None

    def _connected(self, deadline: float) -> socket.socket:
        if self._sock is None:
            self._sock = _connect(self._lookup.addresses(deadline), deadline)
        return self._sock

    @contextlib.contextmanager
    def _attempt(self) -> Iterator[None]:
        try:
            yield
        except SiaError:
            self.close()
            raise
        except OSError as exc:  # refused, unreachable, no such name, a send timed out
            self.close()
            raise SiaError(f"{self._address[0]}:{self._address[1]}: "
                           f"{exc.strerror or exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TcpLink(_SocketLink):
    """One TCP connection, kept open between exchanges (the NULL messages keep it alive)
    and made again when it broke."""

    def exchange(self, message: bytes, timeout: float,
                 accept: Callable[[bytes], A | None]) -> A:
        deadline = time.monotonic() + timeout
        reused = self._usable()
        try:
            return self._exchange(message, deadline, accept)
        except _Closed:
            if not reused:
                raise
        # A connection kept open can have been closed by the receiver meanwhile (some
        # take one message per connection): once more on a new one, same deadline.
        return self._exchange(message, deadline, accept)

    def _exchange(self, message: bytes, deadline: float,
                  accept: Callable[[bytes], A | None]) -> A:
        with self._attempt():
            sock = self._connected(deadline)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.sendall(message)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _Closed(f"cannot send: {exc.strerror}") from None
            return _await_answer(sock, deadline, accept)

    def _usable(self) -> bool:
        """Whether the kept connection may carry the next message: it has nothing unread
        (no closing, no stray bytes, which a fresh connection leaves behind)."""
        if self._sock is None:
            return False
        readable, _, _ = select.select([self._sock], [], [], 0)
        if readable:
            self.close()
            return False
        return True


class UdpLink(_SocketLink):
    """A connected UDP socket: the kernel passes us only the receiver's datagrams."""

    _KIND = socket.SOCK_DGRAM

    def exchange(self, message: bytes, timeout: float,
                 accept: Callable[[bytes], A | None]) -> A:
        deadline = time.monotonic() + timeout
        with self._attempt():
            sock = self._connected(deadline)
            sock.send(message)
            return _await_answer(sock, deadline, accept)
