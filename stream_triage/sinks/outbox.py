"""The delivery outbox of one external sink, kept in the store's SQLite database.

``IssueStore.apply`` inserts a row per issue change for every configured sink in the same
transaction as the change itself; a sink's worker reads due rows in order, delivers the current state
of those issues, and acknowledges by deleting rows up to the highest id it delivered. A crash between
sending and acknowledging just sends again, which an upsert by fingerprint makes harmless.
All methods are synchronous; async callers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stream_triage.sinks.sqlite import IssueStore


@dataclass(slots=True, frozen=True)
class OutboxEntry:
    """One pending change."""

    id: int
    fingerprint: str
    change: str
    attempts: int
    created_at: float


@dataclass(slots=True, frozen=True)
class ParkedEntry:
    """A change that failed permanently; a human must fix the cause (see ``stream-triage doctor``)."""

    id: int
    fingerprint: str
    change: str
    attempts: int
    created_at: float
    error: str


class Outbox:
    """Pending and parked changes of sink ``sink``."""

    def __init__(self, store: IssueStore, sink: str) -> None:
        self.store = store
        self.sink = sink

    def due(self, now: float, limit: int = 50) -> list[OutboxEntry]:
        """Oldest pending changes, in order, up to the first one whose retry time has not come.

        Strictly first in, first out: a change waiting out a backoff holds back the newer ones, so
        Airtable receives changes in the order they happened, also after an outage.
        """
        with self.store.lock:
            rows = self.store.connection.execute(
                "SELECT id, fingerprint, change, attempts, created_at, next_attempt_at FROM outbox "
                "WHERE sink=? AND parked=0 ORDER BY id LIMIT ?",
                (self.sink, limit),
            ).fetchall()
        out = []
        for row in rows:
            if row[5] > now:
                break
            out.append(OutboxEntry(*row[:5]))
        return out

    def next_due_at(self) -> float | None:
        """When the oldest pending change becomes due (see :meth:`due`), or ``None`` if nothing is pending."""
        with self.store.lock:
            row = self.store.connection.execute(
                "SELECT next_attempt_at FROM outbox WHERE sink=? AND parked=0 ORDER BY id LIMIT 1", (self.sink,)
            ).fetchone()
        return None if row is None else float(row[0])

    def pending_fingerprints(self) -> set[str]:
        """Fingerprints with changes not yet delivered (pending or parked)."""
        with self.store.lock:
            rows = self.store.connection.execute(
                "SELECT DISTINCT fingerprint FROM outbox WHERE sink=?", (self.sink,)
            ).fetchall()
        return {r[0] for r in rows}

    def ack(self, upto: Mapping[str, int]) -> None:
        """Delivered: drop each fingerprint's rows up to and including the given id."""
        if not upto:
            return
        db = self.store.connection
        with self.store.lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "DELETE FROM outbox WHERE sink=? AND fingerprint=? AND id<=? AND parked=0",
                    [(self.sink, fp, max_id) for fp, max_id in upto.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def defer(self, ids: Iterable[int], next_attempt_at: float, error: str) -> None:
        """Retryable failure: try these rows again at ``next_attempt_at``."""
        self._update(ids, "attempts=attempts+1, next_attempt_at=?, last_error=?", (next_attempt_at, error))

    def park(self, ids: Iterable[int], error: str) -> None:
        """Permanent failure: keep the rows, with the error, out of the delivery loop."""
        self._update(ids, "attempts=attempts+1, parked=1, last_error=?", (error,))

    def unpark(self) -> int:
        """Put every parked change back in line (after the cause was fixed); returns how many."""
        with self.store.lock:
            cur = self.store.connection.execute(
                "UPDATE outbox SET parked=0, next_attempt_at=0 WHERE sink=? AND parked=1", (self.sink,)
            )
            return cur.rowcount

    def _update(self, ids: Iterable[int], assignment: str, args: tuple[object, ...]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.store.lock:
            self.store.connection.executemany(f"UPDATE outbox SET {assignment} WHERE id=?", [(*args, i) for i in ids])

    def backlog(self) -> int:
        """Pending (not parked) changes."""
        with self.store.lock:
            row = self.store.connection.execute(
                "SELECT COUNT(*) FROM outbox WHERE sink=? AND parked=0", (self.sink,)
            ).fetchone()
        return int(row[0])

    def parked(self, limit: int = 1000) -> list[ParkedEntry]:
        """Parked changes with their errors, oldest first."""
        with self.store.lock:
            rows = self.store.connection.execute(
                "SELECT id, fingerprint, change, attempts, created_at, COALESCE(last_error, '') FROM outbox "
                "WHERE sink=? AND parked=1 ORDER BY id LIMIT ?",
                (self.sink, limit),
            ).fetchall()
        return [ParkedEntry(*row) for row in rows]

    def record_ids(self) -> dict[str, str]:
        """Fingerprint → the sink's record id, for every record the sink is known to hold."""
        with self.store.lock:
            rows = self.store.connection.execute(
                "SELECT fingerprint, record_id FROM sink_records WHERE sink=?", (self.sink,)
            ).fetchall()
        return {fp: rid for fp, rid in rows}

    def save_record_ids(self, ids: Mapping[str, str]) -> None:
        """Remember record ids the sink returned."""
        if not ids:
            return
        with self.store.lock:
            self.store.connection.executemany(
                "INSERT INTO sink_records(sink, fingerprint, record_id) VALUES (?,?,?) "
                "ON CONFLICT(sink, fingerprint) DO UPDATE SET record_id=excluded.record_id",
                [(self.sink, fp, rid) for fp, rid in ids.items()],
            )
