"""The HTTP uplink against the platform stand-in, a real http.server on 127.0.0.1."""

import email.utils
import io
import logging
import os
import socket
import struct
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from conftest import PLATFORM_TOKEN, self_signed_cert, write_token
from edge.sim.slow_platform import HUGE_BODY, TRICKLE_BODY, TRICKLE_HEAD, SlowPlatform
from edge.errors import UplinkError
from edge.uplink.backoff import MAX_DELAY_S, backoff_delay, next_delay
from edge.uplink.http import (ACCEPTED, CLOUDEVENT_BATCH_TYPE, CLOUDEVENT_TYPE, REJECTED,
                              RETRY, HttpUplink, PostResult, parse_retry_after)

pytestmark = pytest.mark.usefixtures("token_never_logged")


@pytest.fixture
def uplink(platform, token_file):
    up = HttpUplink(platform.url, str(token_file), connect_timeout_s=2.0, read_timeout_s=5.0)
    yield up
    up.close()


def make_event(seq: int = 1, kind: str = "panic", subject: str = "guard_room") -> dict:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "edge-alarm/gaoshan-gate-1",
            "type": f"cn.edu.school.edge-alarm.{kind}", "time": "2025-03-03T07:42:15+08:00",
            "subject": subject, "sequence": f"{seq:012d}", "datacontenttype": "application/json",
            "data": {"site": "高山小学", "label": "门卫室一键报警", "clock_synced": True}}


def jpeg(shade: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (shade, shade, shade)).save(out, "JPEG")
    return out.getvalue()


def check(result: PostResult, outcome: str, status: int | None) -> PostResult:
    assert (result.outcome, result.status) == (outcome, status), result
    assert PLATFORM_TOKEN not in result.detail and PLATFORM_TOKEN not in repr(result)
    return result


# -- posting events ----------------------------------------------------------------------

def test_one_event_is_a_cloudevent_with_auth_and_idempotency_key(platform, uplink):
    event = make_event()
    check(uplink.post_events([event]), ACCEPTED, 200)

    [request] = platform.requests
    assert request.headers["Content-Type"] == CLOUDEVENT_TYPE
    assert request.headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"
    assert request.headers["Idempotency-Key"] == event["id"]
    [received] = platform.events
    assert received.document == event        # Chinese text arrives intact
    assert (received.id, received.type, received.subject) == (
        event["id"], "cn.edu.school.edge-alarm.panic", "guard_room")


def test_several_events_are_one_batch_in_order_keyed_by_the_first(platform, uplink):
    events = [make_event(seq) for seq in (1, 2, 3)]
    check(uplink.post_events(events), ACCEPTED, 200)

    [request] = platform.requests
    assert request.headers["Content-Type"] == CLOUDEVENT_BATCH_TYPE
    assert request.headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"
    assert request.headers["Idempotency-Key"] == events[0]["id"]
    assert [e.id for e in platform.events] == [e["id"] for e in events]
    assert [int(e.sequence) for e in platform.events] == [1, 2, 3]


def test_an_event_the_platform_already_has_counts_as_accepted(platform, uplink):
    event = make_event()
    check(uplink.post_events([event]), ACCEPTED, 200)
    result = check(uplink.post_events([event]), ACCEPTED, 409)
    assert "already" in result.detail
    assert len(platform.events) == 1


def test_posting_nothing_is_a_programming_error(uplink):
    with pytest.raises(ValueError):
        uplink.post_events([])


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_busy_platform_answers_are_retried(platform, uplink, status):
    platform.respond_with(status)
    result = check(uplink.post_events([make_event()]), RETRY, status)
    assert result.retry_after_s is None
    assert platform.events == []


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_passed_on(platform, uplink, status):
    platform.respond_with(status, retry_after=7)
    assert check(uplink.post_events([make_event()]), RETRY, status).retry_after_s == 7.0


