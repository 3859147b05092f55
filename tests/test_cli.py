"""The command line of spec §1 through real subprocesses (`python -m edge ...`) against a
real `edge-alarm run` on simulated pins: status, sim, silence, events, SIGTERM, exit
statuses."""

from __future__ import annotations

import csv
import importlib.metadata
import datetime as dt
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge import config
from edge.control import ControlServer, daemon_handlers, request
from edge.daemon import Daemon
from edge.entry import command_of
from edge.sdnotify import Notifier

from conftest import (_child_env, daemon_in_process, mock_config_text, start_daemon,
                      stop_daemon)


def status_of(daemon) -> dict:
    return request(daemon.socket, "status")


def events_json(daemon, *args: str) -> list[dict]:
    result = daemon.cli("events", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raise_alarm(daemon, wait_until) -> dict:
    result = daemon.cli("sim", "guard_room", "on")
    assert result.returncode == 0, result.stderr
    return wait_until(lambda: (s := status_of(daemon))["alarm"]["active"] and s["siren"]["on"]
                      and s, timeout=1.0, what="alarm active and siren on")


# ------------------------------------------------------------------ status

def test_status_json_has_the_spec_fields(running_daemon):
    result = running_daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["device_id"] == "test-gate-1"
    assert {name: (i["kind"], i["active"]) for name, i in status["inputs"].items()} == {
        "guard_room": ("panic", False), "main_gate": ("gate", False), "box": ("tamper", False)}
    assert status["siren"]["on"] is False
    assert status["alarm"]["active"] is False
    assert {"ok", "signal"} <= set(status["modem"]) and status["modem"]["signal"] is None
    assert {"ok", "pending"} <= set(status["uplink"]) and status["uplink"]["pending"] == 0
    # Neither is configured here: not failing, not working.
    assert status["modem"]["ok"] is None and status["uplink"]["ok"] is None
    assert status["faults"] == []


def test_the_control_socket_is_for_the_admin_group_only(running_daemon):
    assert stat.S_IMODE(running_daemon.socket.stat().st_mode) == 0o660


def test_the_daemon_speaks_sd_notify(write_config, short_dir, tmp_path, wait_until):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_dir / "notify"))
    notify.settimeout(5)
    daemon = start_daemon(write_config(), short_dir / "control.sock", tmp_path / "daemon.log",
                          env={"NOTIFY_SOCKET": str(short_dir / "notify"),
                               "WATCHDOG_USEC": "200000"})
    try:
        messages = []
        wait_until(lambda: messages.append(notify.recv(256).decode()) or
                   {"READY=1", "WATCHDOG=1"} <= set(messages), timeout=5,
                   what="READY=1 and WATCHDOG=1")
        assert messages[0] == "READY=1"
        assert stop_daemon(daemon) == 0
        while "STOPPING=1" not in messages:
            messages.append(notify.recv(256).decode())
    finally:
        stop_daemon(daemon)
        notify.close()


def test_status_for_people(running_daemon):
    result = running_daemon.cli("status")
    assert result.returncode == 0, result.stderr
    assert "no active alarm" in result.stdout and "guard_room" in result.stdout


# ------------------------------------------------------------------ sim, silence, events

def test_sim_raises_the_alarm_within_a_second_and_stores_the_event(running_daemon, wait_until):
    raise_alarm(running_daemon, wait_until)  # within 1 s of `sim` returning
    status = json.loads(running_daemon.cli("status", "--json").stdout)
    assert status["alarm"]["active"] and status["siren"]["on"]
    assert status["inputs"]["guard_room"]["active"] is True

    [panic] = events_json(running_daemon, "--kind", "panic")
    assert {"id", "seq", "kind", "subject", "time", "data"} <= set(panic)
    assert (panic["kind"], panic["subject"], panic["seq"]) == ("panic", "guard_room", 1)
    assert isinstance(panic["data"]["clock_synced"], bool)
    assert panic["time"].endswith("+08:00")  # the site's offset
    assert abs(dt.datetime.fromisoformat(panic["time"]).timestamp() - time.time()) < 30


def test_silence_by_name_is_recorded(running_daemon, wait_until):
    raise_alarm(running_daemon, wait_until)
    result = running_daemon.cli("silence", "--by", "王老师")
    assert result.returncode == 0, result.stderr
    assert "guard_room" in result.stdout
    status = status_of(running_daemon)
    assert not status["alarm"]["active"] and not status["siren"]["on"]
    [silenced] = events_json(running_daemon, "--kind", "silenced")
    assert silenced["subject"] == "guard_room"
    assert (silenced["data"]["by"], silenced["data"]["via"]) == ("王老师", "cli")


