"""install.sh, run for real as a staged install (--root DIR): the layout it lays out, its
re-run and uninstall behaviour, and the unit and scripts it ships, checked by the tools a
Raspberry Pi would use (the venv's own edge-alarm, systemd-analyze, shellcheck)."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import mock_config_text

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.sh"
UNIT_SRC = REPO / "systemd" / "edge-alarm.service"
WEB_UNIT_SRC = REPO / "systemd" / "edge-alarm-web.service"
RULE_SRC = REPO / "systemd" / "99-edge-alarm-modem.rules"
TEMPLATE = REPO / "edge" / "config.example.toml"

UNIT = "etc/systemd/system/edge-alarm.service"
WEB_UNIT = "etc/systemd/system/edge-alarm-web.service"
RULE = "etc/udev/rules.d/99-edge-alarm-modem.rules"
CONFIG = "etc/edge-alarm/config.toml"
TOKEN = "etc/edge-alarm/token"
VENV = "opt/edge-alarm/venv"
DATA = "var/lib/edge-alarm"
WANTS = "etc/systemd/system/multi-user.target.wants/edge-alarm.service"
WEB_WANTS = "etc/systemd/system/multi-user.target.wants/edge-alarm-web.service"


def _python_can_make_venv() -> bool:
    python = os.environ.get("PYTHON", "python3")
    if not shutil.which(python):
        return False
    return subprocess.run([python, "-c", "import ensurepip, venv"],
                          capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not _python_can_make_venv(),
    reason="python3 -m venv is unavailable (install python3-venv); install.sh cannot build a venv",
)


def run_install(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(INSTALL), *args], cwd=REPO, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, (
        f"install.sh {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A first install into an empty staging root: (the root, install.sh's outcome)."""
    root = tmp_path_factory.mktemp("root")
    return root, run_install("--root", str(root))


@pytest.fixture(scope="module")
def staged(fresh_install) -> Path:
    return fresh_install[0]


def test_install_sh_is_an_executable_bash_script():
    assert os.access(INSTALL, os.X_OK), "install.sh lost its executable bit"
    assert INSTALL.read_text().startswith("#!/usr/bin/env bash\n")


