"""The SMS PDU codec, checked against Gammu's independent encoder and decoder.

Two quirks of python-gammu 3.x, worked around here and nowhere else:
- DecodePDU's Text of a GSM 7-bit message with extension characters carries one junk
  character per escape after a NUL (it sizes the string by septets): cut at the NUL.
- EncodePDU(sms, "Deliver") lays out an SMS-DELIVER but writes TP-MTI 01 (SUBMIT) into the
  first octet: clear those two bits to get the DELIVER it meant.
- DecodePDU doubles a "~" in UCS-2 text (its own escape character) and drops the last
  character to keep the length: the random texts leave "~" out; GSM's "~" reads fine.
"""

import random
from datetime import datetime, timedelta, timezone

import gammu
import pytest

from edge.errors import EdgeAlarmError
from edge.modem.pdu import (
    Deliver,
    PduError,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    TON_UNKNOWN,
    Reassembler,
    SubmitPdu,
    decode_deliver,
    decode_submit,
    encode_deliver,
    encode_submit,
    split_text,
)

PRINCIPAL = "+8613800138000"
ALERT = "【高山小学】紧急报警：门卫室一键报警 于 07:42:15 触发。回复 SILENCE 解除。"
CHINA = timezone(timedelta(hours=8))
EMOJI = "😀"  # outside the BMP: a surrogate pair in UTF-16


def gammu_parts(hexes: list[str]) -> list[dict]:
    return [gammu.DecodePDU(bytes.fromhex(h), True) for h in hexes]


def gammu_text(hexes: list[str]) -> str:
    """The whole text as Gammu reads it: one part alone, several linked and decoded."""
    parts = gammu_parts(hexes)
    if len(parts) == 1:
        return parts[0]["Text"].split("\x00", 1)[0]
    random.Random(len(hexes)).shuffle(parts)  # Gammu must order them by their headers
    linked = gammu.LinkSMS([[part] for part in parts])
    assert len(linked) == 1, "Gammu did not link the parts into one message"
    return gammu.DecodeSMS(linked[0])["Entries"][0]["Buffer"]


def sent(number: str, text: str, **options) -> tuple[list[SubmitPdu], str]:
    """Encode, check every PDU's framing, and return the PDUs and Gammu's reading."""
    pdus = encode_submit(number, text, reference=options.pop("reference", 42), **options)
    for pdu in pdus:
        raw = bytes.fromhex(pdu.hex)
        assert pdu.hex == pdu.hex.upper()
        assert pdu.tpdu_length == len(raw) - 1 - raw[0]
    return pdus, gammu_text([p.hex for p in pdus])


def gammu_deliver(**fields) -> str:
    sms = {"SMSC": {"Location": 0, "Number": "+8613800100500"}, "Folder": 0, "Location": 0,
           "State": "UnRead", "Class": -1, "DateTime": datetime(2024, 5, 1, 7, 42, 15),
           "Coding": "Default_No_Compression", **fields}
    pdu = bytearray(gammu.EncodePDU(sms, "Deliver"))
    pdu[1 + pdu[0]] &= ~0x03
    return pdu.hex()


def gammu_long_delivers(text: str, entry: str, unicode: bool, sender: str) -> list[str]:
    messages = gammu.EncodeSMS({"Class": -1, "Unicode": unicode,
                                "Entries": [{"ID": entry, "Buffer": text}]})
    return [gammu_deliver(**{**m, "Number": sender, "DateTime": datetime(2024, 5, 1, 7, 42, 15)})
            for m in messages]


# --- SMS-SUBMIT, read back by Gammu -------------------------------------------------------------


def test_ascii_text_goes_as_one_gsm7_sms():
    pdus, text = sent(PRINCIPAL, "Gate open after hours 22:10. Reply SILENCE")
    assert len(pdus) == 1 and text == "Gate open after hours 22:10. Reply SILENCE"
    part = gammu_parts([pdus[0].hex])[0]
    assert (part["Number"], part["Coding"], part["UDH"]["Type"]) == (
        PRINCIPAL, "Default_No_Compression", "NoUDH")
    assert part["SMSC"]["Validity"] == "4D"
    assert pdus[0].hex.startswith("00")  # the SIM's own service centre
    assert decode_submit(pdus[0].hex) == (PRINCIPAL, text, None)


