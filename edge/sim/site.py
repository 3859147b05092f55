"""One simulated school gate, for the demo, the tests and the benches alike: SimSite writes
its config (every caller's needs are options of the one template), OwnerThread runs its
daemon as `edge-alarm run` does, and start_site brings the pieces up together.

The default site is the example config's gate on gpiozero's mock pins: one panic button,
one gate open in school hours on weekdays, one tamper switch and a siren, Asia/Shanghai.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge import config as config_mod
from edge.config import Config
from edge.control import ControlServer
from edge.daemon import Daemon
from edge.errors import EdgeAlarmError
from edge.service import build_daemon
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub

SITE_NAME = "高山小学"
SITE_TZ = "Asia/Shanghai"
PANIC_PIN, GATE_PIN, TAMPER_PIN, SIREN_PIN = 17, 27, 5, 22
SCHOOL_HOURS = ("06:30-08:30", "11:00-13:30", "15:30-18:30")
SCHOOL_DAYS = ("mon", "tue", "wed", "thu", "fri")
DEFAULT_START_S = 10.0


class DaemonNotStarted(EdgeAlarmError, RuntimeError):
    """The simulated site's daemon did not become ready."""


@dataclass(frozen=True)
class PanicButton:
    name: str = "guard_room"
    label: str = "门卫室一键报警"
    pin: int = PANIC_PIN


@dataclass(frozen=True)
class Contact:
    name: str
    phone: str
    receives: Sequence[str]
    may_command: bool | None = None  # None: the key is left out (its default applies)


@dataclass
class SimSite:
    """The config of a simulated site. Tables with no option set are left out; each
    ``*_keys`` mapping adds its keys to that table; ``extra`` is TOML appended as is."""

    storage: Path
    socket: Path | None = None            # [control] socket; None leaves [control] out
    name: str = SITE_NAME
    device_id: str = "test-gate-1"
    timezone: str = SITE_TZ
    pin_factory: str = "mock"
    storage_keys: Mapping[str, Any] = field(default_factory=dict)
    panic_buttons: Sequence[PanicButton] = (PanicButton(),)
    gate: bool = True                     # the main gate on GATE_PIN
    held_open_alert_s: int = 300
    debounce_s: float = 0.3
    school_hours: bool = True             # false: the gate may open at any hour
    tamper: bool = True
    siren: bool = True
    siren_max_on_s: int = 180
    camera_pre_trigger_s: int | None = None  # a test-pattern camera when set
    camera_keys: Mapping[str, Any] = field(default_factory=dict)
    modem_port: str | None = None
    modem_keys: Mapping[str, Any] = field(default_factory=dict)
    platform_url: str | None = None
    token_file: Path | None = None
    sms_fallback_after_s: float | None = None
    uplink_keys: Mapping[str, Any] = field(default_factory=dict)
    mqtt_keys: Mapping[str, Any] | None = None  # the [mqtt] table, when set
    sms_keys: Mapping[str, Any] = field(default_factory=dict)
    sia_keys: Mapping[str, Any] = field(default_factory=dict)  # [sia] when set
    contacts: Sequence[Contact] = ()
    comment: str = ""                     # lines put first, each as a TOML comment
    extra: str = ""

    def text(self) -> str:
        tables = [_table("[site]", {"name": self.name, "device_id": self.device_id,
                                    "timezone": self.timezone}),
                  _table("[storage]", {"path": self.storage, **self.storage_keys}),
                  _table("[gpio]", {"pin_factory": self.pin_factory})]
        tables += [_table("[[panic_button]]", vars(button)) for button in self.panic_buttons]
        if self.gate:
            hours = {"open_hours": SCHOOL_HOURS, "open_days": SCHOOL_DAYS} \
                if self.school_hours else {}
            tables.append(_table("[[gate]]", {
                "name": "main_gate", "label": "校门", "pin": GATE_PIN,
                "held_open_alert_s": self.held_open_alert_s, "debounce_s": self.debounce_s,
                **hours}))
        if self.tamper:
            tables.append(_table("[[tamper]]", {"name": "box", "label": "报警主机防拆",
                                                "pin": TAMPER_PIN}))
        if self.siren:
            tables.append(_table("[siren]", {"pin": SIREN_PIN, "max_on_s": self.siren_max_on_s}))
        if self.camera_pre_trigger_s is not None:
            tables.append(_table("[camera]", {"backend": "test-pattern",
                                              "pre_trigger_s": self.camera_pre_trigger_s,
                                              **self.camera_keys}))
        if self.modem_port is not None:
            tables.append(_table("[modem]", {"port": self.modem_port, **self.modem_keys}))
        if self.platform_url is not None:
            fallback = {} if self.sms_fallback_after_s is None \
                else {"sms_fallback_after_s": self.sms_fallback_after_s}
            tables.append(_table("[uplink]", {"url": self.platform_url,
                                              "token_file": self.token_file,
                                              **fallback, **self.uplink_keys}))
        if self.mqtt_keys is not None:
            tables.append(_table("[mqtt]", self.mqtt_keys))
        if self.sms_keys:
            tables.append(_table("[sms]", self.sms_keys))
        if self.sia_keys:
            tables.append(_table("[sia]", self.sia_keys))
        tables += [_table("[[contact]]", vars(contact)) for contact in self.contacts]
        if self.socket is not None:
            tables.append(_table("[control]", {"socket": self.socket}))
        head = "".join(f"# {line}\n" for line in self.comment.splitlines())
        return head + "\n".join(tables) + self.extra

    def write(self, path: Path) -> Path:
        path.write_text(self.text(), encoding="utf-8")
        return path

    def load(self, path: Path) -> Config:
        """Written to ``path`` and read back as `edge-alarm` reads its config."""
        return config_mod.load(str(self.write(path)))


