"""edge/kinds.py: one table of event kinds, and the sets the other modules take from it
agree with the spec and with each other."""

from __future__ import annotations

from edge import events, kinds, report
from edge.kinds import KIND_TABLE, KINDS

SPEC_ALARM_KINDS = {"panic", "tamper", "gate_after_hours", "gate_held_open", "fault",
                    "power_lost"}  # spec §3


def test_the_alarm_and_latching_kinds_are_the_specs():
    assert kinds.ALARM_KINDS == SPEC_ALARM_KINDS
    assert kinds.LATCHING_KINDS == {"panic", "tamper"} <= kinds.ALARM_KINDS
    assert kinds.DEFAULT_IMMEDIATE == {"panic", "tamper", "gate_after_hours"}  # spec §5


def test_every_state_family_holds_only_kinds_that_are_recorded():
    """A state family is restored from the latest of its kinds: one that is never recorded
    (the battery family's "battery_ok" was) restores nothing."""
    assert events.STATE_FAMILIES == kinds.STATE_FAMILIES  # as the store takes them
    for family in events.STATE_FAMILIES:
        assert family and set(family) <= set(events.KINDS), family


def test_every_kind_a_contact_may_receive_has_its_own_sms_text():
    for kind in KIND_TABLE:
        assert (kind.template is not None) == kind.receivable, kind.name
    assert kinds.RECEIVABLE_KINDS == {*KINDS, kinds.SUMMARY} - {"heartbeat", "call",
                                                                "input_tested"}


def test_alarms_go_first_by_sms_latching_ones_before_the_rest():
    for kind in KIND_TABLE:
        if kind.latches:
            assert kind.sms_rank == kinds.URGENT_RANK, kind.name
        elif kind.alarm:
            assert kind.sms_rank == kinds.ALARM_RANK, kind.name
        assert kind.sms_rank != kinds.REPLY_RANK, kind.name


def test_the_daily_report_counts_every_alarm_kind():
    assert set(report.REPORTED_ALARMS) == kinds.ALARM_KINDS - {"fault"}  # fault: apart
    assert set(report.COUNTED) <= set(KINDS)
    assert set(report.REPORTED_ALARMS) <= set(report.COUNTED)
