"""Plain records that flow through the pipeline.

``RawRecord`` (from a source) → ``LogLine`` (parsed) → ``Match`` → ``Issue`` (per run, deduplicated)
→ ``RunFlush`` (what a sink receives) → ``StoredIssue`` (one per fingerprint across runs).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """How bad an issue is. Ordered: CRITICAL > ERROR > WARNING."""

    CRITICAL = "CRITICAL"
    ERROR = "ERROR"
    WARNING = "WARNING"

    @property
    def rank(self) -> int:
        """Higher is worse; used to pick the worst of several matches."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.WARNING: 1, Severity.ERROR: 2, Severity.CRITICAL: 3}


class Status(StrEnum):
    """Triage status of a stored issue. Humans own it, except for regression."""

    NEW = "NEW"
    INVESTIGATING = "INVESTIGATING"
    FIXED = "FIXED"
    IGNORED = "IGNORED"
    REGRESSED = "REGRESSED"


class EndReason(StrEnum):
    """Why a run was flushed."""

    MARKER = "marker"  # its completion marker arrived
    LATE = "late"  # lines arrived after the marker; flushed when the grace window closed
    IDLE = "idle"  # silent for the idle timeout without a marker (a crash, usually)
    EOF = "eof"  # replay input ended
    SHUTDOWN = "shutdown"  # the service stopped
    EVICTED = "evicted"  # too many open runs; the least recently active one was flushed
    PARTIAL = "partial"  # too many distinct issues in one run; flushed early, run stays open
    PERIODIC = "periodic"  # the per-source system bucket, flushed on an interval


@dataclass(slots=True)
class RawRecord:
    """One log line as a source delivered it, before parsing.

    ``ts`` is the envelope time (syslog header, Render API ``timestamp``) in epoch seconds, if any.
    ``position`` is the 1-based record number within the input (for replay reports).
    """

    text: str
    source: str = "-"
    ts: float | None = None
    position: int = 0
    log_id: str | None = None


@dataclass(slots=True)
class LineBatch:
    """Many lines in one buffer: what bulk sources (files, syslog, drains) hand the pipeline.

    One object per batch instead of a ``RawRecord`` per line keeps per-line Python work off the hot
    path. ``data`` holds the UTF-8 lines separated by ``\\n`` (a trailing newline is optional and an
    embedded one always separates lines). Line ``i`` comes from ``sources[source_of[i]]`` (all from
    ``sources[0]`` when ``source_of`` is ``None``), has envelope time ``ts[i]`` (NaN: none; ``ts``
    ``None``: no line has one) and position ``first_position + i``. ``lines`` is the number of lines
    once the pipeline has indexed them (``None`` before), so a reader need not count them again.
    """

    data: bytes
    sources: list[str]
    source_of: bytes | None = None
    ts: array | None = None
    first_position: int = 1
    lines: int | None = field(default=None, compare=False, repr=False)

    def records(self) -> list[RawRecord]:
        """The batch as one ``RawRecord`` per line (the slow, exact path)."""
        texts = self.data.decode("utf-8", "replace").split("\n")
        if self.data.endswith(b"\n"):
            texts.pop()
        out = []
        for i, text in enumerate(texts):
            source = self.sources[self.source_of[i] if self.source_of is not None else 0]
            t = self.ts[i] if self.ts is not None else None
            ts = None if t is None or t != t else t  # NaN: no envelope time
            out.append(RawRecord(text.rstrip("\r"), source, ts, self.first_position + i))
        return out


@dataclass(slots=True)
class LogLine:
    """A parsed line. ``run_id`` is the base run id (``YYMMDD-HHMMSS``); ``run_suffix`` the client part."""

    text: str
    message: str
    source: str
    position: int
    ts: float | None = None
    run_id: str | None = None
    run_suffix: str | None = None
    client: str | None = None
    operation: str | None = None
    level: str | None = None


@dataclass(slots=True, frozen=True)
class Match:
    """The result of matching one line against the pattern set."""

    pattern_id: str
    severity: Severity
    pattern_ids: tuple[str, ...]


@dataclass(slots=True)
class Issue:
    """One deduplicated defect within one run (or one flush of a system bucket)."""

    fingerprint: str
    severity: Severity
    pattern_id: str
    message: str
    masked_message: str
    run_id: str | None
    source: str
    client_id: str | None
    operation: str | None
    service: str | None
    stack_trace: str
    context: list[str]
    first_seen: float | None
    last_seen: float | None
    occurrences: int = 1
    pattern_ids: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    run_type: str | None = None
    stream: int | None = None


@dataclass(slots=True)
class RunSummary:
    """What is known about a run when it is flushed."""

    run_id: str | None
    source: str
    first_ts: float | None
    last_ts: float | None
    lines: int
    run_type: str
    stream: int | None
    client_ids: list[str]
    ended: EndReason | None  # how the run ended; None while it is still open (partial/periodic flush)
    marker_seen: bool
    final: bool
    issues_by_severity: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class RunFlush:
    """A batch for the sinks: a run's summary and the issues gathered since its previous flush."""

    run: RunSummary
    issues: list[Issue]
    reason: EndReason


@dataclass(slots=True)
class StoredIssue:
    """One issue per fingerprint across runs: the Production Issues record."""

    fingerprint: str
    timestamp: float | None
    severity: Severity
    pattern: str
    error_message: str
    masked_message: str
    context: str
    stack_trace: str
    run_id: str | None
    run_type: str | None
    stream: int | None
    client_id: str | None
    service: str | None
    status: Status
    occurrences: int
    first_seen: float | None
    last_seen: float | None
    runs_affected: int
    fixed_time: float | None = None
    fix_notes: str = ""
    fix_commit: str = ""
    run_ids: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)


class ChangeKind(StrEnum):
    """What a flush did to a stored issue."""

    CREATED = "created"
    UPDATED = "updated"
    REGRESSED = "regressed"


@dataclass(slots=True, frozen=True)
class IssueChange:
    """One stored issue touched by a flush; what sinks downstream of the store deliver."""

    fingerprint: str
    kind: ChangeKind
    severity: Severity
    status: Status
