"""In-memory issue store: the aggregation ``replay --json`` prints, and a test double for sinks."""

from __future__ import annotations

from collections.abc import Sequence

from stream_triage.merge import merge_issue
from stream_triage.records import IssueChange, RunFlush, RunSummary, StoredIssue


class MemoryStore:
    """Keeps one ``StoredIssue`` per fingerprint and every run summary, in insertion order."""

    def __init__(self) -> None:
        self.issues: dict[str, StoredIssue] = {}
        self.runs: dict[str, RunSummary] = {}
        self._seen: set[tuple[str, str]] = set()

    def apply(self, flushes: Sequence[RunFlush], now: float = 0.0) -> list[IssueChange]:
        """Merge flushed issues; see ``stream_triage.merge``."""
        changes: list[IssueChange] = []
        for flush in flushes:
            if flush.run.run_id is not None:
                self.runs[flush.run.run_id] = flush.run
            for issue in flush.issues:
                key = (issue.fingerprint, issue.run_id or "")
                new_run = key not in self._seen
                self._seen.add(key)
                stored, kind = merge_issue(self.issues.get(issue.fingerprint), issue, new_run)
                self.issues[issue.fingerprint] = stored
                changes.append(IssueChange(stored.fingerprint, kind, stored.severity, stored.status))
        return changes

    def close(self) -> None:
        """Nothing to release."""
