"""The guard-room page's server over plain HTTP: who may read and act (password, session,
CSRF token, origin, host), login limits, bounded requests, snapshots that never leave the
snapshot directory, and the live stream. Against real servers on 127.0.0.1: `edge-alarm
web` beside a real daemon (tests/web_site.py), or, to play a page bound beyond this
machine without opening a port to the LAN, the same application served in this process
on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import _wait_until
from edge import config as config_mod
from edge.control import request
from edge.web import server
from edge.web.auth import (CLIENT_FAILURES, CLIENT_WINDOW_S, GLOBAL_FAILURES, MAX_SESSIONS,
                           SESSION_S, LoginLimiter, Password, Sessions)
from web_site import PASSWORD, free_port, guard_site, start_web, stop_web, write_site  # noqa: F401

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@contextlib.contextmanager
def page_in_process(config: Path):
    """The page of ``config`` (as `edge-alarm web` builds it) served from a thread of this
    process on 127.0.0.1 (on another port when [web] listen is beyond this machine);
    yields its URL."""
    from aiohttp import web

    cfg = config_mod.load(str(config))
    password = Password.from_file(cfg.web.password_file) if cfg.web.password_file else None
    port = cfg.web.port if cfg.web.local else free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(server.GuardPage(cfg, password).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner
    runner = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def login(url: str, password: str = PASSWORD) -> requests.Session:
    s = requests.Session()
    answer = s.post(f"{url}/api/login", json={"password": password}, timeout=5)
    assert answer.status_code == 200, answer.text
    s.headers["X-CSRF-Token"] = answer.json()["csrf"]
    return s


def raw(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
        source: str = "127.0.0.1") -> http.client.HTTPResponse:
    """One request as written (no client normalising the path), from address ``source``."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


# ------------------------------------------------------------------ the config

def test_listening_beyond_localhost_needs_a_password_file(tmp_path, short_dir, cli):
    config = write_site(tmp_path, short_dir, listen="0.0.0.0:8080", password=False)
    result = cli("web", config=config)
    assert result.returncode == 78
    assert result.stderr.startswith("config error: ") and \
        "[web] password_file: required: listen '0.0.0.0:8080' lets other machines in" \
        in result.stderr and result.stderr.count("\n") == 1
    # The same config is refused by every command that reads it.
    assert cli("check", config=config).returncode == 78


def test_a_short_password_is_refused_naming_the_key(tmp_path, short_dir, cli):
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    (tmp_path / "web-password").write_text("1234\n")
    result = cli("web", config=config)
    assert result.returncode == 78
    assert "[web] password_file: the password (its first line) must have at least 8" \
        in result.stderr


# ------------------------------------------------------------------ reading

def test_reading_needs_the_password_when_bound_beyond_localhost(tmp_path, short_dir):
    config = write_site(tmp_path, short_dir, listen="0.0.0.0:8080")
    with page_in_process(config) as url:
        assert requests.get(f"{url}/", timeout=5).status_code == 200  # the page: no data
        session = requests.get(f"{url}/api/session", timeout=5).json()
        assert session == {"logged_in": False, "csrf": None, "read_needs_login": True,
                           "actions": True}
        for path in ("/api/state", "/api/stream", "/snapshot/1"):
            assert requests.get(url + path, timeout=5).status_code == 401, path
        answer = requests.post(f"{url}/api/login", json={"password": PASSWORD}, timeout=5)
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
        s = login(url)
        state = s.get(f"{url}/api/state", timeout=5)
        assert state.status_code == 200 and state.json()["site"] == "高山小学"
        assert state.headers["Cache-Control"] == "no-store"
        s.post(f"{url}/api/logout", json={}, timeout=5)
        assert s.get(f"{url}/api/state", timeout=5).status_code == 401


def test_a_page_bound_to_this_machine_answers_only_to_its_names(tmp_path, short_dir):
    """A web page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) reads
    nothing: its requests carry its own name in Host."""
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    with page_in_process(config) as url:
        port = url.rsplit(":", 1)[1]
        assert raw(url, "GET", "/api/state", headers={"Host": f"localhost:{port}"}).status == 200
        assert raw(url, "GET", "/api/state", headers={"Host": f"evil.example:{port}"}).status \
            == 421