def test_retry_after_as_an_http_date_becomes_seconds_from_now(platform, uplink):
    platform.respond_with(503, retry_after=email.utils.formatdate(time.time() + 120, usegmt=True))
    retry_after = check(uplink.post_events([make_event()]), RETRY, 503).retry_after_s
    assert 115 <= retry_after <= 121


@pytest.mark.parametrize("value, expected", [
    ("0", 0.0), (" 30 ", 30.0), ("99999", MAX_DELAY_S),
    ("Mon, 03 Mar 2025 00:01:00 GMT", 60.0),        # a minute after `now`
    ("Sun, 02 Mar 2025 23:00:00 GMT", 0.0),         # already past
    ("-5", None), ("1.5", None), ("soon", None), ("", None), (None, None),
])
def test_parse_retry_after(value, expected):
    now = email.utils.parsedate_to_datetime("Mon, 03 Mar 2025 00:00:00 GMT").timestamp()
    assert parse_retry_after(value, now=now) == expected


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_other_client_errors_are_permanent(platform, uplink, status):
    platform.respond_with(status, body=b'{"error": "schema: \\"data.site\\" missing"}')
    result = check(uplink.post_events([make_event()]), REJECTED, status)
    assert f"HTTP {status}" in result.detail and "data.site" in result.detail
    assert result.retry_after_s is None


def test_a_refused_token_is_permanent_and_says_so(platform, uplink):
    platform.set_token("another-token")
    result = check(uplink.post_events([make_event()]), REJECTED, 401)
    assert "token refused" in result.detail
    assert platform.events == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_misconfiguration_and_not_followed(platform, uplink, status):
    platform.respond_with(status, headers={"Location": platform.url + "/moved"})
    result = check(uplink.post_events([make_event()]), REJECTED, status)
    assert "redirect" in result.detail and "/moved" in result.detail
    assert len(platform.requests) == 1        # the Location was not visited


def test_a_server_echoing_the_token_does_not_leak_it(platform, uplink):
    platform.respond_with(
        400, body=f"bad credentials: Bearer {PLATFORM_TOKEN}\r\n\x1b[31m".encode())
    result = check(uplink.post_events([make_event()]), REJECTED, 400)
    assert "***" in result.detail
    assert all(ch.isprintable() for ch in result.detail)


def test_a_long_body_is_cut_short_in_the_detail(platform, uplink):
    platform.respond_with(500, body=b"x" * 100_000)
    result = check(uplink.post_events([make_event()]), RETRY, 500)
    assert len(result.detail) <= 200


# -- transport failures ------------------------------------------------------------------

def test_an_answer_slower_than_the_read_timeout_is_retried(platform, token_file):
    slow_uplink = HttpUplink(platform.url, str(token_file), connect_timeout_s=1.0,
                             read_timeout_s=0.2)
    platform.set_delay(5.0)
    started = time.monotonic()
    result = check(slow_uplink.post_events([make_event()]), RETRY, None)
    assert time.monotonic() - started < 4.0, "the slow answer was waited for"
    assert "no answer within 0.2 s" in result.detail


def test_a_platform_that_is_down_is_retried_and_found_again(platform, uplink):
    check(uplink.post_events([make_event(1)]), ACCEPTED, 200)   # leaves a kept-alive connection
    platform.stop()
    result = check(uplink.post_events([make_event(2)]), RETRY, None)
    assert result.detail.startswith("unreachable")
    check(uplink.post_events([make_event(2)]), RETRY, None)      # refused, not just a stale socket
    platform.start()
    check(uplink.post_events([make_event(3)]), ACCEPTED, 200)
    assert [int(e.sequence) for e in platform.events] == [1, 3]


def test_a_lost_answer_is_retried_and_the_retry_is_accepted_as_a_duplicate(platform, uplink):
    event = make_event()
    platform.lose_responses(1)
    check(uplink.post_events([event]), RETRY, None)
    assert [e.id for e in platform.events] == [event["id"]]       # the platform kept it
    check(uplink.post_events([event]), ACCEPTED, 409)
    assert len(platform.events) == 1


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("mode, tls", [(TRICKLE_HEAD, False), (TRICKLE_BODY, False),
                                       (TRICKLE_HEAD, True)])
