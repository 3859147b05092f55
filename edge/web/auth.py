"""Who may read and act on the guard-room page: the password (from [web] password_file),
the sessions a login opens, and the limits on guessing it. The clock is passed in, so
expiry and limits are tested without sleeping."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge.errors import ConfigError

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 1024
SESSION_S = 12 * 3600  # a guard's shift; then the password again
MAX_SESSIONS = 32  # beyond, the oldest session ends
# Failed logins: per client address, and from everyone together (a guesser with many
# addresses). Beyond either, logins are refused until the window has passed.
CLIENT_FAILURES, CLIENT_WINDOW_S = 5, 300.0
GLOBAL_FAILURES, GLOBAL_WINDOW_S = 20, 60.0
MAX_CLIENTS_TRACKED = 1024


class Password:
    """The page's password; compared in constant time (the digests of equal length)."""

    def __init__(self, text: str):
        self._digest = _digest(text)

    @classmethod
    def from_file(cls, path: Path) -> Password:
        """The first line of ``path``; ConfigError naming [web] password_file when it is
        unreadable, empty or too short to resist guessing."""
        def refused(why: str) -> ConfigError:
            return ConfigError([f"config error: {path}: [web] password_file: {why}"])
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_PASSWORD_BYTES + 1)
        except OSError as e:
            raise refused(f"cannot read it: {e.strerror or e}") from None
        if len(raw) > MAX_PASSWORD_BYTES:
            raise refused(f"more than {MAX_PASSWORD_BYTES} bytes: one line, the password")
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise refused("not UTF-8 text") from None
        text = lines[0].strip() if lines else ""
        if len(text) < MIN_PASSWORD_CHARS:
            raise refused(f"the password (its first line) must have at least "
                          f"{MIN_PASSWORD_CHARS} characters")
        return cls(text)

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(_digest(given), self._digest)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Session:
    token: str = field(repr=False)  # the cookie's value; kept out of logs and tracebacks
    csrf: str = field(repr=False)  # sent back by the page with every action
    expires: float  # on the monotonic clock


class Sessions:
    """The open sessions, at most MAX_SESSIONS, each for SESSION_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          self._clock() + SESSION_S)
        self._open[session.token] = session
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of the cookie ``token``, None for none or an expired one."""
        session = self._open.get(token) if token else None
        if session is not None and self._clock() >= session.expires:
            del self._open[session.token]
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._open.pop(token, None)


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(),
                                                     given.encode("utf-8", "replace"))


class LoginLimiter:
    """Failed logins counted per client and from everyone; memory bounded by
    MAX_CLIENTS_TRACKED (the longest-quiet client is forgotten first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()
        self._everyone: deque[float] = deque()

    def wait_s(self, client: str) -> float:
        """0 when ``client`` may try now, else how long until it may."""
        now = self._clock()
        failures = self._clients.get(client, deque())
        _drop_before(failures, now - CLIENT_WINDOW_S)
        _drop_before(self._everyone, now - GLOBAL_WINDOW_S)
        waits = [0.0]
        if len(failures) >= CLIENT_FAILURES:
            waits.append(failures[0] + CLIENT_WINDOW_S - now)
        if len(self._everyone) >= GLOBAL_FAILURES:
            waits.append(self._everyone[0] + GLOBAL_WINDOW_S - now)
        return max(waits)

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._clients.pop(client, None) or deque(maxlen=CLIENT_FAILURES)
        failures.append(now)
        self._clients[client] = failures  # the most recent last
        while len(self._clients) > MAX_CLIENTS_TRACKED:
            self._clients.popitem(last=False)
        self._everyone.append(now)
        while len(self._everyone) > GLOBAL_FAILURES:
            self._everyone.popleft()

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def _drop_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] < cutoff:
        times.popleft()
