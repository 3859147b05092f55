"""The AT channel against the emulated modem, through a real pty opened by pyserial."""

import itertools
import os
import queue
import re
import select
import threading
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import ModemError
from edge.modem.at import (MAX_RESPONSE_BYTES, AtChannel, AtError, AtTimeout, CmeError,
                           CmsError, LineSplitter, PortLost, Urc)
from edge.modem.pdu import encode_submit


@pytest.fixture
def channel(emulator, urcs):
    with AtChannel(emulator.port, on_urc=urcs.put) as channel:
        yield channel


def next_urc(urcs: queue.Queue) -> Urc:
    return urcs.get(timeout=2)


def one_pdu(text="hello"):
    (pdu,) = encode_submit("+8613800138000", text, reference=1)
    return pdu


def test_echo_at_power_up_is_dropped(emulator, channel):
    assert emulator.echo  # the modem echoes, as after power-up
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    assert channel.command("ATI", timeout=2) == ["SIMCOM INCORPORATED", "SIM7600E-H",
                                                 "Revision: emulated"]


def test_urc_in_the_middle_of_a_response_goes_to_the_callback(emulator, channel, urcs):
    emulator.urc_in_next_response('+CMTI: "SM",3')
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    assert next_urc(urcs) == Urc('+CMTI: "SM",3')
    assert urcs.empty()


def test_registration_urc_is_told_from_the_answer_to_creg(emulator, channel, urcs):
    emulator.urc_in_next_response("+CREG: 1")
    emulator.urc_in_next_response('+CREG: 5,"00C3","0010",7')
    assert channel.command("AT+CREG?", timeout=2) == ["+CREG: 0,1"]
    assert next_urc(urcs) == Urc("+CREG: 1")
    assert next_urc(urcs) == Urc('+CREG: 5,"00C3","0010",7')


def test_two_line_cmt_urc_keeps_its_pdu(emulator, channel, urcs):
    emulator.inject(b"\r\n+CMT: ,24\r\n07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07\r\n")
    urc = next_urc(urcs)
    assert urc.line == "+CMT: ,24"
    assert urc.pdu.startswith("07911326")


def test_slow_prompt_within_its_deadline_sends(emulator, channel):
    emulator.prompt_delay = 0.3
    pdu = one_pdu()
    lines = channel.command(f"AT+CMGS={pdu.tpdu_length}", timeout=2, prompt_data=pdu.hex,
                            prompt_timeout=2)
    assert lines == ["+CMGS: 1"]
    assert emulator.wait_sent(1, timeout=5)[0].text == "hello"


def test_prompt_beyond_its_deadline_is_aborted_with_esc(emulator, channel):
    emulator.prompt_delay = 0.5
    pdu = one_pdu()
    started = time.monotonic()
    with pytest.raises(AtTimeout, match="prompt"):
        channel.command(f"AT+CMGS={pdu.tpdu_length}", timeout=2, prompt_data=pdu.hex,
                        prompt_timeout=0.2)
    assert time.monotonic() - started < 2
    emulator.prompt_delay = 0
    # The channel is in step again: the OK acknowledging the ESC was not taken as this one's.
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    assert emulator.commands[-2:] == ["<ESC>", "AT+CSQ"]
    assert emulator.sent == []
    assert channel.command(f"AT+CMGS={pdu.tpdu_length}", timeout=2,
                           prompt_data=pdu.hex) == ["+CMGS: 1"]


def test_cms_error_after_the_pdu(emulator, channel):
    emulator.fail_next_sends(38)  # network out of order
    pdu = one_pdu()
    with pytest.raises(CmsError) as error:
        channel.command(f"AT+CMGS={pdu.tpdu_length}", timeout=2, prompt_data=pdu.hex)
    assert error.value.code == 38
    assert isinstance(error.value, ModemError) and isinstance(error.value, OSError)


def test_cms_error_instead_of_the_prompt(emulator, channel):
    emulator.fail_next_sends(515)
    pdu = one_pdu()
    with pytest.raises(CmsError) as error:
        channel.command(f"AT+CMGS={pdu.tpdu_length}", timeout=2, prompt_data=pdu.hex,
                        prompt_timeout=2)
    assert error.value.code == 515


def test_wrong_pdu_length_is_refused_with_304(emulator, channel):
    pdu = one_pdu()
    with pytest.raises(CmsError) as error:
        channel.command(f"AT+CMGS={pdu.tpdu_length + 1}", timeout=2, prompt_data=pdu.hex)
    assert error.value.code == 304
    assert emulator.sent == []


def test_error_results(channel):
    with pytest.raises(AtError):
        channel.command("AT+NOSUCHTHING", timeout=2)
    channel.command("AT+CMEE=1", timeout=2)
    with pytest.raises(CmeError) as error:
        channel.command('AT+CPIN="1234"', timeout=2)  # no PIN is asked
    assert error.value.code == 3


def test_silence_times_out_at_the_deadline(emulator, channel):
    emulator.silent = True
    started = time.monotonic()
    with pytest.raises(AtTimeout):
        channel.command("AT", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3.0  # the deadline, not the next command's
    emulator.silent = False
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]


