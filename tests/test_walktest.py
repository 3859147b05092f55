"""Walk test (巡检): while on, an input going active is an `input_tested` event confirmed
by a chirp of the siren, never an alarm; it ends by itself; inputs not tested within
[walktest] due_days are overdue. Driven on the daemon-logic rig (MockFactory, FakeClock,
a real SQLite file)."""

from __future__ import annotations

import datetime as dt

from conftest import TAMPER_PIN
from edge.alarm_rule import CHIRP_S
from edge.clock import FakeClock
from edge.report import day_summary
from edge.store import Store
from edge.walk_test import overdue_inputs
from test_daemon_logic import MONDAY_7AM, Rig, make_rig  # noqa: F401 (the fixture)

ALL_INPUTS = ["guard_room", "main_gate", "box"]


def walk(rig: Rig, for_s: int = 600) -> None:
    rig.daemon.set_walktest(True, for_s, by="李师傅", account="guard")


def test_a_press_during_a_walk_test_is_tested_with_a_chirp_and_no_alarm(make_rig):
    rig = make_rig().start()
    walk(rig)
    rig.press()
    assert rig.siren_on  # the chirp
    rig.advance(CHIRP_S + 0.01)
    assert not rig.siren_on
    rig.drive(TAMPER_PIN, high=True)  # the tamper switch: tested, not raised
    rig.open_gate()  # a gate: tested, and its opening recorded as ever
    tested = rig.stored("input_tested")
    assert [e.subject for e in tested] == ["guard_room", "box", "main_gate"]
    assert all(e.data["by"] == "李师傅" and e.data["account"] == "guard" for e in tested)
    assert rig.stored("panic", "tamper") == []
    status = rig.status()
    assert not status["alarm"]["active"] and rig.daemon.latched == {}
    assert status["walktest"]["active"] and status["walktest"]["by"] == "李师傅"


def test_a_walk_test_texts_nobody(make_rig):
    rig = make_rig().start()
    walk(rig)
    rig.press()
    [tested] = rig.stored("input_tested")
    reader = Store(rig.cfg.storage.db_path)
    try:
        assert reader.sms_rows(tested.seq) == []
    finally:
        reader.close()


def test_a_bouncing_contact_is_one_test(make_rig):
    rig = make_rig().start()
    walk(rig)
    for _ in range(3):
        rig.press()
        rig.release()
        rig.open_gate()  # a reed switch bounces too
        rig.close_gate()
    assert [e.subject for e in rig.stored("input_tested")] == ["guard_room", "main_gate"]


def test_a_walk_test_ends_by_itself_and_survives_a_restart(make_rig):
    clock = FakeClock(MONDAY_7AM)
    first = make_rig(clock=clock).start()
    walk(first, for_s=600)
    first.close()
    second = make_rig(clock=clock).start()
    assert second.status()["walktest"]["active"]
    second.press()
    assert len(second.stored("input_tested")) == 1
    second.release()
    second.advance(601)
    assert not second.status()["walktest"]["active"]
    second.press()  # real again
    assert len(second.stored("panic")) == 1 and second.status()["alarm"]["active"]


def test_inputs_are_overdue_due_days_after_their_last_test_or_installation(make_rig):
    rig = make_rig().start()  # installs the inputs at MONDAY_7AM
    walk(rig)
    rig.advance(300)
    rig.press()  # tested five minutes after its installation
    days = dt.timedelta(days=rig.cfg.walktest.due_days)
    store = rig.daemon.store
    assert store is not None
    assert overdue_inputs(rig.cfg, store, MONDAY_7AM + days) == []
    later = MONDAY_7AM + days + dt.timedelta(minutes=1)
    assert overdue_inputs(rig.cfg, store, later) == ["main_gate", "box"]
    assert rig.status()["overdue"] == []
    # The report counts to the day's end: by then the button's test is overdue too.
    assert day_summary(rig.cfg, later.date())["overdue"] == ALL_INPUTS
    assert day_summary(rig.cfg, MONDAY_7AM.date())["overdue"] == []


def test_the_platform_receives_input_tested_never_panic(short_dir, platform, wait_until):
    from conftest import write_token
    from test_uplink_worker import Site, config_text

    write_token(short_dir / "token")
    path = short_dir / "config.toml"
    path.write_text(config_text(short_dir, platform.url), encoding="utf-8")
    site = Site(path).start()
    try:
        site.call(site.daemon.set_walktest, True, 600, "李师傅", "guard")
        site.sim("guard_room", True)
        [tested] = wait_until(lambda: site.events("input_tested"), 5, what="tested stored")
        assert platform.wait_for(lambda: tested.id in [e.id for e in platform.events], 30)
        doc = next(e.document for e in platform.events if e.id == tested.id)
        assert doc["type"] == "cn.edu.school.edge-alarm.input_tested"
        assert doc["subject"] == "guard_room" and doc["data"]["by"] == "李师傅"
        assert not [e for e in platform.events if e.document["type"].endswith(".panic")]
        assert site.events("panic") == []
    finally:
        site.stop()
        site.store.close()
