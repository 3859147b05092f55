"""`edge-alarm test-sms`: through the running daemon when there is one (it holds the
port), else by opening the modem here."""

from __future__ import annotations

import re

from edge.config import Config
from edge.control import TEST_SMS_TIMEOUT_S, request
from edge.errors import CommandRefused, DaemonUnreachable, EdgeAlarmError
from edge.modem.modem import Modem
from edge.sms_text import test_text


# Any number a PDU can address: a phone, or a carrier's service number (a test to 10086
# whose answer shows the SIM's balance proves the SIM can send, and costs a principal
# nothing).
_ADDRESSABLE = re.compile(r"\+?[0-9]{3,20}")


def send_test_sms(cfg: Config, number: str, text: str | None) -> list[int]:
    if not _ADDRESSABLE.fullmatch(number):
        raise EdgeAlarmError(f"{number!r} is not a phone number: 3 to 20 digits, "
                             "+ and the country code first for an international one")
    if cfg.modem is None:
        raise EdgeAlarmError("no [modem] is configured")
    text = text if text is not None else test_text(cfg)
    try:
        answer = request(cfg.control.socket, "test-sms", {"number": number, "text": text},
                         timeout=TEST_SMS_TIMEOUT_S + 5)
        return answer["refs"]
    except DaemonUnreachable:
        pass
    except CommandRefused as e:
        raise EdgeAlarmError(str(e)) from e
    with Modem.from_config(cfg) as modem:
        modem.ensure_ready()
        return modem.send_sms(number, text, reference=1, max_parts=cfg.sms.max_parts)