def test_extension_characters_take_two_septets_each():
    message = "a{b}c[d]e~f\\g^h|i€j\fk"
    assert split_text(message) == ("gsm7", [message])
    pdus, text = sent(PRINCIPAL, message)
    assert text == message
    assert gammu_parts([pdus[0].hex])[0]["Length"] == len(message) + 10
    assert decode_submit(pdus[0].hex)[1] == message


def test_whole_gsm7_basic_table_survives():
    message = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
               "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
    encoding, _ = split_text(message)
    assert encoding == "gsm7"
    pdus, text = sent(PRINCIPAL, message)
    assert text == message
    assert "".join(decode_submit(p.hex)[1] for p in pdus) == message


def test_chinese_alert_goes_as_one_ucs2_sms():
    pdus, text = sent(PRINCIPAL, ALERT)
    assert len(pdus) == 1 and text == ALERT
    assert gammu_parts([pdus[0].hex])[0]["Coding"] == "Unicode_No_Compression"


def test_150_chinese_characters_make_three_parts_that_gammu_reassembles():
    message = ("门卫室一键报警触发请立即处理" * 11)[:150]
    pdus, text = sent(PRINCIPAL, message, reference=200)
    assert len(pdus) == 3
    assert text == message
    headers = [part["UDH"] for part in gammu_parts([p.hex for p in pdus])]
    assert [(h["ID8bit"], h["AllParts"], h["PartNumber"]) for h in headers] == [
        (200, 3, 1), (200, 3, 2), (200, 3, 3)]
    assert [decode_submit(p.hex)[2] for p in pdus] == [(200, 3, 1), (200, 3, 2), (200, 3, 3)]


def test_domestic_and_international_numbers():
    domestic, _ = sent("13800138000", "hi")
    international, _ = sent(PRINCIPAL, "hi")
    assert "0B813108108300F0" in domestic[0].hex  # 11 digits, unknown TON, F-padded
    assert "0D91683108108300F0" in international[0].hex
    assert gammu_parts([domestic[0].hex])[0]["Number"] == "13800138000"
    assert decode_submit(domestic[0].hex)[0] == "13800138000"
    assert gammu_parts([international[0].hex])[0]["Number"] == PRINCIPAL


def test_explicit_service_centre_is_not_counted_in_tpdu_length():
    pdus, _ = sent(PRINCIPAL, "hi", smsc="+8613800100500")
    assert pdus[0].hex.startswith("0891683108100005F0")
    assert pdus[0].tpdu_length == len(bytes.fromhex(pdus[0].hex)) - 9
    assert gammu_parts([pdus[0].hex])[0]["SMSC"]["Number"] == "+8613800100500"


@pytest.mark.parametrize("number", ["", "+", "+86 138 0013 8000", "138-0013", "abc", "1" * 21])
def test_bad_numbers_are_refused(number):
    with pytest.raises(PduError, match="not a phone number"):
        encode_submit(number, "hi", reference=1)


@pytest.mark.parametrize("reference", [-1, 256])
def test_reference_out_of_range_is_refused(reference):
    with pytest.raises(PduError, match="0..255"):
        encode_submit(PRINCIPAL, "hi", reference=reference)


# --- limits and part boundaries -----------------------------------------------------------------


@pytest.mark.parametrize("message, parts", [
    ("a" * 160, 1), ("a" * 161, 2), ("a" * 158 + "€", 1), ("a" * 159 + "€", 2),
    ("中" * 70, 1), ("中" * 71, 2), ("中" * 68 + EMOJI, 1), ("中" * 69 + EMOJI, 2),
    ("a" * 306, 2), ("a" * 307, 3), ("中" * 134, 2), ("中" * 135, 3),
])
def test_single_and_concatenated_limits(message, parts):
    pdus, text = sent(PRINCIPAL, message)
    assert len(pdus) == parts
    assert text == message


def test_escape_sequence_is_never_split_across_parts():
    message = "a" * 152 + "€" + "b" * 10
    assert split_text(message) == ("gsm7", ["a" * 152, "€" + "b" * 10])
    pdus, text = sent(PRINCIPAL, message)
    assert text == message
    assert decode_submit(pdus[1].hex)[1].startswith("€")


