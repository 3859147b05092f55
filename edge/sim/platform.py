"""A stand-in for the county platform (spec §4), for tests and for ``edge-alarm demo``.

A real HTTP server on 127.0.0.1, on a thread of its own. It takes CloudEvents (one or a
batch) and snapshot and frame PUTs the way the platform does: bearer token checked,
events de-duplicated by id (a repeat answers 409), images accepted only for known events.
Everything it receives is recorded in order, and a condition variable lets a test wait
for what it expects instead of sleeping.

Misbehaviour can be ordered at any time: scripted answers (``respond_with``), a slow
platform (``set_delay``), an answer lost after the event was kept (``lose_responses``), an
answer trickled a byte at a time (``trickle_answers``), connections reset before anything
is kept (``reset_connections``), events the platform refuses by id (``reject_ids``), and a
platform that is down (``stop``, then ``start`` again on the same port). ``check_event`` (a
CloudEvent → its problems) is run on every event received; its findings are kept in
``invalid_events``, so the tests hold each event the daemon sends to
docs/cloudevents.schema.json.
"""

import io
import json
import logging
import re
import socket
import sys
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from urllib3 import HTTPHeaderDict

from edge.uplink.http import CLOUDEVENT_BATCH_TYPE, CLOUDEVENT_TYPE, JPEG_TYPE

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"
_IMAGE_PATH = re.compile(
    re.escape(EVENTS_PATH) + r"/(?P<id>[^/]+)/(?:snapshot|frames/(?P<k>[1-9][0-9]*))")
_REQUIRED_ATTRIBUTES = ("id", "source", "type")
_MAX_BODY_BYTES = 32 * 1024 * 1024
_JPEG_MAGIC = b"\xff\xd8"


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    type: str
    subject: str | None
    sequence: str | None      # the CloudEvents "sequence" extension (zero-padded seq)
    document: dict            # the whole CloudEvent as received


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: HTTPHeaderDict     # as received; any spelling of a name finds it
    body: bytes
    status: int | None        # None: the connection was dropped without an answer
    received_mono: float      # time.monotonic() when it was handled: spacing of retries


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json_answer(status: int, **fields) -> _Answer:
    return _Answer(status, {"Content-Type": "application/json"}, json.dumps(fields).encode())


