"""The embedded SQLite issue store: one issue per fingerprint, statuses, runs, transactions, schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stream_triage.errors import StoreError
from stream_triage.records import ChangeKind, EndReason, RunFlush, Severity, Status
from stream_triage.sinks import sqlite as sqlite_mod
from stream_triage.sinks.memory import MemoryStore
from stream_triage.sinks.sqlite import MIGRATIONS, IssueStore
from tests.helpers import T0, feed, make_triage, replay

RUN_A = "251103-081522"
RUN_B = "251104-081522"


def run_lines(run: str, client: str, record: str) -> list[str]:
    """One smart-resume run hitting the unknown-field defect and a rate limit, then completing."""
    return [
        f"[{run}] [SYSTEM] [smart_resume] [INFO] Starting smart resume stream 2",
        f'[{run}-{client}] [{client}] [smart_resume] [ERROR] Failed to update {record}: Unknown field name: "Stream"',
        "    at updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)",
        f"[{run}-{client}] [{client}] [airtable] [WARN] Airtable rate limit hit, will retry in 2s",
        f"[{run}] [SYSTEM] [smart_resume] [INFO] SMART RESUME PROCESSING COMPLETED",
    ]


@pytest.fixture
def store(tmp_path: Path):
    """A fresh store in a temporary directory, closed afterwards."""
    s = IssueStore(tmp_path / "sub" / "issues.db")
    yield s
    s.close()


def unknown_field(store: IssueStore):
    [issue] = [i for i in store.list_issues() if i.pattern == "airtable-unknown-field"]
    return issue


def test_store_uses_wal_and_creates_parent_directories(tmp_path: Path) -> None:
    """The database file is created (with its directory) in WAL mode."""
    path = tmp_path / "a" / "b" / "issues.db"
    s = IssueStore(path)
    try:
        assert path.exists()
        assert s.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.writable()
    finally:
        s.close()


def test_one_issue_per_fingerprint_across_runs_with_all_fields(store: IssueStore) -> None:
    """The same defect in two runs of two clients is one stored issue with every field filled."""
    flushes = replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn"))
    flushes += replay(run_lines(RUN_B, "Bo-Chen", "recZyXwVuTsRqPoNm"), start=T0 + 86400)
    changes = store.apply(flushes, now=T0 + 90000)
    issues = store.list_issues()
    assert len(issues) == 2
    assert [c.kind for c in changes if c.fingerprint == unknown_field(store).fingerprint] == [
        ChangeKind.CREATED,
        ChangeKind.UPDATED,
    ]
    s = unknown_field(store)
    assert s.severity is Severity.ERROR
    assert s.patterns == ["airtable-unknown-field", "failed-operation", "level-error"]
    assert s.error_message == 'Failed to update recZyXwVuTsRqPoNm: Unknown field name: "Stream"'  # the latest
    assert s.masked_message == 'Failed to update <id>: Unknown field name: "Stream"'
    assert s.run_id == RUN_B
    assert s.run_ids == [RUN_A, RUN_B]
    assert s.runs_affected == 2
    assert s.run_type == "smart-resume"
    assert s.stream == 2
    assert s.client_id == "Bo-Chen"
    assert s.service == "updateClientRun (services/clientRunService.js)"
    assert s.stack_trace == "    at updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)"
    assert ">> [251104-081522-Bo-Chen]" in s.context
    assert s.status is Status.NEW
    assert s.occurrences == 2
    assert s.first_seen == T0 + 1
    assert s.timestamp == T0 + 1
    assert s.last_seen == T0 + 86400 + 1
    assert (s.fixed_time, s.fix_notes, s.fix_commit) == (None, "", "")


def test_issues_survive_reopening(tmp_path: Path) -> None:
    """What was stored is there after closing and opening the file again."""
    path = tmp_path / "issues.db"
    s = IssueStore(path)
    s.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    s.close()
    s = IssueStore(path)
    try:
        assert {i.pattern for i in s.list_issues()} == {"airtable-unknown-field", "rate-limited"}
    finally:
        s.close()


def test_fixed_issue_seen_again_regresses(store: IssueStore) -> None:
    """FIXED + a new occurrence → REGRESSED; the fix notes, commit and time stay for the human."""
    store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    fp = unknown_field(store).fingerprint
    fixed = store.set_status(fp[:8], Status.FIXED, notes="added the Stream field", commit="a1b2c3d", now=T0 + 100)
    assert (fixed.status, fixed.fixed_time, fixed.fix_commit) == (Status.FIXED, T0 + 100, "a1b2c3d")
    changes = store.apply(replay(run_lines(RUN_B, "Bo-Chen", "recZyXwVuTsRqPoNm"), start=T0 + 86400))
    assert ChangeKind.REGRESSED in {c.kind for c in changes if c.fingerprint == fp}
    s = store.get(fp)
    assert s.status is Status.REGRESSED
    assert (s.fix_notes, s.fix_commit, s.fixed_time) == ("added the Stream field", "a1b2c3d", T0 + 100)
    assert s.occurrences == 2


def test_ignored_issue_stays_ignored_but_keeps_counting(store: IssueStore) -> None:
    """IGNORED is a human decision: later occurrences count without changing it."""
    store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    fp = unknown_field(store).fingerprint
    store.set_status(fp, Status.IGNORED)
    changes = store.apply(replay(run_lines(RUN_B, "Bo-Chen", "recZyXwVuTsRqPoNm"), start=T0 + 86400))
    assert [c.kind for c in changes if c.fingerprint == fp] == [ChangeKind.UPDATED]
    s = store.get(fp)
    assert (s.status, s.occurrences, s.runs_affected) == (Status.IGNORED, 2, 2)
    assert [i.fingerprint for i in store.list_issues(status=[Status.IGNORED])] == [fp]


@pytest.mark.parametrize("status", [Status.INVESTIGATING, Status.NEW, Status.REGRESSED])
def test_other_statuses_are_kept_on_new_occurrences(store: IssueStore, status: Status) -> None:
    """Only FIXED changes by itself; every other status stays as the human set it."""
    store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    fp = unknown_field(store).fingerprint
    store.set_status(fp, status)
    store.apply(replay(run_lines(RUN_B, "Bo-Chen", "recZyXwVuTsRqPoNm"), start=T0 + 86400))
    assert store.get(fp).status is status


def test_set_status_of_unknown_fingerprint_raises_key_error(store: IssueStore) -> None:
    """An unknown or ambiguous fingerprint is a KeyError, and nothing is written."""
    with pytest.raises(KeyError):
        store.set_status("ffffffffffffffff", Status.FIXED)
    store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    with pytest.raises(KeyError):
        store.set_status("", Status.FIXED)  # a prefix of both issues
    assert {i.status for i in store.list_issues()} == {Status.NEW}
    assert store.get("ffff") is None


def test_runs_table_records_each_run(store: IssueStore) -> None:
    """Runs: id, first/last line time, lines, issues by severity and how they ended."""
    lines = run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")
    triage = make_triage()
    flushes = feed(triage, lines)
    flushes += feed(triage, [f"[{RUN_B}] [Bo-Chen] [lead_scoring] [INFO] Batch scoring 50 leads"], start=T0 + 10)
    flushes += triage.tick(T0 + 10 + 1800)
    store.apply(flushes, now=T0 + 5000)
    runs = {r["run_id"]: r for r in store.runs()}
    a, b = runs[RUN_A], runs[RUN_B]
    assert (a["first_ts"], a["last_ts"], a["lines"]) == (T0, T0 + 4, 5)
    assert (a["error"], a["warning"], a["critical"]) == (1, 1, 0)
    assert a["ended"] == "marker"
    assert a["run_type"] == "smart-resume" and a["stream"] == 2
    assert b["ended"] == "idle"
    assert (b["critical"], b["run_type"]) == (1, "batch-score")
    assert [r["run_id"] for r in store.runs()] == [RUN_B, RUN_A]  # most recent first


@pytest.mark.parametrize("ended", [EndReason.EOF, EndReason.SHUTDOWN])
def test_runs_table_records_eof_and_shutdown(store: IssueStore, ended: EndReason) -> None:
    """Runs flushed at end of input or shutdown say so."""
    triage = make_triage()
    flushes = feed(triage, [f"[{RUN_A}] [Ann-Lee] [smart_resume] [INFO] start"]) + triage.flush_all(ended)
    store.apply(flushes)
    assert store.runs()[0]["ended"] == ended.value


def test_runs_affected_counts_distinct_runs_when_a_run_is_flushed_twice(store: IssueStore) -> None:
    """A defect in a run's marker flush and again in its late flush counts one run affected."""
    triage = make_triage()
    line = f"[{RUN_A}] [Ann-Lee] [job-tracking] [ERROR] Failed to update client run record"
    first = feed(triage, [line, f"[{RUN_A}] [SYSTEM] [x] [INFO] SMART RESUME PROCESSING COMPLETED", line])
    store.apply(first)
    late = triage.tick(T0 + 2 + 600)
    assert late and late[0].reason is EndReason.LATE
    store.apply(late)
    [s] = store.list_issues()
    assert (s.occurrences, s.runs_affected, s.run_ids) == (2, 1, [RUN_A])
    # the in-memory aggregation agrees
    memory = MemoryStore()
    memory.apply(first + late)
    [m] = memory.issues.values()
    assert (m.occurrences, m.runs_affected) == (2, 1)


