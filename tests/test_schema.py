"""docs/cloudevents.schema.json: one `data` definition and one example per kind, and the
test plumbing that holds every event the daemon emits to it (conftest: the platform
stand-in checks what it receives, and every daemon store is checked after each test)."""

from __future__ import annotations

import datetime as dt
import json

from edge.events import KINDS, CLOUDEVENT_TYPE_PREFIX
from edge.sim.platform import PlatformStub
from edge.store import Store, device_of_store
from edge.uplink.http import ACCEPTED, HttpUplink

from conftest import (PLATFORM_TOKEN, SCHEMA_PATH, cloudevent_problems, stored_event_problems,
                      write_token)

SPEC_KINDS: tuple[str, ...] = ()  # spec §3 kinds the schema has before the code
T0 = dt.datetime(2026, 11, 23, 7, 42, 15, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_every_kind_has_a_data_definition_and_an_example_that_follows_the_schema():
    doc = schema()
    kinds = (*KINDS, *SPEC_KINDS)
    types = sorted(CLOUDEVENT_TYPE_PREFIX + k for k in kinds)
    assert sorted(doc["properties"]["type"]["enum"]) == types
    assert sorted(e["type"] for e in doc["examples"]) == types
    for kind in kinds:
        assert f"{kind}_data" in doc["$defs"]
    for example in doc["examples"]:
        assert cloudevent_problems(example) == []


def heartbeat(**data) -> dict:
    example = next(e for e in schema()["examples"] if e["type"].endswith(".heartbeat"))
    return {**example, "data": {**example["data"], **data}}


def test_a_wrong_event_posted_to_the_platform_stand_in_is_reported(tmp_path):
    """The check can fail: a heartbeat without interval_s and with a clock_synced that is
    no boolean is accepted by the stand-in (as a lenient platform would) and reported."""
    wrong = {**heartbeat(clock_synced="yes"), "id": "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"}
    del wrong["data"]["interval_s"]
    with PlatformStub(token=PLATFORM_TOKEN, check_event=cloudevent_problems) as stub:
        client = HttpUplink(stub.url, str(write_token(tmp_path / "token")))
        try:
            assert client.post_events([heartbeat(), wrong]).outcome == ACCEPTED
        finally:
            client.close()
        problems = stub.invalid_events
    assert sorted(problems) == [
        f"{wrong['type']} {wrong['id']}: data/clock_synced: 'yes' is not of type 'boolean'",
        f"{wrong['type']} {wrong['id']}: data: 'interval_s' is a required property"]


def test_a_wrong_event_in_a_daemons_store_is_reported(short_dir):
    """Outside tmp_path, so that the after-test check does not find this store."""
    db = short_dir / "events.db"
    store = Store(db)
    try:
        store.append("panic", "guard_room", T0, {"site": "高山小学", "clock_synced": True})
        assert stored_event_problems(db) == []  # no device recorded: filled by hand
        store.claim_device("gaoshan-gate-1")
        problems = stored_event_problems(db)
    finally:
        store.close()
    assert len(problems) == 1 and problems[0].endswith(
        "data: 'label' is a required property")


def test_a_daemons_events_are_checked_after_each_test(running_daemon, tmp_path, wait_until):
    """What the after-test check reads is there: the daemon records its device in the
    store, and a raised and silenced alarm follows the schema."""
    assert running_daemon.cli("sim", "guard_room", "on").returncode == 0
    db = tmp_path / "var" / "events.db"
    wait_until(lambda: any(e.kind == "panic" for e in Store(db, readonly=True).events()))
    assert running_daemon.cli("silence", "--by", "wang").returncode == 0
    assert device_of_store(db) == "test-gate-1"
    assert stored_event_problems(db) == []