@pytest.mark.parametrize("shift", range(2))
def test_emoji_at_every_part_boundary_stays_whole(shift):
    # With either shift, every boundary of 67 units falls inside some surrogate pair.
    message = "中" * shift + EMOJI * 100
    encoding, parts = split_text(message)
    assert encoding == "ucs2" and "".join(parts) == message
    for part in parts:
        assert len(part.encode("utf-16-be")) // 2 <= 67
        part.encode("utf-8")  # raises on a lone surrogate
    pdus, text = sent(PRINCIPAL, message)
    assert text == message
    assert "".join(decode_submit(p.hex)[1] for p in pdus) == message


def test_emoji_at_each_offset_around_the_first_boundary():
    for offset in range(60, 72):
        message = "中" * offset + EMOJI + "中" * 10
        _, parts = split_text(message)
        assert "".join(parts) == message
        assert all(EMOJI in part or "\ud83d" not in part for part in parts)
        _, text = sent(PRINCIPAL, message)
        assert text == message, offset


def test_too_long_ucs2_text_is_shortened_with_an_ellipsis():
    pdus, text = sent(PRINCIPAL, "中" * 300)
    assert len(pdus) == 4
    assert text == "中" * 267 + "…"


def test_too_long_gsm7_text_stays_gsm7_with_three_dots():
    encoding, parts = split_text("a" * 700)
    assert encoding == "gsm7"
    assert "".join(parts) == "a" * 609 + "..."
    _, text = sent(PRINCIPAL, "a" * 700)
    assert text == "a" * 609 + "..."


def test_shortening_respects_escapes_and_surrogates():
    _, parts = split_text("€" * 400, max_parts=2)
    assert "".join(parts) == "€" * 151 + "..."  # 76 + 75 characters; never half an escape
    _, parts = split_text(EMOJI * 200, max_parts=2)
    assert "".join(parts) == EMOJI * 66 + "…"  # 33 + 32 + the ellipsis's unit


def test_max_parts_one_gives_a_single_sms_without_header():
    pdus, text = sent(PRINCIPAL, "a" * 200, max_parts=1)
    assert len(pdus) == 1 and text == "a" * 157 + "..."
    assert gammu_parts([pdus[0].hex])[0]["UDH"]["Type"] == "NoUDH"
    with pytest.raises(PduError, match="max_parts"):
        split_text("a", max_parts=0)


def test_lone_surrogate_is_refused():
    with pytest.raises(PduError, match="surrogate"):
        encode_submit(PRINCIPAL, "报警\ud83d", reference=1)


def test_random_texts_round_trip_through_gammu():
    rng = random.Random(7)
    alphabet = "abcXYZ 019.,@£Ä€{}[]^|\\\n" + "中文报警【】：" + EMOJI + "👍🏽"
    for _ in range(60):
        message = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        encoding, parts = split_text(message)
        expected = "".join(parts)
        if expected != message:
            ellipsis = "..." if encoding == "gsm7" else "…"
            assert len(parts) == 4 and expected.endswith(ellipsis)
            assert message.startswith(expected[:-len(ellipsis)])
        pdus, text = sent(PRINCIPAL, message, reference=rng.randint(0, 255))
        assert text == expected
        assert "".join(decode_submit(p.hex)[1] for p in pdus) == expected


# --- SMS-DELIVER --------------------------------------------------------------------------------


@pytest.mark.parametrize("sender, message, stamp, type_of_number", [
    (PRINCIPAL, "SILENCE", datetime(2024, 5, 1, 7, 42, 15, tzinfo=CHINA), TON_INTERNATIONAL),
    ("13800138000", "状态", datetime(2024, 12, 31, 23, 59, 59, tzinfo=CHINA), TON_UNKNOWN),
    ("10086", "a{b}€", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=3, minutes=30))), TON_UNKNOWN),
    ("Gammu", "hello" + EMOJI, datetime(2024, 5, 1, 7, 42, 15, tzinfo=timezone(timedelta(hours=5, minutes=45))), TON_ALPHANUMERIC),
    ("SchoolAlarm", "x", datetime(2024, 5, 1, 7, 42, 15, tzinfo=timezone.utc), TON_ALPHANUMERIC),
])
def test_deliver_round_trip(sender, message, stamp, type_of_number):
    [pdu] = encode_deliver(sender, message, stamp)
    assert decode_deliver(pdu) == Deliver(sender, message, stamp, None,
                                          type_of_number=type_of_number)
    [theirs] = gammu_parts([pdu])
    assert (theirs["Number"], theirs["Type"]) == (sender, "Deliver")
    assert theirs["DateTime"] == stamp
    assert gammu_text([pdu]) == message


