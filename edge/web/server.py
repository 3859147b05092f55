"""The HTTP side of `edge-alarm web`, on aiohttp (asyncio: many live pages cost a task
each, not a thread): the page, its document pushed live as server-sent events, the
snapshots, login and the actions.

Reading the document and the store happens on one thread of its own (PageReader's); the
actions are control-socket requests on two threads of their own. Every request
is bounded: its body (MAX_BODY_BYTES), its time (REQUEST_S, a stream's writes WRITE_S),
the live streams (MAX_STREAMS), an idle connection (IDLE_CONNECTION_S), the connections
open at once (MAX_CONNECTIONS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web

from edge.config import Config
from edge.control import request as control_request
from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError
from edge.safe_text import is_unsafe, safe_text
from edge.web.auth import (SESSION_S, LoginLimiter, Password, Session, Sessions,
                           csrf_matches)
from edge.web.connections import ConnectionCap
from edge.web.view import PageReader

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.5  # the daemon's status and the store, while a page watches
MAX_STREAMS = 16  # live pages at once; more are refused (503) until one closes
KEEPALIVE_S = 15.0  # a comment line on a quiet stream, so proxies and phones keep it
WRITE_S = 10.0  # a stream whose reader takes nothing for this long is dropped
REQUEST_S = 10.0  # any other request is answered within this
MAX_BODY_BYTES = 8 * 1024
IDLE_CONNECTION_S = 15.0  # to send a whole request: an idle or trickling client is cut
MAX_CONNECTIONS = 64  # open at once (streams included); more are closed unread
# The listen backlog, which is also how many connections are accepted in one go: each holds
# a file descriptor until it is served or refused, so this bounds those beyond the cap.
ACCEPTED_AT_ONCE = 16
ACTIONS_AT_ONCE = 2
NAME_CHARS = 32  # a person's name, as typed on the page
COOKIE = "edge_alarm_session"
CSRF_HEADER = "X-CSRF-Token"
STATIC = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
          "/page.css": ("page.css", "text/css")}
PICTURE_CACHING = "private, max-age=86400"  # a picture of an event never changes
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class Publisher:
    """The page's document, read every POLL_S while a page watches; each change is a new
    version that the streams send on (a slow stream skips to the latest)."""

    def __init__(self, read: Callable[[], dict[str, Any]], executor: ThreadPoolExecutor):
        self._read = read
        self._executor = executor
        self.text: str | None = None
        self.version = 0
        self.watchers = 0
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.watchers == 0:
                await self._wake.wait()
            self._wake.clear()
            try:
                doc = await loop.run_in_executor(self._executor, self._read)
            except Exception:  # a bug reading: the page goes on with the last document
                log.exception("reading the page's document failed")
            else:
                self._publish(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    def _publish(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.version += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def poke(self) -> None:
        """Read again now (an action was taken)."""
        self._wake.set()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        self.watchers += 1
        self.poke()
        try:
            yield
        finally:
            self.watchers -= 1

    async def next(self, seen: int, timeout: float) -> tuple[str | None, int]:
        """The document of a version after ``seen`` and its version; (None, seen) when
        none came within ``timeout``."""
        if self.version == seen:  # (version 0: nothing read yet)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        if self.version == seen:
            return None, seen
        return self.text, self.version


class GuardPage:
    """The application's state and handlers."""

    def __init__(self, cfg: Config, password: Password | None):
        self.cfg = cfg
        self.password = password
        self.sessions = Sessions()
        self.limiter = LoginLimiter()
        self.reader = PageReader(cfg)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-reader")
        self.publisher = Publisher(self.reader.document, self.executor)
        # Its threads, not a semaphore, bound the actions on the control socket: a request
        # cut off at REQUEST_S leaves its thread running until the socket's own timeout.
        self.actions = ThreadPoolExecutor(max_workers=ACTIONS_AT_ONCE,
                                          thread_name_prefix="page-action")
        self._static = {route: (resources.files("edge.web").joinpath("static", name)
                                .read_bytes(), ctype)
                        for route, (name, ctype) in STATIC.items()}
        port = cfg.web.port
        # Bound to this machine only, the page answers only to the names of this machine:
        # a page elsewhere that rebinds its own name to 127.0.0.1 reads nothing.
        self._hosts = None if not cfg.web.local else {
            f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", cfg.web.listen}

    # ------------------------------------------------------------------ who

    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def may_read(self, request: web.Request) -> bool:
        """Bound beyond this machine, reading needs a session too."""
        return self.cfg.web.local or self.session_of(request) is not None

    def _require_read(self, request: web.Request) -> None:
        if not self.may_read(request):
            raise _error(web.HTTPUnauthorized, "请先登录 log in first")

    def _require_action(self, request: web.Request) -> None:
        """A live session, asking from the page itself (its origin, its CSRF token)."""
        session = self.session_of(request)
        if session is None:
            raise _error(web.HTTPUnauthorized, "请先登录 log in first")
        if not _same_origin(request) or not csrf_matches(session,
                                                         request.headers.get(CSRF_HEADER)):
            raise _error(web.HTTPForbidden, "请求来源不对 not from this page")

    # ------------------------------------------------------------------ pages

    async def static(self, request: web.Request) -> web.Response:
        body, ctype = self._static[request.path]
        return web.Response(body=body, content_type=ctype, charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def session(self, request: web.Request) -> web.Response:
        session = self.session_of(request)
        return _json({"logged_in": session is not None,
                      "csrf": session.csrf if session else None,
                      "read_needs_login": not self.cfg.web.local,
                      "actions": self.password is not None})

    async def state(self, request: web.Request) -> web.Response:
        self._require_read(request)
        loop = asyncio.get_running_loop()
        return _json(await loop.run_in_executor(self.executor, self.reader.document))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._require_read(request)
        if self.publisher.watchers >= MAX_STREAMS:
            raise _error(web.HTTPServiceUnavailable, f"已有 {MAX_STREAMS} 个页面在看 "
                                                     f"{MAX_STREAMS} pages are watching")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; "
                                                               "charset=utf-8",
                                               "Cache-Control": "no-store"})
        with self.publisher.watching():
            await response.prepare(request)
            seen = 0
            while self.may_read(request):  # a session that ended ends its streams
                text, seen = await self.publisher.next(seen, KEEPALIVE_S)
                chunk = ": keepalive\n\n" if text is None else f"data: {text}\n\n"
                try:
                    async with asyncio.timeout(WRITE_S):
                        await response.write(chunk.encode())
                except (TimeoutError, ConnectionError):
                    break
        return response

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        path = await self._picture(request, self.reader.snapshot_file)
        return web.FileResponse(path, headers={"Content-Type": "image/jpeg",
                                               "Cache-Control": PICTURE_CACHING})

    async def thumbnail(self, request: web.Request) -> web.Response:
        jpeg = await self._picture(request, self.reader.thumbnail)
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": PICTURE_CACHING})

    async def _picture(self, request: web.Request, find: Callable[[int], T | None]) -> T:
        """What ``find`` (on the reader's thread) has for the event number in the path."""
        self._require_read(request)
        seq = int(request.match_info["seq"])
        found = await asyncio.get_running_loop().run_in_executor(self.executor, find, seq)
        if found is None:
            raise _error(web.HTTPNotFound, "没有这张照片 no such picture")
        return found

    # ------------------------------------------------------------------ login

    async def login(self, request: web.Request) -> web.Response:
        if self.password is None:
            raise _error(web.HTTPForbidden, "未设置密码，页面只读 no [web] password_file: "
                                            "the page is read-only")
        if not _same_origin(request):
            raise _error(web.HTTPForbidden, "请求来源不对 not from this page")
        client = request.remote or "unknown"
        # The body first, then the limit and the comparison with no await between: guesses
        # whose bodies are held back would otherwise all pass the limit before one failed.
        given = (await _body(request)).get("password")
        wait = self.limiter.wait_s(client)
        if wait > 0:
            raise _error(web.HTTPTooManyRequests, "尝试次数过多，请稍后再试 too many "
                         "attempts, try later", headers={"Retry-After": str(math.ceil(wait))})
        if not isinstance(given, str) or not self.password.matches(given):
            self.limiter.failed(client)
            log.warning("page login refused from %s", client)
            raise _error(web.HTTPUnauthorized, "密码错误 wrong password")
        self.limiter.succeeded(client)
        session = self.sessions.open()
        log.info("page login from %s", client)
        response = _json({"logged_in": True, "csrf": session.csrf})
        response.set_cookie(COOKIE, session.token, max_age=SESSION_S, path="/",
                            httponly=True, samesite="Strict")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self._require_action(request)
        self.sessions.end(request.cookies.get(COOKIE))
        response = _json({"logged_in": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ actions

    async def silence(self, request: web.Request) -> web.Response:
        async def args(body: dict[str, Any]) -> dict[str, Any]:
            return {"by": _person(body), "via": "web"}
        return await self._act(request, "silence", args)

    async def acknowledge(self, request: web.Request) -> web.Response:
        async def args(body: dict[str, Any]) -> dict[str, Any]:
            return {"by": _person(body), "via": "web"}
        return await self._act(request, "acknowledge", args)

    async def walktest(self, request: web.Request) -> web.Response:
        async def args(body: dict[str, Any]) -> dict[str, Any]:
            on = _switch(body)
            return {"on": on, "for_s": None, "by": _person(body) if on else None}
        return await self._act(request, "walktest", args)

    async def drill(self, request: web.Request) -> web.Response:
        async def args(body: dict[str, Any]) -> dict[str, Any]:
            return {"on": _switch(body), "for_s": None}
        return await self._act(request, "drill", args)

    async def _act(self, request: web.Request, cmd: str,
                   make_args: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
                   ) -> web.Response:
        self._require_action(request)
        args = await make_args(await _body(request))
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self.actions, lambda: control_request(self.cfg.control.socket, cmd, args,
                                                      timeout=REQUEST_S / 2))
        except CommandRefused as e:
            raise _error(web.HTTPBadRequest, safe_text(e, 200)) from None
        except DaemonUnreachable as e:
            raise _error(web.HTTPServiceUnavailable, safe_text(e, 200)) from None
        except EdgeAlarmError as e:
            raise _error(web.HTTPBadGateway, safe_text(e, 200)) from None
        log.info("page: %s %s from %s", cmd, json.dumps(args, ensure_ascii=False),
                 request.remote)
        self.publisher.poke()
        return _json({"ok": True, "result": result})

    # ------------------------------------------------------------------ the app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[self._bounded])
        for route in STATIC:
            app.router.add_get(route, self.static)
        app.router.add_get("/favicon.ico", _no_icon)
        app.router.add_get("/api/session", self.session)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get(r"/snapshot/{seq:\d{1,12}}", self.snapshot)
        app.router.add_get(r"/thumbnail/{seq:\d{1,12}}", self.thumbnail)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_post("/api/silence", self.silence)
        app.router.add_post("/api/acknowledge", self.acknowledge)
        app.router.add_post("/api/walktest", self.walktest)
        app.router.add_post("/api/drill", self.drill)
        app.on_response_prepare.append(_secure_headers)
        app.cleanup_ctx.append(self._publishing)
        return app

    @web.middleware
    async def _bounded(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        if self._hosts is not None and request.host not in self._hosts:
            raise _error(web.HTTPMisdirectedRequest, "unknown host")
        if request.path == "/api/stream":  # bounded by its writes instead
            return await handler(request)
        try:
            async with asyncio.timeout(REQUEST_S):
                return await handler(request)
        except TimeoutError:
            raise _error(web.HTTPServiceUnavailable, "超时 timed out") from None

    async def _publishing(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.publisher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(self.executor, self.reader.close)
        self.executor.shutdown()
        self.actions.shutdown(cancel_futures=True)


def _same_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from this page: Origin (sent with
    every POST by today's browsers) names this host, or, without it, Sec-Fetch-Site."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"{request.scheme}://{request.host}"
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (MAX_BODY_BYTES at most; aiohttp refuses more)."""
    if request.content_type != "application/json":
        raise _error(web.HTTPUnsupportedMediaType, "JSON only")
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):
        raise _error(web.HTTPBadRequest, "not JSON") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "not a JSON object")
    return body


def _person(body: dict[str, Any]) -> str:
    """The name typed on the page: 1-NAME_CHARS characters, nothing invisible."""
    name = body.get("name")
    if isinstance(name, str):
        name = name.strip()
        if 0 < len(name) <= NAME_CHARS and not any(map(is_unsafe, name)):
            return name
    raise _error(web.HTTPBadRequest, f"请填写姓名（1-{NAME_CHARS} 字） type your name "
                                     f"(1-{NAME_CHARS} characters)")


def _switch(body: dict[str, Any]) -> bool:
    on = body.get("on")
    if not isinstance(on, bool):
        raise _error(web.HTTPBadRequest, "on must be true or false")
    return on


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(value, ensure_ascii=False), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _error(cls: type[web.HTTPException], message: str,
           headers: dict[str, str] | None = None) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}, ensure_ascii=False),
               content_type="application/json", headers=headers)


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def run_web(cfg: Config) -> int:
    """Serve the page until SIGTERM or SIGINT; 1 when the address cannot be had."""
    password = Password.from_file(cfg.web.password_file) if cfg.web.password_file else None
    try:
        asyncio.run(_serve(cfg, GuardPage(cfg, password)))
    except OSError as e:
        log.error("cannot listen on %s: %s", cfg.web.listen, e.strerror or e)
        return 1
    return 0


async def _serve(cfg: Config, page: GuardPage) -> None:
    """aiohttp's application behind a listener of our own, which caps the connections
    (MAX_CONNECTIONS; aiohttp has no such bound)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(page.app(), access_log=None, shutdown_timeout=2.0,
                           keepalive_timeout=IDLE_CONNECTION_S, handler_cancellation=True)
    await runner.setup()
    try:
        assert runner.server is not None  # (set up)
        listener = await loop.create_server(ConnectionCap(runner.server, MAX_CONNECTIONS),
                                            cfg.web.host, cfg.web.port,
                                            backlog=ACCEPTED_AT_ONCE)
        who = ("a password for reading and acting" if not cfg.web.local else
               "reading open to this machine, a password for acting" if page.password else
               "read-only (no [web] password_file)")
        log.info("guard-room page on http://%s/: %s", cfg.web.listen, who)
        await stop.wait()
        listener.close()
    finally:
        await runner.cleanup()
