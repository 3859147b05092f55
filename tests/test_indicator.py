"""The guard's lamp ([indicator]): its pin's level over time on MockFactory pins with the
FakeClock (the daemon-logic rig), and blinking → steady when the platform stand-in accepts
a panic (a daemon with its workers, as `run` builds it)."""

from __future__ import annotations

import tomllib

import pytest

from conftest import SyncedKernel, write_token
from edge import config
from edge.daemon import CLOCK_GRACE_S, HOUSEKEEPING_S
from edge.errors import ConfigError
from edge.indicator import BLINK_HALF_S, FAST_BLINK_HALF_S
from edge.sim.site import SimSite
from test_daemon_logic import Rig, make_rig  # noqa: F401 (the fixture)
from test_uplink_worker import Site, config_text

LAMP_PIN = 23
LAMP = f"[indicator]\npin = {LAMP_PIN}\n"


def levels(rig: Rig, half_s: float, n: int = 4) -> list[int]:
    """The lamp pin's level at each of ``n`` steps of ``half_s``."""
    seen = []
    for _ in range(n):
        seen.append(rig.pin(LAMP_PIN).state)
        rig.advance(half_s)
    return seen


def test_the_lamp_is_off_when_idle_and_blinks_while_an_alarm_is_undelivered(make_rig):
    rig = make_rig(extra=LAMP).start()
    assert levels(rig, BLINK_HALF_S) == [0, 0, 0, 0]
    assert rig.status()["indicator"] == "off"
    rig.press()  # no platform, no modem here: delivered nowhere
    assert levels(rig, BLINK_HALF_S) == [1, 0, 1, 0]  # 1 Hz
    assert rig.status()["indicator"] == "blinking"
    rig.daemon.silence("王老师", "cli")
    assert levels(rig, BLINK_HALF_S) == [0, 0, 0, 0]
    assert rig.status()["indicator"] == "off"


def test_a_fault_blinks_fast_and_an_alarm_outranks_it(make_rig):
    rig = make_rig(extra=LAMP).start()
    rig.daemon._sync = SyncedKernel(False)
    rig.advance(CLOCK_GRACE_S)  # the clock never synchronised: a fault
    assert "clock" in rig.status()["faults"]
    assert levels(rig, FAST_BLINK_HALF_S) == [1, 0, 1, 0]  # 4 Hz
    assert rig.status()["indicator"] == "fault"
    rig.press()
    assert rig.status()["indicator"] == "blinking"
    assert levels(rig, FAST_BLINK_HALF_S) == [1, 1, 1, 1]  # the alarm's slow blink
    rig.daemon.silence("王老师", "cli")
    assert rig.status()["indicator"] == "fault"
    rig.daemon._sync = SyncedKernel()
    rig.advance(HOUSEKEEPING_S)  # recovered
    assert rig.status()["indicator"] == "off" and rig.pin(LAMP_PIN).state == 0


def test_an_active_low_lamp_is_off_at_a_high_level(make_rig):
    rig = make_rig(extra=LAMP + "active_high = false\n").start()
    assert rig.pin(LAMP_PIN).state == 1
    rig.press()
    assert rig.pin(LAMP_PIN).state == 0


def test_the_lamp_pin_is_claimed_like_any_other(tmp_path):
    text = SimSite(tmp_path / "var", tmp_path / "c.sock",
                   extra="[indicator]\npin = 22\n").text()  # the siren's pin
    with pytest.raises(ConfigError) as e:
        config.parse(tomllib.loads(text), "config.toml")
    assert ("config error: config.toml: [indicator] pin: pin 22 is already used by [siren]"
            in e.value.problems)


def lamp_site(short_dir, platform, **options) -> Site:
    """A daemon with its workers, as `run` builds it, its lamp on LAMP_PIN."""
    write_token(short_dir / "token")
    path = short_dir / "config.toml"
    path.write_text(config_text(short_dir, platform.url, **options) + "\n" + LAMP,
                    encoding="utf-8")
    return Site(path).start()


def test_the_lamp_goes_steady_when_the_platform_accepts_the_panic(short_dir, platform,
                                                                   wait_until):
    site = lamp_site(short_dir, platform)
    platform.set_delay(4)  # the platform slow to answer: the panic is delivered nowhere
    try:
        site.sim("guard_room", True)
        wait_until(lambda: site.status()["indicator"] == "blinking", 5, what="blinking")
        lamp = site.daemon._pin_factory.pin(LAMP_PIN)
        wait_until(lambda: lamp.state == 0, 5, what="the blink's off half")
        wait_until(lambda: lamp.state == 1, 5, what="the blink's on half")
        platform.set_delay(0)
        [panic] = wait_until(lambda: site.events("panic"), 5, what="panic stored")
        assert platform.wait_for(lambda: panic.id in [e.id for e in platform.events], 30)
        wait_until(lambda: site.status()["indicator"] == "steady", 10, what="steady")
        assert lamp.state == 1
    finally:
        site.stop()
        site.store.close()


def test_the_lamp_goes_steady_when_the_network_takes_the_sms(short_dir, platform, emulator,
                                                            wait_until):
    platform.respond_with(503, times=1000)  # the platform never accepts
    site = lamp_site(short_dir, platform, modem_port=emulator.port)
    try:
        wait_until(lambda: site.status()["modem"]["ok"], 5, what="modem ready")
        site.sim("guard_room", True)
        wait_until(lambda: site.status()["indicator"] in ("blinking", "steady"), 5,
                   what="the alarm on the lamp")
        emulator.wait_sent(1, timeout=10)  # +CMGS: the network has it
        wait_until(lambda: site.status()["indicator"] == "steady", 10, what="steady")
        [panic] = site.events("panic")
        assert panic.id not in [e.id for e in platform.events]
    finally:
        site.stop()
        site.store.close()
