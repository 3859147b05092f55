"""The AT command channel (3GPP TS 27.007 / 27.005) over a serial port.

The parts: channel.py (AtChannel: the port, its reader thread, one command at a time with
its deadline), lines.py (the byte stream cut into bounded lines), demux.py (each line sorted
into the pending command's response or a URC), errors.py (what a command fails with).
"""

from edge.modem.at.channel import AtChannel
from edge.modem.at.demux import MAX_RESPONSE_BYTES, Urc
from edge.modem.at.errors import AtError, AtTimeout, CmeError, CmsError, PortBusy, PortLost
from edge.modem.at.lines import MAX_LINE_BYTES, LineSplitter

__all__ = ["AtChannel", "AtError", "AtTimeout", "CmeError", "CmsError", "LineSplitter",
           "MAX_LINE_BYTES", "MAX_RESPONSE_BYTES", "PortBusy", "PortLost", "Urc"]
