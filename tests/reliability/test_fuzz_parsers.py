"""Strangers' input, fuzzed with hypothesis: PDUs from the network, SMS texts from any
phone, config files as people write them. Each parser ends in an answer or its own
refusal, never in another exception. (The AT reader's fuzz is in tests/test_at.py; the
control socket's, against a running daemon, in test_fuzz_control.py.)"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import re
import tomllib
import unicodedata
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import edge_cli
from edge import config as config_mod
from edge.errors import ConfigError
from edge.safe_text import is_unsafe
from edge.modem.pdu import (TON_ALPHANUMERIC, TON_INTERNATIONAL, TON_NATIONAL, TON_UNKNOWN,
                            Deliver, PduError, decode_deliver, decode_submit, encode_deliver,
                            encode_submit)
from edge.sim.site import Contact, SimSite, start_site
from edge.sms_commands import IncomingCommands, parse_command
from edge.store import Store

PRINCIPAL = "+8613800138000"
PIN = "2580"

# ------------------------------------------------------------------ PDU decoder

_SEEDS = [*encode_deliver(PRINCIPAL, "解除 " * 40, dt.datetime(2026, 9, 1, 7, 42, 15,
                                                              tzinfo=dt.timezone.utc),
                          reference=9),
          *encode_deliver("10086", "hello {x}", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
          *(pdu.hex for pdu in encode_submit(PRINCIPAL, "€[]" * 70, reference=3))]


@st.composite
def mutated_pdus(draw) -> str:
    """A well-formed PDU with a few octets changed, and maybe cut short or made longer."""
    data = bytearray(bytes.fromhex(draw(st.sampled_from(_SEEDS))))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = data[:draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
    return bytes(data).hex().upper() if draw(st.booleans()) else bytes(data).hex()


PDU_INPUT = st.one_of(
    st.binary(max_size=200).map(bytes.hex),            # any octets
    st.text(alphabet="0123456789abcdefABCDEF", max_size=400),  # any hex, odd lengths too
    st.text(max_size=120),                             # not hex at all
    mutated_pdus())


@settings(max_examples=1500, deadline=None)
@given(pdu=PDU_INPUT)
def test_any_pdu_decodes_or_raises_pdu_error(pdu):
    for decode in (decode_deliver, decode_submit):
        try:
            decode(pdu)
        except PduError:
            pass


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_bytes_instead_of_hex_are_a_pdu_error(data):
    with pytest.raises(PduError):
        decode_deliver(data)  # type: ignore[arg-type]  # what a careless caller passes


# ------------------------------------------------------------------ SMS commands

SENDERS = st.sampled_from([
    (PRINCIPAL, TON_INTERNATIONAL), ("13800138000", TON_NATIONAL),
    ("8613800138000", TON_UNKNOWN), ("+8613700137000", TON_INTERNATIONAL),
    ("13800138000", TON_ALPHANUMERIC), ("ICBC", TON_ALPHANUMERIC), ("", TON_UNKNOWN)])
# Digits as phones type them: ASCII, full-width, Arabic-Indic, superscript.
DIGITISH = st.sampled_from(list("0123456789２５８０٢٥٨٠²⁵⁸⁰ 　+"))
WORDS = st.sampled_from(["SILENCE", "解除", "ACK", "收到", "STATUS", "状态", "报警", "确认",
                         "请", "好的", "OK", "不要", "吗", "？", "！", "，", " ", "\n", "👍"])
SMS_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(WORDS, DIGITISH, st.just(PIN), st.text(max_size=3)),
             max_size=12).map("".join))


@settings(max_examples=1000, deadline=None)
@given(text=SMS_TEXT)
def test_any_text_is_a_command_or_none(text):
    assert parse_command(text) in (None, "status", "silence", "acknowledge")


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def commands(tmp_path, short_dir):
    """IncomingCommands of a daemon running on mock pins (its owner thread, its store) with
    a commanding principal and [sms] command_pin; its replies collected instead of sent."""
    site = SimSite(tmp_path / "var", short_dir / "control.sock", school_hours=False,
                   sms_keys={"command_pin": PIN},
                   contacts=[Contact("principal", PRINCIPAL, ["panic", "sms_refused"],
                                     may_command=True)])
    replies: list[str] = []

    def send_direct(number: str, text: str) -> Future:
        replies.append(text)
        future: Future = Future()
        future.set_result([1])
        return future
    with contextlib.ExitStack() as stack:
        running = start_site(site, tmp_path, stack, control=False)
        yield IncomingCommands(running.cfg, running.daemon.port, send_direct), replies


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sender=SENDERS, text=SMS_TEXT)
@example(sender=(PRINCIPAL, TON_INTERNATIONAL), text="²⁵⁸⁰ SILENCE")  # read as the PIN
@example(sender=(PRINCIPAL, TON_INTERNATIONAL), text="②⑤⑧⓪ 解除")
def test_any_sms_is_a_command_or_a_refusal_and_never_shows_the_pin(commands, sender, text):
    incoming, replies = commands
    log, logger = _Collected(), logging.getLogger("edge")
    level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)  # every line logged, the debug ones too
    store = Store(incoming.cfg.storage.db_path, readonly=True)
    try:
        last = max((e.seq for e in store.events()), default=0)
        before, replied = dict(incoming.counts), len(replies)
        incoming.handle(Deliver(sender[0], text, None, None, type_of_number=sender[1]))
        incoming.port.call(lambda: None)  # after the events it posted to the owner
        new_events = [e for e in store.events() if e.seq > last]
    finally:
        store.close()
        logger.removeHandler(log)
        logger.setLevel(level)
    counts = {key: incoming.counts[key] - before[key] for key in before}
    done = [e for e in new_events if e.kind in ("silenced", "acknowledged")]
    # A command answered (or its answer held back by the limits), a refusal recorded, or
    # the sender's SMS dropped unread (over its refusals this hour); and only that.
    assert (counts["replies"] + counts["replies_suppressed"], counts["refused"],
            counts["incoming_dropped"]).count(0) == 2 or counts["refused"] and (
        counts["replies"] + counts["replies_suppressed"])  # a contact told how: pin_missing
    assert counts["refused"] == len([e for e in new_events if e.kind == "sms_refused"])
    assert not done or counts["refused"] == 0
    shown = replies[replied:] + log.lines + [json.dumps(e.data, ensure_ascii=False)
                                             for e in new_events]
    assert not [line for line in shown if PIN in unicodedata.normalize("NFKC", line)]


# ------------------------------------------------------------------ config loader

def toml_value(value) -> str:
    """A value as TOML writes it (inline tables for tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    return toml_key(str(value))


def toml_key(text: str) -> str:
    """A basic string: JSON's escapes are TOML's, but TOML wants DEL escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_document(doc: dict) -> str:
    """A whole document: top-level keys, then [tables] and [[arrays of tables]]."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not (
                 isinstance(v, list) and v and all(isinstance(t, dict) for t in v))]
    for key, value in doc.items():
        tables = [value] if isinstance(value, dict) else value if isinstance(value, list) \
            and value and all(isinstance(t, dict) for t in value) else []
        for table in tables:
            lines.append(("[%s]" if isinstance(value, dict) else "[[%s]]") % toml_key(key))
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.integers(), st.integers(-2**70, 2**70), st.floats(), st.booleans(), TEXT,
    st.sampled_from(["", "change-me", "/", "/tmp/x", "lgpio", "mock", "high", "low", "panic",
                     "06:30-08:30", "24:00-06:00", "mon", "+8613800138000", "Asia/Shanghai",
                     "../../etc/passwd", "Foo/Bar", "\x00", "{site}{", "2580", "１２３４"]),
    st.datetimes(), st.dates(), st.times())