def test_help_lists_every_mode_and_bad_arguments_fail():
    out = run_install("--help").stdout
    for mode_flag in ("--dev", "--uninstall", "--purge", "--root"):
        assert mode_flag in out
    bad = subprocess.run([str(INSTALL), "--frobnicate"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    assert bad.returncode != 0
    assert "--frobnicate" in bad.stderr


def test_unit_and_udev_rule_are_installed_verbatim(staged):
    assert (staged / UNIT).read_bytes() == UNIT_SRC.read_bytes()
    assert (staged / WEB_UNIT).read_bytes() == WEB_UNIT_SRC.read_bytes()
    assert (staged / RULE).read_bytes() == RULE_SRC.read_bytes()
    assert mode(staged / UNIT) == 0o644
    assert mode(staged / WEB_UNIT) == 0o644
    assert mode(staged / RULE) == 0o644


def test_config_template_and_empty_token_are_private(staged):
    assert (staged / CONFIG).read_bytes() == TEMPLATE.read_bytes()
    assert mode(staged / CONFIG) == 0o640
    assert (staged / TOKEN).read_bytes() == b""
    assert mode(staged / TOKEN) == 0o640
    assert mode(staged / "etc/edge-alarm") == 0o750
    assert (staged / DATA).is_dir()
    assert mode(staged / DATA) == 0o750


def test_venv_holds_a_regular_install_whose_cli_runs(staged):
    venv = staged / VENV
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    where = subprocess.run([str(venv / "bin/python"), "-c", "import edge; print(edge.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert where.returncode == 0, where.stderr
    # Not editable: the code lives in the venv, not in this checkout.
    assert Path(where.stdout.strip()).is_relative_to(venv)

    cli = subprocess.run([str(venv / "bin/edge-alarm"), "--help"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert cli.returncode == 0, cli.stderr
    assert "usage" in cli.stdout.lower()
    # The guard-room page's files are in the package, not only in this checkout.
    page = subprocess.run([str(venv / "bin/python"), "-c",
                           "from importlib import resources; print(resources.files('edge.web')"
                           ".joinpath('static', 'index.html').read_text()[:15])"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert page.stdout == "<!doctype html>\n", page.stderr
    assert os.readlink(staged / "usr/local/bin/edge-alarm") == "/opt/edge-alarm/venv/bin/edge-alarm"


def test_a_fresh_install_does_not_enable_the_unit_on_the_template(fresh_install):
    """A reboot after a first install runs no daemon on the template: check refuses its
    placeholders (one line each) and install.sh leaves the unit disabled and says what
    to do next."""
    root, result = fresh_install
    assert not (root / WANTS).exists()
    for where in ("[site] device_id", "[[contact]] principal.phone", "[uplink] url"):
        assert f"config error: {root / CONFIG}: {where}: " in result.stderr
    assert "NOT enabled" in result.stdout
    assert "sudo systemctl enable --now edge-alarm" in result.stdout
    check = subprocess.run([str(root / VENV / "bin/edge-alarm"), "check", "-c", str(root / CONFIG)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert check.returncode == 78, check.stderr


@pytest.mark.skipif(not shutil.which("systemctl"), reason="systemctl is not installed")
def test_an_install_whose_config_check_accepts_enables_the_unit(tmp_path):
    """A config the school already filled in (provisioned before install.sh runs) is
    accepted by check, and the unit is enabled."""
    root = tmp_path / "root"
    (root / CONFIG).parent.mkdir(parents=True)
    (root / CONFIG).write_text(mock_config_text(tmp_path / "var", tmp_path / "control.sock"),
                               encoding="utf-8")
    result = run_install("--root", str(root))
    assert os.readlink(root / WANTS) == "/" + UNIT, result.stdout + result.stderr
    assert "NOT enabled" not in result.stdout
    assert (root / WEB_UNIT).exists() and not (root / WEB_WANTS).exists()  # never enabled


def test_an_upgrade_whose_config_check_refuses_fails_loudly(tmp_path):
    """The unit is enabled from an earlier install; the config now refused (here: put back
    to the template) would keep the daemon down at its next start: install.sh says so
    and exits non-zero, so a fleet script sees it."""
    root = tmp_path / "root"
    (root / CONFIG).parent.mkdir(parents=True)
    (root / CONFIG).write_text(mock_config_text(tmp_path / "var", tmp_path / "control.sock"),
                               encoding="utf-8")
    run_install("--root", str(root))
    (root / CONFIG).write_text(TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run([str(INSTALL), "--root", str(root)], cwd=REPO,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the alarm would be off" in result.stderr + result.stdout


def test_unit_runs_what_the_installer_lays_out(staged):
    """ExecStart's program and its -c config are the paths install.sh fills."""
    line = next(text for text in (staged / UNIT).read_text().splitlines()
                if text.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    program = staged / argv[0].lstrip("/")
    assert os.access(program, os.X_OK), f"{argv[0]} is not installed"
    assert argv[1] == "run"
    config = argv[argv.index("-c") + 1]
    assert (staged / config.lstrip("/")).is_file()


def unit_settings(section: str) -> dict[str, list[str]]:
    """Every KEY=VALUE of one [section] of the shipped unit, a key's values in order."""
    settings: dict[str, list[str]] = {}
    current = None
    for line in UNIT_SRC.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_always_brings_the_daemon_back_except_after_a_bad_config():
    """An alarm daemon that stops for any reason (a crash, a signal, even a clean exit
    nobody asked for) is restarted, for ever; a bad config (exit 78) is not retried."""
    service, unit = unit_settings("Service"), unit_settings("Unit")
    assert service["Restart"] == ["always"]
    assert service["RestartPreventExitStatus"][-1].split() == ["78"]
    assert 1 <= float(service["RestartSec"][-1]) <= 10
    assert unit["StartLimitIntervalSec"] == ["0"]  # no start-rate limit that gives up


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("installed", [UNIT, WEB_UNIT])
def test_staged_units_pass_systemd_analyze_verify(staged, tmp_path, installed):
    # verify insists that ExecStart's program exists on this machine: point it at the
    # staged venv, and keep everything else as installed.
    text = (staged / installed).read_text().replace(
        "ExecStart=/opt/edge-alarm/", f"ExecStart={staged}/opt/edge-alarm/")
    assert text != (staged / installed).read_text()
    unit = tmp_path / Path(installed).name
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean():
    result = subprocess.run(["shellcheck", "install.sh", ".ci/run"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rerun_upgrades_the_package_and_keeps_edited_config_and_token(tmp_path):
    root = tmp_path / "root"
    run_install("--root", str(root))
    (root / CONFIG).write_text("# the school's own config\n")
    (root / TOKEN).write_text("secret-token\n")
    (root / UNIT).write_text("stale unit\n")
    package = Path(subprocess.run(
        [str(root / VENV / "bin/python"), "-c", "import edge; print(edge.__file__)"],
        capture_output=True, text=True, check=True, cwd="/").stdout.strip())
    package.write_text("raise SystemExit('old version')\n")

    again = run_install("--root", str(root))

    assert "reusing venv" in again.stdout
    assert (root / CONFIG).read_text() == "# the school's own config\n"
    assert (root / TOKEN).read_text() == "secret-token\n"
    assert (root / UNIT).read_bytes() == UNIT_SRC.read_bytes()
    assert "old version" not in package.read_text()
    cli = subprocess.run([str(root / VENV / "bin/edge-alarm"), "--help"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert cli.returncode == 0, cli.stderr


def test_uninstall_keeps_config_and_data_and_purge_removes_them(tmp_path):
    root = tmp_path / "root"
    run_install("--root", str(root))
    (root / DATA / "events.db").write_bytes(b"events")

    run_install("--uninstall", "--root", str(root))
    assert not (root / UNIT).exists()
    assert not (root / WEB_UNIT).exists()
    assert not (root / RULE).exists()
    assert not (root / "opt/edge-alarm").exists()
    assert not (root / "usr/local/bin/edge-alarm").is_symlink()
    assert (root / CONFIG).read_bytes() == TEMPLATE.read_bytes()
    assert (root / TOKEN).exists()
    assert (root / DATA / "events.db").read_bytes() == b"events"

    run_install("--purge", "--root", str(root))
    assert not (root / "etc/edge-alarm").exists()
    assert not (root / DATA).exists()


def test_dev_mode_refuses_a_staging_root(tmp_path):
    result = subprocess.run([str(INSTALL), "--dev", "--root", str(tmp_path)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode != 0
    assert "--dev" in result.stderr
    assert not (tmp_path / "opt").exists()