def test_silence_with_no_alarm_says_so(running_daemon):
    result = running_daemon.cli("silence")
    assert result.returncode == 0, result.stderr
    assert "no alarm" in result.stdout
    assert events_json(running_daemon, "--kind", "silenced") == []


def test_sim_of_an_unknown_input_exits_2(running_daemon):
    result = running_daemon.cli("sim", "back_door", "on")
    assert result.returncode == 2
    assert "back_door" in result.stderr
    assert status_of(running_daemon)["alarm"]["active"] is False


def test_sim_is_refused_when_the_pins_are_real(write_config, cli, wait_until):
    # A daemon configured for real pins: MockFactory stands in for the Pi's GPIO, so
    # the daemon runs its real-pin path in this process while the CLI is a subprocess.
    # (No tamper switch: unwired on real-pin semantics it reads "lid open", an alarm.)
    path = write_config(pin_factory="lgpio", tamper=False)
    cfg = config.load(str(path))
    daemon = Daemon(cfg, pin_factory=MockFactory(), notifier=Notifier(environ={}))
    with daemon_in_process(daemon, ControlServer(cfg.control.socket, daemon_handlers(daemon))):
        result = cli("sim", "guard_room", "on", config=path)
        assert result.returncode == 2
        assert 'pin_factory is not "mock"' in result.stderr
        assert request(cfg.control.socket, "status")["alarm"]["active"] is False


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("sim", "guard_room", "on"),
                                     ("silence",), ("walktest", "on"), ("walktest", "off")])
def test_no_daemon_exits_3(write_config, cli, command):
    result = cli(*command, config=write_config())
    assert result.returncode == 3, result.stderr
    assert "no edge-alarm daemon" in result.stderr


def test_a_stale_socket_file_is_no_daemon(write_config, short_dir, cli):
    path = write_config()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(short_dir / "control.sock"))  # left behind, nobody listening
    result = cli("status", config=path)
    assert result.returncode == 3, result.stderr


def test_a_second_daemon_on_the_same_socket_refuses(running_daemon):
    second = running_daemon.cli("run")
    assert second.returncode == 1
    assert "another edge-alarm daemon" in second.stderr
    assert status_of(running_daemon)["device_id"] == "test-gate-1"


# ------------------------------------------------------------------ events, SIGTERM