def test_garbage_on_the_line_does_not_kill_the_reader(emulator, channel):
    emulator.inject(b"\xff\xfe\x00\x00\x80\r\n\xc3\x28\x00garbage\x1b\r\n\x00\x00OK\r\n")
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    emulator.urc_in_next_response("\x00\x00")
    assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]


def test_unplugged_port_raises_port_lost(emulator, channel):
    emulator.unplug()
    with pytest.raises(PortLost):
        channel.command("AT", timeout=2)
    assert channel.lost


def test_a_command_on_a_channel_never_opened_raises_port_lost(emulator):
    with pytest.raises(PortLost, match="not open"):  # not an AttributeError of None
        AtChannel(emulator.port).command("AT", timeout=2)


def test_spy_url_logs_the_traffic(emulator, tmp_path):
    log_file = tmp_path / "traffic.txt"
    with AtChannel(f"spy://{emulator.port}?file={log_file}") as channel:
        assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    assert "41 54 2B 43 53 51 0D" in log_file.read_text()  # hex dump of AT+CSQ<CR>


# -- bounded input -----------------------------------------------------------------------

# Pieces of what a modem says, and of what line noise says, for the fuzz tests.
MODEM_BYTES = st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"OK", b"ERROR", b"+CME ERROR: 10", b"> ", b">",
                     b"+CMT: ,24", b"+CDS: 25", b'+CMTI: "SM",3', b"+CREG: 1", b"+CSQ: 1,1",
                     b"RING", b"\x1a", b"\x1b", b"\x00", b"\xff\xfe", b"x" * 300]),
), max_size=40).map(b"".join)


def test_a_modem_streaming_without_line_ends_costs_no_memory(emulator, channel):
    stream = b"x" * (4 * 1024 * 1024)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        emulator.stream(stream)
        # The command's echo ends the endless line: the answer after it is read as ever.
        assert channel.command("AT+CSQ", timeout=10) == ["+CSQ: 20,99"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - baseline < 512 * 1024  # the stream was 4 MiB
    assert channel.dropped_lines == 1


def test_the_modems_answer_waits_behind_output_the_driver_has_not_read_yet(emulator,
                                                                            wait_until):
    """The moment a slow driver (a loaded machine) meets a long stream: the line is full
    as the command arrives, and the answer still comes once the driver reads on."""
    line = os.open(emulator.port, os.O_RDWR | os.O_NOCTTY)
    try:
        for _ in range(2):  # the second fills what the kernel moved on after the first
            emulator.inject(b"x" * (1024 * 1024))  # what the tty cannot hold is dropped
            time.sleep(0.1)
        os.write(line, b"AT+CSQ\r")
        wait_until(lambda: "AT+CSQ" in emulator.commands, 5)
        time.sleep(0.2)  # the answer meets a full line
        received = b""
        deadline = time.monotonic() + 10
        while b"OK\r\n" not in received and time.monotonic() < deadline:
            if select.select([line], [], [], 0.1)[0]:
                received = (received + os.read(line, 65536))[-1024:]
        assert received.endswith(b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    finally:
        os.close(line)


def test_a_response_that_does_not_end_is_cut_to_its_bound(emulator, channel, wait_until):
    emulator.response_delay = 2  # our own answer comes first, its own later (dropped)
    answer = {}
    command = threading.Thread(
        target=lambda: answer.update(lines=channel.command("AT+CSQ", timeout=30)))
    command.start()
    wait_until(lambda: "AT+CSQ" in emulator.commands, 5)
    emulator.stream(b"+CSQ: 1,1\r\n" * 100_000 + b"OK\r\n")
    command.join(30)
    lines = answer["lines"]
    assert lines[0] == "+CSQ: 1,1"
    assert sum(len(line) for line in lines) <= MAX_RESPONSE_BYTES


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(MODEM_BYTES, max_size=8), max_bytes=st.integers(1, 64))
def test_line_splitter_keeps_every_line_within_its_bound(chunks, max_bytes):
    splitter = LineSplitter(max_bytes)
    lines = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
        assert len(splitter.unfinished) <= max_bytes
    *ended, unfinished = re.split(rb"[\r\n]", b"".join(chunks))
    assert lines == [line for line in ended if len(line) <= max_bytes]
    assert splitter.unfinished == (unfinished if len(unfinished) <= max_bytes else b"")
    assert splitter.dropped == sum(len(line) > max_bytes for line in [*ended, unfinished])


def test_any_bytes_from_the_modem_leave_the_channel_in_step(emulator, channel, urcs):
    sentinels = itertools.count()

    @settings(max_examples=75, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(noise=MODEM_BYTES)
    def noise_then_a_command(noise):
        # A URC after the noise tells when the reader has taken all of it.
        sentinel = f"+CIEV: sentinel {next(sentinels)}"
        emulator.stream(noise + f"\r\n{sentinel}\r\n".encode())
        while sentinel not in (urc := urcs.get(timeout=5)).line + (urc.pdu or ""):
            pass
        assert channel.command("AT+CSQ", timeout=5) == ["+CSQ: 20,99"]

    noise_then_a_command()
