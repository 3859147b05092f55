"""Writing PDUs: SMS-SUBMIT for AT+CMGS, and SMS-DELIVER for the emulated network side."""

from __future__ import annotations

import re
from datetime import datetime

from edge.modem.pdu.alphabet import (gsm7_encode, is_gsm7, pack_septets, septets_for_octets,
                                     split_text)
from edge.modem.pdu.message import PduError, SubmitPdu

_VALIDITY_4_DAYS = 0xAA  # TP-VP relative: (0xAA - 166) days
_NUMBER = re.compile(r"\+?[0-9]{1,20}")


def encode_submit(number: str, text: str, *, reference: int, max_parts: int = 4,
                  smsc: str | None = None) -> list[SubmitPdu]:
    """The SMS-SUBMIT PDUs that send ``text`` to ``number``, one per AT+CMGS.

    ``number``: "+8613800138000" (international) or a domestic "13800138000".
    ``reference`` (0..255) ties the parts of a concatenated message together.
    ``smsc`` None leaves the service centre to the SIM's setting (SCA "00").
    """
    destination = _encode_number(number, "destination")
    sca = _encode_sca(smsc)
    pdus = []
    for udhi, dcs, user_data in _user_data_parts(text, reference, max_parts):
        first_octet = 0x11 | udhi  # SMS-SUBMIT, relative validity period
        tpdu = (bytes([first_octet, 0x00]) + destination  # TP-MR 0: the modem sets it
                + bytes([0x00, dcs, _VALIDITY_4_DAYS]) + user_data)
        pdus.append(SubmitPdu(hex=(sca + tpdu).hex().upper(), tpdu_length=len(tpdu)))
    return pdus


def encode_deliver(sender: str, text: str, timestamp: datetime, *, reference: int = 0,
                   max_parts: int = 4, smsc: str | None = None,
                   alphanumeric: bool = False) -> list[str]:
    """The SMS-DELIVER PDUs (SCA first, hex) that a phone would read for ``text`` from
    ``sender`` (a number, or a name of up to 11 GSM characters); for emulators and tests.
    ``alphanumeric``: ``sender`` is a name even when it reads like a number (as a bulk-SMS
    gateway may send "13800138000")."""
    originator = (_encode_number(sender, "sender")
                  if _NUMBER.fullmatch(sender) and not alphanumeric
                  else _encode_alphanumeric(sender))
    sca = _encode_sca(smsc)
    scts = _encode_timestamp(timestamp)
    pdus = []
    for udhi, dcs, user_data in _user_data_parts(text, reference, max_parts):
        first_octet = 0x04 | udhi  # SMS-DELIVER, no more messages waiting
        tpdu = bytes([first_octet]) + originator + bytes([0x00, dcs]) + scts + user_data
        pdus.append((sca + tpdu).hex().upper())
    return pdus


def _user_data_parts(text: str, reference: int, max_parts: int):
    """Yield (UDHI bit, TP-DCS, TP-UDL + TP-UD) for each part of ``text``."""
    if not 0 <= reference <= 255:
        raise PduError(f"concatenation reference must be 0..255, not {reference}")
    encoding, parts = split_text(text, max_parts)
    for index, part in enumerate(parts, start=1):
        header = b""
        if len(parts) > 1:
            header = bytes([0x05, 0x00, 0x03, reference, len(parts), index])
        if encoding == "gsm7":
            # The header takes whole septets: the text starts after its fill bits.
            skip = septets_for_octets(len(header))
            septets = [0] * skip + gsm7_encode(part)
            packed = header + pack_septets(septets)[len(header):]
            yield (0x40 if header else 0), 0x00, bytes([len(septets)]) + packed
        else:
            body = header + part.encode("utf-16-be")
            yield (0x40 if header else 0), 0x08, bytes([len(body)]) + body


def _encode_number(number: str, what: str) -> bytes:
    """TP-DA / TP-OA: digit count, type of address, BCD digits."""
    if not _NUMBER.fullmatch(number):
        raise PduError(f"{what} {number!r} is not a phone number "
                       "('+' and up to 20 digits, no spaces)")
    digits = number.lstrip("+")
    type_of_address = 0x91 if number.startswith("+") else 0x81  # international / unknown
    return bytes([len(digits), type_of_address]) + _bcd(digits)


def _encode_sca(smsc: str | None) -> bytes:
    """The SCA that precedes the TPDU: its length counts octets, not digits."""
    if smsc is None:
        return b"\x00"
    address = _encode_number(smsc, "service centre")[1:]
    return bytes([len(address)]) + address


def _encode_alphanumeric(name: str) -> bytes:
    septets = gsm7_encode(name) if is_gsm7(name) else []
    if not 1 <= len(septets) <= 11:
        raise PduError(f"sender {name!r} is neither a phone number nor a name of "
                       "1 to 11 GSM septets")
    semi_octets = (7 * len(septets) + 3) // 4
    return bytes([semi_octets, 0xD0]) + pack_septets(septets)


def _bcd(digits: str) -> bytes:
    padded = digits + "F" * (len(digits) % 2)
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))


def _encode_timestamp(timestamp: datetime) -> bytes:
    offset = timestamp.utcoffset()
    if offset is None:
        raise PduError(f"timestamp {timestamp} has no time zone")
    quarters, remainder = divmod(int(offset.total_seconds()), 15 * 60)
    if remainder or not -79 <= quarters <= 79 or not 1969 <= timestamp.year <= 2068:
        raise PduError(f"timestamp {timestamp} cannot be written as a TP-SCTS")
    fields = [timestamp.year % 100, timestamp.month, timestamp.day,
              timestamp.hour, timestamp.minute, timestamp.second]
    octets = [(value % 10) << 4 | value // 10 for value in fields]
    zone = abs(quarters)
    octets.append((zone % 10) << 4 | zone // 10 | (0x08 if quarters < 0 else 0))
    return bytes(octets)

