"""The config (spec §2): every problem is one line `config error: FILE: [table] name.key:
why`, all found at once; defaults; time ranges; a refused config leaves no trace on disk."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tomllib
from pathlib import Path

import pytest

from conftest import GATE_PIN, PANIC_PIN, edge_cli, mock_config_text
from edge import config
from edge.config import TimeRange, parse_time_range
from edge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "edge" / "config.example.toml"
LINE_RE = re.compile(r"^config error: config\.toml: \[\[?[a-z_]+\]\]?( \S+)?[ .][a-z_.]+: \S.*$")
TABLE_LINE_RE = re.compile(r"^config error: config\.toml: \[\[?[a-z_]+\]\]?: \S.*$")

MINIMAL = """\
[site]
name = "高山小学"
device_id = "gate-1"

[storage]
path = "/var/lib/edge-alarm"

[gpio]

[[panic_button]]
name = "guard_room"
label = "门卫室一键报警"
pin = 17
"""


def problems(text: str) -> list[str]:
    """The config error lines for ``text``, as if read from a file named config.toml."""
    with pytest.raises(ConfigError) as caught:
        config.parse(tomllib.loads(text), "config.toml")
    for line in caught.value.problems:
        assert LINE_RE.match(line) or TABLE_LINE_RE.match(line), line
    return caught.value.problems


def base(extra: str = "", **options) -> str:
    return mock_config_text(Path("/var/lib/edge-alarm"), Path("/run/ea/control.sock"),
                            extra=extra, **options)


def with_replaced(old: str, new: str, text: str | None = None) -> str:
    text = base() if text is None else text
    assert old in text
    return text.replace(old, new, 1)


# ------------------------------------------------------------------ accepted configs

# The school's own values written over the template's placeholders.
SCHOOL_VALUES = {
    'name = "change-me"': 'name = "高山小学"',
    'device_id = "change-me"': 'device_id = "gaoshan-gate-1"',
    '"+86138XXXXXXXX"': '"+8613800138000"',
    "https://platform.example.cn/": "https://platform.county.edu.cn/",
}


def test_the_shipped_template_is_refused_once_per_placeholder(tmp_path):
    """The daemon never arms on the unedited template: `run` and `check` say, one line
    per placeholder, what to edit, and exit 78."""
    lines = problems(EXAMPLE.read_text(encoding="utf-8"))
    assert lines == [
        "config error: config.toml: [site] name: 'change-me' is the template's "
        "placeholder: edit it",
        "config error: config.toml: [site] device_id: 'change-me' is the template's "
        "placeholder: edit it",
        "config error: config.toml: [uplink] url: 'https://platform.example.cn/api/v1/events' "
        "is the template's example platform: edit it to the county platform's URL, or "
        "remove [uplink]",
        "config error: config.toml: [[contact]] principal.phone: '+86138XXXXXXXX' is the "
        "template's placeholder: edit it to the contact's number",
    ]
    for command in ("run", "check"):
        result = edge_cli(command, config=EXAMPLE)
        assert result.returncode == 78, result.stderr
        assert result.stderr.count("config error: ") == 4
        assert "[site] device_id: 'change-me' is the template's placeholder: edit it" in (
            result.stderr)


def test_the_shipped_template_with_the_schools_values_is_accepted():
    text = EXAMPLE.read_text(encoding="utf-8")
    for placeholder, value in SCHOOL_VALUES.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    cfg = config.parse(tomllib.loads(text))
    assert [(i.kind, i.name) for i in cfg.inputs] == [
        ("panic", "guard_room"), ("gate", "main_gate"), ("tamper", "box")]
    assert cfg.contacts[0].phone == "+8613800138000"  # the spec's example: a real number


CONTACT_AND_UPLINK = """
[uplink]
url = "https://platform.county.edu.cn/api/v1/events"

[[contact]]
name = "principal"
phone = "+8613800138000"
receives = ["panic"]
"""


@pytest.mark.parametrize("old, new, where", [
    ('label = "校门"', 'label = "change-me"', "[[gate]] main_gate.label"),
    ('"+8613800138000"', '"13XXXXXXXXX"', "[[contact]] principal.phone"),
    ("https://platform.county.edu.cn/", "https://example.com/", "[uplink] url"),
])
def test_a_placeholder_anywhere_is_refused(old, new, where):
    lines = problems(with_replaced(old, new, base(CONTACT_AND_UPLINK)))
    assert len(lines) == 1 and lines[0].startswith(f"config error: config.toml: {where}: ")
    assert "the template's" in lines[0] and "edit it" in lines[0]


# The optional sections that have required keys, with only those keys.
REQUIRED_KEYS_ONLY = """
[siren]
pin = 22

