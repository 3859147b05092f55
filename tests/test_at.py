"""The AT channel against the emulated modem, through a real pty opened by pyserial."""

import queue
import time

import pytest

from edge.errors import ModemError
from edge.modem.at import AtChannel, AtError, AtTimeout, CmeError, CmsError, PortLost, Urc
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


def test_spy_url_logs_the_traffic(emulator, tmp_path):
    log_file = tmp_path / "traffic.txt"
    with AtChannel(f"spy://{emulator.port}?file={log_file}") as channel:
        assert channel.command("AT+CSQ", timeout=2) == ["+CSQ: 20,99"]
    assert "41 54 2B 43 53 51 0D" in log_file.read_text()  # hex dump of AT+CSQ<CR>