def test_events_filters_formats_and_a_clean_stop(running_daemon, wait_until):
    daemon = running_daemon
    raise_alarm(daemon, wait_until)
    assert daemon.cli("sim", "main_gate", "on").returncode == 0
    wait_until(lambda: events_json(daemon, "--kind", "gate_open"), timeout=3,
               what="gate_open stored after the debounce")
    assert daemon.cli("silence", "--by", "guard").returncode == 0

    every = events_json(daemon)
    kinds = [e["kind"] for e in every]
    assert kinds[0] == "panic" and "gate_open" in kinds and kinds[-1] == "silenced"
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))  # oldest first
    panic = every[0]

    assert events_json(daemon, "--since", "24h") == every
    assert events_json(daemon, "--since", "today") == every
    assert events_json(daemon, "--since", "2000-01-01T00:00:00+00:00") == every
    assert events_json(daemon, "--since", "2999-01-01") == []
    # An ISO time without an offset is the site's local time (+08:00).
    just_after = dt.datetime.fromisoformat(panic["time"]) + dt.timedelta(milliseconds=1)
    later = events_json(daemon, "--since", just_after.replace(tzinfo=None).isoformat())
    assert later == [e for e in every if e["seq"] > panic["seq"]
                     and dt.datetime.fromisoformat(e["time"]) >= just_after]
    assert panic not in later
    assert events_json(daemon, "--kind", "panic") == [panic]

    result = daemon.cli("events", "--csv")
    assert result.returncode == 0, result.stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert header == ["id", "seq", "kind", "subject", "time", "label", "data"]
    assert [(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows] == [
        (e["id"], e["seq"], e["kind"], e["subject"], e["time"]) for e in every]
    assert json.loads(rows[0][6]) == panic["data"] and rows[0][5] == "门卫室一键报警"
    result = daemon.cli("events", "--csv", "--kind", "tamper")
    assert result.stdout.splitlines() == ["id,seq,kind,subject,time,label,data"]

    text = daemon.cli("events")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == len(every)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(5) == 0
    assert not daemon.socket.exists()
    assert "edge-alarm stopped" in daemon.log_text()

    # The log is read from the store itself: the same with the daemon stopped.
    assert events_json(daemon) == every
    assert events_json(daemon, "--kind", "silenced", "--since", "24h") == [every[-1]]
    assert daemon.cli("status").returncode == 3


def test_sigint_also_stops_cleanly(running_daemon):
    running_daemon.proc.send_signal(signal.SIGINT)
    assert running_daemon.proc.wait(5) == 0
    assert not running_daemon.socket.exists()


def test_a_restarted_daemon_still_has_the_latched_alarm(running_daemon, wait_until, tmp_path):
    raise_alarm(running_daemon, wait_until)
    assert stop_daemon(running_daemon) == 0
    again = start_daemon(running_daemon.config, running_daemon.socket,
                         tmp_path / "daemon2.log")
    try:
        status = status_of(again)
        assert status["alarm"]["active"] and status["alarm"]["inputs"] == ["guard_room"]
        assert status["siren"]["on"]
        assert len(events_json(again, "--kind", "panic")) == 1
    finally:
        assert stop_daemon(again) == 0


def test_events_with_no_store_yet_is_empty_and_creates_nothing(write_config, tmp_path, cli):
    result = cli("events", "--json", config=write_config())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert not (tmp_path / "var").exists()
    csv_out = cli("events", "--csv", config=write_config())
    assert csv_out.stdout == "id,seq,kind,subject,time,label,data\n"


def test_a_since_that_is_no_time_is_a_usage_error(write_config, cli):
    result = cli("events", "--since", "yesterday-ish", config=write_config())
    assert result.returncode == 2
    assert "--since" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [
    ("report", "--day", "9999-12-31"), ("report", "--day", "0001-01-01"),
    ("report", "--day", "2026-02-30"),
    ("events", "--since", "99999d"), ("events", "--since", "0001-01-01"),
    ("events", "--since", "9999-12-31T23:00"), ("events", "--since", "9" * 5000 + "d"),
    ("drill", "on", "--for", "0m"), ("drill", "on", "--for", "25h"),
    ("drill", "on", "--for=-5m"), ("drill", "on", "--for", "99999999999d"),
    ("walktest", "on", "--for", "25h"), ("walktest", "on", "--for", "0m"),
])
def test_odd_dates_and_durations_are_a_one_line_usage_error(write_config, cli, command):
    result = cli(*command, config=write_config())
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("edge-alarm: ")


# ------------------------------------------------------------------ signals during start

def block_stop_and_reload():
    """In the child before exec: SIGTERM and SIGHUP held back (the mask is inherited), so a
    signal sent at once after spawn waits for the daemon's own code, not for luck."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})


@pytest.mark.parametrize("attempt", range(3))
def test_a_sighup_during_start_is_a_reload_once_started(write_config, short_dir, tmp_path,
                                                        wait_until, attempt):
    daemon = start_daemon(write_config(), short_dir / "control.sock", tmp_path / "daemon.log",
                          preexec_fn=block_stop_and_reload,
                          on_spawn=lambda proc: proc.send_signal(signal.SIGHUP))
    try:
        log = wait_until(lambda: "SIGHUP: reloading" in (text := daemon.log_text()) and text,
                         timeout=10, what="the reload")
        assert log.index("edge-alarm starting") < log.index("SIGHUP: reloading")
        assert status_of(daemon)["device_id"] == "test-gate-1"
    finally:
        assert stop_daemon(daemon) == 0


@pytest.mark.parametrize("attempt", range(3))
def test_a_sigterm_during_start_is_a_clean_exit(write_config, tmp_path, attempt):
    with open(tmp_path / "daemon.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(write_config())],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_child_env(), preexec_fn=block_stop_and_reload)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


# ------------------------------------------------------------------ config and entry points

@pytest.mark.parametrize("command", [("run",), ("status",), ("events",)])
def test_a_config_with_an_unknown_key_exits_78_naming_it(tmp_path, short_dir, cli, command):
    path = tmp_path / "bad.toml"
    path.write_text(mock_config_text(tmp_path / "var", short_dir / "control.sock").replace(
        "debounce_s = 0.3\n", "debounce_s = 0.3\ncolour = \"red\"\n"), encoding="utf-8")
    result = cli(*command, config=path)
    assert result.returncode == 78
    assert result.stderr == f"config error: {path}: [[gate]] main_gate.colour: unknown key\n"
    assert not (tmp_path / "var").exists()


def test_the_config_comes_from_the_environment_without_c(write_config, tmp_path):
    env_path = write_config()
    env = {"EDGE_ALARM_CONFIG": str(env_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "edge", "events", "--json"],
                            capture_output=True, text=True, timeout=20, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_console_script_is_the_same_program(write_config):
    script = Path(sys.executable).with_name("edge-alarm")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not installed)")
    result = subprocess.run([str(script), "events", "--csv", "-c", str(write_config())],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "id,seq,kind,subject,time,label,data\n"


LGPIO_WORK_DIR_PROBE = """
import os, sys
from edge.inputs import make_pin_factory
try:
    make_pin_factory("lgpio")
