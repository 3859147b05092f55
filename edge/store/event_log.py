"""The event log: committing an event with the rows it owes, reading events back,
pictures and data added to an event later, and retention."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from typing import Any, Iterable

from edge.events import STATE_FAMILIES, Event, data_json, new_event_id
from edge.store.connection import StoreFile, reads
from edge.store.outbox import insert_sms
from edge.store.rows import SmsRequest, event_of_row


class EventLog(StoreFile):
    """The events table: a part of Store."""

    def append(self, kind: str, subject: str, time_: dt.datetime, data: dict[str, Any], *,
               transports: Iterable[str] = (), sms: Iterable[SmsRequest] = (),
               event_id: str | None = None) -> Event:
        """Commit one event with its delivery and SMS rows in one transaction; return it
        with its id and gap-free seq. ``event_id`` keeps the id of an event that was acted
        on while the store could not be written. Raises StorageError (the caller keeps the
        alarm path going regardless)."""
        event_id = event_id or new_event_id()
        payload = data_json({**data, "store_id": self.store_id})
        try:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
                seq = (int(row[0]) if row else 0) + 1
                c.execute("INSERT INTO events(seq, id, kind, subject, time, ts, data) "
                          "VALUES(?,?,?,?,?,?,?)",
                          (seq, event_id, kind, subject, time_.isoformat(),
                           time_.timestamp(), payload))
                self._set_meta("last_seq", str(seq))
                c.executemany("INSERT INTO deliveries(seq, transport) VALUES(?, ?)",
                              [(seq, t) for t in transports])
                insert_sms(c, seq, sms)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self.failure(e, f"cannot store {kind} event: {e}") from e
        return Event(seq=seq, id=event_id, kind=kind, subject=subject, time=time_,
                     data=json.loads(payload))

    @reads
    def events(self, *, since: float | None = None, kind: str | None = None,
               after_seq: int = 0, limit: int | None = None,
               by_time: bool = False) -> list[Event]:
        """Events in seq (creation) order, or with ``by_time`` in the order they happened:
        a gate event carries its first edge's time, before its debounce ended."""
        sql = "SELECT seq, id, kind, subject, time, data FROM events WHERE seq > ?"
        args: list[object] = [after_seq]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY ts, seq" if by_time else " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [event_of_row(r) for r in self._conn.execute(sql, args)]

    @reads
    def newest_events(self, since: float, limit: int) -> list[Event]:
        """At most ``limit`` events that happened from ``since`` (unix time), newest first."""
        rows = self._conn.execute("SELECT seq, id, kind, subject, time, data FROM events "
                                  "WHERE ts >= ? ORDER BY ts DESC, seq DESC LIMIT ?",
                                  (since, limit))
        return [event_of_row(r) for r in rows]

    @reads
    def event(self, seq: int) -> Event | None:
        row = self._conn.execute("SELECT seq, id, kind, subject, time, data FROM events "
                                 "WHERE seq=?", (seq,)).fetchone()
        return event_of_row(row) if row else None

    @reads
    def last_event(self, subject: str, kinds: Iterable[str]) -> Event | None:
        kinds = list(kinds)
        row = self._conn.execute(
            f"SELECT seq, id, kind, subject, time, data FROM events WHERE subject=? AND kind IN "
            f"({','.join('?' * len(kinds))}) ORDER BY seq DESC LIMIT 1",
            [subject, *kinds]).fetchone()
        return event_of_row(row) if row else None

    @reads
    def last_seq(self) -> int:
        return int(self.get_meta("last_seq") or 0)


    # ------------------------------------------------------------------ attachments

    @reads
    def pictures(self, seqs: Iterable[int], name: str = "snapshot") -> dict[int, str]:
        """The path of each picture ``name`` recorded for the events ``seqs``, by seq."""
        seqs = list(seqs)
        rows = self._conn.execute(
            f"SELECT seq, path FROM attachments WHERE name=? AND seq IN "
            f"({','.join('?' * len(seqs))})", [name, *seqs])
        return dict(rows.fetchall())

    def attach(self, seq: int, files: list[tuple[str, str, str, int]],
               data_update: dict[str, Any]) -> None:
        """Record pictures of event ``seq`` ((name, path, sha256, bytes) each) and add
        ``data_update`` (snapshot_sha256…) to its data, in one transaction."""
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO attachments(seq, name, path, sha256, bytes) "
                          "VALUES(?,?,?,?,?)", [(seq, *f) for f in files])
            self._merge_data(seq, data_update)

    def update_event_data(self, seq: int, data_update: dict[str, Any]) -> None:
        with self._transaction():
            self._merge_data(seq, data_update)

    def _merge_data(self, seq: int, data_update: dict[str, Any]) -> None:
        row = self._conn.execute("SELECT data FROM events WHERE seq=?", (seq,)).fetchone()
        if row is not None:
            data = json.loads(row[0])
            data.update(data_update)
            self._conn.execute("UPDATE events SET data=? WHERE seq=?", (data_json(data), seq))


    # ------------------------------------------------------------------ retention

    def purge(self, older_than: float | None) -> int:
        """Delete events older than ``older_than`` (unix time; None: none for their age),
        and heartbeats of any age, that owe nothing any more (no pending delivery, no SMS
        still to send) and hold no state restored at start: the latest event of each
        STATE_FAMILIES kind group per subject stays whatever its age (a latched alarm, a
        gate open for weeks). Returns how many went."""
        latest = " UNION ALL ".join(
            f"SELECT max(seq) FROM events WHERE kind IN ({','.join('?' * len(kinds))}) "
            "GROUP BY subject" for kinds in STATE_FAMILIES)
        with self._transaction():
            cur = self._conn.execute(
                "DELETE FROM events WHERE (ts < ? OR kind = 'heartbeat') AND seq NOT IN "
                "(SELECT seq FROM deliveries WHERE state='pending') AND seq NOT IN "
                "(SELECT seq FROM sms WHERE state IN ('pending','waiting')) AND seq NOT IN "
                f"({latest})",
                (-math.inf if older_than is None else older_than,
                 *(kind for kinds in STATE_FAMILIES for kind in kinds)))
            return cur.rowcount