def test_the_page_runs_with_neither_daemon_nor_store(tmp_path, short_dir):
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    with page_in_process(config) as url:
        state = requests.get(f"{url}/api/state", timeout=5).json()
    assert not state["daemon"]["ok"] and not state["store"]["ok"]
    assert "events.db" in state["store"]["error"] and state["events"] == []
    assert [i["state_en"] for i in state["inputs"]] == ["unknown"] * 3


# ------------------------------------------------------------------ login

def test_logins_are_limited_per_client_and_from_everyone(tmp_path, short_dir):
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    wrong = json.dumps({"password": "not-the-password"}).encode()
    right = json.dumps({"password": PASSWORD}).encode()
    headers = {"Content-Type": "application/json"}
    with page_in_process(config) as url:
        for _ in range(CLIENT_FAILURES):
            assert raw(url, "POST", "/api/login", wrong, headers, "127.0.0.2").status == 401
        # That client is stopped, the right password too; another client is not.
        refused = raw(url, "POST", "/api/login", right, headers, "127.0.0.2")
        assert refused.status == 429
        assert 0 < int(refused.headers["Retry-After"]) <= CLIENT_WINDOW_S
        assert raw(url, "POST", "/api/login", right, headers, "127.0.0.3").status == 200
        # Guessing from many addresses: after GLOBAL_FAILURES in all, everyone waits.
        clients = [f"127.0.0.{n}" for n in range(10, 10 + GLOBAL_FAILURES)]
        failures = CLIENT_FAILURES
        for client in clients:
            if failures == GLOBAL_FAILURES:
                break
            assert raw(url, "POST", "/api/login", wrong, headers, client).status == 401
            failures += 1
        assert raw(url, "POST", "/api/login", right, headers, "127.0.0.99").status == 429


def test_guesses_sent_at_once_are_limited_as_if_one_after_another(tmp_path, short_dir):
    # Thirty logins whose bodies are held back until every one is waiting for its body:
    # the limit must still let only CLIENT_FAILURES of them be tried.
    import socket
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    body = json.dumps({"password": "not-the-password"}).encode()
    with page_in_process(config) as url:
        port = int(url.rsplit(":", 1)[1])
        guesses = []
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                            source_address=("127.0.0.2", 0))
            sock.sendall(b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (port, len(body)))
            guesses.append(sock)
        threading.Event().wait(0.5)  # each handler has started, waiting for its body
        for sock in guesses:
            sock.sendall(body)
        statuses = []
        for sock in guesses:
            with sock:
                statuses.append(int(sock.recv(4096).split(b" ", 2)[1]))
    assert statuses.count(401) == CLIENT_FAILURES
    assert statuses.count(429) == 30 - CLIENT_FAILURES


def test_no_secret_of_the_page_shows_in_a_repr():
    # A session or the password in a log line or a traceback's message must not give
    # them away.
    session = Sessions().open()
    assert session.token not in repr(session) and session.csrf not in repr(session)
    assert PASSWORD not in repr(Password(PASSWORD))


def test_the_login_limits_end_with_their_window():
    now = [1000.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(CLIENT_FAILURES):
        assert limiter.wait_s("a") == 0
        limiter.failed("a")
    assert limiter.wait_s("a") == pytest.approx(CLIENT_WINDOW_S)
    now[0] += CLIENT_WINDOW_S
    assert limiter.wait_s("a") == 0


def test_sessions_expire_and_are_bounded():
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    first = sessions.open()
    assert sessions.get(first.token) == first
    assert sessions.get("forged") is None and sessions.get(None) is None
    now[0] += SESSION_S
    assert sessions.get(first.token) is None
    opened = [sessions.open() for _ in range(MAX_SESSIONS + 1)]
    assert sessions.get(opened[0].token) is None and sessions.get(opened[-1].token)
    assert len({s.token for s in opened} | {s.csrf for s in opened}) == 2 * len(opened)


# ------------------------------------------------------------------ actions

def test_no_action_without_a_session_the_csrf_token_and_this_origin(guard_site):
    site = guard_site
    url = site.url
    request(site.daemon.socket, "sim", {"input": "guard_room", "state": "on"})
    _wait_until(lambda: request(site.daemon.socket, "status")["alarm"]["active"], 5)
    silence = {"name": "王老师"}
    assert requests.post(f"{url}/api/silence", json=silence, timeout=5).status_code == 401
    s = login(url)
    token = s.headers.pop("X-CSRF-Token")
    assert s.post(f"{url}/api/silence", json=silence, timeout=5).status_code == 403
    assert s.post(f"{url}/api/silence", json=silence, headers={"X-CSRF-Token": "x" + token},
                  timeout=5).status_code == 403
    assert s.post(f"{url}/api/silence", json=silence, timeout=5,
                  headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}
                  ).status_code == 403
    assert s.post(f"{url}/api/silence", json=silence, timeout=5,
                  headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
                  ).status_code == 403
    # A cross-site form can only send a form, never JSON.
    assert s.post(f"{url}/api/silence", data=silence, headers={"X-CSRF-Token": token},
                  timeout=5).status_code == 415
    assert s.post(f"{url}/api/drill", json={"on": True}, timeout=5).status_code == 403
    assert s.post(f"{url}/api/acknowledge", json=silence, timeout=5).status_code == 403
    assert requests.post(f"{url}/api/acknowledge", json=silence, timeout=5).status_code == 401
    status = request(site.daemon.socket, "status")
    assert status["alarm"]["active"] and not status["drill"]["active"]
    assert json.loads(site.daemon.cli("events", "--json").stdout)[-1]["kind"] == "panic"
    # The page's own request, as the browser sends it.
    done = s.post(f"{url}/api/silence", json=silence, timeout=5,
                  headers={"X-CSRF-Token": token, "Origin": url})
    assert done.status_code == 200, done.text
    [event] = done.json()["result"]
    assert (event["kind"], event["data"]["by"], event["data"]["via"]) == \
        ("silenced", "王老师", "web")
    assert not request(site.daemon.socket, "status")["alarm"]["active"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 33, "王\u202e老师", "a\nb", "a\x1b[31m", 7])