def _arrays_and_tables(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3)


VALUES = st.recursive(SCALARS, _arrays_and_tables, max_leaves=8)


def _valid_document(tmp: Path) -> dict:
    """Every table the config knows, filled in as a simulated site's (tomllib's reading
    of SimSite's text, with the optional tables added)."""
    # The modem and the platform are nowhere (a missing port, a closed port on 127.0.0.1),
    # so that `check` finds them at once and never leaves this machine.
    site = SimSite(tmp / "var", tmp / "control.sock", camera_pre_trigger_s=2,
                   modem_port=str(tmp / "no-modem"),
                   platform_url="http://127.0.0.1:9/api/v1/events",
                   token_file=tmp / "token", sms_keys={"max_parts": 3, "command_pin": PIN},
                   contacts=[Contact("principal", PRINCIPAL, ["panic"], may_command=True)],
                   extra='\n[drill]\nsiren_s = 5\n[summary]\ntime = "18:00"\n'
                         '[escalation]\ncall_after_s = 120\n[walktest]\ndue_days = 30\n'
                         '[indicator]\npin = 26\n'
                         '[[ack_button]]\nname = "key"\nlabel = "钥匙"\npin = 6\n'
                         '[[power_input]]\nname = "ups"\nlabel = "电源"\npin = 13\n'
                         'signals = "mains_lost"\n')
    return tomllib.loads(site.text())


