"""The control socket fuzzed with hypothesis against a real `edge-alarm run`: any bytes,
any JSON, requests of every command with arguments of any type. Each gets one answer line,
an error for what is no valid request; the daemon never crashes, never logs a traceback and
answers `status` after each."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import start_daemon, stop_daemon
from edge.control import request

pytestmark = pytest.mark.reliability

COMMANDS = ["status", "sim", "silence", "test-sms", "drill", "walktest"]
ARGUMENTS = ["input", "state", "by", "number", "text", "on", "for_s"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) |
    st.sampled_from(["guard_room", "main_gate", "on", "off", "+8613800138000", 60, 86400]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)
REQUESTS = st.fixed_dictionaries(
    {"cmd": st.sampled_from(COMMANDS) | st.text(max_size=10)},
    optional={"args": st.dictionaries(st.sampled_from(ARGUMENTS) | st.text(max_size=6), JSON,
                                      max_size=4) | JSON,
              "extra": JSON})


TEXT = st.text(max_size=12)
# Each command with arguments of the right types and any values.
WELL_TYPED = st.one_of(
    st.just({"cmd": "status"}),
    st.fixed_dictionaries({"cmd": st.just("sim"), "args": st.fixed_dictionaries({
        "input": st.sampled_from(["guard_room", "main_gate", "box"]) | TEXT,
        "state": st.sampled_from(["on", "off"]) | TEXT})}),
    st.fixed_dictionaries({"cmd": st.just("silence"),
                           "args": st.fixed_dictionaries({"by": st.none() | TEXT})}),
    st.fixed_dictionaries({"cmd": st.sampled_from(["drill", "walktest"]),
                           "args": st.fixed_dictionaries({
                               "on": st.booleans(),
                               "for_s": st.none() | st.integers() | st.integers(60, 86400)})}),
    st.fixed_dictionaries({"cmd": st.just("walktest"), "args": st.fixed_dictionaries({
        "on": st.booleans(), "by": st.none() | TEXT})}),
    st.fixed_dictionaries({"cmd": st.just("test-sms"), "args": st.fixed_dictionaries({
        "number": TEXT, "text": TEXT})}))


def _encoded(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


WIRE = st.one_of(
    st.binary(max_size=300),                                   # any bytes
    JSON.map(_encoded),                                        # any JSON
    REQUESTS.map(_encoded),                                    # request-shaped
    WELL_TYPED.map(_encoded),                                  # well-typed requests
    REQUESTS.map(lambda r: _encoded(r).replace(b'"', b"'", 1)),  # almost JSON
    st.integers(1, 100).map(lambda depth: b"[" * depth * 100),  # deep nesting
)


def _exchange(path, data: bytes) -> bytes:
    """Send ``data`` (and a line end), close our side, read the answer whole."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(path))
        s.sendall(data + b"\n")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_any_request_gets_an_answer_and_the_daemon_answers_status_after(
        write_config, tmp_path, short_dir):
    sock = short_dir / "control.sock"
    daemon = start_daemon(write_config(), sock, tmp_path / "daemon.log")
    outcomes = {"ok": 0, "refused": 0, "failed": 0}

    @settings(max_examples=250, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(data=WIRE)
    def one_request(data):
        answer = _exchange(sock, data)
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer
        reply = json.loads(answer)
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
        if reply["ok"]:
            outcomes["ok"] += 1
        else:
            assert isinstance(reply.get("error"), str) and reply["error"]
            outcomes["refused" if reply.get("refused") else "failed"] += 1
        assert daemon.proc.poll() is None, daemon.log_text()
        assert request(sock, "status", timeout=5)["device_id"]

    try:
        one_request()
    finally:
        status = stop_daemon(daemon)
    assert status == 0
    log = daemon.log_text()
    assert "Traceback" not in log, log
    assert outcomes["refused"] > 50 and outcomes["ok"] > 20, outcomes