def test_a_name_is_one_line_of_visible_text(guard_site, name):
    s = login(guard_site.url)
    answer = s.post(f"{guard_site.url}/api/walktest", json={"on": True, "name": name},
                    timeout=5)
    assert answer.status_code == 400 and "type your name" in answer.json()["error"]
    assert not request(guard_site.daemon.socket, "status")["walktest"]["active"]


def test_requests_are_bounded(guard_site):
    s = login(guard_site.url)
    big = {"name": "x", "padding": "y" * (server.MAX_BODY_BYTES + 1)}
    assert s.post(f"{guard_site.url}/api/silence", json=big, timeout=5).status_code == 413
    assert s.post(f"{guard_site.url}/api/silence", data=b"[" * 5000, timeout=5,
                  headers={"Content-Type": "application/json"}).status_code == 400
    assert requests.get(f"{guard_site.url}/api/state", timeout=5,
                        headers={"X-Long": "z" * 20000}).status_code in (400, 431)
    assert requests.get(f"{guard_site.url}/api/state", timeout=5).status_code == 200


class SilentDaemon:
    """A control socket that takes requests and never answers: the most connections it
    held at once. One thread: a connection the page closed before opening the next is
    seen closed before that next one is counted."""

    def __init__(self, path: Path):
        import socket
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._stop = threading.Event()
        self.most = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select
        held: list = []
        while not self._stop.is_set():
            readable, _, _ = select.select([self._server, *held], [], [], 0.05)
            for conn in held[:]:  # the closed ones first
                if conn in readable and _read_to_the_end(conn):
                    held.remove(conn)
                    conn.close()
            if self._server in readable:
                held.append(self._server.accept()[0])
                self.most = max(self.most, len(held))
        for conn in held:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


