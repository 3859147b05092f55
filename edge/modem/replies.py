"""Reading the lines of a modem's answer; shared by the Modem and its parts."""

from __future__ import annotations

from edge.errors import ModemError
from edge.modem.at import CmeError, CmsError

# CME 14 "SIM busy", CMS 314 "SIM busy", CMS 515 "please wait, init or command processing".
_BUSY = {("cme", 14), ("cms", 314), ("cms", 515)}


def fields(line: str) -> list[str]:
    """'+CSQ: 20,99' -> ['20', '99']; quotes are removed."""
    _, _, rest = line.partition(":")
    return [field.strip().strip('"') for field in rest.split(",")]


def first(lines: list[str], prefix: str) -> str | None:
    return next((line for line in lines if line.startswith(prefix)), None)


def is_busy(exc: ModemError) -> bool:
    kind = "cme" if isinstance(exc, CmeError) else "cms" if isinstance(exc, CmsError) else None
    return (kind, getattr(exc, "code", None)) in _BUSY