except Exception:
    pass  # no lgpio off a Pi: the work directory is chosen before the import
work_dir = os.environ["LG_WD"]
print(work_dir, oct(os.stat(work_dir).st_mode & 0o777))
"""


@pytest.mark.parametrize("given", [None, "/var/tmp"])
def test_lgpio_gets_a_work_dir_of_its_own_unless_given_one(tmp_path, given):
    env = {k: v for k, v in os.environ.items() if k != "LG_WD"}
    if given:
        env["LG_WD"] = given
    # Run from a directory lgpio must not depend on (a service user's / or home).
    out = subprocess.run([sys.executable, "-c", LGPIO_WORK_DIR_PROBE], env=env, cwd="/",
                         capture_output=True, text=True, check=True).stdout.split()
    if given:
        assert out == [given, oct(os.stat(given).st_mode & 0o777)]
        return
    work_dir, mode = out
    assert work_dir.startswith(tempfile.gettempdir()) and mode == "0o700"
    assert not os.path.exists(work_dir)  # removed at exit


def test_version_is_the_installed_packages(cli):
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"edge-alarm {importlib.metadata.version('edge-alarm')}\n"


def test_a_card_cloned_to_another_device_is_refused_until_its_store_is_moved_aside(
        write_config, tmp_path, short_dir, cli):
    """The store remembers the device that wrote it: the same card (store) under another
    device_id is refused by run and check, exit 78, until the store is moved aside."""
    first = write_config("gaoshan.toml", device_id="gaoshan-gate-1")
    stop_daemon(start_daemon(first, short_dir / "control.sock", tmp_path / "first.log"))
    clone = write_config("lishan.toml", device_id="lishan-gate-1")
    storage = tmp_path / "var"
    for command in ("run", "check"):
        result = cli(command, config=clone)
        assert result.returncode == 78, result.stderr
        assert result.stderr == (
            f"config error: {clone}: [site] device_id: 'lishan-gate-1', but the store "
            f"{storage / 'events.db'} belongs to 'gaoshan-gate-1' (a card cloned from "
            f"another device?): move the store aside (sudo systemctl stop edge-alarm; sudo mv "
            f"{storage} {storage}.gaoshan-gate-1), or set device_id back to 'gaoshan-gate-1'\n")
    assert cli("check", config=first).returncode != 78  # its own device goes on

    storage.rename(tmp_path / "var.gaoshan-gate-1")
    daemon = start_daemon(clone, short_dir / "control.sock", tmp_path / "clone.log")
    assert stop_daemon(daemon) == 0
    assert cli("check", config=first).returncode == 78  # the store is the clone's now


SIGNALS_BEFORE_IMPORT_PROBE = """
import signal, sys
seen = []


class Spy:  # notes the SIGHUP handler at the moment edge.cli is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "edge.cli":
            seen.append(signal.getsignal(signal.SIGHUP))


sys.meta_path.insert(0, Spy())
sys.argv = ["edge-alarm", "-c", "/nonexistent/config.toml", "run"]
from edge.entry import main
code = main()
print(seen[0] is not signal.SIG_DFL, code)
"""


def test_run_catches_its_signals_before_the_cli_is_imported():
    out = subprocess.run([sys.executable, "-c", SIGNALS_BEFORE_IMPORT_PROBE],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "78"], out.stdout + out.stderr


@pytest.mark.parametrize("argv, command", [
    (["run"], "run"), (["-c", "run", "status"], "status"), (["--config", "x", "run"], "run"),
    (["--config=x", "run"], "run"), (["test-sms", "10086", "run"], "test-sms"), ([], None)])
def test_the_entry_point_finds_the_command_word(argv, command):
    assert command_of(argv) == command
