"""How a run's issue merges into the one stored issue of its fingerprint. Pure; shared by every store.

Humans own Status (except regression), Fix Notes, Fix Commit and Fixed Time; the pipeline owns the
rest. A FIXED issue seen again becomes REGRESSED; an IGNORED one stays ignored but keeps counting.
"""

from __future__ import annotations

from stream_triage.records import ChangeKind, Issue, Status, StoredIssue


def merge_issue(existing: StoredIssue | None, issue: Issue, new_run: bool) -> tuple[StoredIssue, ChangeKind]:
    """Merge ``issue`` into ``existing`` (mutated and returned) or create the stored issue.

    ``new_run`` says whether this fingerprint has not been counted for ``issue.run_id`` before.
    """
    context = "\n".join(issue.context)
    if existing is None:
        stored = StoredIssue(
            fingerprint=issue.fingerprint,
            timestamp=issue.first_seen,
            severity=issue.severity,
            pattern=issue.pattern_id,
            error_message=issue.message,
            masked_message=issue.masked_message,
            context=context,
            stack_trace=issue.stack_trace,
            run_id=issue.run_id,
            run_type=issue.run_type,
            stream=issue.stream,
            client_id=issue.client_id,
            service=issue.service,
            status=Status.NEW,
            occurrences=issue.occurrences,
            first_seen=issue.first_seen,
            last_seen=issue.last_seen,
            runs_affected=1 if issue.run_id else 0,
            run_ids=[issue.run_id] if issue.run_id else [],
            positions=list(issue.positions),
            patterns=list(issue.pattern_ids),
        )
        return stored, ChangeKind.CREATED
    s = existing
    s.occurrences += issue.occurrences
    s.first_seen = _min(s.first_seen, issue.first_seen)
    s.timestamp = s.first_seen
    latest = s.last_seen is None or issue.last_seen is None or issue.last_seen >= s.last_seen
    s.last_seen = _max(s.last_seen, issue.last_seen)
    if issue.severity.rank > s.severity.rank:
        s.severity = issue.severity
        s.pattern = issue.pattern_id
    for pid in issue.pattern_ids:
        if pid not in s.patterns:
            s.patterns.append(pid)
    if latest:
        # The record shows the latest occurrence: its run, message, context and trace.
        s.error_message = issue.message
        s.context = context or s.context
        s.stack_trace = issue.stack_trace or s.stack_trace
        if issue.run_id:
            s.run_id = issue.run_id
        s.run_type = issue.run_type or s.run_type
        s.stream = issue.stream if issue.stream is not None else s.stream
        s.client_id = issue.client_id or s.client_id
        s.service = issue.service or s.service
    if new_run and issue.run_id:
        s.runs_affected += 1
        if issue.run_id not in s.run_ids:
            s.run_ids.append(issue.run_id)
    s.positions.extend(issue.positions)
    if s.status is Status.FIXED:
        s.status = Status.REGRESSED
        return s, ChangeKind.REGRESSED
    return s, ChangeKind.UPDATED


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