def _table(header: str, keys: Mapping[str, Any]) -> str:
    return header + "\n" + "".join(f"{key} = {_toml(value)}\n"
                                   for key, value in keys.items() if value is not None)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def write_token(path: Path, token: str, mode: int = 0o600) -> Path:
    """A token file as the installer leaves one: the token on its first line, ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)  # an existing file keeps its mode through os.open
    return path


class OwnerThread:
    """``daemon.run`` on an owner thread of its own, as `edge-alarm run` has it (without its
    signal handlers): ``server``, if any, started once the daemon is ready. Returned once
    ready; DaemonNotStarted if it stopped or did not get ready within ``timeout``."""

    def __init__(self, daemon: Daemon, server: ControlServer | None = None,
                 timeout: float = DEFAULT_START_S):
        self.daemon = daemon
        self.server = server
        self.crash: list[BaseException] = []  # what daemon.run raised, if it did
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="owner", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.crash:
            self.close(timeout)
            why = f": {self.crash[0]}" if self.crash else f" within {timeout:g} s"
            raise DaemonNotStarted(f"the daemon did not start{why}")

    def _run(self) -> None:
        try:
            self.daemon.run(on_ready=self._on_ready)
        except BaseException as e:  # reported by whoever watches the site
            self.crash.append(e)
        finally:
            self._ready.set()  # a daemon that stopped is not waited for

    def _on_ready(self) -> None:
        if self.server is not None:
            self.server.start()
        self._ready.set()

    def close(self, timeout: float = DEFAULT_START_S) -> bool:
        """Stop the daemon and close it and its server; whether the thread ended."""
        self.daemon.request_stop()
        self._thread.join(timeout)
        if self.server is not None:
            self.server.close()
        self.daemon.close()
        return not self._thread.is_alive()


@dataclass
class RunningSite:
    config_path: Path
    cfg: Config
    daemon: Daemon
    owner: OwnerThread


def start_site(site: SimSite, directory: Path, stack: contextlib.ExitStack, *,
               modem: ModemEmulator | None = None, platform: PlatformStub | None = None,
               control: bool = True,
               **daemon_options) -> RunningSite:
    """``site`` wired to ``modem`` and ``platform`` (started by the caller; the platform's
    token written to directory/token), its config written to
    directory/config.toml, the daemon built as `edge-alarm run` builds it
    (``daemon_options`` go to build_daemon: clock, pin_factory, notifier) and run on an
    owner thread, with its control socket if ``control``. The owner is stopped when
    ``stack`` closes."""
    if modem is not None:
        site = dataclasses.replace(site, modem_port=modem.port)
    if platform is not None:
        site = dataclasses.replace(site, platform_url=platform.url, token_file=write_token(
            directory / "token", platform.token))
    config_path = directory / "config.toml"
    cfg = site.load(config_path)
    daemon = build_daemon(cfg, **daemon_options)
    server = ControlServer.for_daemon(cfg.control.socket, daemon) if control else None
    owner = OwnerThread(daemon, server)
    stack.callback(owner.close)
    return RunningSite(config_path, cfg, daemon, owner)
