"""The SMS outbox: one row per (event, contact), what is due, and each send's outcome."""

from __future__ import annotations

import itertools
import json
import sqlite3
from typing import Iterable, Mapping

from edge.store.connection import StoreFile, reads
from edge.store.rows import SmsRecord, SmsRequest, SmsRow


def insert_sms(conn: sqlite3.Connection, seq: int, requests: Iterable[SmsRequest]) -> None:
    """Inside the caller's transaction: SMS rows for event ``seq``, ignored for a
    (seq, contact) pair that already has one."""
    conn.executemany(
        "INSERT OR IGNORE INTO sms(seq, contact, phone, state, due, fallback) "
        "VALUES(?,?,?,?,?,?)",
        [(seq, r.contact, r.phone, "waiting" if r.fallback else "pending", r.due,
          int(r.fallback)) for r in requests])


class SmsOutbox(StoreFile):
    """The sms table: a part of Store."""

    def add_sms(self, seq: int, requests: Iterable[SmsRequest]) -> None:
        """SMS rows for an already stored event (the fallback of an event whose routing is
        decided later). Ignored for a (seq, contact) pair that already has one."""
        with self._transaction() as c:
            insert_sms(c, seq, requests)

    @reads
    def due_sms(self, now: float, limit: int = 20, horizon_s: float = 3600.0,
                ranks: Mapping[str, int] | None = None) -> list[SmsRow]:
        """SMS to send now: pending ones whose retry time has come, and fallbacks whose
        deadline passed with no transport having accepted the event. Most urgent first,
        by ``ranks`` of the event's kind (lowest first; kinds not in it after all others),
        then oldest event first. A time more than ``horizon_s`` ahead cannot have been
        set by us: the clock was stepped back since, and the row is due now rather than
        days from now."""
        later = now + horizon_s
        ranks = dict(ranks or {})
        by_rank = ""
        if ranks:
            whens = " ".join("WHEN ? THEN ?" for _ in ranks)
            by_rank = f"CASE e.kind {whens} ELSE {int(max(ranks.values())) + 1} END, "
        rows = self._conn.execute(
            "SELECT s.seq, s.contact, s.phone, s.fallback, s.attempts, s.refs, e.kind, "
            "s.maybe_sent FROM sms s JOIN events e ON e.seq = s.seq "
            "WHERE (s.next_try <= ? OR s.next_try > ?) AND (s.state='pending' OR "
            "(s.state='waiting' AND (s.due <= ? OR s.due > ?) "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq=s.seq "
            f"AND d.state='accepted'))) ORDER BY {by_rank}s.seq, s.contact LIMIT ?",
            (now, later, now, later, *itertools.chain(*ranks.items()), limit)).fetchall()
        return [SmsRow(seq=seq, contact=contact, phone=phone, fallback=bool(fallback),
                       attempts=attempts, refs=json.loads(refs) if refs else [], kind=kind,
                       maybe_sent=bool(maybe_sent))
                for seq, contact, phone, fallback, attempts, refs, kind, maybe_sent in rows]

    def shift_wall_times(self, step_s: float) -> int:
        """The wall clock was stepped by ``step_s``: SMS not yet sent keep the same time
        left until their fallback deadline and retry (a clock set forward at boot must not
        send every waiting fallback at once), uploads waiting for a retry the same time
        left of their backoff (a Retry-After neither ignored by a step forward nor
        stretched by a step back), and the wall times kept in meta (the escalation's next
        call, the ends of drill mode and a walk test) the same time left. Returns how many
        deadlines moved."""
        with self._transaction() as c:
            sms = c.execute(
                "UPDATE sms SET due=due+?, next_try=CASE WHEN next_try > 0 THEN next_try+? "
                "ELSE 0 END WHERE state IN ('pending','waiting')", (step_s, step_s)).rowcount
            uploads = c.execute("UPDATE deliveries SET next_try=next_try+? "
                                "WHERE state='pending' AND next_try > 0", (step_s,)).rowcount
            return sms + uploads + self._shift_meta_times(c, step_s)

    def retry_sms_now(self, now: float) -> int:
        """SMS waiting to be retried are due at ``now``: the modem that failed them can
        send again, and a backoff grown through a long outage must not hold an alarm's SMS
        back for minutes more. Returns how many rows moved."""
        with self._transaction() as c:
            return c.execute("UPDATE sms SET next_try=? WHERE state='pending' AND next_try > ?",
                             (now, now)).rowcount

    @reads
    def next_sms_due(self) -> float | None:
        row = self._conn.execute(
            "SELECT min(max(due, next_try)) FROM sms WHERE state IN ('pending','waiting')"
        ).fetchone()
        return row[0]

    def mark_sms(self, seq: int, contact: str, state: str, *, now: float,
                 refs: list[int] | None = None, error: str | None = None,
                 next_try: float = 0.0, maybe_sent: bool = False) -> None:
        """Record the outcome of one send: 'sent' (with the +CMGS references), 'pending'
        (retry at next_try, with the references of the parts that did go) or 'failed'
        (given up). ``maybe_sent``: this attempt's confirmation was lost (the network may
        have the message); once set, it stays."""
        with self._transaction() as c:
            c.execute("UPDATE sms SET state=?, attempts=attempts+1, refs=?, last_error=?, "
                      "next_try=?, done_ts=?, maybe_sent=max(maybe_sent, ?) "
                      "WHERE seq=? AND contact=?",
                      (state, json.dumps(refs) if refs is not None else None, error, next_try,
                       now if state != "pending" else None, int(maybe_sent), seq, contact))

    @reads
    def sms_rows(self, seq: int) -> list[SmsRecord]:
        cur = self._conn.execute("SELECT contact, phone, state, fallback, attempts, refs, "
                                 "last_error, maybe_sent FROM sms WHERE seq=? ORDER BY "
                                 "contact", (seq,))
        return [SmsRecord(contact=contact, phone=phone, state=state, fallback=fallback,
                          attempts=attempts, refs=refs, last_error=last_error,
                          maybe_sent=maybe_sent)
                for contact, phone, state, fallback, attempts, refs, last_error, maybe_sent
                in cur.fetchall()]
