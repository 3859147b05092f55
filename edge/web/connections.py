"""A cap on the page's open connections: aiohttp accepts every connection it is offered,
so a flood of idle ones from the LAN would cost a file descriptor and a handler each
until each is cut at IDLE_CONNECTION_S. Over the cap a new connection is closed as soon
as it is made, unread; the connections already open (a watching page's stream among
them) go on as before."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0  # a flood is logged once a minute, not once a connection


class ConnectionCap:
    """A protocol factory for ``loop.create_server``: ``serve`` makes the protocol of each
    connection while fewer than ``cap`` are open."""

    def __init__(self, serve: Callable[[], asyncio.Protocol], cap: int):
        self._serve = serve
        self._cap = cap
        self.open = 0
        self._refused = 0
        self._next_warning = 0.0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._cap:
            self._refuse()
            return _Refused()
        self.open += 1  # counted now: connections accepted together come before any is made
        return _Counted(self._serve(), self._closed)

    def _closed(self) -> None:
        self.open -= 1

    def _refuse(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARN_EVERY_S
            log.warning("%d connections open, the most allowed: new ones are closed "
                        "(%d so far)", self._cap, self._refused)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Counted(asyncio.Protocol):
    """``inner``, telling ``closed`` when its connection is gone."""

    def __init__(self, inner: asyncio.Protocol, closed: Callable[[], None]):
        self._inner = inner
        self._closed = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._closed()
