"""`edge-alarm check` as an installer runs it: a real `python -m edge check` subprocess
against a config on disk, with real parts behind it (an emulated modem on a pty, the
platform stand-in on 127.0.0.1, SQLite files, a running daemon).

The clock line depends on this machine: a container's kernel may not count its clock as
NTP-synchronised, and then `check` rightly exits 1. Every expected exit status is therefore
computed from what the kernel says (``SyncState().synced()``), never assumed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    result = cli("check", config=write_config(modem_port=emulator.port))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{OK} modem") and "CHINA MOBILE" in line, line
    assert line.endswith("signal 20/31"), line
    assert result.returncode == exit_when_healthy(), result.stdout


def test_a_missing_sim_is_named_with_what_to_do(write_config, cli, emulator):
    emulator.sim_present = False
    result = cli("check", config=write_config(modem_port=emulator.port))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     sim_missing: no SIM card: insert one"), line
    assert result.returncode == 1


def test_a_modem_not_registered_points_at_the_antenna(write_config, cli, emulator):
    emulator.registration = 0
    result = cli("check", config=write_config(modem_port=emulator.port))
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     not_registered:") and "antenna" in line, line
    assert result.returncode == 1


def test_a_silent_modem_fails_within_a_bounded_time(write_config, cli, emulator):
    emulator.silent = True
    config = write_config(modem_port=emulator.port)
    started = time.monotonic()
    result = cli("check", config=config, timeout=40)
    elapsed = time.monotonic() - started
    line = line_of(result.stdout, "modem")
    assert line.startswith(f"{FAIL} modem     silent:") and "does not answer AT" in line, line
    assert result.returncode == 1
    assert elapsed < 30, f"check took {elapsed:.1f} s on a silent modem"
    assert emulator.commands == []  # it read everything and answered nothing


def test_a_modem_port_that_is_not_there(write_config, cli, tmp_path):
    result = cli("check", config=write_config(modem_port=str(tmp_path / "ttyUSB9")))
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
    result = cli("check", config=write_config(platform_url=platform.url, token_file=token_file))
    line = line_of(result.stdout, "platform")
    assert line.startswith(f"{OK} platform  {platform.url}") and "token accepted" in line, line
    assert result.returncode == exit_when_healthy(), result.stdout
    # The probe is an empty batch: the request that matters, with no event in it.
    assert [(r.method, r.body) for r in platform.requests] == [("POST", b"[]")]
    assert platform.events == []


@pytest.mark.parametrize("path", ["/api/v1/event", "/api/v1/events/extra"])
def test_a_wrong_url_is_found(write_config, cli, platform, token_file, path):
    url = platform.url.replace("/api/v1/events", path)
    result = cli("check", config=write_config(platform_url=url, token_file=token_file))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "no events endpoint at this URL (HTTP 404" in line, line
    assert "correct [uplink] url" in line


def test_a_wrong_token_is_refused(write_config, cli, platform, token_file):
    platform.set_token("another-token")
    result = cli("check", config=write_config(platform_url=platform.url, token_file=token_file))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "token refused (HTTP 401" in line, line
    assert str(token_file) in line  # where to put the right one
    assert PLATFORM_TOKEN not in result.stdout + result.stderr
    assert result.returncode == 1


def test_a_platform_that_is_down_is_unreachable(write_config, cli, platform, token_file):
    platform.stop()
    result = cli("check", config=write_config(platform_url=platform.url, token_file=token_file))
    line = line_of(result.stdout, "platform")
    assert line.startswith(FAIL) and "unreachable" in line and "[uplink] url" in line, line
    assert result.returncode == 1


def test_a_missing_token_file_is_named(write_config, cli, platform, tmp_path):
    missing = tmp_path / "no-token"
    result = cli("check", config=write_config(platform_url=platform.url, token_file=missing))
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
    # The first storage line is the free space (the second says a tmpfs is in memory).
    line = lines_of(cli("check", config=write_config(storage_keys="min_free_mb = 10")).stdout,
                    "storage")[0]
    assert line.startswith(f"{FAIL} storage") and "need 10 MB" in line, line
    (storage / "filler").unlink()
    line = lines_of(cli("check", config=write_config(storage_keys="min_free_mb = 12")).stdout,
                    "storage")[0]
    assert line.startswith(OK), line


IN_MEMORY_ADVICE = ("in memory: every event is lost at the next reboot or power cut; keep "
                    "[storage] path on the SD card, with raspi-config's overlay file system off")


def filesystem_type(path: Path) -> str:
    """What coreutils' `stat -f` calls the filesystem at ``path``: an oracle that shares no
    code with check.py."""
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_store_in_memory_is_said_to_be_lost_at_the_next_reboot(write_config, cli):
    shm = Path("/dev/shm")
    if not shm.is_dir() or filesystem_type(shm) != "tmpfs":
        pytest.skip("this machine has no tmpfs at /dev/shm")
    directory = Path(tempfile.mkdtemp(prefix="ea-store-", dir=shm))
    storage = directory / "var"  # not created yet, as before the daemon's first start
    try:
        result = cli("check", config=write_config(storage=storage))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    free, in_memory = lines_of(result.stdout, "storage")
    assert free.startswith(f"{OK} storage   {storage}: ") and free.endswith(" MB free"), free
    assert in_memory == f"{FAIL} storage   {storage} is on tmpfs, {IN_MEMORY_ADVICE}"
    assert result.returncode == 1


# Run as `sh -c SCRIPT sh BASE UPPER CMDLINE COMMAND...` in a private mount namespace: an
# overlay as raspi-config's overlay file system mounts the root (the card read-only below,
# the writes in an upper layer), its upper layer on a tmpfs ("tmpfs", as Debian's overlayroot
# leaves it in sight under /media/root-rw), on this machine's disk ("disk"), or on a tmpfs
# then taken out of sight ("hidden", as raspi-config's own initramfs script leaves it behind
# at switch_root); /proc/cmdline reading CMDLINE; then COMMAND.
OVERLAY_ROOT_SCRIPT = """
set -e
base=$1 upper_on=$2 cmdline=$3
shift 3
mkdir -p "$base/root-ro" "$base/root-rw" "$base/root"
if [ "$upper_on" != disk ]; then mount -t tmpfs tmpfs-root "$base/root-rw"; fi
mkdir "$base/root-rw/overlay" "$base/root-rw/overlay-workdir"
mount -t overlay overlayroot \
    -o "lowerdir=$base/root-ro,upperdir=$base/root-rw/overlay,workdir=$base/root-rw/overlay-workdir" \
    "$base/root" || exit 97
