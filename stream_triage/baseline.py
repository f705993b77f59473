"""A faithful port of the old triage approach, kept as the baseline the new pipeline is measured against.

The old system grepped a fixed list of regexes over each fetched log line and wrote one Airtable
record per unique line. Its behaviour is reproduced here on purpose, bugs included:

* every pattern is matched against the WHOLE raw line (timestamp prefix, run id and tags too), so
  digits inside timestamps, request ids and byte counts can trigger HTTP-status patterns;
* first match wins, tested in list order CRITICAL > ERROR > WARNING, case-insensitive except
  ``DeprecationWarning``;
* there is no notion of a log level, of stack traces or of continuation lines: a frame or a JSON
  body line that happens to match becomes its own record, and an ``[ERROR]``-tagged line that
  matches no pattern is missed;
* the dedupe key is severity plus the whole masked line, so one defect logged with different
  clients or wording splits into several records.

``OldTriage(early=True)`` is the earlier variant, which additionally carried the bare ``429`` and
``5\\d\\d`` patterns and the greedy ``\\bbatch.*failed`` (the source of the timestamp and
"1 successful, 0 failed" false positives).

Everything here is pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from stream_triage.records import Severity


@dataclass(slots=True, frozen=True)
class OldPattern:
    """One pattern of the old list. ``case_sensitive`` is true only for ``DeprecationWarning``."""

    severity: Severity
    source: str
    case_sensitive: bool = False


def _section(severity: Severity, *sources: str) -> tuple[OldPattern, ...]:
    return tuple(OldPattern(severity, s) for s in sources)


# The old list as it was last deployed. It is described as "~43 regexes"; counted, it holds 44
# (10 CRITICAL, 21 ERROR, 13 WARNING). It is kept exactly as given rather than trimmed to match.
OLD_PATTERNS: tuple[OldPattern, ...] = (
    *_section(
        Severity.CRITICAL,
        r"FATAL ERROR:",
        r"Segmentation fault",
        r"out of memory",
        r"uncaughtException",
        r"unhandledRejection",
        r"ECONNREFUSED",
        r"Connection refused",
        r"Cannot connect to database",
        r"Service unavailable",
        r"All workers dead",
    ),
    *_section(
        Severity.ERROR,
        r"Unknown field name:",
        r"INVALID_REQUEST_BODY",
        r"INVALID_VALUE_FOR_COLUMN",
        r"INVALID_REQUEST_UNKNOWN",
        r"Record not found",
        r"Client run record not found",
        r"Failed to (create|update|fetch|delete)",
        r"scoring failed",
        r"batch\s+(?:run\s+)?failed",
        r"\b(?:failed|error):\s*.*batch",
        r"\bfailed\s+batch",
        r"status\s*[45]\d{2}",
        r"(?:http|error|status|code|response).*?\b(404|500|502|503|504)\b",
        r"\b(404|500|502|503|504)\b.*?(?:error|status|code|response|http)",
        r"ETIMEDOUT",
        r"Request timeout",
        r"timeout of \d+ms exceeded",
        r"Unauthorized",
        r"Authentication failed",
        r"Invalid API key",
        r"Permission denied",
    ),
    OldPattern(Severity.WARNING, r"DeprecationWarning", case_sensitive=True),
    *_section(
        Severity.WARNING,
        r"slow query",
        r"operation took \d{4,} ms",
        r"retrying",
        r"retry attempt \d+",
        r"rate limit",
        r"too many requests",
        r"(status code|HTTP status|response).*429",
        r"429.*(too many|rate limit|throttle)",
        r"validation warning",
        r"missing optional field",
        r"high memory usage",
        r"CPU usage above",
    ),
)

# Patterns the earlier deployment carried on top of OLD_PATTERNS. Each sits at the end of its
# severity section, so the severity order is unchanged.
_EARLY_EXTRA: dict[Severity, tuple[str, ...]] = {
    Severity.ERROR: (r"\bbatch.*failed", r"5\d\d"),
    Severity.WARNING: (r"429",),
}


def _with_early_extras(patterns: tuple[OldPattern, ...]) -> tuple[OldPattern, ...]:
    out: list[OldPattern] = []
    for sev in (Severity.CRITICAL, Severity.ERROR, Severity.WARNING):
        out.extend(p for p in patterns if p.severity is sev)
        out.extend(OldPattern(sev, s) for s in _EARLY_EXTRA.get(sev, ()))
    return tuple(out)


OLD_PATTERNS_EARLY: tuple[OldPattern, ...] = _with_early_extras(OLD_PATTERNS)

# Dedupe masking, applied in this order: the specific shapes first so that their digits do not
# turn into several <N> runs, then every remaining digit run.
_HEX = "[0-9a-fA-F]"
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<TS>"),
    (re.compile(rf"\b{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\b"), "<UUID>"),
    (re.compile(r"\brec[A-Za-z0-9]{14}\b"), "<REC>"),
    (re.compile(r"\d+"), "<N>"),
)


@dataclass(slots=True)
class OldIssue:
    """One record the old tool would have written: a unique (severity, masked line).

    ``line`` is the first raw line seen with this key; ``positions`` are the 1-based indices (within
    the input given to ``run``) of every line that produced this key.
    """

    severity: Severity
    pattern: str
    key: str
    line: str
    positions: list[int] = field(default_factory=list)

    @property
    def occurrences(self) -> int:
        """How many lines were folded into this record."""
        return len(self.positions)


def mask(line: str) -> str:
    """Mask ISO timestamps, UUIDs, Airtable record ids and every digit run, as the old dedupe did."""
    for rx, repl in _MASKS:
        line = rx.sub(repl, line)
    return line


class OldTriage:
    """The old grep-and-dedupe triage. Patterns are compiled once here; methods only match.

    ``early=True`` selects the earlier pattern list (``OLD_PATTERNS_EARLY``).
    """

    def __init__(self, early: bool = False) -> None:
        self.patterns = OLD_PATTERNS_EARLY if early else OLD_PATTERNS
        self._compiled: tuple[tuple[re.Pattern[str], OldPattern], ...] = tuple(
            (re.compile(p.source, 0 if p.case_sensitive else re.IGNORECASE), p) for p in self.patterns
        )

    def classify(self, line: str) -> tuple[Severity, str] | None:
        """Return (severity, pattern source) of the first pattern matching the raw line, or None."""
        for rx, pat in self._compiled:
            if rx.search(line):
                return pat.severity, pat.source
        return None

    @staticmethod
    def dedupe_key(severity: Severity, line: str) -> str:
        """The old record key: severity plus the whole masked raw line."""
        return f"{severity.value}|{mask(line)}"

    def run(self, lines: Iterable[str]) -> list[OldIssue]:
        """Classify every line and fold matches by dedupe key; issues come out in first-seen order."""
        issues: dict[str, OldIssue] = {}
        for position, line in enumerate(lines, start=1):
            hit = self.classify(line)
            if hit is None:
                continue
            severity, pattern = hit
            key = self.dedupe_key(severity, line)
            issue = issues.get(key)
            if issue is None:
                issue = issues[key] = OldIssue(severity, pattern, key, line)
            issue.positions.append(position)
        return list(issues.values())
