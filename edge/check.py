"""`edge-alarm check`: the config is valid (else exit 78) and every configured part is probed,
one line each, ✓ or ✗ with what to do. When the daemon runs it holds the pins, the modem
and the camera, so those are read from its status instead of being opened twice."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.clock import Clock, SyncState
from edge.config import Config
from edge.control import request_status
from edge.errors import DaemonUnreachable, EdgeAlarmError, StorageError
from edge.safe_text import safe_text
from edge.status_doc import StatusDoc

if TYPE_CHECKING:  # the modem driver is imported only when a modem is probed
    from edge.modem.modem import ModemHealth

OK, FAIL, OFF = "✓", "✗", "–"

MODEM_ADVICE = {
    "port_gone": "the modem's port is missing: check the USB cable and [modem] port "
                 "(ls -l /dev/edge-alarm-modem /dev/ttyUSB*)",
    "port_busy": "another program holds the modem port: stop it (ModemManager, minicom, "
                 "a second edge-alarm)",
    "silent": "the modem does not answer AT: check power (a 2 A supply), baud rate, and "
              "that no other program (ModemManager) holds the port",
    "sim_missing": "no SIM card: insert one (contacts down, cut corner first)",
    "sim_pin": "the SIM wants a PIN: set [modem] sim_pin, or remove the PIN on a phone",
    "not_registered": "not registered on the network: check the antenna and that the SIM "
                      "has service",
    "signal_low": "weak signal: move the antenna (outside a metal box) or use a better one",
    "signal_unknown": "no signal reading: check the antenna",
    "smsc_empty": "the SIM has no SMS centre number: set [modem] smsc",
    "starting": "the daemon has not reached the modem yet: run check again in a minute",
}
CORRUPT_DB_ADVICE = "restart the daemon, it moves the file aside and starts a fresh one"
# Filesystems that live in RAM: what is written there is gone at the next reboot.
IN_MEMORY_FS = ("tmpfs", "ramfs")
MOUNT_TABLE = Path("/proc/self/mounts")
KERNEL_COMMAND_LINE = Path("/proc/cmdline")


@dataclass
class Line:
    mark: str
    part: str
    text: str

    def __str__(self) -> str:
        return f"{self.mark} {self.part:<9} {self.text}"


def run_check(cfg: Config, out=None) -> int:
    out = out or sys.stdout
    lines = [Line(OK, "config", f"{cfg.path} is valid")]
    daemon: StatusDoc | None
    try:
        daemon = request_status(cfg.control.socket, timeout=5)
    except (DaemonUnreachable, EdgeAlarmError):
        daemon = None
    lines.append(Line(OK if daemon else OFF, "daemon", "running" if daemon else
                      "not running (parts probed directly)"))
    lines += _pins(cfg, daemon)
    lines.append(_siren(cfg, daemon))
    lines.append(_modem(cfg, daemon))
    lines.append(_camera(cfg, daemon))
    lines += _storage(cfg)
    lines.append(_clock())
    lines.append(_platform(cfg))
    if cfg.sia is not None:
        lines.append(_alarm_centre(cfg))
    if cfg.mqtt is not None:
        lines.append(_broker(cfg, daemon))
    for line in lines:  # the modem's answers (its operator name) escaped
        out.write(f"{safe_text(line)}\n")
    failed = [line for line in lines if line.mark == FAIL]
    return 1 if failed else 0


def _pins(cfg: Config, daemon: StatusDoc | None) -> list[Line]:
    if daemon is not None:
        out = []
        for name, state in daemon["inputs"].items():
            if state["active"] is None or name in daemon["faults"]:
                out.append(Line(FAIL, "pin", f"{name}: not armed in the daemon; see "
                                             "journalctl -u edge-alarm"))
            else:
                out.append(Line(OK, "pin", f"{name} ({state['label']}): "
                                           f"{'active' if state['active'] else 'idle'}"))
        return out
    from edge.inputs import InputPins, PinFactoryError, make_pin_factory

    try:
        factory = make_pin_factory(cfg.gpio.pin_factory)
    except PinFactoryError as e:
        return [Line(FAIL, "pins", f"{e}; on a Pi install python3-lgpio (install.sh does)")]
    pins = InputPins(cfg.inputs, factory, lambda *a: None, clock=Clock(),
                     simulated=cfg.gpio.pin_factory == "mock")
    try:
        out = []
        for inp in cfg.inputs:
            active = pins.active(inp.name)
            if active is None:
                out.append(Line(FAIL, "pin", f"{inp.name} (GPIO{inp.pin}): cannot be claimed: "
                                             f"{pins.failed.get(inp.name)}"))
            else:
                out.append(Line(OK, "pin", f"{inp.name} (GPIO{inp.pin}, {inp.label}): "
                                           f"{'active' if active else 'idle'}"))
        return out
    finally:
        pins.close()


def _siren(cfg: Config, daemon: StatusDoc | None) -> Line:
    s = cfg.siren
    if s is None:
        return Line(OFF, "siren", "off (no [siren]): alarms sound no siren here")
    relay = f"relay on GPIO{s.pin} (up to {s.max_on_s} s)"
    if daemon is not None:
        if "siren" in daemon["faults"]:
            return Line(FAIL, "siren", f"{relay}: not claimed in the daemon; see journalctl "
                                       "-u edge-alarm")
        return Line(OK, "siren", f"{relay}: {'ON' if daemon['siren']['on'] else 'off'}")
    from edge.inputs import PinFactoryError, make_pin_factory
    from edge.siren import Siren

    try:
        siren = Siren(s, make_pin_factory(cfg.gpio.pin_factory))  # claimed, left off
    except PinFactoryError as e:
        return Line(FAIL, "siren", f"{relay}: {e}")
    except Exception as e:  # a pin in use by another process, a missing chip…
        return Line(FAIL, "siren", f"{relay}: cannot be claimed: {e}")
    siren.close()
    return Line(OK, "siren", f"{relay}: can be driven (left off)")


def _modem(cfg: Config, daemon: StatusDoc | None) -> Line:
    if cfg.modem is None:
        return Line(OFF, "modem", "off (no [modem]): no SMS")
    error = None
    if daemon is not None:
        m = daemon["modem"]
        ok, reason, signal, operator = m.get("ok"), m.get("reason"), m.get("signal"), \
            m.get("operator")
    else:
        health, error = _probe_modem(cfg)
        ok, reason, signal, operator = health.ok, health.reason, health.signal, \
            health.operator
    if ok and not error:
        return Line(OK, "modem", f"SIM ready, registered ({operator or 'network'}), "
                                 f"signal {signal}/31")
    if reason is None:  # initialisation failed on something health does not ask
        return Line(FAIL, "modem", f"{cfg.modem.port}: {error}")
    return Line(FAIL, "modem", f"{reason}: {MODEM_ADVICE.get(reason, 'see the README')}"
                               + (f" ({error})" if error else ""))


def _probe_modem(cfg) -> tuple[ModemHealth, str | None]:
    """(ModemHealth, the error that stopped initialisation or None). A failed
    initialisation still names its reason (no SIM, PIN…), as the daemon's worker does."""
    from edge.errors import ModemError
    from edge.modem.modem import Modem

    with Modem.from_config(cfg) as modem:
        try:
            modem.ensure_ready()
        except ModemError as e:
            return modem.health_after(e), str(e)
        return modem.health(), None


