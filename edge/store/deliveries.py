"""What each transport still owes the platform: deliveries, and the pictures of accepted
events still to upload."""

from __future__ import annotations

from edge.store.connection import StoreFile, reads
from edge.store.rows import Backlog, Delivery, Reach, Upload, event_of_row


class Deliveries(StoreFile):
    """The deliveries table, and the attachments to upload: a part of Store."""

    @reads
    def pending_count(self, transport: str) -> Backlog:
        """Events not yet accepted by ``transport``, and the unix time of the oldest."""
        row = self._conn.execute(
            "SELECT count(*), min(e.ts) FROM deliveries d JOIN events e ON e.seq=d.seq "
            "WHERE d.transport=? AND d.state='pending'", (transport,)).fetchone()
        return Backlog(*row)

    @reads
    def delivered_anywhere(self, seq: int) -> bool:
        """Whether a transport accepted event ``seq`` or the network took one of its SMS
        (+CMGS): the guard's lamp goes steady."""
        row = self._conn.execute(
            "SELECT EXISTS(SELECT 1 FROM deliveries WHERE seq=? AND state='accepted') OR "
            "EXISTS(SELECT 1 FROM sms WHERE seq=? AND state='sent')", (seq, seq)).fetchone()
        return bool(row[0])

    @reads
    def reach(self, seq: int) -> Reach:
        """Where event ``seq`` got to, for the guard-room page (delivered_anywhere in
        detail)."""
        accepted = self._conn.execute(
            "SELECT transport FROM deliveries WHERE seq=? AND state='accepted' "
            "ORDER BY transport", (seq,)).fetchall()
        sent = self._conn.execute("SELECT count(*) FROM sms WHERE seq=? AND state='sent'",
                                  (seq,)).fetchone()[0]
        return Reach(tuple(t for (t,) in accepted), sent)

    @reads
    def pending_deliveries(self, transport: str, limit: int) -> list[Delivery]:
        """The oldest events ``transport`` still owes, in seq order."""
        rows = self._conn.execute(
            "SELECT e.seq, e.id, e.kind, e.subject, e.time, e.data, d.attempts, d.next_try "
            "FROM deliveries d JOIN events e ON e.seq = d.seq "
            "WHERE d.transport=? AND d.state='pending' ORDER BY d.seq LIMIT ?",
            (transport, limit)).fetchall()
        return [Delivery(event_of_row(event), attempts, next_try)
                for *event, attempts, next_try in rows]

    def mark_accepted(self, transport: str, seqs: list[int], status: str, now: float, *,
                      verified: bool = True) -> None:
        """Delivered: and, in the same transaction, the SMS fallbacks that were waiting
        for this acceptance are no longer owed. Not ``verified`` (an acknowledgement that
        anyone on the path could have forged: SIA without a key, mqtt:// without TLS): the
        transport owes it no more ('unverified'), but the event does not count as accepted,
        so a forged answer can never hold back its SMS or steady the guard's lamp."""
        state = "accepted" if verified else "unverified"
        with self._transaction() as c:
            c.executemany("UPDATE deliveries SET state=?, last_status=?, done_ts=?, "
                          "attempts=attempts+1 WHERE seq=? AND transport=?",
                          [(state, status, now, s, transport) for s in seqs])
            if verified:
                c.executemany("UPDATE sms SET state='cancelled', done_ts=? "
                              "WHERE seq=? AND state='waiting'", [(now, s) for s in seqs])

    def mark_retry(self, transport: str, seqs: list[int], status: str, next_try: float) -> None:
        with self._transaction() as c:
            c.executemany("UPDATE deliveries SET attempts=attempts+1, last_status=?, next_try=? "
                          "WHERE seq=? AND transport=?",
                          [(status, next_try, s, transport) for s in seqs])

    def mark_rejected(self, transport: str, seq: int, status: str, now: float) -> None:
        with self._transaction() as c:
            c.execute("UPDATE deliveries SET state='rejected', last_status=?, done_ts=?, "
                      "attempts=attempts+1 WHERE seq=? AND transport=?",
                      (status, now, seq, transport))

    # ------------------------------------------------------------------ pictures

    @reads
    def attachments_to_upload(self, transport: str, limit: int = 10) -> list[Upload]:
        """Pictures whose event ``transport`` has accepted but which are not uploaded yet,
        oldest first."""
        return [Upload(*row) for row in self._conn.execute(
            "SELECT a.seq, e.id, a.name, a.path FROM attachments a "
            "JOIN events e ON e.seq = a.seq JOIN deliveries d ON d.seq = a.seq "
            "WHERE a.uploaded = 0 AND d.transport = ? AND d.state = 'accepted' "
            # The snapshot first, then frames 1, 2 … 10 in number order (not as text).
            "ORDER BY a.seq, a.name != 'snapshot', CAST(substr(a.name, 7) AS INTEGER) "
            "LIMIT ?", (transport, limit))]

    def mark_uploaded(self, seq: int, name: str) -> None:
        with self._transaction() as c:
            c.execute("UPDATE attachments SET uploaded=1 WHERE seq=? AND name=?", (seq, name))

    @reads
    def uploaded_paths(self) -> set[str]:
        return {r[0] for r in self._conn.execute(
            "SELECT path FROM attachments WHERE uploaded=1")}