[modem]
port = "/dev/ttyUSB2"

[uplink]
url = "https://platform.county.edu.cn/api/v1/events"
"""


def test_defaults_of_a_minimal_config():
    cfg = config.parse(tomllib.loads(MINIMAL + """
[[gate]]
name = "main_gate"
label = "校门"
pin = 27

[[tamper]]
name = "box"
label = "防拆"
pin = 5
""" + REQUIRED_KEYS_ONLY))
    assert cfg.site.timezone == "Asia/Shanghai"
    assert cfg.storage.retention_days == 90 and cfg.storage.max_snapshots_mb == 2048
    assert cfg.storage.min_free_mb == 50
    assert cfg.storage.db_path == Path("/var/lib/edge-alarm/events.db")
    assert cfg.gpio.pin_factory == "lgpio"
    panic, gate, tamper = cfg.inputs
    assert (panic.label, panic.active_low) == ("门卫室一键报警", True)
    assert gate.active_low is False  # open_when = "high"
    assert (gate.debounce_s, gate.held_open_alert_s) == (0.3, 300)
    assert gate.open_hours is None and gate.open_days is None
    assert gate.allowed_at(dt.datetime(2026, 11, 29, 3, 0))  # no hours, no days: any time
    assert tamper.active_low is False
    assert (cfg.siren.active_high, cfg.siren.max_on_s) == (True, 180)
    assert (cfg.modem.baudrate, cfg.modem.sim_pin) == (115200, "")
    assert cfg.uplink.sms_fallback_after_s == 20 and cfg.uplink.heartbeat_s == 300
    assert cfg.uplink.token_file == Path("/etc/edge-alarm/token")
    assert cfg.sms.immediate == frozenset({"panic", "tamper", "gate_after_hours"})
    assert cfg.sms.max_parts == 4
    assert cfg.control.socket == Path("/run/edge-alarm/control.sock")
    assert cfg.camera is None and cfg.contacts == ()
    assert cfg.has_transport


def test_an_empty_table_takes_each_default_from_its_sections_dataclass():
    """One place per default: a table that gives no key reads as its dataclass built with
    no argument beyond the required keys."""
    cfg = config.parse(tomllib.loads(MINIMAL + """
[camera]

[sms]

[drill]

[control]
""" + REQUIRED_KEYS_ONLY))
    assert cfg.gpio == config.Gpio()
    assert cfg.camera == config.Camera()
    assert cfg.sms == config.Sms() and cfg.drill == config.Drill()
    assert cfg.control == config.Control()
    assert cfg.siren == config.Siren(pin=22)
    assert cfg.modem == config.Modem(port="/dev/ttyUSB2")
    assert cfg.uplink == config.Uplink(url="https://platform.county.edu.cn/api/v1/events")
    assert cfg.storage == config.Storage(path=Path("/var/lib/edge-alarm"))


def test_each_table_is_read_by_the_config_field_of_its_name():
    """Config's fields are the list of sections: a new section is a dataclass and a field."""
    from edge.config.loader import ARRAYS, SECTIONS
    assert {name: cls for name, (cls, _) in SECTIONS.items()} == {
        "site": config.Site, "storage": config.Storage, "gpio": config.Gpio,
        "siren": config.Siren, "camera": config.Camera, "modem": config.Modem,
        "uplink": config.Uplink, "mqtt": config.Mqtt, "sms": config.Sms, "drill": config.Drill,
        "summary": config.Summary, "control": config.Control,
        "escalation": config.Escalation, "walktest": config.Walktest,
        "indicator": config.Indicator, "web": config.Web, "sia": config.Sia}
    assert set(ARRAYS) == {"panic_button", "gate", "tamper", "ack_button", "power_input",
                           "contact"}


def test_optional_sections_left_out_turn_their_part_off():
    cfg = config.parse(tomllib.loads(MINIMAL))
    assert (cfg.siren, cfg.camera, cfg.modem, cfg.uplink, cfg.mqtt) == (None,) * 5
    assert not cfg.has_transport


