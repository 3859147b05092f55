"""CloudEvents over HTTPS to the county platform (spec §4).

One request in, one PostResult out: every answer and every transport failure is sorted
into accepted / retry / rejected. Which events to send, in what order, and what to do
with the outcome is the outbox's job, not this module's.

The bearer token is a secret: it goes into the Authorization header and nowhere else,
and any text that came from outside (a response body, a reason phrase, an exception) has
it masked before it becomes a PostResult.detail.

Every request has one deadline (deadline.py), connect_timeout_s + read_timeout_s, over
connecting, sending and the whole answer: a platform that trickles its answer is a failed
attempt then.
"""

import email.utils
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies, proxy_bypass

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, LocationValueError,
                                NewConnectionError, ProtocolError, ProxyError,
                                ReadTimeoutError, SSLError)

from edge.errors import SecretFileError, UplinkError
from edge.events import cloudevents_body
from edge.secret_file import read_secret
from edge.uplink.backoff import MAX_DELAY_S
from edge.uplink.deadline import RequestDeadline, watched_pools

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
RETRY = "retry"
REJECTED = "rejected"

CLOUDEVENT_TYPE = "application/cloudevents+json"
CLOUDEVENT_BATCH_TYPE = "application/cloudevents-batch+json"
JPEG_TYPE = "image/jpeg"

# Statuses worth retrying: the platform is busy, overloaded or asked us to slow down.
_RETRY_STATUSES = frozenset({408, 429})
# A POST to a collection answered with these is about the URL, never about the events.
WRONG_URL_STATUSES = frozenset({404, 405, 410})

# Enough of a response body to show a server's complaint, and to let urllib3 reuse the
# connection when the body is small; a larger body is never read into memory.
_BODY_PEEK_BYTES = 4096
_SNIPPET_CHARS = 80
_DETAIL_CHARS = 200
_MASK = "***"


@dataclass(frozen=True)
class PostResult:
    outcome: str                  # ACCEPTED, RETRY or REJECTED
    status: int | None            # the HTTP status; None when no answer came
    retry_after_s: float | None   # the server's Retry-After, in seconds, capped
    detail: str                   # short text for logs and fault events; never the token


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from ``now`` (a Unix time): delay-seconds or an HTTP-date.
    None when absent or unreadable; 0 for a date in the past; at most MAX_DELAY_S."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:       # RFC 9110 dates are GMT; "-0000" parses naive
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_DELAY_S)


class _BearerToken:
    """The token of the Authorization header; its repr hides it."""

    def __init__(self, token: str):
        self.token = token

    def header(self) -> str:
        return f"Bearer {self.token}"

    def __repr__(self):
        return "<bearer token>"


