"""The sections of the config, one dataclass per table: each field is a key, each default
is that key's default (see edge/config/section.py for how they are read)."""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from edge.clock import LocalTime
from edge.config.checks import (command_pin, is_loopback, listen_address, mqtt_topic_prefix,
                                mqtt_url, not_blank, one_of, optional_phone, phone_problem,
                                sia_account, sia_key_file, sia_number, sim_pin, split_listen,
                                valid_device_id, valid_host, valid_name, valid_timezone,
                                valid_url)
from edge.config.section import Section, read_keys, setting
from edge.config.table import Table
from edge.kinds import DEFAULT_IMMEDIATE, RECEIVABLE_KINDS

DEFAULT_SOCKET = "/run/edge-alarm/control.sock"
PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "mock")
CAMERA_BACKENDS = ("picamera2", "none", "test-pattern")
BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
# Placeholders an [sms] template may use; see edge/sms_text.py.
TEMPLATE_FIELDS = frozenset({"site", "label", "subject", "time", "date", "kind", "reason", "by",
                             "text"})
MQTT_PORT, MQTTS_PORT = 1883, 8883  # the IANA ports a url without one means
# Low free space clears only once min_free_mb and this share of it again are free.
LOW_SPACE_CLEAR_SHARE = 0.1
# Without an [uplink] (only [mqtt] or [sia]) these hold; with one, its keys set them.
DEFAULT_SMS_FALLBACK_AFTER_S = 20
DEFAULT_HEARTBEAT_S = 300


@dataclass(frozen=True)
class Site(Section):
    name: str = setting(check=not_blank)
    device_id: str = setting(check=valid_device_id)
    timezone: str = setting("Asia/Shanghai", check=valid_timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Storage(Section):
    path: Path = setting()
    retention_days: int = 90
    max_snapshots_mb: int = 2048
    min_free_mb: int = 50

    @property
    def db_path(self) -> Path:
        return self.path / "events.db"

    @property
    def snapshots_path(self) -> Path:
        return self.path / "snapshots"

    def space_low(self, free_bytes: int, was_low: bool = False) -> bool:
        """Less than min_free_mb free; once low, until LOW_SPACE_CLEAR_SHARE more is free
        again, so a card hovering at the threshold is one fault, not one per minute."""
        need = self.min_free_mb * (1 + LOW_SPACE_CLEAR_SHARE if was_low else 1)
        return free_bytes < need * 1024 * 1024


@dataclass(frozen=True)
class Gpio(Section):
    pin_factory: str = setting("lgpio", check=one_of(PIN_FACTORIES))


@dataclass(frozen=True)
class Siren(Section):
    pin: int = setting(read=Table.pin)
    active_high: bool = True
    max_on_s: int = 180


@dataclass(frozen=True)
class Camera(Section):
    backend: str = setting("picamera2", check=one_of(CAMERA_BACKENDS))
    pre_trigger_s: int = 5
    snapshot_on_gate_open: bool = False


@dataclass(frozen=True)
class Modem(Section):
    port: str = setting(check=not_blank)
    baudrate: int = setting(115200, check=one_of(BAUDRATES))
    sim_pin: str = setting("", check=sim_pin)
    smsc: str = setting("", check=optional_phone)
    health_s: int = 60
    min_signal: int = 5


@dataclass(frozen=True, kw_only=True)  # keyword-only: the required url after the files
class Uplink(Section):
    token_file: Path = Path("/etc/edge-alarm/token")
    ca_file: Path | None = None
    url: str = setting(check=valid_url)
    sms_fallback_after_s: int = DEFAULT_SMS_FALLBACK_AFTER_S
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


SIA_PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, kw_only=True)  # keyword-only: required keys after defaulted ones
class Sia(Section):
    """SIA DC-09 to an alarm receiving centre (edge/sia/)."""

    host: str = setting(check=valid_host)
    port: int = setting()
    protocol: str = setting("tcp", check=one_of(SIA_PROTOCOLS))
    account: str = setting(check=sia_account)
    receiver: str = setting("0", toml=(str, int), check=sia_number)
    line: str = setting("0", toml=(str, int), check=sia_number)
    key_file: Path | None = setting(None, check=sia_key_file)  # None: sent in clear
    supervision_s: int = 60  # a NULL message after this long without one; 0 = none


@dataclass(frozen=True, kw_only=True)  # keyword-only: the required url after the files
class Mqtt(Section):
    """A fleet broker (edge.mqtt): client id = [site] device_id, QoS 1, a persistent session."""

    ca_file: Path | None = None  # required with mqtts://: the broker's CA, verification always on
    url: str = setting(check=mqtt_url)
    username: str | None = setting(None, check=not_blank)
    password_file: Path | None = None  # its first line; never logged
    topic_prefix: str = setting("edge-alarm", check=mqtt_topic_prefix)

    @classmethod
    def read(cls, table: Table) -> Mqtt:
        section = super().read(table)
        if section.tls and section.ca_file is None:
            table.fail("ca_file", "required with an mqtts:// url: the CA that signed the "
                                  "broker's certificate")
        if section.password_file is not None and section.username is None:
            table.fail("password_file", "needs a username (MQTT sends no password without one)")
        return section

    @property
    def tls(self) -> bool:
        return (self.url or "").startswith("mqtts://")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (MQTTS_PORT if self.tls else MQTT_PORT)