@pytest.mark.parametrize("phone", ["+8613800138000", "13800138000", "+14155550123"])
def test_good_phone_numbers(phone):
    cfg = config.parse(tomllib.loads(base(f"""
[[contact]]
name = "principal"
phone = "{phone}"
receives = ["panic"]
""")))
    assert cfg.contacts[0].phone == phone


def test_sms_command_limits_default_and_the_pin_is_optional():
    cfg = config.parse(tomllib.loads(MINIMAL))
    assert (cfg.sms.command_pin, cfg.sms.help_reply_every_s, cfg.sms.replies_per_hour) == (
        None, 600, 10)
    cfg = config.parse(tomllib.loads(base(
        '[sms]\ncommand_pin = "02580"\nhelp_reply_every_s = 60\nreplies_per_hour = 60\n')))
    assert (cfg.sms.command_pin, cfg.sms.help_reply_every_s, cfg.sms.replies_per_hour) == (
        "02580", 60, 60)


@pytest.mark.parametrize("line, expected", [
    ('command_pin = "258"', "[sms] command_pin: must be 4-8 digits"),
    ('command_pin = "123456789"', "[sms] command_pin: must be 4-8 digits"),
    ('command_pin = "25a0"', "[sms] command_pin: must be 4-8 digits"),
    ('command_pin = ""', "[sms] command_pin: must be 4-8 digits"),
    ("command_pin = 2580", "[sms] command_pin: must be 4-8 digits, written as a quoted"),
    ("command_pin = 2580.5", "[sms] command_pin: must be a string or an integer, not number"),
    ("help_reply_every_s = 59", "[sms] help_reply_every_s: must be from 60 to 86400 seconds"),
    ("help_reply_every_s = 86401", "[sms] help_reply_every_s: must be from 60 to 86400"),
    ("replies_per_hour = 0", "[sms] replies_per_hour: must be from 1 to 60"),
    ("replies_per_hour = 61", "[sms] replies_per_hour: must be from 1 to 60"),
])
def test_sms_command_keys_out_of_range_are_refused(line, expected):
    lines = problems(base(f"[sms]\n{line}\n"))
    assert lines and lines[0].startswith("config error: config.toml: " + expected), lines
    assert "258" not in lines[0]  # a PIN, right or wrong, is never echoed


def test_templates_may_use_the_documented_placeholders():
    cfg = config.parse(tomllib.loads(base("""
[sms]
templates = {panic = "【{site}】{label} {time:%H:%M} {kind}"}
""")))
    assert cfg.sms.templates["panic"].startswith("【{site}】")


# ------------------------------------------------------------------ one line per problem

