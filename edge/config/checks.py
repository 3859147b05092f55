"""Checks of single config values: each returns None when the value is fine, else why not,
in the words an installer reads after the file, table and key."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config.table import Check
from edge.errors import SiaError
from edge.sia.crypto import read_key_file

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}$")
_CN_MOBILE_RE = re.compile(r"^1[3-9][0-9]{9}$")
_PLACEHOLDER_PHONE_RE = re.compile(r"^\+?[0-9]*[Xx][0-9Xx]*$")
# Domains reserved for examples (RFC 2606, and the spec's platform.example.cn).
_EXAMPLE_HOST_RE = re.compile(r"(^|\.)example\.(cn|com|net|org)$|\.(example|invalid)$")


def not_blank(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def one_of(choices: Sequence[object]) -> Check:
    def check(value: object) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(repr, choices))}"
    return check


def matching(pattern: re.Pattern[str], why: str) -> Check:
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else why
    return check


valid_name = matching(NAME_RE, "must be 1-32 of a-z, 0-9, '_' or '-', starting with a "
                               "letter or digit")
_http_url = matching(re.compile(r"https?://[^/\s]+(/\S*)?"),
                     "must be an http:// or https:// URL")


def valid_url(value: str) -> str | None:
    why = _http_url(value)
    if why is None and _EXAMPLE_HOST_RE.search(urlsplit(value).hostname or ""):
        return (f"{value!r} is the template's example platform: edit it to the county "
                "platform's URL, or remove [uplink]")
    return why


def mqtt_url(value: str) -> str | None:
    """mqtt://host[:port] or mqtts://host[:port]: nothing else (credentials have their own
    keys, and a path or query means nothing to a broker)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        return f"{value!r} is not a URL: {e}"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return "must be mqtt://host[:port] or mqtts://host[:port]"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials: use username and password_file"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be mqtt://host[:port] or mqtts://host[:port], with no path"
    if port == 0:
        return "port 0 is no port"
    if _EXAMPLE_HOST_RE.search(parts.hostname):
        return f"{value!r} is an example host: edit it to the county broker, or remove [mqtt]"
    return None


def mqtt_topic_prefix(value: str) -> str | None:
    """Topic levels the device's own ({prefix}/{device_id}/...) go under: no wildcard, no
    empty level, no "$" at the start (the broker's own $SYS topics)."""
    if not value or value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        return "must be topic levels such as \"edge-alarm\" or \"county/schools\" (no " \
               "leading, trailing or doubled /, no leading $)"
    if any(ch in value for ch in "+#\0"):
        return "must not hold the MQTT wildcards + or # (or a NUL)"
    return None


valid_device_id = matching(re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
                           "must be 1-64 of A-Z, a-z, 0-9, '.', '_' or '-'")
sim_pin = matching(re.compile(r"^([0-9]{4,8})?$"), "must be 4-8 digits")


def command_pin(value: str | int) -> str | None:
    """A string of 4-8 digits; never echoed (an unquoted 2580 is a TOML integer)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4,8}", value):
        return None
    return 'must be 4-8 digits, written as a quoted string (leave the key out for no PIN)'


sia_account = matching(re.compile(r"[0-9A-Fa-f]{3,16}"), "must be 3-16 hexadecimal digits")
valid_host = matching(re.compile(r"[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}"),
                      "must be a host name or an IP address")


def sia_number(value: str | int) -> str | None:
    """A receiver or line number: 1-6 hex digits, quoted (an unquoted 12 is an integer)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{1,6}", value):
        return None
    return 'must be 1-6 hexadecimal digits, written as a quoted string ("1")'


def sia_key_file(value: str) -> str | None:
    """An absolute path to a readable file holding a DC-09 AES key."""
    if not os.path.isabs(value):
        return "must be an absolute path"
    try:
        read_key_file(value)
    except SiaError as e:
        return str(e)
    return None


def phone_problem(value: str) -> str | None:
    if _E164_RE.fullmatch(value) or _CN_MOBILE_RE.fullmatch(value):
        return None
    if _PLACEHOLDER_PHONE_RE.fullmatch(value):
        return f"{value!r} is the template's placeholder: edit it to the contact's number"
    return f"{value!r} is neither an E.164 number (+8613800138000) nor a domestic mobile number"


def optional_phone(value: str) -> str | None:
    return phone_problem(value) if value else None


def valid_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {value!r}"
    return None


def absolute_path(value: str) -> str | None:
    return None if os.path.isabs(value) else "must be an absolute path"


def listen_address(value: str) -> str | None:
    """"HOST:PORT" with HOST an IP address ("[::1]:8080" for IPv6) or localhost."""
    host, port = split_listen(value)
    if host is None or port is None:
        return (f"{value!r} is not \"ADDRESS:PORT\" (\"127.0.0.1:8080\", \"0.0.0.0:8080\", "
                "\"[::]:8080\"): an IP address, and a port from 1 to 65535")
    return None


def split_listen(value: str) -> tuple[str | None, int | None]:
    """The host and port of a checked-or-not listen address; None for a part that is none."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None, int(port)
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
