"""What the PDU codec hands out and takes in, and its error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from edge.errors import EdgeAlarmError


class PduError(EdgeAlarmError, ValueError):
    """A PDU cannot be decoded, or a message cannot be encoded as one."""


@dataclass(frozen=True)
class SubmitPdu:
    hex: str  # SCA octets + TPDU, upper-case, as written after the '>' prompt of AT+CMGS
    tpdu_length: int  # octets of the TPDU alone: the N of AT+CMGS=N


# TP-OA type of number (TS 23.040 §9.1.2.5): who may command depends on it, so it stays
# with the message from the PDU on.
TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL, TON_ALPHANUMERIC = 0, 1, 2, 5


@dataclass(frozen=True)
class Deliver:
    sender: str  # "+8613800138000" for an international number, digits or a name otherwise
    text: str
    timestamp: datetime | None  # the service centre's time stamp, aware; None if it is not a date
    concat: tuple[int, int, int] | None  # (reference, total, index) of one part of a longer message
    # The TP-OA's type of number (TON_*): a name (TON_ALPHANUMERIC) is never a phone
    # number, whatever its characters read. Required: no step may make a message without it.
    type_of_number: int = dataclasses.field(kw_only=True)