def test_apply_is_transactional(store: IssueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in the middle of a batch leaves nothing of that batch written."""
    flushes = replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn"))
    store.apply(flushes[:1])
    before_issues = [(i.fingerprint, i.occurrences) for i in store.list_issues()]
    before_runs = store.runs()
    calls = 0
    real = sqlite_mod.merge_issue

    def failing_merge(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite_mod, "merge_issue", failing_merge)
    second = replay(run_lines(RUN_B, "Bo-Chen", "recZyXwVuTsRqPoNm"), start=T0 + 86400)
    with pytest.raises(RuntimeError):
        store.apply(second)
    assert calls == 2
    assert [(i.fingerprint, i.occurrences) for i in store.list_issues()] == before_issues
    assert store.runs() == before_runs
    assert store.connection.execute("SELECT COUNT(*) FROM issue_runs").fetchone()[0] == 2
    monkeypatch.undo()
    store.apply(second)  # the store is usable afterwards
    assert unknown_field(store).runs_affected == 2


def test_sqlite_errors_become_store_errors(store: IssueStore) -> None:
    """A database failure while writing is a StoreError naming the file."""
    store.connection.execute("DROP TABLE runs")
    with pytest.raises(StoreError, match=r"cannot write to issue store .*issues\.db"):
        store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    assert store.list_issues() == []


def test_outbox_gets_one_entry_per_change_and_sink(tmp_path: Path) -> None:
    """Each change is queued for every configured outbox sink in the same transaction."""
    s = IssueStore(tmp_path / "o.db", outbox_sinks=["airtable", "jsonl"])
    try:
        changes = s.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
        rows = s.connection.execute("SELECT sink, change FROM outbox ORDER BY id").fetchall()
        assert len(rows) == 2 * len(changes) == 4
        assert {r[0] for r in rows} == {"airtable", "jsonl"}
        assert {r[1] for r in rows} == {"created"}
    finally:
        s.close()


def test_schema_version_is_the_number_of_migrations(store: IssueStore) -> None:
    """user_version tracks the migrations applied."""
    assert store.schema_version == len(MIGRATIONS)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A database from a newer stream-triage is not touched."""
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match=r"schema version \d+, newer than this stream-triage"):
        IssueStore(path)


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    """A path that cannot be a database gives a StoreError."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open issue store"):
        IssueStore(tmp_path / "dir.db")


def test_list_issues_filters_and_orders(store: IssueStore) -> None:
    """Worst first; filters by status and severity; open counts exclude FIXED."""
    store.apply(replay(run_lines(RUN_A, "Ann-Lee", "recAbCdEfGhIjKlMn")))
    assert [i.severity for i in store.list_issues()] == [Severity.ERROR, Severity.WARNING]
    assert [i.pattern for i in store.list_issues(severity=[Severity.WARNING])] == ["rate-limited"]
    store.set_status(unknown_field(store).fingerprint, Status.FIXED)
    assert store.open_issue_counts() == [("WARNING", "NEW", 1)]
    assert store.list_issues(limit=1)[0].severity is Severity.ERROR


def test_empty_flush_records_the_run_only(store: IssueStore) -> None:
    """A flush without issues still updates the runs table."""
    triage = make_triage()
    flushes: list[RunFlush] = feed(triage, [f"[{RUN_A}] [Ann-Lee] [x] [INFO] ALL CLIENTS UP TO DATE"])
    assert flushes and not flushes[0].issues
    assert store.apply(flushes) == []
    assert store.runs()[0]["ended"] == "marker"
    assert store.list_issues() == []


def test_one_batch_stores_what_flush_by_flush_stores(tmp_path: Path) -> None:
    """apply() merges a fingerprint seen several times in one batch in memory: the rows (issues,
    runs, per-run counts, outbox) equal those of applying the same flushes one at a time, a FIXED
    issue regressing included."""
    flushes = []
    for day in range(6):
        run = f"2511{day + 3:02d}-081522"
        flushes += replay(run_lines(run, ["Ann-Lee", "Bo-Chen"][day % 2], f"rec{day:014d}"), start=T0 + day * 86400)
    stores = [IssueStore(tmp_path / f"{name}.db", outbox_sinks=["airtable"]) for name in ("batch", "single")]
    try:
        for s in stores:
            s.apply(flushes[:2], now=T0)
            s.set_status(unknown_field(s).fingerprint, Status.FIXED, now=T0)
        batch, single = stores
        batch.apply(flushes[2:], now=T0)
        for flush in flushes[2:]:
            single.apply([flush], now=T0)
        assert unknown_field(batch).status is Status.REGRESSED
        for table in ("issues", "issue_runs", "runs", "outbox"):
            rows = [
                sorted(map(tuple, s.connection.execute(f"SELECT * FROM {table}").fetchall()), key=repr) for s in stores
            ]
            assert rows[0] == rows[1], table
    finally:
        for s in stores:
            s.close()