class HttpUplink:
    """Posts events and puts images to ``url``, the platform's events collection."""

    def __init__(self, url: str, token_file: str, *, ca_file: str | None = None,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 15.0):
        self.url = url
        self.token_file = token_file
        if ca_file is not None and not os.path.isfile(ca_file):
            raise UplinkError(f"CA file {ca_file} does not exist")
        self._ca_file = ca_file
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        self.deadline_s = connect_timeout_s + read_timeout_s
        # Verification always on: against ca_file, else the system's CAs. Never a retry of
        # urllib3's own: the outbox decides when to try again.
        self._pool = watched_pools(_pool_manager(url, cert_reqs="CERT_REQUIRED", ca_certs=ca_file,
                                                 timeout=self._timeout, retries=False))
        self.reload_token()

    @classmethod
    def from_config(cls, up) -> "HttpUplink":
        """The client of an ``[uplink]`` section (edge.config.Uplink)."""
        return cls(up.url, str(up.token_file), ca_file=str(up.ca_file) if up.ca_file else None,
                   connect_timeout_s=up.connect_timeout_s, read_timeout_s=up.read_timeout_s)

    def __repr__(self):
        return f"HttpUplink(url={self.url!r}, token_file={self.token_file!r})"

    def reload_token(self) -> None:
        """Read the token (the file's first line). On failure the previous token stays
        in use, so a bad edit followed by SIGHUP does not cut the device off."""
        self._token = _BearerToken(_read_token(self.token_file))

    def post_events(self, events: list[dict[str, Any]]) -> PostResult:
        """One event as a CloudEvent, several as a batch, in the order given."""
        if not events:
            raise ValueError("post_events needs at least one event")
        document: dict[str, Any] | list[dict[str, Any]]
        if len(events) == 1:
            content_type, document = CLOUDEVENT_TYPE, events[0]
        else:
            content_type, document = CLOUDEVENT_BATCH_TYPE, events
        body = cloudevents_body(document)
        headers = {"Content-Type": content_type, "Idempotency-Key": str(events[0]["id"])}
        return self._request("POST", self.url, headers, body)

    def put_snapshot(self, event_id: str, jpeg: bytes) -> PostResult:
        return self._put_jpeg(f"{self._event_url(event_id)}/snapshot", jpeg)

    def put_frame(self, event_id: str, k: int, jpeg: bytes) -> PostResult:
        """Pre-trigger frame ``k`` of the event: 1 is the oldest."""
        return self._put_jpeg(f"{self._event_url(event_id)}/frames/{int(k)}", jpeg)

    def probe(self) -> PostResult:
        """Is the platform reachable, does it have an events endpoint at uplink.url, and
        does it take our token?

        The request that matters, without an event in it: an empty CloudEvents batch
        POSTed to the events URL with the bearer token. Nothing is recorded from it. (A
        HEAD proves less: many web frameworks answer 404 to a HEAD on a POST-only route,
        and others 200 to any path.) 401/403 -> rejected "token refused"; a redirect, 404,
        405 or 410 -> rejected (the URL is wrong); no answer -> retry "unreachable"; any
        other answer (200; 400/415/422 for an empty batch; even a 5xx from a platform that
        does not expect one) -> accepted: reachable, token taken.
        """
        result = self._request("POST", self.url, {"Content-Type": CLOUDEVENT_BATCH_TYPE}, b"[]")
        if result.status is None or (result.outcome == REJECTED
                                     and not refuses_the_events(result)):
            return result  # no answer, or one that refuses every event alike
        return PostResult(ACCEPTED, result.status, None, f"reachable (HTTP {result.status})")

    def close(self) -> None:
        """Close the pooled connections; the uplink may not be used afterwards."""
        self._pool.clear()

    def _event_url(self, event_id: str) -> str:
        return f"{self.url.rstrip('/')}/{quote(str(event_id), safe='')}"

    def _put_jpeg(self, url: str, jpeg: bytes) -> PostResult:
        return self._request("PUT", url, {"Content-Type": JPEG_TYPE}, jpeg)

    def _request(self, method: str, url: str, headers: dict[str, str],
                 body: bytes) -> PostResult:
        deadline = RequestDeadline(self.deadline_s)
        try:
            deadline.start()
        except RuntimeError as exc:
            return PostResult(RETRY, None, None, f"cannot send now: {exc}")
        try:
            result = self._exchange(method, url, headers, body)
        finally:
            passed = deadline.end()
        if passed:
            return PostResult(RETRY, None, None,
                              f"no complete answer within {self.deadline_s:g} s")
        return result

    def _exchange(self, method: str, url: str, headers: dict[str, str],
                  body: bytes) -> PostResult:
        invalid = _url_problem(url)
        if invalid:
            return PostResult(REJECTED, None, None,
                              f"uplink.url is invalid: {self._clean(invalid)}")
        if url.startswith("https:") and self._ca_file and not os.path.isfile(self._ca_file):
            # The device's own setup is broken, not the events: they wait for it to be fixed.
            return PostResult(RETRY, None, None, f"cannot send: the TLS CA certificate bundle "
                                                 f"{self._ca_file} has gone")
        try:
            # Redirects are never followed: a POST that gets moved elsewhere is a wrong
            # uplink.url, and following it would send the token to another place.
            response = self._pool.urlopen(
                method, url, body=body, headers={**headers, "Authorization": self._token.header()},
                redirect=False, preload_content=False)
        except (HTTPError, OSError) as exc:
            return self._transport_failure(exc)
        try:
            return self._answer(response, _peek_body(response))
        finally:
            # A body read to its end has put its connection back in the pool for the next
            # request; one that was not is closed with its connection, never drained.
            response.close()
            response.release_conn()

    def _answer(self, response: urllib3.BaseHTTPResponse, peek: bytes) -> PostResult:
        status = response.status
        if 200 <= status < 300:
            return PostResult(ACCEPTED, status, None, f"accepted (HTTP {status})")
        if status == 409:
            return PostResult(ACCEPTED, status, None, "already delivered (HTTP 409)")
        said = self._what_the_server_said(response, peek)
        if 300 <= status < 400:
            where = self._clean(response.headers.get("Location", "nowhere"))
            return PostResult(REJECTED, status, None,
                              f"redirected to {where} ({said}): uplink.url is wrong, "
                              "redirects are not followed")
        if status in (401, 403):
            return PostResult(REJECTED, status, None, f"token refused ({said})")
        if status in WRONG_URL_STATUSES:
            return PostResult(REJECTED, status, None,
                              f"no events endpoint at this URL ({said}): uplink.url is wrong")
        if 400 <= status < 500 and status not in _RETRY_STATUSES:
            return PostResult(REJECTED, status, None, f"rejected ({said})")
        # 408, 429, 5xx, and any status outside HTTP's classes: try again later.
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return PostResult(RETRY, status, retry_after, f"not accepted now ({said})")

    def _what_the_server_said(self, response: urllib3.BaseHTTPResponse, peek: bytes) -> str:
        """'HTTP 503 Service Unavailable: <start of the body>', cleaned of anything unsafe."""
        snippet = self._clean(peek.decode("utf-8", "replace"), _SNIPPET_CHARS)
        said = f"HTTP {response.status} {self._clean(response.reason or '', 40)}".rstrip()
        return f"{said}: {snippet}" if snippet else said

    def _transport_failure(self, exc: HTTPError | OSError) -> PostResult:
        if isinstance(exc, LocationValueError):
            return PostResult(REJECTED, None, None, f"uplink.url is invalid: {self._clean(str(exc))}")
        # urllib3 counts a refused or unresolved connection as a connect timeout as well.
        if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
            what = f"unreachable: no connection within {self._timeout.connect_timeout:g} s"
        elif isinstance(exc, ReadTimeoutError):
            what = f"no answer within {self._timeout.read_timeout:g} s"
        elif isinstance(exc, SSLError):
            # Retried, not rejected: on a Pi without a battery clock a certificate looks
            # invalid until NTP has set the time.
            what = f"TLS failed: {_innermost(exc)}"
        elif isinstance(exc, (NewConnectionError, ProtocolError, ProxyError, OSError)):
            what = f"unreachable: {_innermost(exc)}"
        else:
            what = f"unreadable answer: {_innermost(exc)}"
        return PostResult(RETRY, None, None, self._clean(what))

    def _clean(self, text: str, limit: int = _DETAIL_CHARS) -> str:
        """Text from outside made safe for a log line: the token masked (before cutting,
        so no prefix of it survives), control characters blanked, length bounded."""
        text = text.replace(self._token.token, _MASK)
        text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
        return text if len(text) <= limit else text[:limit - 1] + "…"