def _camera(cfg: Config, daemon: StatusDoc | None) -> Line:
    if cfg.camera is None or cfg.camera.backend == "none":
        return Line(OFF, "camera", "off (no [camera]): no snapshots")
    if daemon is not None:
        ok = daemon.get("camera", {}).get("ok")
        if ok is None:
            return Line(FAIL, "camera", f"{cfg.camera.backend}: the daemon is still starting "
                                        "it; run check again in a minute")
        return Line(OK if ok else FAIL, "camera", f"{cfg.camera.backend}: "
                    + ("ok in the daemon" if ok else "failing in the daemon; check the ribbon "
                       "cable and `rpicam-hello --list-cameras`"))
    from edge.camera import open_camera, probe

    camera = open_camera(cfg.camera.backend, pre_trigger_s=0)
    assert camera is not None  # backend "none" was answered above
    try:
        ok, text = probe(camera)
    finally:
        camera.close()
    if ok:
        return Line(OK, "camera", text)
    return Line(FAIL, "camera", f"{text}; check the ribbon cable, that no other program "
                                "uses the camera, and `rpicam-hello --list-cameras`")


def _storage(cfg: Config) -> list[Line]:
    from edge.store import Store, is_corruption

    path = cfg.storage.path
    probe_dir = path if path.exists() else path.parent
    try:
        free = shutil.disk_usage(probe_dir).free
    except OSError as e:
        return [Line(FAIL, "storage", f"{path}: {e}")]
    low = cfg.storage.space_low(free)
    lines = [Line(FAIL if low else OK, "storage", f"{path}: {free >> 20} MB free" + (
        f"; free space (need {cfg.storage.min_free_mb} MB, [storage] min_free_mb)" if low
        else ""))]
    volatile = _volatile_filesystem(probe_dir)
    if volatile is not None:
        lines.append(Line(FAIL, "storage", f"{path} is on {volatile}, in memory: every event "
                                           "is lost at the next reboot or power cut; keep "
                                           "[storage] path on the SD card, with raspi-config's "
                                           "overlay file system off"))
    if not cfg.storage.db_path.exists():
        lines.append(Line(OK, "database", f"{cfg.storage.db_path} not created yet "
                                          "(the daemon creates it)"))
        return lines
    try:
        store = Store(cfg.storage.db_path, readonly=True)
        try:
            ok = store.integrity_ok()
            seq = store.last_seq()
        finally:
            store.close()
    except StorageError as e:
        advice = (CORRUPT_DB_ADVICE if is_corruption(e.__cause__) else
                  "run check as root or as a member of the edge-alarm group")
        return lines + [Line(FAIL, "database", f"{e}: {advice}")]
    lines.append(Line(OK, "database", f"integrity ok, last event #{seq}") if ok else
                 Line(FAIL, "database", f"integrity check failed: {CORRUPT_DB_ADVICE}"))
    return lines


