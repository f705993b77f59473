"""Parse stage: raw text → LogLine."""

from __future__ import annotations

import pytest

from stream_triage.config import DEFAULT_LINE_REGEX
from stream_triage.pipeline.parse import LineParser, parse_iso_time, strip_ansi
from stream_triage.records import RawRecord

parse = LineParser(DEFAULT_LINE_REGEX)


def rec(text: str, ts: float | None = None, source: str = "render") -> RawRecord:
    return RawRecord(text, source, ts, 7)


def test_tagged_line_splits_into_fields() -> None:
    """A tagged line yields run id, client, operation, level, message, source and position."""
    line = parse(rec("[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] Scoring failed for recA1b2C3d4E5f6G7h"))
    assert line.run_id == "251103-081522"
    assert line.run_suffix is None
    assert line.client == "Ann-Lee"
    assert line.operation == "lead_scoring"
    assert line.level == "ERROR"
    assert line.message == "Scoring failed for recA1b2C3d4E5f6G7h"
    assert line.source == "render"
    assert line.position == 7
    assert line.ts is None


def test_client_suffixed_run_id_gives_base_and_suffix() -> None:
    """`[251103-081522-Ann-Lee]` is base run 251103-081522 with client suffix Ann-Lee."""
    line = parse(rec("[251103-081522-Ann-Lee] [Ann-Lee] [smart_resume] [INFO] Processing 12 leads"))
    assert line.run_id == "251103-081522"
    assert line.run_suffix == "Ann-Lee"
    assert line.client == "Ann-Lee"
    assert line.message == "Processing 12 leads"


def test_iso_prefix_sets_timestamp_and_is_removed() -> None:
    """The `[2025-…Z] ` prefix becomes the timestamp (nanoseconds cut) and leaves the text."""
    line = parse(rec("[2025-11-03T08:15:22.429113507Z] [251103-081522] [Ann-Lee] [run] [WARN] slow"))
    assert line.ts == pytest.approx(1762157722.429113, abs=1e-6)
    assert line.text == "[251103-081522] [Ann-Lee] [run] [WARN] slow"
    assert line.run_id == "251103-081522"
    assert line.level == "WARN"


def test_bare_iso_prefix_without_brackets() -> None:
    """An unbracketed ISO prefix is recognised as well."""
    line = parse(rec("2025-11-03T08:15:22Z ==> Build successful 🎉"))
    assert line.ts == 1762157722.0
    assert line.text == "==> Build successful 🎉"


def test_envelope_time_wins_over_iso_prefix() -> None:
    """A source's envelope time (syslog, Render API) is kept; the prefix is still stripped."""
    line = parse(rec("[2025-11-03T08:15:22Z] [251103-081522] [A] [op] [INFO] hi", ts=100.0))
    assert line.ts == 100.0
    assert line.message == "hi"


def test_envelope_time_used_when_no_prefix() -> None:
    """Without an ISO prefix the envelope time is the line's time."""
    assert parse(rec("plain text", ts=42.5)).ts == 42.5


@pytest.mark.parametrize(
    ("raw", "level"),
    [("WARNING", "WARN"), ("warning", "WARN"), ("FATAL", "CRITICAL"), ("CRIT", "CRITICAL"), ("Err", "ERROR"),
     ("info", "INFO"), ("DEBUG", "DEBUG")],
)  # fmt: skip
def test_level_aliases_are_normalised(raw: str, level: str) -> None:
    """Level aliases map to one spelling (WARNING→WARN, FATAL→CRITICAL)."""
    assert parse(rec(f"[251103-081522] [Ann-Lee] [op] [{raw}] message")).level == level


def test_system_line_has_no_run_and_no_client() -> None:
    """`[SYSTEM] [SYSTEM]` lines are tagged (level, operation) but belong to no run or client."""
    line = parse(rec("[SYSTEM] [SYSTEM] [client-service] [INFO] Loaded 14 active clients"))
    assert line.run_id is None
    assert line.client is None
    assert line.operation == "client-service"
    assert line.level == "INFO"
    assert line.message == "Loaded 14 active clients"


