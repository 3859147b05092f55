"""SMS PDU codec (3GPP TS 23.040 / TS 23.038) for AT+CMGS and AT+CMGR in PDU mode (AT+CMGF=0).

Outgoing: SMS-SUBMIT, GSM 7-bit default alphabet (with the extension table) when every
character allows it, UCS-2 otherwise, concatenated with an 8-bit reference when one SMS is
not enough. Incoming: SMS-DELIVER from anyone, so every length is checked against the data
and anything malformed raises PduError rather than IndexError. The emulated modem uses the
reverse pair (encode_deliver, decode_submit) to fake the network side.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

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


# --- GSM 7-bit default alphabet (TS 23.038 §6.2.1) -------------------------------------------

_ESC = 0x1B
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}
# Character -> its septets: one from the basic table, or ESC + one from the extension table.
_GSM7_SEPTETS: dict[str, tuple[int, ...]] = {
    char: (code,) for code, char in enumerate(_GSM7_BASIC) if code != _ESC
}
_GSM7_SEPTETS.update({char: (_ESC, code) for code, char in _GSM7_EXTENSION.items()})

# Room for the text of one SMS, in septets (GSM 7-bit) or UTF-16 code units (UCS-2).
_SINGLE = {"gsm7": 160, "ucs2": 70}
# A concatenated part loses 6 octets to its header: 7 septets (with a fill bit), or 3 units.
_PART = {"gsm7": 153, "ucs2": 67}
# "…" is not in the GSM alphabet; "..." keeps a GSM text in GSM, which holds 2.3 times
# more text per part than switching the whole text to UCS-2 for one character would.
_ELLIPSIS = {"gsm7": "...", "ucs2": "…"}

_VALIDITY_4_DAYS = 0xAA  # TP-VP relative: (0xAA - 166) days
_NUMBER = re.compile(r"\+?[0-9]{1,20}")
_BCD_DIGITS = "0123456789*#abc"


def _is_gsm7(text: str) -> bool:
    return all(char in _GSM7_SEPTETS for char in text)


def _char_cost(char: str, encoding: str) -> int:
    if encoding == "gsm7":
        return len(_GSM7_SEPTETS[char])
    return 2 if ord(char) > 0xFFFF else 1  # a surrogate pair in UTF-16


def _gsm7_encode(text: str) -> list[int]:
    return [septet for char in text for septet in _GSM7_SEPTETS[char]]


def _gsm7_decode(septets: list[int]) -> str:
    chars = []
    escaped = False
    for septet in septets:
        if escaped:
            escaped = False
            if septet == _ESC:  # reserved for a further table: shown as a space (TS 23.038)
                chars.append(" ")
            else:  # an unknown extension shows the basic table's character (TS 23.038)
                chars.append(_GSM7_EXTENSION.get(septet, _GSM7_BASIC[septet]))
        elif septet == _ESC:
            escaped = True
        else:
            chars.append(_GSM7_BASIC[septet])
    return "".join(chars)


def _pack_septets(septets: list[int]) -> bytes:
    bits = 0
    for position, septet in enumerate(septets):
        bits |= septet << (7 * position)
    return bits.to_bytes((7 * len(septets) + 7) // 8, "little")


def _unpack_septets(data: bytes, count: int) -> list[int]:
    bits = int.from_bytes(data, "little")
    return [(bits >> (7 * position)) & 0x7F for position in range(count)]


def _septets_for_octets(octets: int) -> int:
    return (8 * octets + 6) // 7


# --- splitting --------------------------------------------------------------------------------


def split_text(text: str, max_parts: int = 4) -> tuple[str, list[str]]:
    """Choose the alphabet and cut ``text`` into the texts of the SMS that carry it.

    Returns ("gsm7" | "ucs2", parts). A character (an extension character's two septets,
    an emoji's surrogate pair) is never cut across parts. A text that needs more than
    ``max_parts`` parts is shortened at a character and ends in "…" (UCS-2) or "..." (GSM).
    """
    if max_parts < 1:
        raise PduError(f"max_parts must be at least 1, not {max_parts}")
    encoding = "gsm7" if _is_gsm7(text) else "ucs2"
    if encoding == "ucs2" and any("\ud800" <= char <= "\udfff" for char in text):
        raise PduError(f"text holds a lone UTF-16 surrogate: {text[:40]!r}")
    costs = [_char_cost(char, encoding) for char in text]
    if sum(costs) <= _SINGLE[encoding]:
        return encoding, [text]
    room = _SINGLE[encoding] if max_parts == 1 else _PART[encoding]
    parts = _pack(text, costs, room)
    if len(parts) > max_parts:
        parts = parts[:max_parts]
        parts[-1] = _shorten(parts[-1], room, encoding)
    return encoding, parts


def _pack(text: str, costs: list[int], room: int) -> list[str]:
    parts: list[str] = []
    start = used = 0
    for index, cost in enumerate(costs):
        if used + cost > room:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def _shorten(part: str, room: int, encoding: str) -> str:
    ellipsis = _ELLIPSIS[encoding]
    free = room - sum(_char_cost(char, encoding) for char in ellipsis)
    kept = []
    for char in part:
        free -= _char_cost(char, encoding)
        if free < 0:
            break
        kept.append(char)
    return "".join(kept) + ellipsis


# --- encoding ---------------------------------------------------------------------------------


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
            skip = _septets_for_octets(len(header))
            septets = [0] * skip + _gsm7_encode(part)
            packed = header + _pack_septets(septets)[len(header):]
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
    septets = _gsm7_encode(name) if _is_gsm7(name) else []
    if not 1 <= len(septets) <= 11:
        raise PduError(f"sender {name!r} is neither a phone number nor a name of "
                       "1 to 11 GSM septets")
    semi_octets = (7 * len(septets) + 3) // 4
    return bytes([semi_octets, 0xD0]) + _pack_septets(septets)


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


# --- decoding ---------------------------------------------------------------------------------


class _Reader:
    """Reads a PDU front to back; running out of data is a PduError naming the field."""

    def __init__(self, hex_pdu: str) -> None:
        if not isinstance(hex_pdu, str):
            raise PduError(f"a PDU is a hex string, not {type(hex_pdu).__name__}")
        try:
            self._data = bytes.fromhex(hex_pdu)
        except ValueError:
            raise PduError(f"PDU is not hexadecimal: {hex_pdu[:40]!r}") from None
        self._position = 0

    def take(self, count: int, field: str) -> bytes:
        end = self._position + count
        if end > len(self._data):
            raise PduError(f"PDU ends inside {field}: {count} octets needed at offset "
                           f"{self._position}, {len(self._data) - self._position} left")
        chunk = self._data[self._position:end]
        self._position = end
        return chunk

    def octet(self, field: str) -> int:
        return self.take(1, field)[0]


def decode_deliver(hex_pdu: str) -> Deliver:
    """Decode an SMS-DELIVER with its SCA prefix, as AT+CMGR / +CMT give it in PDU mode."""
    reader = _Reader(hex_pdu)
    _skip_sca(reader)
    first_octet = reader.octet("TP-MTI")
    if first_octet & 0x03 != 0x00:
        raise PduError(f"not an SMS-DELIVER: TP-MTI is {first_octet & 0x03}")
    sender, type_of_number = _read_address(reader, "TP-OA")
    reader.octet("TP-PID")
    dcs = reader.octet("TP-DCS")
    timestamp = _decode_timestamp(reader.take(7, "TP-SCTS"))
    text, concat = _read_user_data(reader, first_octet, dcs)
    return Deliver(sender=sender, text=text, timestamp=timestamp, concat=concat,
                   type_of_number=type_of_number)


def decode_submit(hex_pdu: str) -> tuple[str, str, tuple[int, int, int] | None]:
    """Decode an SMS-SUBMIT with its SCA prefix: (destination, text, concat)."""
    reader = _Reader(hex_pdu)
    _skip_sca(reader)
    first_octet = reader.octet("TP-MTI")
    if first_octet & 0x03 != 0x01:
        raise PduError(f"not an SMS-SUBMIT: TP-MTI is {first_octet & 0x03}")
    reader.octet("TP-MR")
    number, _ = _read_address(reader, "TP-DA")
    reader.octet("TP-PID")
    dcs = reader.octet("TP-DCS")
    validity_format = (first_octet >> 3) & 0x03  # none, enhanced, relative, absolute
    reader.take((0, 7, 1, 7)[validity_format], "TP-VP")
    text, concat = _read_user_data(reader, first_octet, dcs)
    return number, text, concat


def _skip_sca(reader: _Reader) -> None:
    length = reader.octet("SCA length")
    reader.take(length, "SCA")


def _read_address(reader: _Reader, field: str) -> tuple[str, int]:
    """(the address, its type of number)."""
    semi_octets = reader.octet(f"{field} length")
    type_of_address = reader.octet(f"{field} type")
    data = reader.take((semi_octets + 1) // 2, field)
    type_of_number = (type_of_address >> 4) & 0x07
    if type_of_number == TON_ALPHANUMERIC:
        return _decode_alphanumeric(data, semi_octets), type_of_number
    digits: list[str] = []
    for octet in data:
        for nibble in (octet & 0x0F, octet >> 4):
            if nibble == 0x0F or len(digits) == semi_octets:
                break
            digits.append(_BCD_DIGITS[nibble])
    number = "".join(digits)
    if type_of_number == TON_INTERNATIONAL and number:
        number = "+" + number
    return number, type_of_number


def _decode_alphanumeric(data: bytes, semi_octets: int) -> str:
    count = 4 * semi_octets // 7
    name = _gsm7_decode(_unpack_septets(data, count))
    # A length that counts the last octet whole gives one septet of zero padding: "@".
    if name.endswith("@") and (7 * (count - 1) + 7) // 8 == len(data):
        name = name[:-1]
    return name


def _decode_timestamp(scts: bytes) -> datetime | None:
    """TP-SCTS, or None when it is not a valid date: the message matters more than its time."""
    digits = [(octet & 0x0F, octet >> 4) for octet in scts]
    if any(tens > 9 or units > 9 for tens, units in digits[:6]):
        return None
    year, month, day, hour, minute, second = (tens * 10 + units for tens, units in digits[:6])
    zone_tens, zone_units = digits[6]
    if zone_units > 9:
        return None
    quarters = (zone_tens & 0x07) * 10 + zone_units
    sign = -1 if zone_tens & 0x08 else 1
    century = 1900 if year >= 69 else 2000  # the pivot of strptime's %y
    try:
        return datetime(century + year, month, day, hour, minute, second,
                        tzinfo=timezone(timedelta(minutes=sign * 15 * quarters)))
    except ValueError:
        return None


def _alphabet(dcs: int) -> str:
    """The alphabet of a TP-DCS (TS 23.038 §4); reserved codings count as GSM 7-bit."""
    group = dcs >> 4
    if group <= 0x07:  # general data coding, possibly marked for automatic deletion
        if dcs & 0x20:
            raise PduError(f"compressed user data (TP-DCS 0x{dcs:02X}) is not supported")
        return ("gsm7", "8bit", "ucs2", "gsm7")[(dcs >> 2) & 0x03]
    if group == 0x0E:  # message waiting indication, UCS-2 text
        return "ucs2"
    if group == 0x0F:  # data coding / message class
        return "8bit" if dcs & 0x04 else "gsm7"
    return "gsm7"


def _read_user_data(reader: _Reader, first_octet: int, dcs: int
                    ) -> tuple[str, tuple[int, int, int] | None]:
    alphabet = _alphabet(dcs)
    length = reader.octet("TP-UDL")
    limit = 160 if alphabet == "gsm7" else 140
    if length > limit:
        raise PduError(f"TP-UDL {length} exceeds the {limit} an SMS can hold")
    octets = (7 * length + 7) // 8 if alphabet == "gsm7" else length
    user_data = reader.take(octets, "TP-UD")
    header_octets = 0
    concat = None
    if first_octet & 0x40:
        if not user_data:
            raise PduError("TP-UDHI is set but the user data is empty")
        header_octets = 1 + user_data[0]
        if header_octets > len(user_data):
            raise PduError(f"user data header of {header_octets} octets is longer "
                           f"than the user data ({len(user_data)} octets)")
        concat = _concat_reference(user_data[1:header_octets])
    if alphabet == "gsm7":
        septets = _unpack_septets(user_data, length)
        return _gsm7_decode(septets[_septets_for_octets(header_octets):]), concat
    body = user_data[header_octets:]
    if alphabet == "8bit":
        return body.decode("latin-1"), concat  # one character per octet, nothing lost
    if len(body) % 2:
        raise PduError(f"UCS-2 text of odd length ({len(body)} octets)")
    return body.decode("utf-16-be", "replace"), concat


def _concat_reference(header: bytes) -> tuple[int, int, int] | None:
    """(reference, total, index) from IE 0x00 or 0x08 of a user data header."""
    concat = None
    position = 0
    while position < len(header):
        if position + 2 > len(header):
            raise PduError("user data header ends inside an information element")
        identifier, size = header[position], header[position + 1]
        value = header[position + 2:position + 2 + size]
        if len(value) < size:
            raise PduError(f"information element 0x{identifier:02X} of {size} octets "
                           "overruns the user data header")
        position += 2 + size
        if identifier == 0x00 and size == 3:
            reference, total, index = value
        elif identifier == 0x08 and size == 4:
            reference, total, index = value[0] << 8 | value[1], value[2], value[3]
        else:
            continue
        # TS 23.040 §9.2.3.24.1: a zero total or an index beyond it voids the element.
        if concat is None and 1 <= index <= total:
            concat = (reference, total, index)
    return concat


# --- reassembly -------------------------------------------------------------------------------


class Reassembler:
    """Collects the parts of concatenated messages until each is whole.

    Incomplete sets are dropped after ``max_age`` seconds, and beyond ``max_pending`` sets
    the oldest goes first, so a stranger sending first parts cannot fill the memory.
    ``now`` is any clock the caller uses consistently (time.monotonic()).
    """

    def __init__(self, max_age: float = 24 * 3600, max_pending: int = 64) -> None:
        self._max_age = max_age
        self._max_pending = max_pending
        # (sender, type of number, reference, total) -> (time of the first part, index -> part)
        self._pending: dict[tuple[str, int, int, int], tuple[float, dict[int, Deliver]]] = {}

    def add(self, part: Deliver, now: float) -> Deliver | None:
        """Return the whole message (concat None) once its last part is added, else None."""
        self._forget_older_than(now - self._max_age)
        if part.concat is None or part.concat[1] == 1:
            return dataclasses.replace(part, concat=None)
        reference, total, index = part.concat
        # A name and a number of the same characters are two senders.
        key = (part.sender, part.type_of_number, reference, total)
        if key not in self._pending:
            while len(self._pending) >= self._max_pending:
                del self._pending[next(iter(self._pending))]  # dicts keep insertion order
            self._pending[key] = (now, {})
        parts = self._pending[key][1]
        parts.setdefault(index, part)  # a repeated part changes nothing
        if len(parts) < total:
            return None
        del self._pending[key]
        ordered = [parts[i] for i in range(1, total + 1)]
        return dataclasses.replace(ordered[0], text="".join(p.text for p in ordered), concat=None)

    @property
    def pending(self) -> int:
        """How many incomplete messages are held."""
        return len(self._pending)

    def _forget_older_than(self, oldest: float) -> None:
        for key in [key for key, (first_seen, _) in self._pending.items() if first_seen < oldest]:
            del self._pending[key]
