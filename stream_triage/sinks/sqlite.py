"""The embedded default store: SQLite in WAL mode, one row per fingerprint across runs.

Writes happen in one transaction per batch of flushes. Every issue change is also queued in the
``outbox`` table for each configured external sink in the same transaction, so a crash can never
record an issue locally without also remembering to deliver it. The schema is versioned through
``PRAGMA user_version`` and upgraded by the migrations below.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from stream_triage.errors import StoreError
from stream_triage.merge import merge_issue
from stream_triage.records import (
    ChangeKind,
    IssueChange,
    RunFlush,
    RunSummary,
    Severity,
    Status,
    StoredIssue,
)

MIGRATIONS: list[str] = [
    # 1: issues, runs, the runs each issue was seen in, and the delivery outbox.
    """
    CREATE TABLE issues (
        fingerprint     TEXT PRIMARY KEY,
        timestamp       REAL,
        severity        TEXT NOT NULL,
        pattern         TEXT NOT NULL,
        patterns        TEXT NOT NULL DEFAULT '[]',
        error_message   TEXT NOT NULL,
        masked_message  TEXT NOT NULL,
        context         TEXT NOT NULL,
        stack_trace     TEXT NOT NULL,
        run_id          TEXT,
        run_type        TEXT,
        stream          INTEGER,
        client_id       TEXT,
        service         TEXT,
        status          TEXT NOT NULL DEFAULT 'NEW',
        occurrences     INTEGER NOT NULL,
        first_seen      REAL,
        last_seen       REAL,
        runs_affected   INTEGER NOT NULL DEFAULT 0,
        fixed_time      REAL,
        fix_notes       TEXT NOT NULL DEFAULT '',
        fix_commit      TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX issues_status ON issues(status, severity);
    CREATE INDEX issues_last_seen ON issues(last_seen);
    CREATE TABLE issue_runs (
        fingerprint TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        occurrences INTEGER NOT NULL,
        PRIMARY KEY (fingerprint, run_id)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        source      TEXT,
        first_ts    REAL,
        last_ts     REAL,
        lines       INTEGER NOT NULL,
        run_type    TEXT,
        stream      INTEGER,
        client_ids  TEXT NOT NULL DEFAULT '[]',
        critical    INTEGER NOT NULL DEFAULT 0,
        error       INTEGER NOT NULL DEFAULT 0,
        warning     INTEGER NOT NULL DEFAULT 0,
        ended       TEXT,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        sink            TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        change          TEXT NOT NULL,
        created_at      REAL NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error      TEXT,
        parked          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_pending ON outbox(sink, parked, id);
    """,
    # 2: the record id an external sink gave each fingerprint (Airtable record ids).
    """
    CREATE TABLE sink_records (
        sink        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        record_id   TEXT NOT NULL,
        PRIMARY KEY (sink, fingerprint)
    ) WITHOUT ROWID;
    """,
]

_ISSUE_COLUMNS = (
    "fingerprint, timestamp, severity, pattern, patterns, error_message, masked_message, context, "
    "stack_trace, run_id, run_type, stream, client_id, service, status, occurrences, first_seen, "
    "last_seen, runs_affected, fixed_time, fix_notes, fix_commit"
)


class IssueStore:
    """SQLite-backed issue store. Safe to call from one thread at a time (guarded by a lock)."""

    def __init__(self, path: str | Path, outbox_sinks: Iterable[str] = ()) -> None:
        self.path = str(path)
        self.outbox_sinks = tuple(outbox_sinks)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open issue store {self.path}: {exc}") from exc

    # ------------------------------------------------------------------ schema
    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this stream-triage "
                f"({len(MIGRATIONS)}); upgrade stream-triage or use another --db"
            )
        for version in range(current, len(MIGRATIONS)):
            with self._transaction():
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version + 1}")

    def _transaction(self) -> _Tx:
        return _Tx(self._db, self._lock)

    # ------------------------------------------------------------------ writes
    def apply(self, flushes: Sequence[RunFlush], now: float | None = None) -> list[IssueChange]:
        """Merge a batch of flushes in one transaction; queue each change for the outbox sinks."""
        now = time.time() if now is None else now
        changes: list[IssueChange] = []
        # A batch often carries one fingerprint many times (one per run): each is read once, merged
        # in memory and written once. Every column written comes out as it would merging row by row.
        merged: dict[str, tuple[StoredIssue, bool]] = {}
        try:
            with self._transaction():
                for flush in flushes:
                    for issue in flush.issues:
                        new_run = False
                        if issue.run_id:
                            cur = self._db.execute(
                                "INSERT OR IGNORE INTO issue_runs(fingerprint, run_id, occurrences) VALUES (?,?,?)",
                                (issue.fingerprint, issue.run_id, issue.occurrences),
                            )
                            new_run = cur.rowcount == 1
                            if not new_run:
                                self._db.execute(
                                    "UPDATE issue_runs SET occurrences = occurrences + ? "
                                    "WHERE fingerprint=? AND run_id=?",
                                    (issue.occurrences, issue.fingerprint, issue.run_id),
                                )
                        held = merged.get(issue.fingerprint)
                        if held is None:
                            # The merge needs no run list (Runs Affected is a stored count): not loaded.
                            existing = self._get(issue.fingerprint, with_run_ids=False)
                            created = existing is None
                        else:
                            existing, created = held
                        stored, kind = merge_issue(existing, issue, new_run)
                        merged[stored.fingerprint] = (stored, created)
                        change = IssueChange(stored.fingerprint, kind, stored.severity, stored.status)
                        changes.append(change)
                        for sink in self.outbox_sinks:
                            self._db.execute(
                                "INSERT INTO outbox(sink, fingerprint, change, created_at) VALUES (?,?,?,?)",
                                (sink, stored.fingerprint, kind.value, now),
                            )
                    if flush.run.run_id is not None:
                        self._put_run(flush.run, now)
                for stored, created in merged.values():
                    self._put(stored, now, created)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to issue store {self.path}: {exc}") from exc
        return changes

    def _put(self, s: StoredIssue, now: float, created: bool) -> None:
        values = (
            s.fingerprint, s.timestamp, s.severity.value, s.pattern, orjson.dumps(s.patterns).decode(),
            s.error_message, s.masked_message, s.context, s.stack_trace, s.run_id, s.run_type, s.stream,
            s.client_id, s.service, s.status.value, s.occurrences, s.first_seen, s.last_seen,
            s.runs_affected, s.fixed_time, s.fix_notes, s.fix_commit,
        )  # fmt: skip
        if created:
            self._db.execute(
                f"INSERT INTO issues({_ISSUE_COLUMNS}, created_at, updated_at) VALUES ({','.join('?' * 22)}, ?, ?)",
                (*values, now, now),
            )
        else:
            sets = ", ".join(f"{c.strip()}=?" for c in _ISSUE_COLUMNS.split(",")[1:])
            self._db.execute(
                f"UPDATE issues SET {sets}, updated_at=? WHERE fingerprint=?", (*values[1:], now, s.fingerprint)
            )

    def _put_run(self, run: RunSummary, now: float) -> None:
        sev = run.issues_by_severity
        self._db.execute(
            """INSERT INTO runs(run_id, source, first_ts, last_ts, lines, run_type, stream, client_ids,
                                critical, error, warning, ended, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(run_id) DO UPDATE SET
                 first_ts=COALESCE(MIN(runs.first_ts, excluded.first_ts), excluded.first_ts, runs.first_ts),
                 last_ts=COALESCE(MAX(runs.last_ts, excluded.last_ts), excluded.last_ts, runs.last_ts),
                 lines=MAX(runs.lines, excluded.lines), run_type=excluded.run_type,
                 stream=COALESCE(excluded.stream, runs.stream), client_ids=excluded.client_ids,
                 critical=MAX(runs.critical, excluded.critical), error=MAX(runs.error, excluded.error),
                 warning=MAX(runs.warning, excluded.warning), ended=COALESCE(excluded.ended, runs.ended),
                 updated_at=excluded.updated_at""",
            (
                run.run_id, run.source, run.first_ts, run.last_ts, run.lines, run.run_type, run.stream,
                orjson.dumps(run.client_ids).decode(), sev.get("CRITICAL", 0), sev.get("ERROR", 0),
                sev.get("WARNING", 0), run.ended.value if run.ended else None, now,
            ),
        )  # fmt: skip

    def set_status(
        self,
        fingerprint: str,
        status: Status,
        *,
        notes: str | None = None,
        commit: str | None = None,
        now: float | None = None,
    ) -> StoredIssue:
        """Set an issue's status (a human action). FIXED records the fix time, notes and commit."""
        now = time.time() if now is None else now
        with self._transaction():
            issue = self._resolve(fingerprint)
            issue.status = status
            if status is Status.FIXED:
                issue.fixed_time = now
            if notes is not None:
                issue.fix_notes = notes
            if commit is not None:
                issue.fix_commit = commit
            self._put(issue, now, created=False)
            for sink in self.outbox_sinks:
                self._db.execute(
                    "INSERT INTO outbox(sink, fingerprint, change, created_at) VALUES (?,?,?,?)",
                    (sink, issue.fingerprint, "status", now),
                )
        return issue

    def sync_human_fields(
        self,
        fingerprint: str,
        status: Status,
        *,
        fixed_time: float | None,
        notes: str | None = None,
        commit: str | None = None,
        now: float | None = None,
    ) -> StoredIssue | None:
        """Mirror what humans set elsewhere (Airtable) into the store, without queueing an outbox change."""
        now = time.time() if now is None else now
        with self._transaction():
            issue = self._get(fingerprint)
            if issue is None:
                return None
            issue.status = status
            issue.fixed_time = fixed_time if fixed_time is not None else issue.fixed_time
            if notes:
                issue.fix_notes = notes
            if commit:
                issue.fix_commit = commit
            self._put(issue, now, created=False)
        return issue

    # ------------------------------------------------------------------ reads
    def get(self, fingerprint: str) -> StoredIssue | None:
        """The issue with this fingerprint (or unique fingerprint prefix), if any."""
        with self._lock:
            try:
                return self._resolve(fingerprint)
            except KeyError:
                return None

    def _resolve(self, fingerprint: str) -> StoredIssue:
        issue = self._get(fingerprint)
        if issue is not None:
            return issue
        rows = self._db.execute(
            f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE fingerprint LIKE ? LIMIT 2", (fingerprint + "%",)
        ).fetchall()
        if len(rows) != 1:
            raise KeyError(fingerprint)
        return self._row_to_issue(rows[0])

    def _get(self, fingerprint: str, with_run_ids: bool = True) -> StoredIssue | None:
        row = self._db.execute(f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE fingerprint=?", (fingerprint,)).fetchone()
        return self._row_to_issue(row, with_run_ids) if row else None

    def _row_to_issue(self, row: sqlite3.Row, with_run_ids: bool = True) -> StoredIssue:
        run_ids = (
            [
                r[0]
                for r in self._db.execute(
                    "SELECT run_id FROM issue_runs WHERE fingerprint=? ORDER BY run_id", (row["fingerprint"],)
                )
            ]
            if with_run_ids
            else []
        )
        return StoredIssue(
            fingerprint=row["fingerprint"],
            timestamp=row["timestamp"],
            severity=Severity(row["severity"]),
            pattern=row["pattern"],
            error_message=row["error_message"],
            masked_message=row["masked_message"],
            context=row["context"],
            stack_trace=row["stack_trace"],
            run_id=row["run_id"],
            run_type=row["run_type"],
            stream=row["stream"],
            client_id=row["client_id"],
            service=row["service"],
            status=Status(row["status"]),
            occurrences=row["occurrences"],
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
            runs_affected=row["runs_affected"],
            fixed_time=row["fixed_time"],
            fix_notes=row["fix_notes"],
            fix_commit=row["fix_commit"],
            run_ids=run_ids,
            patterns=orjson.loads(row["patterns"]),
        )

    def list_issues(
        self, status: Iterable[Status] | None = None, severity: Iterable[Severity] | None = None, limit: int = 100
    ) -> list[StoredIssue]:
        """Issues, worst and most recent first, optionally filtered."""
        where, args = [], []
        if status:
            st = [s.value for s in status]
            where.append(f"status IN ({','.join('?' * len(st))})")
            args.extend(st)
        if severity:
            sv = [s.value for s in severity]
            where.append(f"severity IN ({','.join('?' * len(sv))})")
            args.extend(sv)
        sql = f"SELECT {_ISSUE_COLUMNS} FROM issues"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY CASE severity WHEN 'CRITICAL' THEN 0 WHEN 'ERROR' THEN 1 ELSE 2 END, last_seen DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
            return [self._row_to_issue(r) for r in rows]

    def runs(self, limit: int = 100) -> list[dict[str, object]]:
        """Recent runs with how they ended."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs ORDER BY last_ts DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def open_issue_counts(self) -> list[tuple[str, str, int]]:
        """(severity, status, count) of issues not FIXED — for the open-issues gauge."""
        with self._lock:
            rows = self._db.execute(
                "SELECT severity, status, COUNT(*) FROM issues WHERE status != 'FIXED' GROUP BY severity, status"
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def writable(self) -> bool:
        """Whether a write transaction can be started (for readiness checks)."""
        try:
            with self._transaction():
                self._db.execute("CREATE TEMP TABLE IF NOT EXISTS _probe(x)")
            return True
        except sqlite3.Error:
            return False

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for sinks that keep their own tables here (the outbox)."""
        return self._db

    @property
    def lock(self) -> threading.RLock:
        """The lock guarding the connection."""
        return self._lock

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT``/``ROLLBACK`` under the store's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


__all__ = ["ChangeKind", "IssueStore"]