if [ "$upper_on" = hidden ]; then umount -l "$base/root-rw"; fi
printf '%s\\n' "$cmdline" > "$base/cmdline"
mount --bind "$base/cmdline" /proc/cmdline || exit 97
mkdir "$base/root/var"
exec "$@"
"""
CANNOT_MOUNT = 97
PLAIN_BOOT = "console=tty1 root=PARTUUID=0a1b2c3d-02 rootfstype=ext4 fsck.repair=yes rootwait"


def in_mount_namespace() -> list[str]:
    """The argv prefix of a private mount namespace (as root, or as a user with user
    namespaces); the test is skipped where neither is allowed."""
    argv = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if shutil.which("unshare") is None or subprocess.run(
            argv + ["true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare)")
    return argv


@pytest.mark.parametrize("upper_on, cmdline, in_memory", [
    ("tmpfs", f"{PLAIN_BOOT} overlayroot=tmpfs", "an overlay on tmpfs"),
    ("hidden", f"boot=overlay {PLAIN_BOOT}", "raspi-config's overlay file system"),
    ("disk", PLAIN_BOOT, None),    # an overlay on a disk keeps what is written
    ("hidden", PLAIN_BOOT, None),  # a container's root: its upper layer is on the host's disk
], ids=["overlayroot", "raspi-config-bookworm", "upper-on-disk", "container"])
def test_an_overlay_root_is_in_memory_when_its_writes_go_to_a_tmpfs(
        write_config, tmp_path, upper_on, cmdline, in_memory):
    namespace = in_mount_namespace()
    if upper_on == "disk" and filesystem_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("this machine's temporary directory is itself in memory")
    base = tmp_path / "card"
    storage = base / "root" / "var"
    config = write_config(storage=storage)
    result = subprocess.run(namespace + ["sh", "-c", OVERLAY_ROOT_SCRIPT, "sh", str(base),
                                         upper_on, cmdline, sys.executable, "-m", "edge",
                                         "check", "-c", str(config)],
                            capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    if result.returncode == CANNOT_MOUNT:
        pytest.skip(f"these mounts are not allowed here: {result.stderr.strip()}")
    assert filesystem_type(base / "root") != "overlayfs"  # the mounts stayed in the namespace
    storage_lines = lines_of(result.stdout, "storage")
    assert storage_lines[0].startswith(f"{OK} storage   {storage}: "), result.stdout
    if in_memory is None:
        assert storage_lines[1:] == [], result.stdout
    else:
        assert storage_lines[1:] == [f"{FAIL} storage   {storage} is on {in_memory}, "
                                     f"{IN_MEMORY_ADVICE}"], result.stdout + result.stderr
        assert result.returncode == 1


# --- with the daemon running ----------------------------------------------------------------

def test_a_running_daemon_is_asked_for_pins_and_modem(write_config, cli, wait_until, emulator,
                                                      short_dir, tmp_path):
    config = write_config(modem_port=emulator.port)
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