def test_the_spec_wording_for_a_pin_used_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.toml").write_text(
        with_replaced(f"pin = {GATE_PIN}\n", f"pin = {PANIC_PIN}\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load("config.toml")
    assert caught.value.problems == [
        "config error: config.toml: [[gate]] main_gate.pin: "
        "pin 17 is already used by [[panic_button]] guard_room"]


@pytest.mark.parametrize("text, expected", [
    pytest.param(with_replaced("debounce_s = 0.3\n", 'debounce_s = 0.3\ncolour = "red"\n'),
                 "[[gate]] main_gate.colour: unknown key", id="unknown-key"),
    pytest.param(base('[colour]\nred = 1\n'), "[colour]: unknown table", id="unknown-table"),
    pytest.param(with_replaced(f"pin = {PANIC_PIN}\n", f'pin = "{PANIC_PIN}"\n'),
                 "[[panic_button]] guard_room.pin: must be an integer, not string '17'",
                 id="string-for-int"),
    pytest.param(with_replaced("max_on_s = 180", "max_on_s = true"),
                 "[siren] max_on_s: must be an integer, not boolean True", id="bool-for-int"),
    pytest.param(with_replaced('device_id = "test-gate-1"\n', ""),
                 "[site] device_id: missing (required)", id="missing-key"),
    pytest.param(with_replaced("[gpio]\n", "[gpioo]\n"),
                 "[gpio]: missing (required)", id="missing-table"),
    pytest.param(MINIMAL.split("[[panic_button]]")[0],
                 "[[panic_button]]: at least one input ([[panic_button]], [[gate]] or "
                 "[[tamper]]) is required", id="no-inputs"),
    pytest.param(with_replaced('name = "box"', 'name = "guard_room"'),
                 "[[tamper]] guard_room.name: name 'guard_room' is already used by "
                 "[[panic_button]] guard_room", id="name-twice"),
    pytest.param(with_replaced('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'),
                 "[site] timezone: unknown timezone 'Mars/Olympus'", id="timezone"),
    pytest.param(with_replaced('"fri"]', '"friday"]'),
                 "[[gate]] main_gate.open_days: 'friday' is not a day name "
                 "(mon, tue, wed, thu, fri, sat, sun)", id="day-name"),
    pytest.param(with_replaced('"15:30-18:30"', '"15:30-25:00"'),
                 "[[gate]] main_gate.open_hours: '15:30-25:00': end must be 00:00 to 24:00",
                 id="end-25h"),
    pytest.param(with_replaced('"06:30-08:30"', '"6:30-8:30"'),
                 "[[gate]] main_gate.open_hours: '6:30-8:30' is not HH:MM-HH:MM",
                 id="range-format"),
    pytest.param(with_replaced('"06:30-08:30"', '"24:00-06:00"'),
                 "[[gate]] main_gate.open_hours: '24:00-06:00': start must be 00:00 to 23:59",
                 id="start-24h"),
    pytest.param(with_replaced('"06:30-08:30"', '"08:30-08:30"'),
                 "[[gate]] main_gate.open_hours: '08:30-08:30' is empty", id="empty-range"),
    pytest.param(with_replaced('pin_factory = "mock"', 'pin_factory = "wiringpi"'),
                 "[gpio] pin_factory: must be one of 'lgpio', 'rpigpio', 'pigpio', 'mock'",
                 id="pin-factory"),
    pytest.param(with_replaced(f"pin = {GATE_PIN}", "pin = 40"),
                 "[[gate]] main_gate.pin: must be a BCM GPIO number from 0 to 27", id="pin-range"),
    pytest.param(with_replaced('path = "/var/lib/edge-alarm"', 'path = "var/lib"'),
                 "[storage] path: must be an absolute path", id="relative-path"),
    pytest.param(with_replaced('path = "/var/lib/edge-alarm"',
                               'path = "/var/lib/edge-alarm"\nmin_free_mb = 5'),
                 "[storage] min_free_mb: must be from 10 to 10240", id="min-free-range"),
    pytest.param(base('[sms]\ntemplates = {panic = "{site} {colour}"}\n'),
                 "[sms] templates.panic: unknown placeholder {colour}", id="template"),
    pytest.param(with_replaced("[siren]", "[[siren]]"),
                 "[siren]: must be a single [siren] table", id="siren-array"),
    pytest.param(with_replaced("[[gate]]", "[gate]"),
                 "[[gate]]: must be an array of tables [[gate]], not [gate]", id="gate-table"),
])
def test_each_problem_is_one_line_naming_table_and_key(text, expected):
    lines = problems(text)
    assert any(line.startswith("config error: config.toml: " + expected) for line in lines), lines


@pytest.mark.parametrize("phone", ["12345", "+86 13800138000", "+0123456789", "23800138000",
                                   "1380013800"])
def test_bad_phone_numbers_are_refused(phone):
    lines = problems(base(f"""
[[contact]]
name = "principal"
phone = "{phone}"
receives = ["panic"]
"""))
    assert lines == [f"config error: config.toml: [[contact]] principal.phone: {phone!r} is "
                     "neither an E.164 number (+8613800138000) nor a domestic mobile number"]


def test_all_problems_are_reported_at_once():
    text = base("""
[[contact]]
name = "principal"
phone = "555"
receives = ["panic", "weather"]
""")
    text = with_replaced(f"pin = {GATE_PIN}\n", f"pin = {PANIC_PIN}\ncolour = \"red\"\n", text)
    text = with_replaced('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"', text)
    text = with_replaced("max_on_s = 180", 'max_on_s = "long"', text)
    lines = problems(text)
    wheres = sorted(line.split(": ")[2] for line in lines)
    assert wheres == sorted([
        "[site] timezone", "[[gate]] main_gate.pin", "[[gate]] main_gate.colour",
        "[siren] max_on_s", "[[contact]] principal.phone", "[[contact]] principal.receives"])


def test_the_file_name_is_the_path_given(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(base('[colour]\n'), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert caught.value.problems == [f"config error: {path}: [colour]: unknown table"]


@pytest.mark.parametrize("content, why", [
    (None, "file not found"),
    ("[site\n", "not valid TOML"),
])
def test_unreadable_files_are_one_config_error(tmp_path, content, why):
    path = tmp_path / "config.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    [line] = caught.value.problems
    assert line.startswith(f"config error: {path}: {why}")


# ------------------------------------------------------------------ time ranges

def test_time_ranges_start_inclusive_end_exclusive():
    r = parse_time_range("06:30-08:30")
    assert r == TimeRange(390, 510)
    assert not r.contains(389) and r.contains(390) and r.contains(509) and not r.contains(510)


def test_a_range_may_end_at_24_00():
    r = parse_time_range("22:00-24:00")
    assert r.contains(22 * 60) and r.contains(23 * 60 + 59) and not r.contains(0)


def test_a_range_may_cross_midnight():
    r = parse_time_range("22:00-06:00")
    assert r.contains(22 * 60) and r.contains(23 * 60 + 59) and r.contains(0)
    assert r.contains(5 * 60 + 59) and not r.contains(6 * 60) and not r.contains(21 * 60 + 59)


def test_allowed_at_checks_days_then_hours():
    cfg = config.parse(tomllib.loads(base()))
    gate = cfg.input("main_gate")
    monday, saturday = dt.datetime(2026, 11, 23), dt.datetime(2026, 11, 28)
    assert gate.allowed_at(monday.replace(hour=7, minute=0))
    assert gate.allowed_at(monday.replace(hour=6, minute=30))
    assert not gate.allowed_at(monday.replace(hour=8, minute=30))
    assert not gate.allowed_at(monday.replace(hour=21, minute=0))
    assert not gate.allowed_at(saturday.replace(hour=7, minute=0))


def test_a_midnight_range_belongs_to_the_day_it_starts():
    # A night range on Fridays only: Friday 23:00 and the small hours of Saturday are
    # allowed (the Friday night shift); Friday 01:00 belongs to Thursday's night: refused.
    cfg = config.parse(tomllib.loads(with_replaced(
        'open_hours = ["06:30-08:30", "11:00-13:30", "15:30-18:30"]\n'
        'open_days = ["mon", "tue", "wed", "thu", "fri"]',
        'open_hours = ["22:00-06:00"]\nopen_days = ["fri"]')))
    gate = cfg.input("main_gate")
    assert gate.allowed_at(dt.datetime(2026, 11, 27, 23, 0))  # Friday night
    assert gate.allowed_at(dt.datetime(2026, 11, 28, 1, 0))  # Saturday, early: Friday's night
    assert not gate.allowed_at(dt.datetime(2026, 11, 27, 1, 0))  # Friday early: Thursday's
    assert not gate.allowed_at(dt.datetime(2026, 11, 27, 12, 0))  # Friday noon
    assert not gate.allowed_at(dt.datetime(2026, 11, 28, 23, 0))  # Saturday night


# ------------------------------------------------------------------ refused before anything starts

def test_a_refused_config_exits_78_and_creates_nothing(tmp_path, short_dir, cli):
    storage = tmp_path / "var"
    socket = short_dir / "sub" / "control.sock"
    text = mock_config_text(storage, socket)
    text = text.replace(f"pin = {GATE_PIN}\n", f"pin = {PANIC_PIN}\n")
    text = text.replace("debounce_s = 0.3\n", "debounce_s = 0.3\ncolour = \"red\"\n")
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    result = cli("run", "-c", "config.toml", cwd=tmp_path, timeout=10)
    assert result.returncode == 78, result.stderr
    assert result.stderr.splitlines() == [
        "config error: config.toml: [[gate]] main_gate.pin: "
        "pin 17 is already used by [[panic_button]] guard_room",
        "config error: config.toml: [[gate]] main_gate.colour: unknown key",
    ]
    assert result.stdout == ""
    assert not storage.exists()
    assert not socket.parent.exists()


@pytest.mark.parametrize("template", ["{label:d}", "{time!x}", "{site:%H}"])
def test_a_template_that_cannot_be_filled_in_is_refused(template):
    with pytest.raises(config.ConfigError) as e:
        config.parse(tomllib.loads(base(f'[sms]\ntemplates = {{panic = "{template}"}}\n')))
    assert any("[sms] templates.panic: not a valid template" in line
               for line in e.value.problems)


@pytest.mark.parametrize("line, key, why", [
    ('open_hours = ["06:30-08:30", "11:00-13:30", "15:30-18:30"]', "open_hours",
     "leave it out to allow any time"),
    ('open_days = ["mon", "tue", "wed", "thu", "fri"]', "open_days",
     "leave it out to allow every day")])
def test_empty_open_hours_or_days_are_refused(line, key, why):
    with pytest.raises(config.ConfigError) as e:
        config.parse(tomllib.loads(with_replaced(line, f"{key} = []")))
    assert any(f"main_gate.{key}: must not be empty ({why})" in line
               for line in e.value.problems)


# ------------------------------------------------------------------ every number has a range

# Every optional table, so that any numeric key of any table can be set.
EVERY_TABLE = """
[camera]
backend = "none"

[modem]
port = "/dev/ttyUSB2"

[uplink]
url = "https://platform.county.edu.cn/api/v1/events"

[sms]

[drill]

[escalation]

[walktest]

[sia]
host = "arc.county.edu.cn"
port = 12000
account = "1234"
"""
# Where a key sits in the error line: "[storage] retention_days", "[[gate]] main_gate.debounce_s".
NUMERIC_KEYS = sorted(config.RANGES)
HOSTILE_NUMBERS = [pytest.param(text, id=name) for name, text in (
    ("inf", "inf"), ("-inf", "-inf"), ("nan", "nan"), ("negative", "-1"),
    ("1e9", "1000000000"), ("1e300", "1e300"), ("400-digits", "9" * 400))]


def with_number(key: str, value: str) -> tuple[str, str]:
    """(a full config whose ``key`` ("[storage] retention_days") is ``value``, where its
    error line puts the key)."""
    table, name = key.split(" ")
    text = base(EVERY_TABLE)
    # The key's own table only: [sia] port is not [modem] port.
    start = text.index(f"{table}\n") + len(table) + 1
    end = text.find("\n[", start) + 1 or len(text)
    own = re.sub(rf"(?m)^{name} = .*\n", "", text[start:end])
    text = text[:start] + f"{name} = {value}\n" + own + text[end:]
    where = f"{table} main_gate.{name}" if table == "[[gate]]" else key
    return text, where


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
@pytest.mark.parametrize("key", [*NUMERIC_KEYS, "[modem] baudrate"])  # baudrate: one of a set
def test_every_numeric_key_refuses_inf_nan_negatives_and_absurd_values(key, value):
    text, where = with_number(key, value)
    lines = problems(text)
    assert len(lines) == 1 and lines[0].startswith(f"config error: config.toml: {where}: "), lines


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_numeric_key_takes_both_ends_of_its_range(key):
    low, high = config.RANGES[key]
    for value in (low, high):
        cfg = config.parse(tomllib.loads(with_number(key, repr(value))[0]))
        table, name = key.split(" ")
        section = cfg.input("main_gate") if table == "[[gate]]" else getattr(cfg, table[1:-1])
        assert getattr(section, name) == value


def test_a_range_error_names_the_range_and_unit():
    text, _ = with_number("[storage] retention_days", "1000000")
    assert problems(text) == [
        "config error: config.toml: [storage] retention_days: must be from 1 to 3650 days"]


@pytest.mark.parametrize("key, value", [
    ("[uplink] connect_timeout_s", "1e9"), ("[uplink] heartbeat_s", "0"),
    ("[[gate]] debounce_s", "9" * 400), ("[storage] retention_days", "9" * 5000)])
def test_check_refuses_an_absurd_number_with_one_line_and_exit_78(tmp_path, cli, key, value):
    text, where = with_number(key, value)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    result = cli("check", config=path, timeout=30)
    assert result.returncode == 78, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    # 5000 digits are more than Python reads as an integer: the file is refused as a whole.
    assert line.startswith(f"config error: {path}: " +
                           ("not valid TOML" if len(value) > 4300 else f"{where}: ")), line


def test_every_numeric_setting_has_a_range():
    """A number in a config dataclass is a BCM pin, the baudrate (both chosen from a set),
    or a key of RANGES."""
    tables = (config.Storage, config.Input, config.Siren, config.Camera, config.Modem,
              config.Uplink, config.Sms, config.Drill, config.Escalation, config.Walktest,
              config.Indicator, config.Sia)
    numeric = {f.name for table in tables for f in dataclasses.fields(table)
               if f.type in ("int", "float")}
    assert numeric - {"pin", "baudrate"} == {key.split(" ")[1] for key in config.RANGES}


README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_the_readme_table_shows_each_range(key):
    table, name = key.split(" ")
    low, high = config.RANGES[key]
    rows = [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith(f"| `{table} ") and f"{name}`" in line.split(" | ")[0]]
    assert len(rows) == 1, f"no single README row for {key}"
    assert f"{low}–{high}" in rows[0], rows[0]