def _volatile_filesystem(path: Path) -> str | None:
    """What keeps ``path`` in memory only: "tmpfs", "ramfs", "an overlay on tmpfs" (an
    overlay root whose writes go to a tmpfs, as Debian's overlayroot mounts it for
    raspi-config), or "raspi-config's overlay file system" (an overlay whose upper layer
    was left out of sight in the initramfs, on a kernel booted with ``boot=overlay``).
    None on a disk, or when it cannot be told (no /proc; a container's overlay, whose
    upper layer is out of sight and on the host's disk)."""
    mount = _mount_holding(path)
    if mount is None:
        return None
    fstype, options = mount
    if fstype in IN_MEMORY_FS:
        return fstype
    if fstype != "overlay":
        return None
    upper = next((o[len("upperdir="):] for o in options if o.startswith("upperdir=")), None)
    if upper is not None and Path(upper).is_dir():
        under = _mount_holding(Path(upper))
        return f"an overlay on {under[0]}" if under and under[0] in IN_MEMORY_FS else None
    return "raspi-config's overlay file system" if _booted_with_overlay_in_memory() else None


def _booted_with_overlay_in_memory() -> bool:
    """The kernel command line asks for raspi-config's read-only root: ``boot=overlay``
    (its own initramfs script, Bookworm) or ``overlayroot=tmpfs…`` (Debian's overlayroot)."""
    try:
        words = KERNEL_COMMAND_LINE.read_text().split()
    except OSError:
        return False
    return "boot=overlay" in words or any(w.startswith("overlayroot=tmpfs") for w in words)


