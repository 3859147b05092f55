"""The receiver's addresses, looked up within the exchange's deadline.

getaddrinfo takes no timeout and cannot be interrupted: a DNS server that never answers
holds its caller for the resolver's own timeouts (glibc: 5 s per try, per server, twice),
and a broken one longer, past any deadline of ours. So a name is looked up on a thread of
its own that the exchange waits for no longer than its deadline. A lookup still running
when the next exchange begins is waited for again, never started twice, so a link has at
most one such thread, and only while a lookup runs; its late answer serves that next
exchange. An IP address is no name: it is read as it is, with no lookup and no thread.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

from edge.errors import SiaError

AddressInfo = tuple[Any, ...]  # one of getaddrinfo's: family, type, proto, canonname, sockaddr
Resolve = Callable[..., list[AddressInfo]]  # socket.getaddrinfo's signature


class _Lookup:
    """One getaddrinfo call on its own thread, and its outcome."""

    def __init__(self, resolve: Resolve, host: str, port: int, kind: int):
        self.done = threading.Event()
        self._addresses: list[AddressInfo] = []
        self._error: OSError | None = None
        thread = threading.Thread(target=self._run, args=(resolve, host, port, kind),
                                  name="sia-lookup", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: the exchange fails, the next tries
            raise SiaError(f"{host}: cannot look the name up now: {exc}") from None

    def _run(self, resolve: Resolve, host: str, port: int, kind: int) -> None:
        try:
            self._addresses = resolve(host, port, type=kind)
        except OSError as exc:  # socket.gaierror: no such name, no DNS server
            self._error = exc
        finally:
            self.done.set()

    def addresses(self) -> list[AddressInfo]:
        if self._error is not None:
            raise self._error
        return self._addresses


class NameLookup:
    """The addresses of ``host`` for sockets of ``kind`` (SOCK_STREAM or SOCK_DGRAM);
    ``resolve``: socket.getaddrinfo, or a stand-in for it."""

    def __init__(self, host: str, port: int, kind: int,
                 resolve: Resolve = socket.getaddrinfo):
        self._host = host
        self._port = port
        self._kind = kind
        self._resolve = resolve
        self._running: _Lookup | None = None

    def addresses(self, deadline: float) -> list[AddressInfo]:
        """Within ``deadline`` (monotonic): SiaError when the lookup takes longer, OSError
        when it fails."""
        numeric = self._numeric()
        if numeric is not None:
            return numeric
        if self._running is None:
            self._running = _Lookup(self._resolve, self._host, self._port, self._kind)
        if not self._running.done.wait(max(deadline - time.monotonic(), 0.0)):
            raise SiaError(f"{self._host}: no address within the deadline (the name "
                           "lookup goes on)")
        lookup, self._running = self._running, None
        return lookup.addresses()

    def _numeric(self) -> list[AddressInfo] | None:
        try:  # AI_NUMERICHOST: getaddrinfo only reads an address, never looks one up
            return socket.getaddrinfo(self._host, self._port, type=self._kind,
                                      flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            return None