def _read_to_the_end(conn) -> bool:
    """Take what ``conn`` has; whether it is closed."""
    import socket
    try:
        while conn.recv(4096, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False
    return True


def test_actions_cut_off_never_hold_more_of_the_control_socket(tmp_path, short_dir,
                                                               monkeypatch):
    # Actions wait for the daemon, time out, are cut off and are sent again: whatever
    # the timing, the page holds at most ACTIONS_AT_ONCE of the daemon's 8 connections.
    monkeypatch.setattr(server, "REQUEST_S", 1.0)  # the socket's timeout: 0.5 s
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    daemon = SilentDaemon(short_dir / "control.sock")
    try:
        with page_in_process(config) as url:
            s = login(url)

            def silence() -> None:
                s.post(f"{url}/api/silence", json={"name": "王"}, timeout=10)
            workers = []
            for _ in range(12):
                workers.append(threading.Thread(target=silence))
                workers[-1].start()
                threading.Event().wait(0.1)
            for worker in workers:
                worker.join(10)
    finally:
        daemon.close()
    assert daemon.most == server.ACTIONS_AT_ONCE


# ------------------------------------------------------------------ snapshots

def hand_made_store(tmp_path: Path, pictures: dict[str, Path]) -> dict[str, int]:
    """A store (no daemon) with one panic event per picture, attached by that path."""
    from edge.store import Store

    store = Store(tmp_path / "var" / "events.db")
    seqs = {}
    try:
        for name, path in pictures.items():
            event = store.append("panic", "guard_room", dt.datetime.now(SHANGHAI),
                                 {"text": f"<b>{name}</b>\u202e"})
            store.attach(event.seq, [("snapshot", str(path), "0" * 64, 3)], {})
            seqs[name] = event.seq
    finally:
        store.close()
    return seqs


def test_snapshots_are_served_only_from_the_snapshot_directory(tmp_path, short_dir):
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{free_port()}")
    from PIL import Image

    day = tmp_path / "var" / "snapshots" / "2026-12-03"
    day.mkdir(parents=True)
    Image.new("RGB", (1280, 960), "red").save(day / "a.jpg", "JPEG")
    (day / "broken.jpg").write_bytes(b"\xff\xd8\xff not a picture")
    secret = tmp_path / "var" / "secret.jpg"
    secret.write_bytes(b"not yours")
    (day / "link.jpg").symlink_to(secret)
    seqs = hand_made_store(tmp_path, {"inside": day / "a.jpg", "broken": day / "broken.jpg",
                                      "outside": secret,
                                      "dotdot": day / ".." / ".." / "secret.jpg",
                                      "link": day / "link.jpg"})
    with page_in_process(config) as url:
        inside = requests.get(f"{url}/snapshot/{seqs['inside']}", timeout=5)
        assert inside.status_code == 200 and inside.content == (day / "a.jpg").read_bytes()
        assert inside.headers["Content-Type"] == "image/jpeg"
        thumbnail = requests.get(f"{url}/thumbnail/{seqs['inside']}", timeout=5)
        assert thumbnail.headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumbnail.content)).size == (320, 240)
        assert requests.get(f"{url}/thumbnail/{seqs['broken']}", timeout=5).status_code == 404
        for name in ("outside", "dotdot", "link"):
            for kind in ("snapshot", "thumbnail"):
                assert requests.get(f"{url}/{kind}/{seqs[name]}", timeout=5).status_code \
                    == 404, (name, kind)
        for path in ("/snapshot/../secret.jpg", "/snapshot/%2e%2e%2fsecret.jpg",
                     "/snapshot/..%2f..%2fconfig.toml", "/snapshot/1/../../config.toml",
                     "/snapshot/-1", "/snapshot/99999", "/snapshot/1.jpg",
                     "/snapshot/" + "9" * 13, "/static/../config.toml"):
            assert raw(url, "GET", path).status == 404, path
        # No daemon runs: the page says so, and still shows the day's events, newest
        # first, with what strangers wrote shown escaped.
        state = requests.get(f"{url}/api/state", timeout=5).json()
        assert state["daemon"]["ok"] is False and "no edge-alarm daemon" in \
            state["daemon"]["error"]
        assert state["store"]["ok"] and state["alarm"]["active"] is False
        events = state["events"]
        assert [e["seq"] for e in events] == sorted(seqs.values(), reverse=True)
        assert events[-1]["snapshot"] == f"/snapshot/{seqs['inside']}"
        assert events[-1]["thumbnail"] == f"/thumbnail/{seqs['inside']}"
        assert "text: <b>inside</b>\\u202e" in events[-1]["detail"]


# ------------------------------------------------------------------ the stream

