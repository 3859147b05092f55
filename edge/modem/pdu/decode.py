"""Reading PDUs from anyone: every length is checked against the data, and anything
malformed raises PduError. SMS-DELIVER as AT+CMGR / +CMT give it; SMS-SUBMIT for the
emulated network side."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edge.modem.pdu.alphabet import gsm7_decode, septets_for_octets, unpack_septets
from edge.modem.pdu.message import TON_ALPHANUMERIC, TON_INTERNATIONAL, Deliver, PduError

_BCD_DIGITS = "0123456789*#abc"


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
    name = gsm7_decode(unpack_septets(data, count))
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
        septets = unpack_septets(user_data, length)
        return gsm7_decode(septets[septets_for_octets(header_octets):]), concat
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