def _mount_holding(path: Path) -> tuple[str, list[str]] | None:
    """(filesystem type, mount options) of the mount ``path`` lives on: the deepest mount
    point above it, the last one mounted there when several are stacked."""
    try:
        table = MOUNT_TABLE.read_text()
    except OSError:
        return None
    path = path.resolve()
    found, depth = None, -1
    for entry in table.splitlines():
        fields = entry.split()
        if len(fields) < 4:
            continue
        point = Path(_unescape_mount_field(fields[1]))
        if (point == path or point in path.parents) and len(point.parts) >= depth:
            depth = len(point.parts)
            found = fields[2], [_unescape_mount_field(o) for o in fields[3].split(",")]
    return found


def _unescape_mount_field(field: str) -> str:
    """The kernel writes a space, tab, newline, comma or backslash in a mount table field
    as a three-digit octal escape (\\040 for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _clock() -> Line:
    if SyncState().synced():
        return Line(OK, "clock", "synchronised (NTP)")
    return Line(FAIL, "clock", "not synchronised: check network time "
                               "(timedatectl; systemctl status systemd-timesyncd)")


def _alarm_centre(cfg: Config) -> Line:
    """A NULL message (DC-09's link test) to the receiver, which must acknowledge it."""
    from edge.sia.transmitter import probe
    from edge.sia.worker import EXCHANGE_S

    assert cfg.sia is not None
    where = f"{cfg.sia.protocol}://{cfg.sia.host}:{cfg.sia.port} account {cfg.sia.account}"
    why = probe(cfg.sia, EXCHANGE_S)
    if why is None:
        return Line(OK, "sia", f"{where}: link test acknowledged")
    return Line(FAIL, "sia", f"{where}: {why}; check [sia] host, port, protocol, account "
                             "and key_file with the alarm centre")


def _platform(cfg: Config) -> Line:
    if cfg.uplink is None:
        return Line(OFF, "platform", "off (no [uplink]): events stay on the device")
    from edge.errors import UplinkError
    from edge.uplink.http import ACCEPTED, HttpUplink

    up = cfg.uplink
    try:
        client = HttpUplink.from_config(up)
    except UplinkError as e:
        return Line(FAIL, "platform", str(e))
    try:
        result = client.probe()
    finally:
        client.close()
    if result.outcome == ACCEPTED:
        return Line(OK, "platform", f"{up.url}: {result.detail}, token accepted")
    if result.status in (401, 403):
        advice = f"put the token the platform issued for {cfg.site.device_id} in {up.token_file}"
    elif result.status is None:
        advice = "check the network (cable, DNS, firewall) and [uplink] url"
    else:  # a redirect, or no events endpoint at that URL
        advice = "correct [uplink] url"
    return Line(FAIL, "platform", f"{up.url}: {result.detail}; {advice}")


def _broker(cfg: Config, daemon: StatusDoc | None) -> Line:
    """The running daemon's link (a second connection as the device would take its
    session over), else a connection of check's own."""
    assert cfg.mqtt is not None
    url = cfg.mqtt.url
    if daemon is not None and "mqtt" in daemon:
        entry = daemon["mqtt"]
        if entry.get("connected"):
            return Line(OK, "broker", f"{url}: connected, {entry['pending']} event(s) to send")
        return Line(FAIL, "broker", f"{url}: not connected in the daemon: "
                                    f"{entry.get('last_error') or 'connecting'}")
    from edge.mqtt.probe import probe
    why = probe(cfg.mqtt, cfg.site.device_id)
    if why is None:
        return Line(OK, "broker", f"{url}: the account is accepted")
    return Line(FAIL, "broker", f"{url}: {why}; check [mqtt] url, username, password_file "
                                f"and ca_file")