def test_long_deliver_reassembles_out_of_order():
    message = ALERT * 4
    pdus = encode_deliver(PRINCIPAL, message, datetime(2024, 5, 1, 7, 42, 15, tzinfo=CHINA),
                          reference=9, smsc="+8613800100500")
    assert len(pdus) == 3 and gammu_text(pdus) == message
    parts = [decode_deliver(pdu) for pdu in pdus]
    assert [p.concat for p in parts] == [(9, 3, 1), (9, 3, 2), (9, 3, 3)]
    reassembler = Reassembler()
    assert reassembler.add(parts[2], now=0) is None
    assert reassembler.add(parts[0], now=1) is None
    assert reassembler.add(parts[0], now=2) is None  # a repeat changes nothing
    whole = reassembler.add(parts[1], now=3)
    assert whole == Deliver(PRINCIPAL, message, parts[0].timestamp, None,
                            type_of_number=TON_INTERNATIONAL)
    assert reassembler.pending == 0


def test_a_name_that_reads_like_a_number_stays_a_name_through_reassembly():
    stamp = datetime(2024, 5, 1, tzinfo=CHINA)
    named = [decode_deliver(p) for p in encode_deliver("13800138000", "解" * 100, stamp,
                                                        reference=3, alphanumeric=True)]
    numbered = [decode_deliver(p) for p in encode_deliver("13800138000", "除" * 100, stamp,
                                                           reference=3)]
    assert {p.type_of_number for p in named} == {TON_ALPHANUMERIC}
    assert {p.type_of_number for p in numbered} == {TON_UNKNOWN}
    reassembler = Reassembler()
    for part in (named[0], numbered[0]):
        assert reassembler.add(part, now=0) is None
    whole = reassembler.add(named[1], now=0)  # never joined with the number's first part
    assert (whole.sender, whole.text, whole.type_of_number) == (
        "13800138000", "解" * 100, TON_ALPHANUMERIC)
    assert reassembler.add(numbered[1], now=0).type_of_number == TON_UNKNOWN


def test_reassembler_keeps_senders_and_references_apart():
    stamp = datetime(2024, 5, 1, tzinfo=CHINA)
    reassembler = Reassembler()
    a1, a2 = (decode_deliver(p) for p in encode_deliver("10086", "中" * 100, stamp, reference=5))
    b1, b2 = (decode_deliver(p) for p in encode_deliver("10010", "文" * 100, stamp, reference=5))
    c1, c2 = (decode_deliver(p) for p in encode_deliver("10086", "字" * 100, stamp, reference=6))
    for part in (a1, b1, c1):
        assert reassembler.add(part, now=0) is None
    assert reassembler.add(b2, now=0).text == "文" * 100
    assert reassembler.add(c2, now=0).text == "字" * 100
    assert reassembler.add(a2, now=0).text == "中" * 100
    single = decode_deliver(encode_deliver("10086", "STATUS", stamp)[0])
    assert reassembler.add(single, now=0) == single


def test_reassembler_forgets_old_and_excess_incomplete_messages():
    stamp = datetime(2024, 5, 1, tzinfo=CHINA)
    first, second = (decode_deliver(p) for p in encode_deliver("10086", "a" * 200, stamp, reference=1))
    reassembler = Reassembler(max_age=3600, max_pending=3)
    reassembler.add(first, now=0)
    assert reassembler.add(second, now=3601) is None  # the first part was dropped
    assert reassembler.pending == 1
    for reference in range(10):
        part = decode_deliver(encode_deliver("6666", "b" * 200, stamp, reference=reference)[0])
        reassembler.add(part, now=3602)
    assert reassembler.pending == 3
    last = decode_deliver(encode_deliver("6666", "b" * 200, stamp, reference=9)[1])
    assert reassembler.add(last, now=3603).text == "b" * 200  # the newest sets were kept


