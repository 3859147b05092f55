"""The WAL checkpointer on a real SQLite store: an idle store is left alone (no connection,
no write), a busy one is folded back within FOLD_AFTER_CHANGES changed ticks, and a lone
change waits FOLD_AFTER_S."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from edge.store import Checkpointer, Store
from edge.store import checkpoint as checkpoint_mod

WHEN = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "events.db")
    Checkpointer(store.path).checkpoint()  # the schema into the database file
    yield store
    store.close()


def commit(store: Store) -> None:
    store.append("gate_open", "main_gate", WHEN, {"site": "s", "label": "l"})
    time.sleep(0.01)  # the WAL's mtime moves on even on a coarse filesystem clock


def events_in_main_file(db: Path) -> int:
    """Rows the database file itself holds, its WAL ignored (immutable)."""
    with closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def test_busy_wal_is_folded_back_after_enough_changed_ticks(store):
    checkpointer = Checkpointer(store.path)
    before = events_in_main_file(store.path)
    for _ in range(checkpoint_mod.FOLD_AFTER_CHANGES - 1):
        commit(store)
        assert not checkpointer._due()
    commit(store)
    assert checkpointer._due()
    checkpointer.checkpoint()
    assert events_in_main_file(store.path) == before + checkpoint_mod.FOLD_AFTER_CHANGES
    assert not checkpointer._due()  # nothing new since: the idle store is left alone


def test_a_lone_change_waits_its_age(store, monkeypatch):
    checkpointer = Checkpointer(store.path)
    commit(store)
    assert not checkpointer._due()
    monkeypatch.setattr(checkpoint_mod, "FOLD_AFTER_S", 0.05)
    time.sleep(0.06)
    assert checkpointer._due()


def test_the_thread_folds_back_at_stop(store):
    checkpointer = Checkpointer(store.path, every_s=60)
    checkpointer.start()
    before = events_in_main_file(store.path)
    commit(store)
    checkpointer.stop()
    assert events_in_main_file(store.path) == before + 1
