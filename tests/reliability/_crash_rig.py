"""What the crash, corruption and full-disk tests share: the simulated gate they run as a
real `edge-alarm run` (mock pins, the emulated modem on a pty, the stand-in platform on
127.0.0.1), its SMS template with the event's time to the microsecond (so every SMS names
its event), and the store read back the way an inspector would, without the daemon."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path
from typing import Sequence

from conftest import write_token
from edge.events import Event
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, SimSite
from edge.store import Store

PRINCIPAL = Contact("principal", "+8613800138000", ["panic", "tamper"])
DEPUTY = Contact("deputy", "+8613900139000", ["panic", "tamper"])
SITE_TZ = dt.timezone(dt.timedelta(hours=8))  # SimSite's Asia/Shanghai, which has no DST
# Every SMS names its event by its time to the microsecond; short enough for one part.
PANIC_TEMPLATE = "【{site}】{label} {time:%H:%M:%S.%f} 报警"
_SMS_TIME = re.compile(r"\d\d:\d\d:\d\d\.\d{6}")


def crash_site(directory: Path, socket: Path, *, modem: ModemEmulator | None = None,
               platform: PlatformStub | None = None, contacts: Sequence[Contact] = (
                   PRINCIPAL, DEPUTY), **options) -> Path:
    """directory/config.toml for the simulated gate (three inputs on mock pins, the gate
    allowed at any hour, a 50 ms debounce), wired to ``modem`` and ``platform``; ``options``
    are SimSite's."""
    options.setdefault("school_hours", False)
    options.setdefault("debounce_s", 0.05)
    site = SimSite(directory / "var", socket, contacts=contacts,
                   sms_keys={"templates": {"panic": PANIC_TEMPLATE}}, **options)
    if modem is not None:
        site.modem_port = modem.port
    if platform is not None:
        site.platform_url = platform.url
        site.token_file = write_token(directory / "token", platform.token)
    return site.write(directory / "config.toml")


def sms_time(text: str) -> str | None:
    """The event time an SMS of PANIC_TEMPLATE names ("07:42:15.123456")."""
    found = _SMS_TIME.search(text)
    return found.group() if found else None


def event_sms_time(event: Event) -> str:
    """How PANIC_TEMPLATE shows ``event``'s time."""
    return event.time.astimezone(SITE_TZ).strftime("%H:%M:%S.%f")


def stored_events(db: Path) -> list[Event]:
    """Every event in the store, oldest first, read without the daemon."""
    store = Store(db, readonly=True)
    try:
        return store.events()
    finally:
        store.close()


def owed_sms(db: Path) -> int:
    """SMS rows not yet sent (nor given up), read without the daemon."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM sms WHERE state IN ('pending', 'waiting')"
                            ).fetchone()[0]
    finally:
        conn.close()


def quarantined(db: Path) -> list[Path]:
    """The store files moved aside as corrupt (the main file of each)."""
    return sorted(p for p in db.parent.glob(f"{db.name}.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))