class PlatformStub:
    """``with PlatformStub(token="t") as platform: ... platform.url ...``"""

    def __init__(self, token: str = "stub-token", *, port: int = 0,
                 check_event: Callable[[dict], list[str]] | None = None):
        self._token = token
        self._check_event = check_event
        self._invalid: list[str] = []
        self._port = port
        self._cond = threading.Condition(threading.RLock())
        self._events: list[ReceivedEvent] = []
        self._seen_ids: set[str] = set()
        self._rejected_ids: set[str] = set()
        self._snapshots: dict[str, bytes] = {}
        self._frames: dict[str, dict[int, bytes]] = {}
        self._requests: list[ReceivedRequest] = []
        self._script: deque[_Answer] = deque()
        self._delay_s = 0.0
        self._responses_to_lose = 0
        self._resets = 0
        self._trickles: deque[float] = deque()   # byte_every_s of each answer to trickle
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- running -------------------------------------------------------------------

    def start(self) -> "PlatformStub":
        """Listen (again): after a ``stop`` the same port is bound, so clients find it."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", self._port), self)
            self._port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"platform-stub:{self._port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """The platform goes down: the port refuses connections and open ones are cut.
        What was recorded stays. Returns once no request is being handled."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()            # wakes handlers that are being slow
        server.shutdown()
        server.drop_connections()       # kept-alive connections would otherwise stay served
        server.server_close()           # joins the handler threads
        if self._thread is not None:
            self._thread.join()

    close = stop

    def __enter__(self) -> "PlatformStub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{EVENTS_PATH}"

    @property
    def token(self) -> str:
        """The bearer token it takes."""
        return self._token

    # -- behaviour -----------------------------------------------------------------

    def set_token(self, token: str) -> None:
        """From now on only ``Bearer {token}`` is let in."""
        with self._cond:
            self._token = token

    def respond_with(self, status: int, *, retry_after: int | str | None = None,
                     headers: dict[str, str] | None = None, body: bytes = b"",
                     times: int = 1) -> None:
        """The next ``times`` requests get this answer and are otherwise ignored (nothing
        is kept). ``retry_after``: seconds, or an HTTP-date string."""
        answer_headers = dict(headers or {})
        if retry_after is not None:
            answer_headers["Retry-After"] = str(retry_after)
        with self._cond:
            self._script.extend([_Answer(status, answer_headers, body)] * times)

    def set_delay(self, seconds: float) -> None:
        """Wait this long before handling each request (0: answer at once)."""
        with self._cond:
            self._delay_s = seconds

    def lose_responses(self, times: int = 1) -> None:
        """The next ``times`` requests are handled (events kept) and then the connection
        is dropped before any answer: the client cannot know it was delivered."""
        with self._cond:
            self._responses_to_lose += times

    def reset_connections(self, times: int = 1) -> None:
        """The next ``times`` requests are read whole, then their connection is reset
        (TCP RST) with nothing kept: a load balancer or a platform process that died."""
        with self._cond:
            self._resets += times

    def trickle_answers(self, times: int = 1, byte_every_s: float = 0.1) -> None:
        """The next ``times`` requests are handled (events kept) and each answer is
        written a byte at a time, ``byte_every_s`` apart: an overloaded platform or a
        congested link. Whether the client waits for all of it is its deadline's call."""
        with self._cond:
            self._trickles.extend([byte_every_s] * times)

    def reject_ids(self, ids) -> None:
        """From now on a POST holding any of these event ids is refused whole with 400
        and nothing of it is kept, as a platform refuses an event it finds invalid."""
        with self._cond:
            self._rejected_ids.update(ids)

    # -- what was received ---------------------------------------------------------

    @property
    def events(self) -> list[ReceivedEvent]:
        with self._cond:
            return list(self._events)

    @property
    def invalid_events(self) -> list[str]:
        """What ``check_event`` found wrong in the events received, in order."""
        with self._cond:
            return list(self._invalid)

    @property
    def snapshots(self) -> dict[str, bytes]:
        with self._cond:
            return dict(self._snapshots)

    @property
    def frames(self) -> dict[str, dict[int, bytes]]:
        with self._cond:
            return {event_id: dict(frames) for event_id, frames in self._frames.items()}

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._requests)

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true (checked after every request); False when
        ``timeout`` seconds pass first. The predicate may read this stub's properties."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    # -- handling (on the server's threads) ----------------------------------------

    def _serve(self, handler: "_Handler") -> None:
        headers = HTTPHeaderDict(handler.headers.items())
        path = urlsplit(handler.path).path
        body = _read_body(handler)
        with self._cond:
            delay_s = self._delay_s
        if delay_s:
            self._stopping.wait(delay_s)
        with self._cond:
            reset = body is not None and self._resets > 0
            self._resets -= reset
            answer = None if reset else self._answer(handler.command, path, headers, body)
            lose = answer is not None and self._responses_to_lose > 0
            self._responses_to_lose -= lose
            byte_every_s = self._trickles.popleft() if (
                answer is not None and not lose and self._trickles) else None
            self._requests.append(ReceivedRequest(
                handler.command, path, headers, body or b"",
                None if answer is None or lose else answer.status, time.monotonic()))
            self._cond.notify_all()
        if answer is None:
            _reset(handler)
        elif lose:
            handler.close_connection = True
        elif byte_every_s is not None:
            self._trickle(handler, answer, byte_every_s)
        else:
            _send(handler, answer)

    def _answer(self, method: str, path: str, headers: HTTPHeaderDict,
                body: bytes | None) -> _Answer:
        """Holding _cond: the scripted answer, else the platform's own."""
        if body is None:
            return _json_answer(411 if "Content-Length" not in headers else 413,
                                error="a body needs a Content-Length of at most 32 MiB")
        if self._script:
            return self._script.popleft()
        return self._handle(method, path, headers, body)

    def _trickle(self, handler: "_Handler", answer: _Answer, byte_every_s: float) -> None:
        wire, handler.wfile = handler.wfile, io.BytesIO()
        _send(handler, answer)
        raw, handler.wfile = handler.wfile.getvalue(), wire
        handler.close_connection = True
        for k in range(len(raw)):
            if self._stopping.wait(byte_every_s):
                return
            try:
                wire.write(raw[k:k + 1])
            except OSError:         # the client stopped waiting
                return

    def _handle(self, method: str, path: str, headers: HTTPHeaderDict,
                body: bytes) -> _Answer:
        if headers.get("Authorization") != f"Bearer {self._token}":
            return _Answer(401, {"WWW-Authenticate": "Bearer"}, b"bad or missing token")
        image = _IMAGE_PATH.fullmatch(path)
        if path == EVENTS_PATH:
            if method == "POST":
                return self._take_events(headers.get("Content-Type", ""), body)
            if method in ("GET", "HEAD"):
                return _json_answer(200, events=len(self._events))
            return _Answer(405, {"Allow": "GET, HEAD, POST"})
        if image and method == "PUT":
            return self._take_image(unquote(image["id"]), image["k"], headers, body)
        return _json_answer(404, error="no such resource")

    def _take_events(self, content_type: str, body: bytes) -> _Answer:
        media_type = content_type.split(";")[0].strip().lower()
        try:
            document = json.loads(body)
        except ValueError:
            return _json_answer(400, error="body is not JSON")
        if media_type == CLOUDEVENT_TYPE and isinstance(document, dict):
            documents = [document]
        elif media_type == CLOUDEVENT_BATCH_TYPE and isinstance(document, list):
            documents = document
            if not documents:  # a device checking that it may post: nothing to record
                return _json_answer(200, accepted=0)
        else:
            return _json_answer(415, error=f"expected {CLOUDEVENT_TYPE} (an object) or "
                                           f"{CLOUDEVENT_BATCH_TYPE} (an array)")
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("specversion") != "1.0" or not all(
                    isinstance(doc.get(name), str) and doc[name] for name in _REQUIRED_ATTRIBUTES):
                return _json_answer(422, error="not a CloudEvent 1.0 with id, source and type")
        refused = [doc["id"] for doc in documents if doc["id"] in self._rejected_ids]
        if refused:
            return _json_answer(400, error="event refused", ids=refused)
        new = [doc for doc in documents if doc["id"] not in self._seen_ids]
        if not new:
            return _json_answer(409, error="already received")
        for doc in new:
            if self._check_event is not None:
                self._invalid += self._check_event(doc)
            if doc["id"] not in self._seen_ids:      # a batch may repeat an id
                self._seen_ids.add(doc["id"])
                self._events.append(ReceivedEvent(doc["id"], doc["type"], doc.get("subject"),
                                                  doc.get("sequence"), doc))
        return _json_answer(200, accepted=len(new))

    def _take_image(self, event_id: str, k: str | None, headers: HTTPHeaderDict,
                    body: bytes) -> _Answer:
        if event_id not in self._seen_ids:
            return _json_answer(404, error="no such event")
        if headers.get("Content-Type") != JPEG_TYPE:
            return _json_answer(415, error=f"expected {JPEG_TYPE}")
        if not body.startswith(_JPEG_MAGIC):
            return _json_answer(422, error="not a JPEG")
        if k is None:
            self._snapshots[event_id] = body
        else:
            self._frames.setdefault(event_id, {})[int(k)] = body
        return _json_answer(200, stored=len(body))


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body; None when it has no usable Content-Length (the connection is
    then closed, since the rest of the stream cannot be framed)."""
    length = handler.headers.get("Content-Length")
    if length is None:
        if handler.command in ("POST", "PUT"):
            handler.close_connection = True
            return None
        return b""
    if not length.isdigit() or int(length) > _MAX_BODY_BYTES:
        handler.close_connection = True
        return None
    return handler.rfile.read(int(length))


def _send(handler: BaseHTTPRequestHandler, answer: _Answer) -> None:
    try:
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer.body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(answer.body)
    except OSError:             # the client gave up waiting (a slow answer): nothing to do
        handler.close_connection = True


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0) instead of an orderly end."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive, as the real platform would offer
    # The headers and the body of an answer are two writes: with Nagle on, the body waits
    # for the client's delayed ACK of the headers, 40 ms per request on a kept-alive
    # connection, and the stand-in would be the slowest part of any timing taken with it.
    disable_nagle_algorithm = True
    server: "_Server"

    def do_POST(self):
        self.server.stub._serve(self)

    do_PUT = do_GET = do_HEAD = do_DELETE = do_POST

    def log_message(self, format, *args):
        log.debug("platform stub: " + format, *args)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so nothing is recorded after stop() returns.
    daemon_threads = False

    def __init__(self, address: tuple[str, int], stub: PlatformStub):
        self.stub = stub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-request (a daemon killed by a crash test, a cut connection) is
        what a platform sees every day: a line in the debug log, not a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("platform stub: %s went away mid-request", client_address)
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass            # already closed by its client
