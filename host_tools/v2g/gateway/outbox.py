"""The daemon's energy outbox: SQLite, durable, one row per (station, seq).

Flow (exactly once end to end, with the ledger's dedup):

1. ``store(record)`` signs the record and inserts it in one committed transaction (WAL,
   ``synchronous=FULL``: the row survives a power cut once ``store`` returns). Only then
   does the daemon send ENERGY_ACK to the board ("stored durably"). A record the board
   sends again (it got no ack) is ``"exists"`` when every field matches and ``"conflict"``
   otherwise (a board bug: the stored row is kept, the new one is not).
2. The publisher takes ``pending()`` rows in sequence order, publishes each with QoS 1 and
   calls ``mark_sent`` only for those whose PUBACK came back (aiomqtt's ``publish``
   returns after the PUBACK).
3. The ledger's ``v2g/<station>/energy/ack`` (highest contiguous sequence it has credited)
   goes to ``apply_ack``: rows it covers are deleted. Rows sent but never acked go back to
   pending on every reconnect and when the ack stalls (``requeue_sent``): a PUBACK only
   means the broker had it, and a broker that crashes may lose it.

Payloads are stored exactly as published (signed bytes), so a resend is byte-identical and
the ledger counts it as an exact duplicate.

Context: host (daemon), called from the daemon's asyncio thread (calls are short and
synchronous; one connection, not shared between threads).
"""

import sqlite3
import time

from v2g.common.energy_record import parse_payload

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    station     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    seq_last    INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    stored_ms   INTEGER NOT NULL,
    sent_ms     INTEGER,
    PRIMARY KEY (station, seq)
);
CREATE TABLE IF NOT EXISTS outbox_ack (
    station     TEXT    PRIMARY KEY,
    acked_seq   INTEGER NOT NULL
);
"""


def _now_ms():
    return int(time.time() * 1000)


class Outbox:
    """The outbox database at ``path`` for records signed by ``signer``."""

    def __init__(self, path, signer):
        self.path = str(path)
        self.signer = signer
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise OSError("outbox %s: could not switch to WAL (journal_mode %s)"
                          % (self.path, mode))
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self):
        self._db.close()

    # --- from the board -----------------------------------------------------------------
    def store(self, record):
        """Store ``record`` durably; returns ``"new"``, ``"exists"`` or ``"conflict"``.

        ``"new"`` and ``"exists"`` both mean the board may be acked; ``"conflict"`` means a
        different record was stored under the same (station, seq) earlier (not overwritten).
        A record at or below the back end's acked sequence is ``"exists"`` (already billed).
        """
        row = self._db.execute("SELECT payload FROM outbox WHERE station=? AND seq=?",
                               (record.station, record.seq)).fetchone()
        if row is not None:
            old, _ = parse_payload(bytes(row[0]))
            return "exists" if old == record else "conflict"
        if record.seq_last <= self.acked(record.station):
            return "exists"
        sig = self.signer.sign(record.canonical_bytes())
        payload = record.to_payload(self.signer.alg, self.signer.key_id, sig)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO outbox (station, seq, seq_last, payload, stored_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (record.station, record.seq, record.seq_last, payload, _now_ms()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return "new"

    def max_seq(self, station):
        """Highest sequence stored or acked for ``station`` (0 when none)."""
        row = self._db.execute("SELECT MAX(seq_last) FROM outbox WHERE station=?",
                               (station,)).fetchone()
        return max(row[0] or 0, self.acked(station))

    # --- to the broker ------------------------------------------------------------------
    def pending(self, station, limit=50):
        """Up to ``limit`` rows not yet PUBACKed, in sequence order: ``[(seq, payload)]``."""
        return [(seq, bytes(p)) for seq, p in self._db.execute(
            "SELECT seq, payload FROM outbox WHERE station=? AND sent_ms IS NULL "
            "ORDER BY seq LIMIT ?", (station, limit))]

    def mark_sent(self, station, seqs):
        """Mark the rows ``seqs`` as PUBACKed (call only for confirmed publishes)."""
        if not seqs:
            return
        now = _now_ms()
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("UPDATE outbox SET sent_ms=? WHERE station=? AND seq=?",
                             [(now, station, s) for s in seqs])
        self._db.execute("COMMIT")

    def requeue_sent(self, station):
        """Put every sent-but-unacked row back to pending; returns how many."""
        cur = self._db.execute("UPDATE outbox SET sent_ms=NULL WHERE station=? AND "
                               "sent_ms IS NOT NULL", (station,))
        return cur.rowcount

    def unacked(self, station):
        """Rows kept for ``station`` (pending or sent, not yet covered by an ack)."""
        return self._db.execute("SELECT COUNT(*) FROM outbox WHERE station=?",
                                (station,)).fetchone()[0]

    def sent_unacked(self, station):
        return self._db.execute("SELECT COUNT(*) FROM outbox WHERE station=? AND "
                                "sent_ms IS NOT NULL", (station,)).fetchone()[0]

    # --- from the back end --------------------------------------------------------------
    def acked(self, station):
        row = self._db.execute("SELECT acked_seq FROM outbox_ack WHERE station=?",
                               (station,)).fetchone()
        return row[0] if row else 0

    def apply_ack(self, station, acked_seq):
        """The ledger has credited every sequence up to ``acked_seq``: drop those rows.

        Acks never move backwards (a stale retained ack changes nothing). Returns the
        number of rows deleted.
        """
        if acked_seq <= self.acked(station):
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO outbox_ack (station, acked_seq) VALUES (?, ?) "
                "ON CONFLICT (station) DO UPDATE SET acked_seq=excluded.acked_seq",
                (station, acked_seq))
            n = self._db.execute("DELETE FROM outbox WHERE station=? AND seq_last<=?",
                                 (station, acked_seq)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return n

    def stored_ms(self, station):
        """``{seq: stored_ms}`` of the rows kept (for latency figures in tests)."""
        return dict(self._db.execute("SELECT seq, stored_ms FROM outbox WHERE station=?",
                                     (station,)))