def test_an_answer_trickled_a_byte_at_a_time_fails_at_the_deadline(token_file, tls_cert,
                                                                     mode, tls):
    # A byte every 0.05 s: urllib3's read timeout (1 s) never fires.
    with SlowPlatform(mode, tls=tls_cert if tls else None) as slow:
        up = HttpUplink(slow.url, str(token_file), ca_file=str(tls_cert[0]) if tls else None,
                        connect_timeout_s=0.5, read_timeout_s=1.0)
        started = time.monotonic()
        result = check(up.post_events([make_event()]), RETRY, None)
        took = time.monotonic() - started
        up.close()
    assert result.detail == "no complete answer within 1.5 s"
    assert 1.5 <= took < 10  # the deadline, not the platform's 20 s of trickling
    assert slow.requests == 1 and slow.sent > 10


def test_a_shorter_deadline_started_during_a_longer_one_passes_at_its_own_time(token_file):
    """The watcher sleeps until the earliest deadline it holds: a request started while
    a later deadline is watched must wake it, and each request fails at its own time."""
    with SlowPlatform(TRICKLE_HEAD) as slow:
        slow_up = HttpUplink(slow.url, str(token_file), connect_timeout_s=1.0,
                             read_timeout_s=5.0)
        quick_up = HttpUplink(slow.url, str(token_file), connect_timeout_s=0.5,
                              read_timeout_s=1.0)
        took: dict[str, float] = {}

        def post(name: str, up: HttpUplink) -> None:
            started = time.monotonic()
            check(up.post_events([make_event()]), RETRY, None)
            took[name] = time.monotonic() - started

        longer = threading.Thread(target=post, args=("6 s", slow_up))
        longer.start()
        time.sleep(0.5)  # the watcher asleep until the 6 s deadline
        post("1.5 s", quick_up)
        longer.join(20)
        slow_up.close()
        quick_up.close()
    assert 1.5 <= took["1.5 s"] < 4.5  # not woken: it would have waited for the 6 s one
    assert 6.0 <= took["6 s"] < 15


def test_requests_start_no_thread_one_watcher_keeps_every_deadline(platform, uplink):
    """A backlog drains in a hundred requests: their deadlines are kept by the one watcher
    thread of the process (started by the first request), never by a thread per request,
    so the thread count stays where it was."""
    check(uplink.post_events([make_event()]), ACCEPTED, 200)
    before = threading.active_count()
    started: list[str] = []

    def note_started(frame, event, arg):  # called as each new thread begins
        started.append(threading.current_thread().name)
        sys.settrace(None)

    previous = threading.gettrace()
    threading.settrace(note_started)
    try:
        counts = []
        for seq in range(100):
            check(uplink.post_events([make_event(seq)]), ACCEPTED, 200)
            counts.append(threading.active_count())
    finally:
        threading.settrace(previous)
    assert started == []
    assert set(counts) == {before}
    assert "request-deadlines" in {t.name for t in threading.enumerate()}


def test_a_huge_answer_is_read_no_further_than_its_start(token_file):
    with SlowPlatform(HUGE_BODY) as slow:
        up = HttpUplink(slow.url, str(token_file), connect_timeout_s=0.5, read_timeout_s=1.0)
        started = time.monotonic()
        check(up.post_events([make_event()]), ACCEPTED, 200)
        assert time.monotonic() - started < 10
        up.close()
    assert slow.sent < 64 * 1024 * 1024  # of 1 GiB: what the sockets' buffers held


def test_an_invalid_url_is_rejected_not_retried(token_file):
    up = HttpUplink("platform.example.cn/api/v1/events", str(token_file))
    check(up.post_events([make_event()]), REJECTED, None)


