"""`edge-alarm test-sms`: through the running daemon when there is one (it holds the
port), else by opening the modem here."""

from __future__ import annotations

import re

from edge.config import Config
from edge.control import request
from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError
from edge.modem.modem import Modem, ModemTimings
from edge.sms_text import test_text


# Any number a PDU can address: a phone, or a carrier's service number (a test to 10086
# whose answer shows the SIM's balance proves the SIM can send, and costs a principal
# nothing).
_ADDRESSABLE = re.compile(r"\+?[0-9]{3,20}")
# How people write numbers: "+86 138-0013-8000", "(010) 6552.9988".
_SEPARATORS = re.compile(r"[\s\-().]")
# The daemon answers a test SMS within the modem's +CMGS deadline; the CLI waits a little
# longer, so that the daemon's answer, not the CLI's timeout, says what happened.
TEST_SMS_TIMEOUT_S = ModemTimings.send_s + 5.0


def dialled_form(number: str) -> str:
    """``number`` as a PDU addresses it: separators dropped, 00 read as +. CommandRefused
    for anything that is not a phone number."""
    digits = _SEPARATORS.sub("", number)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not _ADDRESSABLE.fullmatch(digits):
        raise CommandRefused(f"{number!r} is not a phone number: 3 to 20 digits "
                             "(spaces, dashes and parentheses allowed), + and the country "
                             "code first for an international one")
    return digits


def send_test_sms(cfg: Config, number: str, text: str | None) -> list[int]:
    number = dialled_form(number)
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # argv bytes that are not UTF-8 (surrogate escapes)
            raise CommandRefused(f"TEXT is not valid UTF-8: {text[:60]!r}") from None
    if cfg.modem is None:
        raise EdgeAlarmError("no [modem] is configured")
    text = text if text is not None else test_text(cfg)
    try:
        answer = request(cfg.control.socket, "test-sms", {"number": number, "text": text},
                         timeout=TEST_SMS_TIMEOUT_S)
        return answer["refs"]
    except DaemonUnreachable:
        pass
    except CommandRefused as e:
        raise EdgeAlarmError(str(e)) from e
    with Modem.from_config(cfg) as modem:
        modem.ensure_ready()
        return modem.send_sms(number, text, reference=1, max_parts=cfg.sms.max_parts)