def read_kinds(t: Table, key: str, default: Any) -> frozenset[str]:
    """A list of kinds a contact may be told of."""
    kinds = t.get(key, list, default)
    if kinds is None:
        return frozenset()
    out = set()
    for kind in kinds:
        if isinstance(kind, str) and kind in RECEIVABLE_KINDS:
            out.add(kind)
        else:
            t.fail(key, f"{kind!r} is not a kind ({', '.join(sorted(RECEIVABLE_KINDS))})")
    return frozenset(out)


@dataclass(frozen=True)
class Contact(Section):
    name: str = setting(check=valid_name)
    phone: str = setting(check=phone_problem)
    receives: frozenset[str] = setting(read=read_kinds)
    may_command: bool = False


def read_templates(t: Table, key: str, default: dict[str, str]) -> dict[str, str]:
    """[sms] templates: kind → a text with TEMPLATE_FIELDS placeholders."""
    templates = t.get(key, dict, default)
    checked = {}
    for kind, text in (templates or {}).items():
        if kind not in RECEIVABLE_KINDS:
            t.fail(f"{key}.{kind}", "not a kind")
        elif not isinstance(text, str) or not text.strip():
            t.fail(f"{key}.{kind}", "must be a non-empty string")
        else:
            why = template_problem(text)
            if why:
                t.fail(f"{key}.{kind}", why)
            else:
                checked[kind] = text
    return checked


def template_problem(text: str) -> str | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        return f"not a valid template: {e}"
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}} (use "
                f"{', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})")
    try:  # a format spec or conversion ({label:d}, {time!x}) fails only when filled in
        text.format(**{**{f: "x" for f in TEMPLATE_FIELDS},
                       "time": LocalTime.of(dt.datetime(2026, 1, 1, 7, 42, 15))})
    except (ValueError, KeyError, IndexError) as e:
        return f"not a valid template: {e}"
    return None


@dataclass(frozen=True)
class Sms(Section):
    templates: dict[str, str] = setting(default_factory=dict, read=read_templates)
    immediate: frozenset[str] = setting(DEFAULT_IMMEDIATE, read=read_kinds)
    max_parts: int = 4
    # A command counts only as "PIN WORD"; never shown. An unquoted PIN is a TOML integer:
    # taken, to be refused with how to write it.
    command_pin: str | None = setting(None, toml=(str, int), check=command_pin, secret=True)
    help_reply_every_s: int = 600  # a help reply at most this often per sender
    replies_per_hour: int = 10  # replies to one sender; beyond, commands are not answered


@dataclass(frozen=True)
class Drill(Section):
    siren_s: int = 5  # a drill sounds the siren briefly: the school hears it, nobody panics
    default_for_s: int = 1800


def clock_time(value: str) -> str | None:
    """"HH:MM", 00:00 to 23:59."""
    try:
        dt.datetime.strptime(value, "%H:%M")
    except ValueError:
        return f"{value!r} is not a time \"HH:MM\" (00:00 to 23:59)"
    return None if len(value) == 5 else f"{value!r} must be written \"HH:MM\""


@dataclass(frozen=True)
class Summary(Section):
    time: str = setting("18:00", check=clock_time)  # site time

    @property
    def at(self) -> dt.time:
        return dt.time.fromisoformat(self.time)


def read_names(t: Table, key: str, default: Any) -> tuple[str, ...] | None:
    """A list of names (of contacts: the loader checks that each is one)."""
    names = t.get(key, list, default)
    if names is None:
        return None
    if not all(isinstance(name, str) for name in names):
        t.fail(key, "must be an array of [[contact]] names")
        return None
    return tuple(names)


@dataclass(frozen=True)
class Escalation(Section):
    call_after_s: int = 120  # an alarm not acknowledged this long starts the calls
    ring_s: int = 30  # each call hangs up after this
    contacts: tuple[str, ...] | None = setting(None, read=read_names)  # None: panic's
    rounds: int = 3


@dataclass(frozen=True)
class Walktest(Section):
    due_days: int = 30  # an input not walk-tested for this long is overdue (未巡检)


@dataclass(frozen=True)
class Indicator(Section):
    """The guard's lamp (an LED, or a lamp through a relay)."""

    pin: int = setting(read=Table.pin)
    active_high: bool = True


@dataclass(frozen=True)
class Control(Section):
    socket: Path = Path(DEFAULT_SOCKET)


@dataclass(frozen=True)
class Web(Section):
    """The guard-room page of `edge-alarm web`. Anything but a loopback address lets the
    LAN in: then a password is required, for reading as for acting."""

    listen: str = setting("127.0.0.1:8080", check=listen_address)
    password_file: Path | None = None

    @classmethod
    def read(cls, table: Table) -> Self:
        web = cls(**read_keys(cls, table))
        if web.listen is not None and web.password_file is None and not web.local:
            table.fail("password_file", f"required: listen {web.listen!r} lets other machines "
                                        "in; give a password file, or listen on 127.0.0.1")
        table.finish()
        return web

    @property
    def host(self) -> str:
        host, _ = split_listen(self.listen)
        assert host is not None  # checked when read
        return host

    @property
    def port(self) -> int:
        _, port = split_listen(self.listen)
        assert port is not None
        return port

    @property
    def local(self) -> bool:
        """Whether only this machine can reach the page."""
        return is_loopback(self.host)