@pytest.mark.parametrize(
    "text",
    [
        "    at updateRecord (/opt/render/project/src/services/airtable.js:212:17)",
        "==> Running build command 'npm install'...",
        'clientIP="203.0.113.7" requestID="5f0c" responseTimeMS=412 responseBytes=583 userAgent="curl/8.5.0"',
        "[not a tag line",
        "",
    ],
)
def test_untagged_lines_keep_text_as_message(text: str) -> None:
    """Untagged lines have no run, level or client; the whole text is the message."""
    line = parse(rec(text))
    assert (line.run_id, line.level, line.client, line.operation) == (None, None, None, None)
    assert line.message == text


def test_ansi_codes_are_stripped() -> None:
    """Colour codes from Render build output are removed before parsing."""
    line = parse(rec("\x1b[32m[251103-081522]\x1b[0m [Ann-Lee] [build] [\x1b[1;31mERROR\x1b[0m] npm ERR! code 1"))
    assert line.run_id == "251103-081522"
    assert line.level == "ERROR"
    assert line.message == "npm ERR! code 1"
    assert strip_ansi("\x1b[1m==> Build failed 😞\x1b[0m") == "==> Build failed 😞"
    assert strip_ansi("no escapes") == "no escapes"


def test_carriage_return_is_dropped() -> None:
    """Windows line endings do not leak into the message."""
    assert parse(rec("[251103-081522] [A] [op] [INFO] done\r")).message == "done"


def test_replacement_characters_are_parsed_not_fatal() -> None:
    """A line decoded with U+FFFD replacements still parses."""
    text = b"[251103-081522] [Ann-Lee] [op] [ERROR] bad byte \xff\xfe here".decode("utf-8", "replace")
    line = parse(rec(text))
    assert line.level == "ERROR"
    assert line.message == "bad byte \ufffd\ufffd here"


def test_custom_line_regex() -> None:
    """A custom `parse.line_regex` with the same group names drives parsing, also without a leading "["."""
    custom = LineParser(
        r"^(?P<level>[A-Z]+) run=(?P<run>\d{6}-\d{6})(?:-(?P<suffix>\S+))? client=(?P<client>\S+) "
        r"op=(?P<operation>\S+) (?P<message>.*)$"
    )
    line = custom(rec("ERROR run=251103-081522-Bo-Chen client=Bo-Chen op=sync Failed to fetch leads"))
    assert line.run_id == "251103-081522"
    assert line.run_suffix == "Bo-Chen"
    assert line.client == "Bo-Chen"
    assert line.operation == "sync"
    assert line.level == "ERROR"
    assert line.message == "Failed to fetch leads"
    # The default format does not match this line at all.
    assert parse(rec("ERROR run=251103-081522 client=Bo op=sync Failed")).run_id is None


def test_custom_line_regex_with_fewer_groups() -> None:
    """A custom regex may omit client and operation; they stay None."""
    custom = LineParser(r"^\[(?P<run>\d{6}-\d{6})\]\s+(?P<level>[A-Z]+):\s+(?P<message>.*)$")
    line = custom(rec("[251103-081522] FATAL: Failed to fetch leads"))
    assert line.run_id == "251103-081522"
    assert line.level == "CRITICAL"
    assert line.message == "Failed to fetch leads"
    assert (line.client, line.operation) == (None, None)


def test_parse_iso_time() -> None:
    """ISO times with Z, offsets, nanoseconds or no zone (UTC) parse; garbage gives None."""
    assert parse_iso_time("2025-11-03T08:15:22Z") == 1762157722.0
    assert parse_iso_time("2025-11-03T09:15:22+01:00") == 1762157722.0
    assert parse_iso_time("2025-11-03T08:15:22.5") == 1762157722.5
    assert parse_iso_time("2025-11-03T08:15:22.123456789Z") == pytest.approx(1762157722.123456)
    assert parse_iso_time("yesterday") is None