@pytest.mark.parametrize("ca_file", [None, "wrong", "right"])
def test_tls_verification_is_always_on(tmp_path, token_file, tls_cert, ca_file):
    # A platform whose certificate only its own CA file vouches for.
    wrong = self_signed_cert(tmp_path)[0]
    with SlowPlatform(HUGE_BODY, tls=tls_cert) as slow:
        up = HttpUplink(slow.url, str(token_file),
                        ca_file={None: None, "wrong": str(wrong), "right": str(tls_cert[0])}[ca_file],
                        connect_timeout_s=1.0, read_timeout_s=2.0)
        if ca_file == "right":
            check(up.post_events([make_event()]), ACCEPTED, 200)
        else:
            for result in (up.post_events([make_event()]), up.put_snapshot("some-id", jpeg()),
                           up.probe()):
                assert "certificate verify failed" in check(result, RETRY, None).detail
        up.close()


def test_the_environments_proxy_is_used(platform, token_file, monkeypatch):
    # The stand-in takes the proxy's part: a request for an absolute URL is one for its path.
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", platform.url.removesuffix("/api/v1/events"))
    up = HttpUplink("http://platform.invalid/api/v1/events", str(token_file))
    check(up.post_events([make_event()]), ACCEPTED, 200)
    assert platform.requests[-1].headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing there: never used
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    check(HttpUplink(platform.url, str(token_file)).post_events([make_event()]), ACCEPTED, 200)


def test_a_socks_proxy_is_a_clear_error(token_file, monkeypatch):
    monkeypatch.setenv("https_proxy", "socks5://127.0.0.1:1080")
    with pytest.raises(UplinkError, match="proxy for https:// URLs"):
        HttpUplink("https://platform.invalid/api/v1/events", str(token_file))


def test_a_missing_ca_file_is_a_clear_error(tmp_path, token_file):
    with pytest.raises(UplinkError, match="CA file .*ca.pem does not exist"):
        HttpUplink("https://platform.example.cn/api/v1/events", str(token_file),
                   ca_file=str(tmp_path / "ca.pem"))


def test_a_ca_file_that_goes_away_is_retried_not_raised(tmp_path, token_file):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    up = HttpUplink("https://127.0.0.1:9/api/v1/events", str(token_file), ca_file=str(ca_file))
    ca_file.unlink()
    assert "TLS CA certificate bundle" in check(up.post_events([make_event()]), RETRY, None).detail


# -- the token ---------------------------------------------------------------------------

def test_a_missing_token_file_is_a_clear_error(tmp_path, platform):
    missing = tmp_path / "nope"
    with pytest.raises(UplinkError, match=f"token file {missing} does not exist"):
        HttpUplink(platform.url, str(missing))


@pytest.mark.parametrize("content", ["", "\n", "   \nsecond line\n"])
def test_an_empty_token_file_is_a_clear_error(tmp_path, platform, content):
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(UplinkError, match="is empty"):
        HttpUplink(platform.url, str(path))


def test_a_token_that_a_header_cannot_carry_is_refused_without_showing_it(tmp_path, platform):
    path = write_token(tmp_path / "token", f"{PLATFORM_TOKEN} {PLATFORM_TOKEN}")
    with pytest.raises(UplinkError, match="cannot carry") as raised:
        HttpUplink(platform.url, str(path))
    assert PLATFORM_TOKEN not in str(raised.value) and PLATFORM_TOKEN not in repr(raised.value)


def test_only_the_first_line_is_the_token(tmp_path, platform):
    path = tmp_path / "token"
    path.write_text(f"  {PLATFORM_TOKEN}  \n# issued 2025-03-01\n")
    os.chmod(path, 0o600)
    check(HttpUplink(platform.url, str(path)).post_events([make_event()]), ACCEPTED, 200)


