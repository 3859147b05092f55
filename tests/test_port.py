"""The worker port: what a worker may ask of the daemon from its own thread, and the one
health report every worker uses. The daemon is the real one (not started: its owner loop
is run here, on the test's thread, as the owner thread)."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import load
from edge.daemon import Daemon


@pytest.fixture
def daemon(write_config):
    made = Daemon(load(str(write_config())), pin_factory=MockFactory())
    made.start()
    yield made
    made.close()


def faults_recorded(daemon: Daemon) -> list[tuple[str, str, str]]:
    assert daemon.store is not None
    return [(e.kind, e.subject, e.data["reason"]) for e in daemon.store.events()
            if e.kind in ("fault", "recovered")]


def test_a_health_report_goes_to_the_owner_only_when_it_changes(daemon):
    health = daemon.port.health("modem")
    news = [health.failed("no_sim", "x"), health.failed("no_sim", "y"),
            health.failed("no_network"), health.ok(), health.ok()]
    assert news == [True, False, True, True, False]
    posted = daemon.loop._queue.qsize()
    daemon.loop.process(0)
    assert posted == 3  # no post for what the owner already knows
    assert faults_recorded(daemon) == [("fault", "modem", "no_sim"),
                                       ("recovered", "modem", "no_network")]
    assert daemon.faults == {}


def test_a_storage_source_reports_through_the_storage_fault(daemon):
    pictures = daemon.port.storage_health("pictures")
    pictures.failed("full", "no space left on device")
    daemon.loop.process(0)
    assert daemon.status()["fault_reasons"] == {"storage": "full"}
    pictures.failed("low_space")  # another reason: shown, no second fault
    daemon.loop.process(0)
    assert daemon.status()["fault_reasons"] == {"storage": "low_space"}
    pictures.ok()
    daemon.loop.process(0)
    assert faults_recorded(daemon) == [("fault", "storage", "full"),
                                       ("recovered", "storage", "low_space")]


def test_a_worker_records_and_commands_through_the_port(daemon):
    daemon.port.record("sms_refused", "modem", "短信指令",
                       {"number": "+8613900000000", "text": "hi", "contact": None,
                        "number_type": "international", "reason": "not_a_contact"})
    daemon.loop.process(0)
    assert [e.kind for e in daemon.store.events(kind="sms_refused")] == ["sms_refused"]
    # On the owner thread a call runs at once (a worker's waits for the owner loop).
    assert daemon.port.call(daemon.port.commands.silence, "wang", "sms", None) == []
    assert daemon.port.call(daemon.port.commands.status)["alarm"]["active"] is False