def test_the_stream_pushes_each_change_and_live_streams_are_bounded(guard_site):
    site = guard_site
    with requests.get(f"{site.url}/api/stream", stream=True, timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        docs = (json.loads(line[6:]) for line in stream.iter_lines()
                if line.startswith(b"data: "))
        assert next(docs)["alarm"]["active"] is False
        request(site.daemon.socket, "sim", {"input": "main_gate", "state": "on"})
        gate_open = next(doc for doc in docs if doc["inputs"][1]["state_en"] == "open")
        assert gate_open["inputs"][1]["name"] == "main_gate"
    others = [requests.get(f"{site.url}/api/stream", stream=True, timeout=10)
              for _ in range(server.MAX_STREAMS)]
    try:
        assert all(o.status_code == 200 for o in others)
        assert requests.get(f"{site.url}/api/stream", timeout=10).status_code == 503
    finally:
        for other in others:
            other.close()
    _wait_until(lambda: requests.get(f"{site.url}/api/stream", stream=True,
                                     timeout=10).status_code == 200, 10)


def test_open_connections_are_capped_and_idle_ones_cut(tmp_path, short_dir):
    """The cap never touches what is open: a live page's stream and a browser's
    connection answer on through a flood."""
    port = free_port()
    config = write_site(tmp_path, short_dir, listen=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    web = start_web(config, url, tmp_path / "web.log")
    idle: list[socket.socket] = []
    flood: list[socket.socket] = []
    browser = requests.Session()
    stream = browser.get(f"{url}/api/stream", stream=True, timeout=30)
    lines = (line for line in stream.iter_lines() if line)
    try:
        def descriptors() -> int:
            return len(os.listdir(f"/proc/{web.pid}/fd"))
        assert next(lines).startswith(b"data: ")
        assert browser.get(f"{url}/api/session", timeout=5).ok  # its second connection
        opened = time.monotonic()
        idle += [socket.create_connection(("127.0.0.1", port), timeout=5)
                 for _ in range(server.MAX_CONNECTIONS - 2)]
        _wait_until(lambda: _closed_at_once(port), 10, what="a connection over the cap closed")
        full = descriptors()
        assert full >= server.MAX_CONNECTIONS
        # The cap is full: more are closed unread, never held, even as a burst (some of
        # which the kernel's accept queue drops: those never reach the page).
        for _ in range(20):
            assert _closed_at_once(port)
        most = 0
        for _ in range(500):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            flood.append(s)
            most = max(most, descriptors())
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            most = max(most, descriptors())
        assert most <= full + 3 * server.ACCEPTED_AT_ONCE
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/api/session", timeout=5)
        assert browser.get(f"{url}/api/session", timeout=5).ok
        # Connections that end make room at once.
        for s in idle[:8]:
            s.close()
        _wait_until(lambda: _answers(url), 10, what="the page answering again")
        # Silent connections are cut after IDLE_CONNECTION_S, so they cannot hold the cap.
        for s in idle[8:]:
            s.settimeout(max(0.1, opened + server.IDLE_CONNECTION_S + 15 - time.monotonic()))
            assert s.recv(1) == b""
        assert next(lines) == b": keepalive"  # the stream, on
        assert descriptors() <= full - server.MAX_CONNECTIONS + 3
    finally:
        stream.close()
        browser.close()
        for s in idle + flood:
            s.close()
        assert stop_web(web) == 0


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/session", timeout=5).ok
    except requests.ConnectionError:
        return False


def with_web(web: dict) -> dict:
    """The smallest config there is, with this [web] table."""
    return {"site": {"name": "a", "device_id": "a"}, "storage": {"path": "/tmp/a"},
            "gpio": {"pin_factory": "mock"},
            "panic_button": [{"name": "b", "label": "B", "pin": 17}], "web": web}


@pytest.mark.parametrize("listen, local", [
    ("127.0.0.1:8080", True), ("127.0.0.2:80", True), ("localhost:8080", True),
    ("[::1]:8080", True), ("0.0.0.0:8080", False), ("[::]:8080", False),
    ("192.168.1.50:8080", False)])
def test_listen_addresses_and_whether_they_reach_beyond_this_machine(listen, local):
    web = {"listen": listen, "password_file": "/etc/edge-alarm/web-password"}
    assert config_mod.parse(with_web(web)).web.local is local


@pytest.mark.parametrize("listen", ["8080", "gate-pi:8080", "127.0.0.1:0", "127.0.0.1:65536",
                                    "127.0.0.1:http", "[::1:8080", ":8080"])
def test_a_listen_address_that_is_none_is_refused(listen):
    with pytest.raises(config_mod.ConfigError) as refused:
        config_mod.parse(with_web({"listen": listen}))
    assert refused.value.problems == [
        f"config error: config.toml: [web] listen: {listen!r} is not \"ADDRESS:PORT\" "
        "(\"127.0.0.1:8080\", \"0.0.0.0:8080\", \"[::]:8080\"): an IP address, and a port "
        "from 1 to 65535"]


def test_only_the_web_command_imports_aiohttp():
    """The daemon, the other commands and the page's own document never load it."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edge.cli, edge.service, edge.web.view, "
         "edge.web.auth; print(sorted(m for m in sys.modules if m.startswith('aiohttp')))"],
        capture_output=True, text=True, timeout=60)
    assert loaded.stdout == "[]\n", loaded.stderr