def test_a_world_readable_token_file_is_warned_about_without_the_token(tmp_path, platform,
                                                                        caplog):
    path = write_token(tmp_path / "token", PLATFORM_TOKEN, mode=0o644)
    up = HttpUplink(platform.url, str(path))
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "0644" in warning.getMessage()
    assert PLATFORM_TOKEN not in repr(up) and PLATFORM_TOKEN not in str(vars(up))


def test_a_group_readable_token_file_is_normal(tmp_path, platform, caplog):
    HttpUplink(platform.url, str(write_token(tmp_path / "token", PLATFORM_TOKEN, mode=0o640)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_reload_token_takes_the_new_token(platform, uplink, token_file):
    new_token = f"{PLATFORM_TOKEN}-rotated"
    platform.set_token(new_token)
    check(uplink.post_events([make_event()]), REJECTED, 401)

    write_token(token_file, new_token)
    uplink.reload_token()
    check(uplink.post_events([make_event()]), ACCEPTED, 200)
    assert platform.requests[-1].headers["Authorization"] == f"Bearer {new_token}"


def test_a_failed_reload_keeps_the_previous_token(platform, uplink, token_file):
    token_file.unlink()
    with pytest.raises(UplinkError):
        uplink.reload_token()
    check(uplink.post_events([make_event()]), ACCEPTED, 200)


# -- images ------------------------------------------------------------------------------

def test_snapshot_put_after_its_event(platform, uplink):
    event, image = make_event(), jpeg()
    check(uplink.post_events([event]), ACCEPTED, 200)
    check(uplink.put_snapshot(event["id"], image), ACCEPTED, 200)

    assert platform.snapshots == {event["id"]: image}
    request = platform.requests[-1]
    assert (request.method, request.path) == ("PUT", f"/api/v1/events/{event['id']}/snapshot")
    assert request.headers["Content-Type"] == "image/jpeg"
    assert request.headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"


def test_pre_trigger_frames_are_numbered_from_the_oldest(platform, uplink):
    event = make_event()
    frames = {k: jpeg(shade) for k, shade in [(1, 10), (2, 90), (3, 200)]}
    check(uplink.post_events([event]), ACCEPTED, 200)
    for k, image in frames.items():
        check(uplink.put_frame(event["id"], k, image), ACCEPTED, 200)

    assert platform.frames == {event["id"]: frames}
    assert [r.path for r in platform.requests[1:]] == [
        f"/api/v1/events/{event['id']}/frames/{k}" for k in (1, 2, 3)]


def test_a_snapshot_for_an_unknown_event_is_rejected(platform, uplink):
    check(uplink.put_snapshot(str(uuid.uuid4()), jpeg()), REJECTED, 404)
    assert platform.snapshots == {}


def test_a_snapshot_put_is_retried_like_an_event(platform, uplink):
    event = make_event()
    check(uplink.post_events([event]), ACCEPTED, 200)
    platform.respond_with(429, retry_after=3)
    assert check(uplink.put_snapshot(event["id"], jpeg()), RETRY, 429).retry_after_s == 3.0


# -- probe -------------------------------------------------------------------------------

def test_probe_of_a_healthy_platform(platform, uplink):
    result = check(uplink.probe(), ACCEPTED, 200)
    assert result.detail == "reachable (HTTP 200)"
    assert (platform.requests[-1].method, platform.requests[-1].body) == ("POST", b"[]")
    assert platform.events == []
    assert platform.requests[-1].headers["Authorization"] == f"Bearer {PLATFORM_TOKEN}"


def test_probe_with_a_refused_token(platform, uplink):
    platform.set_token("another-token")
    assert "token refused" in check(uplink.probe(), REJECTED, 401).detail
    platform.respond_with(403)
    assert "token refused" in check(uplink.probe(), REJECTED, 403).detail


def test_probe_of_a_platform_that_is_down(platform, uplink):
    platform.stop()
    assert check(uplink.probe(), RETRY, None).detail.startswith("unreachable")


def test_probe_counts_a_refused_empty_batch_as_reachable(platform, uplink):
    for status in (400, 415, 422):  # a platform that wants at least one event
        platform.respond_with(status)
        assert check(uplink.probe(), ACCEPTED, status).detail == f"reachable (HTTP {status})"


@pytest.mark.parametrize("status", [404, 405, 410])
def test_probe_of_a_url_without_an_events_endpoint_is_rejected(platform, uplink, status):
    platform.respond_with(status)
    assert "uplink.url is wrong" in check(uplink.probe(), REJECTED, status).detail


def test_probe_counts_a_platform_that_answers_at_all_as_reachable(platform, uplink):
    for status in (429, 500, 503):  # there, at that URL, taking the token: events will go
        platform.respond_with(status)
        check(uplink.probe(), ACCEPTED, status)


def test_probe_of_a_redirecting_url_is_rejected(platform, uplink):
    platform.respond_with(301, headers={"Location": "https://elsewhere.example/"})
    check(uplink.probe(), REJECTED, 301)


# -- backoff -----------------------------------------------------------------------------

def test_backoff_doubles_from_base_up_to_the_cap():
    top = lambda: 1.0      # the ceiling itself, to read it off
    assert [backoff_delay(n, base_s=1.0, cap_s=300.0, rng=top) for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff_delay(10_000, rng=top) == 300.0
    assert backoff_delay(3, base_s=0.5, cap_s=60, rng=lambda: 0.25) == 0.5


def test_backoff_is_fully_jittered_within_bounds():
    for attempt, ceiling in [(1, 1.0), (4, 8.0), (12, 300.0)]:
        delays = [backoff_delay(attempt) for _ in range(500)]
        assert all(0.0 <= d < ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 2      # spread, not a fixed wait
    assert backoff_delay(5, rng=lambda: 0.0) == 0.0


def test_backoff_needs_an_attempt_number_from_one():
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_next_delay_honours_retry_after_within_the_maximum():
    half = lambda: 0.5
    assert next_delay(3, None, rng=half) == 2.0
    assert next_delay(3, 30.0, rng=half) == 30.0           # the server asked for longer
    assert next_delay(10, 30.0, rng=half) == 150.0         # our own backoff is longer
    assert next_delay(3, 86_400.0, rng=half) == MAX_DELAY_S
    assert next_delay(3, 0.0, rng=half) == 2.0


# -- the stand-in platform itself --------------------------------------------------------

def test_stub_keeps_only_the_new_events_of_a_partly_known_batch(platform, uplink):
    first, second = make_event(1), make_event(2)
    check(uplink.post_events([first]), ACCEPTED, 200)
    check(uplink.post_events([first, second]), ACCEPTED, 200)
    assert [e.id for e in platform.events] == [first["id"], second["id"]]


def test_stub_lets_a_waiter_see_events_arrive(platform, uplink):
    event = make_event()
    poster = threading.Thread(target=uplink.post_events, args=([event],))
    poster.start()
    assert platform.wait_for(lambda: any(e.id == event["id"] for e in platform.events), 5.0)
    poster.join()
    assert not platform.wait_for(lambda: len(platform.events) > 1, 0.05)


def test_stub_answers_scripted_responses_in_order_then_normally(platform, uplink):
    platform.respond_with(503, times=2)
    platform.respond_with(429, retry_after=1)
    statuses = [uplink.post_events([make_event()]).status for _ in range(4)]
    assert statuses == [503, 503, 429, 200]


def test_a_client_gone_mid_request_costs_the_platform_stand_in_no_traceback(platform, capsys):
    """A daemon killed mid-upload (the crash tests do it hundreds of times) cuts its
    connection; the stand-in notes it quietly instead of printing a traceback."""
    host, port = platform.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/cloudevents+json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"id\":")
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)  # the stand-in's handler thread meets the reset
    assert "Traceback" not in capsys.readouterr().err