def _pool_manager(url: str, **settings: Any) -> urllib3.PoolManager:
    """The pools for ``url``'s host: through the proxy that the environment names for its
    scheme (http_proxy, https_proxy, all_proxy; unless no_proxy names the host), as curl
    and most HTTP clients do, else direct."""
    proxies = getproxies()
    try:
        parsed = urllib3.util.parse_url(url)
    except LocationValueError:   # the first request says so
        return urllib3.PoolManager(**settings)
    proxy = proxies.get(parsed.scheme or "") or proxies.get("all")
    if not proxy or (parsed.host and proxy_bypass(parsed.host)):
        return urllib3.PoolManager(**settings)
    try:
        return urllib3.ProxyManager(proxy, **settings)
    except ValueError:  # a socks:// proxy, or none at all
        raise UplinkError(f"the environment's proxy for {parsed.scheme}:// URLs is not an "
                          "http:// or https:// URL") from None


def _url_problem(url: str) -> str | None:
    """What makes ``url`` no URL to send to, if anything."""
    try:
        parsed = urllib3.util.parse_url(url)
    except LocationValueError as exc:
        return str(exc)
    if parsed.scheme not in ("http", "https"):
        return f"{url}: not an http:// or https:// URL"
    if not parsed.host:
        return f"{url}: no host"
    return None


def _peek_body(response: urllib3.BaseHTTPResponse) -> bytes:
    """The start of the body, never more: read to its end when small, the connection
    goes back to the pool for the next request."""
    try:
        return response.read(_BODY_PEEK_BYTES, decode_content=True) or b""
    except (HTTPError, OSError):   # the status line says enough
        return b""


def _innermost(exc: BaseException) -> BaseException:
    """The socket- or protocol-level error that urllib3 wrapped: its text says what
    happened without the wrappers' repetition of pool and URL."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None:
            return exc
        exc = inner


def _read_token(path: str) -> str:
    """The token file's first line (edge.secret_file), which must fit an HTTP header."""
    try:
        token = read_secret(path, "token")
    except SecretFileError as exc:
        raise UplinkError(str(exc)) from None
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise UplinkError(f"token file {path}: the token holds spaces or characters "
                          "that an HTTP header cannot carry")
    return token


def refuses_the_picture(result: PostResult) -> bool:
    """Whether a rejected picture PUT is about that picture (400, 404 "no such event",
    413…) rather than about the device: a refused token (401/403), a redirect or an
    invalid URL would refuse every request alike, so those hold the pictures."""
    return (result.status is not None and 400 <= result.status < 500
            and result.status not in (401, 403))


def refuses_the_events(result: PostResult) -> bool:
    """The same for an events POST, where 404/405/410 also mean a wrong uplink.url (the
    collection is not there), not a wrong event: dead-lettering the queue for any of these
    would lose it, so they hold it."""
    return refuses_the_picture(result) and result.status not in WRONG_URL_STATUSES
