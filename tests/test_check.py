"""`edge-alarm check` as an installer runs it: a real `python -m edge check` subprocess
against a config on disk, with real parts behind it (an emulated modem on a pty, the
platform stand-in on 127.0.0.1, SQLite files, a running daemon).

The clock line depends on this machine: a container's kernel may not count its clock as
NTP-synchronised, and then `check` rightly exits 1. Every expected exit status is therefore
computed from what the kernel says (``SyncState().synced()``), never assumed."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import PLATFORM_TOKEN, SIREN_PIN, start_daemon, stop_daemon
from edge.check import FAIL, OFF, OK
from edge.clock import SyncState
from edge.control import request

CONFIG_EXIT = 78


def clock_synced() -> bool:
    return SyncState().synced()


def exit_when_healthy() -> int:
    """What `check` must exit with when every configured part is healthy: only the
    machine's clock can still make it 1."""
    return 0 if clock_synced() else 1


def lines_of(stdout: str, part: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split()[1:2] == [part]]


def line_of(stdout: str, part: str) -> str:
    (line,) = lines_of(stdout, part)
    return line


def assert_clock_line_honest(stdout: str) -> None:
    line = line_of(stdout, "clock")
    assert line.startswith(OK if clock_synced() else FAIL), line


def modem_section(port: str) -> str:
    return f'\n[modem]\nport = "{port}"\n'


def uplink_section(url: str, token_file) -> str:
    return f'\n[uplink]\nurl = "{url}"\ntoken_file = "{token_file}"\n'


# --- config and the parts that are off ------------------------------------------------------

def test_mock_pins_without_optional_parts_say_what_is_off(write_config, cli):
    config = write_config()
    result = cli("check", config=config)
    out = result.stdout
    assert line_of(out, "config").startswith(f"{OK} config") and str(config) in out
    assert line_of(out, "daemon").startswith(f"{OFF} daemon    not running")
    pins = lines_of(out, "pin")
    assert [p.split()[2] for p in pins] == ["guard_room", "main_gate", "box"]
    assert all(p.startswith(OK) and p.endswith(": idle") for p in pins), pins
    assert "GPIO17" in pins[0] and "门卫室一键报警" in pins[0]
    assert line_of(out, "siren") == f"{OK} siren     relay on GPIO{SIREN_PIN} (up to 180 s): " \
        "can be driven (left off)"
    for part in ("modem", "camera", "platform"):
        line = line_of(out, part)
        assert line.startswith(f"{OFF} {part}") and " off (no [" in line, line
    assert line_of(out, "storage").startswith(OK)
    assert "not created yet" in line_of(out, "database")
    assert_clock_line_honest(out)
    assert result.returncode == exit_when_healthy(), out


def test_no_siren_is_said_to_be_off(write_config, cli):
    line = line_of(cli("check", config=write_config(siren=False)).stdout, "siren")
    assert line.startswith(f"{OFF} siren") and "off (no [siren])" in line, line


def test_a_bad_config_exits_78_with_one_line_per_problem(write_config, cli):
    config = write_config(extra='bogus = 1\n\n[[tamper]]\nname = "lid"\nlabel = "盖"\npin = 17\n')
    result = cli("check", config=config)
    assert result.returncode == CONFIG_EXIT
    assert result.stdout == ""  # nothing is probed with a config that will not run
    problems = result.stderr.strip().splitlines()
    assert f"config error: {config}: [[tamper]] lid.pin: pin 17 is already used by " \
           "[[panic_button]] guard_room" in problems
    assert f"config error: {config}: [control] bogus: unknown key" in problems
    assert len(problems) == 2, problems


# --- modem ----------------------------------------------------------------------------------

def test_a_healthy_modem_shows_its_operator_and_signal(write_config, cli, emulator):
    result = cli("check", config=write_config(extra=modem_section(emulator.port)))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{OK} modem") and "CHINA MOBILE" in line, line
    assert line.endswith("signal 20/31"), line
    assert result.returncode == exit_when_healthy(), result.stdout


def test_a_missing_sim_is_named_with_what_to_do(write_config, cli, emulator):
    emulator.sim_present = False
    result = cli("check", config=write_config(extra=modem_section(emulator.port)))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     sim_missing: no SIM card: insert one"), line
    assert result.returncode == 1


def test_a_modem_not_registered_points_at_the_antenna(write_config, cli, emulator):
    emulator.registration = 0
    result = cli("check", config=write_config(extra=modem_section(emulator.port)))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     not_registered:") and "antenna" in line, line
    assert result.returncode == 1


def test_a_silent_modem_fails_within_a_bounded_time(write_config, cli, emulator):
    emulator.silent = True
    config = write_config(extra=modem_section(emulator.port))
    started = time.monotonic()
    result = cli("check", config=config, timeout=40)
    elapsed = time.monotonic() - started
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     silent:") and "does not answer AT" in line, line
    assert result.returncode == 1
    assert elapsed < 30, f"check took {elapsed:.1f} s on a silent modem"
    assert emulator.commands == []  # it read everything and answered nothing


def test_a_modem_port_that_is_not_there(write_config, cli, tmp_path):
    result = cli("check", config=write_config(extra=modem_section(str(tmp_path / "ttyUSB9"))))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     port_gone:") and "USB cable" in line, line
    assert result.returncode == 1


# --- camera ---------------------------------------------------------------------------------

def test_the_test_pattern_camera_gives_a_jpeg(write_config, cli):
    result = cli("check", config=write_config(extra='\n[camera]\nbackend = "test-pattern"\n'))
    line = line_of(result.stdout, "camera")
    assert line.startswith(f"{OK} camera    test-pattern: ok"), line
    assert re.search(r"\d+x\d+ JPEG of [1-9]\d* kB", line), line
    assert result.returncode == exit_when_healthy(), result.stdout


