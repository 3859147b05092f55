"""The modem driver against the emulated modem, through a real pty opened by pyserial."""

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import gammu
import pytest

from conftest import SHORT_MODEM_TIMINGS
from edge.errors import ModemError
from edge.modem.at import AtTimeout, CmsError, PortLost
from edge.sim.modem import ModemEmulator
from edge.modem.modem import MAX_ANNOUNCED, UNKNOWN_REFERENCE, Modem, ModemTimings
from edge.modem.pdu import encode_deliver
from edge.modem.pin_record import RefusedPinRecord

# The driver alone, with no daemon around it, is held to tighter deadlines still.
FAST = replace(SHORT_MODEM_TIMINGS, command_s=0.5, send_s=2, list_s=2, reopen_max_s=0.2)
PRINCIPAL = "+8613800138000"
ALERT = ("【高山小学】紧急报警：门卫室一键报警 于 07:42:15 触发。回复 SILENCE 解除。"
         "请值班人员立即到门卫室查看情况，确认学生安全后回复 收到。")
SENT_AT = datetime(2024, 9, 2, 7, 42, 15, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture
def make_modem(emulator, urcs):
    modems = []

    def make(**options):
        modem = Modem(emulator.port, on_urc=urcs.put, timings=FAST, **options)
        modems.append(modem)
        return modem

    yield make
    for modem in modems:
        modem.close()


@pytest.fixture
def modem(make_modem):
    modem = make_modem()
    modem.ensure_ready()
    return modem


def test_init_from_power_up(emulator, modem):
    health = modem.last_health
    assert health.ok and health.reason is None
    assert (health.signal, health.registered, health.operator) == (20, True, "CHINA MOBILE")
    assert not emulator.echo
    for command in ("ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,0,0",
                    'AT+CPMS="SM","SM","SM"', "AT+CSCA?"):
        assert command in emulator.commands
    assert not modem.needs_init


def test_simpler_cnmi_when_the_full_one_is_refused(emulator, make_modem):
    emulator.refuse("AT+CNMI=2,1,0,0,0")
    make_modem().ensure_ready()
    assert "AT+CNMI=2,1" in emulator.commands


def test_sim_pin_is_entered():
    with ModemEmulator(sim_pin="1234") as locked:
        modem = Modem(locked.port, sim_pin="1234", timings=FAST)
        try:
            modem.ensure_ready()
            assert 'AT+CPIN="1234"' in locked.commands
            assert modem.health().ok
        finally:
            modem.close()


def test_wrong_sim_pin_is_never_tried_twice():
    now = [0.0]
    with ModemEmulator(sim_pin="1234") as locked:
        modem = Modem(locked.port, sim_pin="0000", timings=FAST, clock=lambda: now[0])
        try:
            with pytest.raises(ModemError, match="refused the configured PIN"):
                modem.ensure_ready()
            now[0] += 3600  # long past any backoff: only the refusal stops it
            with pytest.raises(ModemError, match="refused the configured PIN"):
                modem.ensure_ready()
            assert locked.pin_attempts == 1
            assert modem.health().reason == "sim_pin"
        finally:
            modem.close()


def test_a_refused_pin_is_not_tried_by_the_next_start_either_but_a_new_one_is(tmp_path):
    record = RefusedPinRecord(tmp_path / "sim-pin-refused")

    def start(locked: ModemEmulator, pin: str) -> Modem:
        modem = Modem(locked.port, sim_pin=pin, timings=FAST, pin_record=record)
        try:
            modem.ensure_ready()
        finally:
            modem.close()
        return modem

    with ModemEmulator(sim_pin="1234") as locked:
        with pytest.raises(ModemError, match="refused the configured PIN"):
            start(locked, "0000")
        for _ in range(3):  # the daemon restarting, `check`, `test-sms`: each a new Modem
            with pytest.raises(ModemError, match="refused the configured PIN before"):
                start(locked, "0000")
        assert locked.pin_attempts == 1  # wrong ones: the SIM has two tries left
        assert "0000" not in record.path.read_text()
        with pytest.raises(ModemError, match="refused the configured PIN"):
            start(locked, "1111")  # another wrong guess: tried once...
        for pin in ("0000", "1111"):  # ...and then neither is tried again
            with pytest.raises(ModemError, match="refused the configured PIN before"):
                start(locked, pin)
        assert locked.pin_attempts == 2  # the SIM still has its last try
        with ModemEmulator(sim_pin="1234") as other_card:
            other_card.iccid = "89860098765432109876"
            with pytest.raises(ModemError, match=r"refused the configured PIN \("):
                start(other_card, "0000")  # another card: this PIN is tried on it
            assert other_card.pin_attempts == 1
        start(locked, "1234")  # the installer corrects sim_pin: tried, once, and right
        assert locked.commands.count('AT+CPIN="1234"') == 1
        assert not record.path.exists()


class SimAnsweringPinWith(ModemEmulator):
    """A SIM whose every AT+CPIN="…" is answered with +CME ERROR: ``code``."""

    def __init__(self, code: int):
        super().__init__(sim_pin="1234")
        self.code = code

    def _at_cpin(self, operation, args, stop):
        if operation == "set":
            raise self._cme(self.code)
        return super()._at_cpin(operation, args, stop)


@pytest.mark.parametrize("code", [3, 13, 14])
def test_a_pin_answered_with_another_error_is_not_noted_as_wrong(tmp_path, code):
    # Only "incorrect password" (CME 16) is the card refusing this PIN: a SIM still busy
    # after power-up (14) must not keep a right PIN from ever being sent again.
    record = RefusedPinRecord(tmp_path / "sim-pin-refused")
    with SimAnsweringPinWith(code) as locked:
        modem = Modem(locked.port, sim_pin="1234", timings=FAST, pin_record=record)
        try:
            with pytest.raises(ModemError):
                modem.ensure_ready()
        finally:
            modem.close()
        assert not record.refused(locked.iccid, "1234")


def test_sim_pin_asked_but_none_configured(emulator, make_modem):
    emulator.sim_pin = "1234"
    modem = make_modem()
    with pytest.raises(ModemError, match="sim_pin is empty"):
        modem.ensure_ready()
    assert modem.health().reason == "sim_pin"
    assert emulator.pin_attempts == 0


def test_sim_missing(emulator, make_modem):
    emulator.sim_present = False
    modem = make_modem()
    with pytest.raises(ModemError, match="no usable SIM"):
        modem.ensure_ready()
    assert modem.health() == modem.last_health
    assert modem.last_health.reason == "sim_missing"


@pytest.mark.parametrize("stat", [0, 2, 3])
def test_not_registered(emulator, modem, stat):
    emulator.registration = stat
    health = modem.health()
    assert (health.ok, health.reason, health.registered, health.operator) == (
        False, "not_registered", False, None)


def test_lte_only_module_refusing_creg_is_registered_by_cereg(emulator, make_modem):
    emulator.refuse("AT+CREG?")
    emulator.registration = 5  # roaming
    modem = make_modem()
    modem.ensure_ready()
    assert modem.last_health.registered and modem.last_health.ok


@pytest.mark.parametrize("rssi, reason, signal", [(99, "signal_unknown", None),
                                                  (3, "signal_low", 3), (5, None, 5)])
def test_signal(emulator, modem, rssi, reason, signal):
    emulator.signal = rssi
    health = modem.health()
    assert (health.reason, health.signal, health.ok) == (reason, signal, reason is None)


def test_empty_smsc_is_a_health_problem_and_sending_refuses_at_once(emulator, make_modem):
    emulator.smsc = ""
    modem = make_modem()
    modem.ensure_ready()
    assert modem.last_health.reason == "smsc_empty"
    with pytest.raises(ModemError, match="SMS centre"):
        modem.send_sms(PRINCIPAL, "test", reference=1)
    assert not any(command.startswith("AT+CMGS") for command in emulator.commands)


def test_configured_smsc_goes_into_the_pdu(emulator, make_modem):
    emulator.smsc = ""
    modem = make_modem(smsc="+8613800100500")
    modem.ensure_ready()
    assert modem.last_health.ok
    modem.send_sms(PRINCIPAL, "test", reference=1)
    (sent,) = emulator.wait_sent(1, timeout=5)
    assert sent.pdu.startswith("0891683108100005F0")


def test_chinese_sms_checked_by_an_independent_decoder(emulator, modem):
    references = modem.send_sms(PRINCIPAL, ALERT, reference=42)
    sent = emulator.wait_sent(2, timeout=5)
    assert references == [part.reference for part in sent]
    decoded = [gammu.DecodePDU(bytes.fromhex(part.pdu), SMSC=True) for part in sent]
    assert {message["Number"] for message in decoded} == {PRINCIPAL}
    assert {message["Coding"] for message in decoded} == {"Unicode_No_Compression"}
    assert [(m["UDH"]["ID8bit"], m["UDH"]["PartNumber"], m["UDH"]["AllParts"])
            for m in decoded] == [(42, 1, 2), (42, 2, 2)]
    assert "".join(message["Text"] for message in decoded) == ALERT


def test_cms_error_on_send_is_raised(emulator, modem):
    emulator.fail_next_sends(38)
    with pytest.raises(CmsError) as error:
        modem.send_sms(PRINCIPAL, "test", reference=1)
    assert error.value.code == 38
    assert emulator.sent == []


def test_busy_modem_is_asked_again(emulator, modem):
    emulator.fail_next_sends(515, 515)
    assert modem.send_sms(PRINCIPAL, "test", reference=1) == [1]
    assert len([c for c in emulator.commands if c.startswith("AT+CMGS=")]) == 3


def test_an_answer_that_comes_after_the_send_deadline_is_not_the_next_sends(emulator,
                                                                           modem):
    emulator.delay_next_send_answer(FAST.send_s + 0.5)
    with pytest.raises(AtTimeout):
        modem.send_sms(PRINCIPAL, "first, answered late", reference=1)
    # The first one's +CMGS/OK comes while the next waits for its '>': not its answer.
    refs = modem.send_sms("+8613700137000", "second", reference=2)
    sent = emulator.sent
    assert [m.number for m in sent] == [PRINCIPAL, "+8613700137000"]
    assert refs == [sent[1].reference]


class ReferenceLosingModem(ModemEmulator):
    """A modem whose +CMGS line is left empty, garbled on the line, or never printed."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def _respond(self, lines, final):
        kept = []
        for line in lines:
            if line.startswith("+CMGS:"):
                if self.how == "missing":
                    continue
                line = "+CMGS: " if self.how == "empty" else "+CMGS: \x01" + line[7:]
            kept.append(line)
        super()._respond(kept, final)


@pytest.mark.parametrize("how", ["empty", "noise", "missing"])
def test_ok_without_a_usable_reference_is_a_sent_sms(how):
    with ReferenceLosingModem(how) as emulator:
        modem = Modem(emulator.port, timings=FAST)
        try:
            modem.ensure_ready()
            # OK is the network's acceptance: sending again would be a duplicate alarm.
            assert modem.send_sms(PRINCIPAL, "test", reference=1) == [UNKNOWN_REFERENCE]
            assert len(emulator.sent) == 1
            assert modem.send_sms(PRINCIPAL, "next", reference=2) == [UNKNOWN_REFERENCE]
        finally:
            modem.close()


def test_silent_modem_times_out_and_is_reinitialised_after_three(emulator, modem):
    emulator.silent = True
    started = time.monotonic()
    assert modem.health().reason == "silent"
    assert time.monotonic() - started < 2 * FAST.command_s
    for _ in range(2):
        assert not modem.needs_init
        with pytest.raises(AtTimeout):
            modem.read_message(0)
    assert modem.needs_init
    emulator.silent = False
    before = len(emulator.commands)
    modem.ensure_ready()
    assert "AT+CNMI=2,1,0,0,0" in emulator.commands[before:]
    assert modem.send_sms(PRINCIPAL, "back", reference=2)


def test_unplug_then_replug_recovers(emulator, modem, wait_until):
    emulator.unplug()
    with pytest.raises(PortLost):
        modem.send_sms(PRINCIPAL, "test", reference=1)
    assert modem.health().reason == "port_gone"
    with pytest.raises(ModemError):
        modem.ensure_ready()  # the device is not there yet
    assert modem.retry_in > 0
    emulator.replug()
    wait_until(lambda: _ready(modem), timeout=3, what="modem ready after replug")
    assert "ATE0" in emulator.commands  # the re-enumerated modem is initialised afresh
    assert modem.send_sms(PRINCIPAL, "back", reference=2) == [1]


def _ready(modem):
    try:
        modem.ensure_ready()
    except ModemError:
        return False
    return True


def test_reopen_backoff_doubles_up_to_its_cap(tmp_path):
    now = [100.0]
    timings = ModemTimings(reopen_first_s=1, reopen_max_s=4)
    modem = Modem(str(tmp_path / "ttyUSB9"), timings=timings, clock=lambda: now[0])
    waits = []
    for _ in range(5):
        with pytest.raises(PortLost):
            modem.ensure_ready()
        waits.append(modem.retry_in)
        with pytest.raises(ModemError, match="next attempt"):
            modem.ensure_ready()  # too early: the port is not touched
        now[0] += modem.retry_in
    assert waits == [1, 2, 4, 4, 4]


def test_incoming_two_part_chinese_message(emulator, modem, urcs):
    text = "收到" + "，门卫室报警已处理，学生均安全，无需再次派人到场查看" * 3
    indices = emulator.deliver(PRINCIPAL, text)
    assert len(indices) == 2
    announced = [urcs.get(timeout=2).line for _ in indices]
    assert announced == [f'+CMTI: "SM",{index}' for index in indices]
    (message,) = modem.receive(time.monotonic())
    assert (message.sender, message.text, message.concat) == (PRINCIPAL, text, None)
    assert emulator.stored == {}
    assert modem.receive(time.monotonic()) == []


def test_a_flood_of_new_message_notices_is_capped_and_loses_no_message(emulator, modem,
                                                                       urcs):
    emulator.stream(b"".join(b'\r\n+CMTI: "SM",%d\r\n' % n for n in range(1000, 3000)))
    [index] = emulator.deliver(PRINCIPAL, "STATUS")
    while urcs.get(timeout=5).line != f'+CMTI: "SM",{index}':
        pass  # the reader has taken every notice once it passes the real one
    commands_before = len(emulator.commands)
    messages = modem.receive(time.monotonic())
    assert [(m.sender, m.text) for m in messages] == [(PRINCIPAL, "STATUS")]
    commands = emulator.commands[commands_before:]
    # Not 2001 reads of announced slots: the oldest notices went, the inbox was listed.
    assert "AT+CMGL=4" in commands
    assert len([c for c in commands if c.startswith("AT+CMGR")]) <= MAX_ANNOUNCED
    assert emulator.stored == {}


def test_messages_stored_while_down_and_malformed_ones(emulator, make_modem):
    emulator.deliver(PRINCIPAL, "STATUS")
    truncated = encode_deliver("+8613900000000", "hello", SENT_AT)[0][:-6]
    emulator.deliver_pdu(truncated)
    emulator.deliver_pdu("not hex at all")
    modem = make_modem()
    modem.ensure_ready()
    messages = modem.receive(time.monotonic(), scan=True)
    assert [(m.sender, m.text) for m in messages] == [(PRINCIPAL, "STATUS")]
    assert emulator.stored == {}


def test_read_message_of_an_empty_slot(modem):
    assert modem.read_message(3) is None
    assert modem.read_message(999) is None  # beyond the storage: +CMS ERROR: 321
