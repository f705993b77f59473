"""Parse stage: a raw text line → ``LogLine`` (timestamp, run id, client, operation, level, message).

Pure and allocation-light: one anchored regex per line, ANSI stripping only when an escape is present.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from stream_triage.config import DEFAULT_LINE_REGEX
from stream_triage.records import LogLine, RawRecord

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# `[2025-11-03T08:15:22.429113507Z] ` as Render's log viewer and API dumps prefix lines.
_ISO_PREFIX = re.compile(r"\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\]?\s")
LEVEL_ALIASES = {
    "WARNING": "WARN",
    "ERR": "ERROR",
    "FATAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "INFORMATION": "INFO",
    "DBG": "DEBUG",
}


_RUN_ONLY = re.compile(r"^\[(?P<run>\d{6}-\d{6})(?:-(?P<suffix>[^\]]+))?\]\s?(?P<message>.*)$")


_UTC_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\Z")
_SECOND_CACHE: dict[str, float] = {}


def parse_iso_time(text: str) -> float | None:
    """Parse an RFC 3339 / ISO 8601 timestamp into epoch seconds; ``None`` if it is not one.

    Nanosecond fractions (Render) are cut to microseconds, which ``datetime`` can hold. The common
    UTC form (``…T08:15:22.429Z``) is parsed from a per-second cache: lines share their second.
    """
    m = _UTC_SECOND.match(text)
    if m is not None:
        second = text[:19]
        base = _SECOND_CACHE.get(second)
        if base is None:
            try:
                base = datetime.fromisoformat(second).replace(tzinfo=UTC).timestamp()
            except ValueError:
                return None
            if len(_SECOND_CACHE) > 4096:
                _SECOND_CACHE.clear()
            _SECOND_CACHE[second] = base
        frac = m.group(1)
        return base + float(frac[:7]) if frac else base
    return _parse_iso_general(text)


def _parse_iso_general(text: str) -> float | None:
    try:
        if "." in text:
            head, _, frac = text.partition(".")
            digits = len(frac) - len(frac.lstrip("0123456789"))
            text = f"{head}.{frac[: min(digits, 6)]}{frac[digits:]}"
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        # Render's timestamps are UTC; a naive one is read the same way, never as local time.
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def strip_ansi(text: str) -> str:
    """Remove ANSI colour and cursor sequences (Render build output carries them)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


class LineParser:
    """Split lines with the configured run-tag regex; precomputes everything in ``__init__``."""

    __slots__ = ("_bracket_only", "_groups", "_match", "_run_only")

    def __init__(self, line_regex: str) -> None:
        compiled = re.compile(line_regex)
        self._match = compiled.match
        self._groups = set(compiled.groupindex)
        # Only a regex anchored on "[" lets lines not starting with "[" skip the regex; a custom
        # format (`ERROR run=… msg`) must still be tried on every line.
        self._bracket_only = line_regex.startswith(r"^\[")
        self._run_only = _RUN_ONLY.match if line_regex == DEFAULT_LINE_REGEX else None

    def __call__(self, record: RawRecord) -> LogLine:
        """Parse one raw record. Never raises: an unrecognised line is an untagged line."""
        text = record.text
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        if text.endswith("\r"):
            text = text.rstrip("\r\n")
        ts = record.ts
        body = text
        if (text[:1] == "[" and text[1:3] == "20") or text[:2] == "20":
            m = _ISO_PREFIX.match(text)
            if m is not None:
                line_ts = parse_iso_time(m.group(1))
                if line_ts is not None:
                    body = text[m.end() :]
                    if ts is None:
                        ts = line_ts
        line = LogLine(body, body, record.source, record.position, ts)  # positional: cheaper per line
        if self._bracket_only and body[:1] != "[":
            return line
        m = self._match(body)
        if m is None:
            if self._run_only is None:
                return line
            # A line tagged with a run id alone still belongs to that run (the fast path relies on it).
            m = self._run_only(body)
            if m is None:
                return line
        groups = m.groupdict()
        line.message = groups.get("message") or ""
        run = groups.get("run")
        if run:
            line.run_id = run
            line.run_suffix = groups.get("suffix") or None
        client = groups.get("client")
        if client and client != "SYSTEM":
            line.client = client
        line.operation = groups.get("operation") or None
        level = groups.get("level")
        if level:
            level = level.upper()
            line.level = LEVEL_ALIASES.get(level, level)
        return line