# --- platform -------------------------------------------------------------------------------

def test_the_platform_takes_the_token(write_config, cli, platform, token_file):
    result = cli("check", config=write_config(extra=uplink_section(platform.url, token_file)))
    line = line_of(result.stdout, "platform")
    assert line.startswith(f"{OK} platform  {platform.url}") and "token accepted" in line, line
    assert result.returncode == exit_when_healthy(), result.stdout
    # The probe is an empty batch: the request that matters, with no event in it.
    assert [(r.method, r.body) for r in platform.requests] == [("POST", b"[]")]
    assert platform.events == []


@pytest.mark.parametrize("path", ["/api/v1/event", "/api/v1/events/extra"])
def test_a_wrong_url_is_found(write_config, cli, platform, token_file, path):
    url = platform.url.replace("/api/v1/events", path)
    result = cli("check", config=write_config(extra=uplink_section(url, token_file)))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "no events endpoint at this URL (HTTP 404" in line, line
    assert "correct [uplink] url" in line


def test_a_wrong_token_is_refused(write_config, cli, platform, token_file):
    platform.set_token("another-token")
    result = cli("check", config=write_config(extra=uplink_section(platform.url, token_file)))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "token refused (HTTP 401" in line, line
    assert str(token_file) in line  # where to put the right one
    assert PLATFORM_TOKEN not in result.stdout + result.stderr
    assert result.returncode == 1


def test_a_platform_that_is_down_is_unreachable(write_config, cli, platform, token_file):
    platform.stop()
    result = cli("check", config=write_config(extra=uplink_section(platform.url, token_file)))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "unreachable" in line and "[uplink] url" in line, line
    assert result.returncode == 1


def test_a_missing_token_file_is_named(write_config, cli, platform, tmp_path):
    missing = tmp_path / "no-token"
    result = cli("check", config=write_config(extra=uplink_section(platform.url, missing)))
    line = line_of(result.stdout, "platform")
    assert line == f"{FAIL} platform  token file {missing} does not exist", line
    assert platform.requests == []
    assert result.returncode == 1


# --- storage --------------------------------------------------------------------------------

def test_a_corrupt_database_fails_with_what_to_do(write_config, cli, tmp_path):
    storage = tmp_path / "var"
    storage.mkdir()
    (storage / "events.db").write_bytes(b"these are not the bytes of a database" * 200)
    result = cli("check", config=write_config(storage=storage))
    line = line_of(result.stdout, "database")
    assert line.startswith(f"{FAIL} database  cannot read {storage / 'events.db'}"), line
    assert "restart the daemon" in line
    assert line_of(result.stdout, "storage").startswith(OK)
    assert result.returncode == 1


def test_free_space_is_judged_by_min_free_mb(write_config, cli, tmp_path, tiny_fs):
    storage = tiny_fs(tmp_path / "var", "size=16m")
    (storage / "filler").write_bytes(b"\0" * 8 * 1024 * 1024)  # about 8 MB left
    line = line_of(cli("check", config=write_config(storage_keys="min_free_mb = 10")).stdout,
                   "storage")
    assert line.startswith(f"{FAIL} storage") and "need 10 MB" in line, line
    (storage / "filler").unlink()
    line = line_of(cli("check", config=write_config(storage_keys="min_free_mb = 12")).stdout,
                   "storage")
    assert line.startswith(OK), line


# --- with the daemon running ----------------------------------------------------------------

def test_a_running_daemon_is_asked_for_pins_and_modem(write_config, cli, wait_until, emulator,
                                                      short_dir, tmp_path):
    config = write_config(extra=modem_section(emulator.port))
    socket = short_dir / "control.sock"
    daemon = start_daemon(config, socket, tmp_path / "daemon.log")
    try:
        wait_until(lambda: request(socket, "status")["modem"]["ok"], timeout=10,
                   what="the daemon's modem healthy")
        assert daemon.cli("sim", "main_gate", "on").returncode == 0
        wait_until(lambda: request(socket, "status")["storage"]["last_seq"], timeout=5,
                   what="the gate's opening stored by the daemon")
        initialisations = emulator.commands.count("ATE0")
        emulator.signal = 9  # what opening the port now would read; the daemon read 20
        result = cli("check", config=config)
        assert daemon.proc.poll() is None, daemon.log_text()
    finally:
        stop_daemon(daemon)
    out = result.stdout
    assert line_of(out, "daemon") == f"{OK} daemon    running"
    pins = lines_of(out, "pin")
    # Simulated pins of a fresh probe would all be idle: these are the daemon's.
    assert f"{OK} pin       main_gate (校门): active" in pins, pins
    assert f"{OK} pin       guard_room (门卫室一键报警): idle" in pins, pins
    assert line_of(out, "modem").endswith("signal 20/31"), out
    assert line_of(out, "siren") == f"{OK} siren     relay on GPIO{SIREN_PIN} (up to 180 s): off"
    assert emulator.commands.count("ATE0") == initialisations  # check never opened the port
    assert_clock_line_honest(out)
    assert result.returncode == exit_when_healthy(), out

    # The daemon has gone: the store it left is checked and counted.
    after = cli("check", config=config)
    assert line_of(after.stdout, "daemon").startswith(f"{OFF} daemon")
    events = json.loads(cli("events", "--json", config=config).stdout)
    assert events, "the daemon recorded nothing"
    assert line_of(after.stdout, "database") == \
        f"{OK} database  integrity ok, last event #{max(e['seq'] for e in events)}"
    assert line_of(after.stdout, "modem").endswith("signal 9/31")  # now probed directly
