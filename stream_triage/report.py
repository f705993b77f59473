"""Presenting issues and runs: JSON documents and the human-readable summary. Pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from stream_triage.records import RunSummary, Severity, StoredIssue

_ORDER = {Severity.CRITICAL: 0, Severity.ERROR: 1, Severity.WARNING: 2}


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds (``2025-11-03T08:15:22.429Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sort_issues(issues: Iterable[StoredIssue]) -> list[StoredIssue]:
    """Worst first, then most frequent."""
    return sorted(issues, key=lambda i: (_ORDER[i.severity], -i.occurrences, i.fingerprint))


def issue_json(issue: StoredIssue) -> dict[str, object]:
    """The JSON shape of one aggregated issue (``replay --json``)."""
    return {
        "fingerprint": issue.fingerprint,
        "severity": issue.severity.value,
        "pattern": issue.pattern,
        "patterns": issue.patterns,
        "message": issue.error_message,
        "masked_message": issue.masked_message,
        "status": issue.status.value,
        "run_id": issue.run_id,
        "run_ids": issue.run_ids,
        "run_type": issue.run_type,
        "stream": issue.stream,
        "client_id": issue.client_id,
        "service": issue.service,
        "occurrences": issue.occurrences,
        "first_seen": iso(issue.first_seen),
        "last_seen": iso(issue.last_seen),
        "line_numbers": sorted(issue.positions),
        "stack_trace": issue.stack_trace,
        "context": issue.context.split("\n") if issue.context else [],
    }


def run_json(run: RunSummary) -> dict[str, object]:
    """The JSON shape of one run."""
    return {
        "run_id": run.run_id,
        "run_type": run.run_type,
        "stream": run.stream,
        "client_ids": run.client_ids,
        "lines": run.lines,
        "first_seen": iso(run.first_ts),
        "last_seen": iso(run.last_ts),
        "ended": run.ended.value if run.ended else None,
        "issues": run.issues_by_severity,
    }


def summary_text(
    lines: int, inputs: int, runs: Iterable[RunSummary], issues: Iterable[StoredIssue], top: int = 15
) -> str:
    """The readable replay summary."""
    runs = list(runs)
    issues = sort_issues(issues)
    ended = Counter(r.ended.value if r.ended else "open" for r in runs)
    sev = Counter(i.severity.value for i in issues)
    out = [
        f"Replayed {lines:,} lines from {inputs} input(s): {len(runs)} run(s)"
        + (f" ({', '.join(f'{n} {k}' for k, n in sorted(ended.items()))})" if runs else ""),
        f"{len(issues)} issue(s): " + ", ".join(f"{sev.get(s.value, 0)} {s.value}" for s in Severity),
    ]
    if issues:
        out.append("")
        out.append("Top issues:")
        for i in issues[:top]:
            where = f" [{i.service}]" if i.service else ""
            message = i.error_message if len(i.error_message) <= 100 else i.error_message[:99] + "…"
            out.append(
                f"  {i.severity.value:<8} {i.fingerprint[:8]} {i.occurrences:>5}× {i.pattern:<24}{where} {message}"
            )
        if len(issues) > top:
            out.append(f"  … and {len(issues) - top} more (use --json for all)")
    return "\n".join(out)


def issue_detail(issue: StoredIssue) -> str:
    """Everything about one stored issue, for ``issues show``."""
    rows = [
        ("Fingerprint", issue.fingerprint),
        ("Severity", issue.severity.value),
        ("Status", issue.status.value),
        ("Pattern Matched", ", ".join([issue.pattern] + [p for p in issue.patterns if p != issue.pattern])),
        ("Error Message", issue.error_message),
        ("Service/Function", issue.service or ""),
        ("Run ID", issue.run_id or ""),
        ("Run Type", issue.run_type or ""),
        ("Stream", "" if issue.stream is None else str(issue.stream)),
        ("Client ID", issue.client_id or ""),
        ("Occurrences", str(issue.occurrences)),
        ("Runs Affected", str(issue.runs_affected)),
        ("First Seen", iso(issue.first_seen) or ""),
        ("Last Seen", iso(issue.last_seen) or ""),
        ("Fixed Time", iso(issue.fixed_time) or ""),
        ("Fix Notes", issue.fix_notes),
        ("Fix Commit", issue.fix_commit),
    ]
    out = [f"{k + ':':<18} {v}" for k, v in rows]
    if issue.stack_trace:
        out += ["", "Stack Trace:", issue.stack_trace]
    out += ["", "Context:", issue.context]
    return "\n".join(out)