def test_alphanumeric_sender_length_counted_in_whole_octets():
    [pdu] = encode_deliver("ABCDEFG", "hi", datetime(2024, 5, 1, tzinfo=CHINA))
    assert "0DD0" in pdu  # 7 septets fill 13 semi-octets
    assert decode_deliver(pdu.replace("0DD0", "0ED0", 1)).sender == "ABCDEFG"  # not "ABCDEFG@"


@pytest.mark.parametrize("sender, stamp, message", [
    ("报警中心", datetime(2024, 5, 1, tzinfo=CHINA), "neither a phone number nor a name"),
    ("TwelveChars!", datetime(2024, 5, 1, tzinfo=CHINA), "neither a phone number nor a name"),
    ("10086", datetime(2024, 5, 1), "no time zone"),
    ("10086", datetime(2024, 5, 1, tzinfo=timezone(timedelta(minutes=7))), "TP-SCTS"),
    ("10086", datetime(2099, 5, 1, tzinfo=CHINA), "TP-SCTS"),
])
def test_deliver_that_cannot_be_encoded_is_refused(sender, stamp, message):
    with pytest.raises(PduError, match=message):
        encode_deliver(sender, "hi", stamp)


# --- SMS-DELIVER made elsewhere -------------------------------------------------------------


def test_classic_deliver_pdus():
    how = decode_deliver("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07")
    assert (how.sender, how.text, how.concat) == ("+31641600986", "How are you?", None)
    assert how.timestamp == datetime(2002, 8, 26, 19, 37, 41, tzinfo=timezone.utc)
    hello = decode_deliver("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    assert (hello.sender, hello.text) == ("27838890001", "hellohello")
    assert hello.timestamp == datetime(1999, 3, 29, 15, 16, 59, tzinfo=timezone(timedelta(hours=2)))


def test_gammu_made_single_delivers():
    alnum = decode_deliver(gammu_deliver(Number="Gammu", Text="hello"))
    assert (alnum.sender, alnum.text) == ("Gammu", "hello")
    assert alnum.timestamp == datetime(2024, 5, 1, 7, 42, 15, tzinfo=timezone.utc)
    short = decode_deliver(gammu_deliver(Number="10086", Text="你好" + EMOJI,
                                         Coding="Unicode_No_Compression"))
    assert (short.sender, short.text) == ("10086", "你好" + EMOJI)


@pytest.mark.parametrize("entry, unicode, message", [
    ("ConcatenatedTextLong", False, "{hi} " * 70),  # 8-bit reference, 1 fill bit
    ("ConcatenatedTextLong16bit", False, "[x]~" * 90),  # 16-bit reference, no fill bit
    ("ConcatenatedTextLong", True, ALERT * 4),
    ("ConcatenatedTextLong16bit", True, ("报警" + EMOJI) * 40),
])
def test_gammu_made_concatenated_delivers(entry, unicode, message):
    pdus = gammu_long_delivers(message, entry, unicode, PRINCIPAL)
    parts = [decode_deliver(pdu) for pdu in pdus]
    theirs = [p["UDH"] for p in gammu_parts(pdus)]
    reference = max(theirs[0]["ID8bit"], theirs[0]["ID16bit"])
    assert [p.concat for p in parts] == [(reference, len(pdus), i + 1) for i in range(len(pdus))]
    reassembler = Reassembler()
    results = [reassembler.add(part, now=0) for part in reversed(parts)]
    assert results[-1].text == message and results[-1].sender == PRINCIPAL


def test_hand_made_codings():
    head = "00" + "04" + "0B813108108300F0" + "00"  # no SCA, DELIVER, domestic sender, PID
    stamp = "42501070245123"  # 2024-05-01 07:42:15 +08:00
    assert decode_deliver(head + "04" + stamp + "03414243").text == "ABC"  # 8-bit data
    assert decode_deliver(head + "F4" + stamp + "03414243").text == "ABC"  # class 0, 8-bit
    assert decode_deliver(head + "10" + stamp + "0341E110").text == "ABC"  # class 0 flash, GSM
    assert decode_deliver(head + "18" + stamp + "04" + "4E2D6587").text == "中文"
    assert decode_deliver(head + "E0" + stamp + "04" + "4E2D6587").text == "中文"  # MWI UCS-2
    assert decode_deliver(head + "00" + stamp + "02" + "9B0D").text == " "  # ESC ESC
    assert decode_deliver(head + "00" + stamp + "02" + "9B20").text == "A"  # unknown extension
    negative = decode_deliver(head + "00" + stamp[:-2] + "2B" + "00")
    assert negative.timestamp.utcoffset() == -timedelta(hours=8)
    assert decode_deliver(head + "00" + "FF" * 7 + "00").timestamp is None
    assert decode_deliver(head + "00" + "42" + "31" * 6 + "00").timestamp is None  # 13th month


# --- malformed input ----------------------------------------------------------------------------

VALID = encode_deliver(PRINCIPAL, "中" * 80, datetime(2024, 5, 1, tzinfo=CHINA),
                       reference=3, smsc="+8613800100500")[0]
HEAD = "00" + "04" + "0B813108108300F0" + "00"
STAMP = "42501070245123"


@pytest.mark.parametrize("pdu, message", [
    ("", "ends inside"),
    ("zz", "not hexadecimal"),
    ("0", "not hexadecimal"),
    (encode_submit(PRINCIPAL, "hi", reference=1)[0].hex, "not an SMS-DELIVER"),
    (HEAD + "00" + STAMP + "05C8", "ends inside TP-UD"),
    (HEAD + "00" + STAMP + "A1" + "00" * 141, "exceeds"),
    (HEAD + "08" + STAMP + "8D" + "00" * 141, "exceeds"),
    (HEAD + "08" + STAMP + "03" + "4E2D65", "odd length"),
    (HEAD + "20" + STAMP + "00", "compressed"),
    (HEAD.replace("04", "44", 1) + "08" + STAMP + "00", "UDHI"),
    (HEAD.replace("04", "44", 1) + "08" + STAMP + "04" + "08000304", "header"),
    (HEAD.replace("04", "44", 1) + "08" + STAMP + "04" + "03000501", "overruns"),
    (HEAD.replace("04", "44", 1) + "08" + STAMP + "04" + "030100" + "41", "information element"),
])
def test_malformed_delivers_raise_pdu_error(pdu, message):
    with pytest.raises(PduError, match=message):
        decode_deliver(pdu)


def test_pdu_error_is_an_edge_alarm_value_error():
    assert issubclass(PduError, EdgeAlarmError) and issubclass(PduError, ValueError)
    with pytest.raises(PduError, match="hex string"):
        decode_deliver(bytes.fromhex(VALID))


def test_every_truncation_raises_pdu_error():
    for end in range(0, len(VALID), 2):
        with pytest.raises(PduError):
            decode_deliver(VALID[:end])
    submit = encode_submit(PRINCIPAL, "a" * 200, reference=1)[0].hex
    for end in range(0, len(submit), 2):
        with pytest.raises(PduError):
            decode_submit(submit[:end])


def test_a_decoded_submit_must_be_a_submit():
    with pytest.raises(PduError, match="not an SMS-SUBMIT"):
        decode_submit(VALID)


def test_invalid_concat_element_is_ignored():
    udh = "050003" + "07" + "02" + "03"  # index 3 of 2: void by TS 23.040
    pdu = HEAD.replace("04", "44", 1) + "08" + STAMP + "08" + udh + "4E2D"
    assert decode_deliver(pdu).concat is None and decode_deliver(pdu).text == "中"


def test_fuzzed_input_raises_only_pdu_error():
    rng = random.Random(20240501)
    seeds = [bytes.fromhex(VALID), bytes.fromhex(encode_submit(PRINCIPAL, "{x} " * 60, reference=2)[0].hex),
             bytes.fromhex(gammu_deliver(Number="Gammu", Text="hello"))]
    outcomes = {"decoded": 0, "refused": 0}
    for round_ in range(4000):
        if round_ % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[:rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data)
        for decode in (decode_deliver, decode_submit):
            try:
                decode(data.hex())
                outcomes["decoded"] += 1
            except PduError:
                outcomes["refused"] += 1
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 100