@st.composite
def mutated_configs(draw, base: dict) -> tuple[dict, list[str]]:
    """The valid document with a few keys given another value (any type, any value), a
    key added or removed, or a table replaced; and the names touched."""
    doc = json.loads(json.dumps(base, default=str))  # a deep copy (no dates in the base)
    touched: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        table_name = draw(st.sampled_from(sorted(doc) + ["colour"]))
        touched.append(table_name)
        table = doc.get(table_name)
        if isinstance(table, list) and table:
            table = table[draw(st.integers(0, len(table) - 1))]
        action = draw(st.sampled_from(["set", "set", "set", "add", "drop", "replace"]))
        if action == "replace" or not isinstance(table, dict):
            doc[table_name] = draw(VALUES)
        elif action == "drop" and table:
            key = draw(st.sampled_from(sorted(table)))
            del table[key]
            touched.append(key)
        else:
            key = draw(st.sampled_from(sorted(table))) if action == "set" and table \
                else draw(st.one_of(TEXT, st.sampled_from(["pin", "name", "max_on_s"])))
            table[key] = draw(VALUES)
            touched.append(key)
    return doc, touched


def _check_refusal(lines: list[str], path: str, touched: list[str]) -> None:
    assert lines, "a ConfigError without a line"
    for line in lines:
        assert line.startswith(f"config error: {path}: "), line
        assert not [ch for ch in line if is_unsafe(ch)], line  # one line, no escapes
        assert "Traceback" not in line
    text = "\n".join(lines)
    where = re.compile(r"config error: .*?: (\[\[?[^\]]*\]\]?|\S+)")
    assert all(where.match(line) for line in lines)
    assert any(name in text for name in touched) or "pin" in text, (touched, lines)


@pytest.fixture(scope="module")
def base_config(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("fuzz-config")
    doc = _valid_document(tmp)
    path = tmp / "config.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    config_mod.load(str(path))  # the base is valid: every refusal is the mutation's
    return doc, tmp


@pytest.mark.reliability
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_config_table_is_a_config_or_config_error_lines(base_config, data):
    base, _ = base_config
    doc, touched = data.draw(mutated_configs(base))
    try:
        cfg = config_mod.parse(doc, "fuzz.toml")
    except ConfigError as e:
        _check_refusal(e.problems, "fuzz.toml", touched)
    else:
        assert cfg.inputs


@pytest.mark.parametrize("key", ["a\nb", "\u2028", "\x1b[2J", "line\rend"])
def test_a_key_that_would_break_the_line_is_named_on_one_line(base_config, key):
    base, _ = base_config
    doc = json.loads(json.dumps(base))
    doc["camera"][key] = 1
    doc[key] = {}
    with pytest.raises(ConfigError) as refused:
        config_mod.parse(doc, "fuzz.toml")
    _check_refusal(refused.value.problems, "fuzz.toml", ["[camera]"])
    assert len(refused.value.problems) == 2


@pytest.mark.reliability
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_config_file_is_a_config_or_config_error_lines(base_config, data):
    """Through the file: the TOML as written (a mutation may make it unreadable), or any
    text at all."""
    base, tmp = base_config
    doc, touched = data.draw(mutated_configs(base))
    text = data.draw(st.one_of(st.just(toml_document(doc)), st.text(max_size=300)))
    path = tmp / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        config_mod.load(str(path))
    except ConfigError as e:
        if not (len(e.problems) == 1 and re.match(r"config error: \S+: (not valid TOML|not UTF-8)",
                                               e.problems[0])):
            _check_refusal(e.problems, str(path), touched + ["[site]", "[storage]", "[gpio]",
                                                          "[[panic_button]]"])


@pytest.mark.reliability
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_edge_alarm_check_answers_any_config_without_a_traceback(base_config, data):
    base, tmp = base_config
    doc, _ = data.draw(mutated_configs(base))
    path = tmp / "check.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    result = edge_cli("check", "--config", str(path), timeout=60)
    assert result.returncode in (0, 1, 78), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if result.returncode == 78:
        assert all(line.startswith("config error: ")
                   for line in result.stderr.splitlines()), result.stderr
