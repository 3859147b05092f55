"""SMS PDU codec (3GPP TS 23.040 / TS 23.038) for AT+CMGS and AT+CMGR in PDU mode (AT+CMGF=0).

Outgoing: SMS-SUBMIT, GSM 7-bit default alphabet (with the extension table) when every
character allows it, UCS-2 otherwise, concatenated with an 8-bit reference when one SMS is
not enough. Incoming: SMS-DELIVER from anyone, so every length is checked against the data
and anything malformed raises PduError rather than IndexError. The emulated modem uses the
reverse pair (encode_deliver, decode_submit) to fake the network side.

The parts: message.py (the types and PduError), alphabet.py (GSM 7-bit and UCS-2, cutting
a text into parts), encode.py (SMS-SUBMIT, and SMS-DELIVER for the emulator), decode.py
(SMS-DELIVER, and SMS-SUBMIT for the emulator), reassembly.py (concatenated messages).
"""

from edge.modem.pdu.alphabet import split_text
from edge.modem.pdu.decode import decode_deliver, decode_submit
from edge.modem.pdu.encode import encode_deliver, encode_submit
from edge.modem.pdu.message import (TON_ALPHANUMERIC, TON_INTERNATIONAL, TON_NATIONAL,
                                    TON_UNKNOWN, Deliver, PduError, SubmitPdu)
from edge.modem.pdu.reassembly import Reassembler

__all__ = ["Deliver", "PduError", "Reassembler", "SubmitPdu", "TON_ALPHANUMERIC",
           "TON_INTERNATIONAL", "TON_NATIONAL", "TON_UNKNOWN", "decode_deliver",
           "decode_submit", "encode_deliver", "encode_submit", "split_text"]
