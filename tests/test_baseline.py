"""Tests for stream_triage.baseline: the port of the old regex triage, bugs included."""

from __future__ import annotations

import json
from pathlib import Path

from stream_triage.baseline import OLD_PATTERNS, OLD_PATTERNS_EARLY, OldTriage, mask
from stream_triage.records import Severity

TS_429 = "[2025-11-03T08:15:22.429Z] "
ANN = "[251103-081522-Ann-Lee] [Ann-Lee]"


def test_old_list_is_kept_as_given_with_44_patterns() -> None:
    """The list is ported verbatim: 10 CRITICAL, 21 ERROR, 13 WARNING, in that order."""
    by_sev = [p.severity for p in OLD_PATTERNS]
    counts = [by_sev.count(s) for s in (Severity.CRITICAL, Severity.ERROR, Severity.WARNING)]
    assert counts == [10, 21, 13]
    ranks = [s.rank for s in by_sev]
    assert ranks == sorted(ranks, reverse=True)
    assert [p.source for p in OLD_PATTERNS if p.case_sensitive] == ["DeprecationWarning"]


def test_early_variant_adds_bare_429_and_5xx_and_greedy_batch() -> None:
    """The early list is the current one plus `429`, `5\\d\\d` and `\\bbatch.*failed`, order kept."""
    extra = [p.source for p in OLD_PATTERNS_EARLY if p not in OLD_PATTERNS]
    assert extra == [r"\bbatch.*failed", r"5\d\d", "429"]
    ranks = [p.severity.rank for p in OLD_PATTERNS_EARLY]
    assert ranks == sorted(ranks, reverse=True)


def test_early_variant_flags_429_inside_a_timestamp_and_current_does_not() -> None:
    """The bare 429 pattern fires on the milliseconds of a timestamp; the current list does not."""
    line = TS_429 + "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Fetched 40 leads pending scoring"
    assert OldTriage(early=True).classify(line) is not None
    assert OldTriage().classify(line) is None
    plain = "[2025-11-03T08:14:02.429Z] [SYSTEM] [SYSTEM] [client-service] [INFO] Retrieved 12 clients"
    assert OldTriage(early=True).classify(plain) == (Severity.WARNING, "429")


def test_early_variant_flags_digits_of_a_nanosecond_timestamp_as_error() -> None:
    """Bare 5\\d\\d matches digits in a nanosecond fraction: an INFO line becomes an ERROR."""
    line = "[2025-11-03T08:14:02.017503113Z] ==> Build successful 🎉"
    assert OldTriage(early=True).classify(line) == (Severity.ERROR, r"5\d\d")
    assert OldTriage().classify(line) is None


def test_current_list_flags_response_bytes_503_as_an_http_error() -> None:
    """`response...503` fires on an access line whose responseBytes happens to be 503."""
    line = (
        '[GET]200 pb-webhook-server.onrender.com/health clientIP="203.0.113.7" '
        'requestID="4e1c2d8a-5b7f-4a61-9c3e-0d2f6b8a1e77" responseTimeMS=12 responseBytes=503 '
        'userAgent="Render/1.0"'
    )
    assert OldTriage().classify(line) == (
        Severity.ERROR,
        r"(?:http|error|status|code|response).*?\b(404|500|502|503|504)\b",
    )


def test_batch_success_summary_is_flagged_as_the_old_tool_did() -> None:
    """'N successful, 0 failed' summaries are reported as batch failures (the deliberate bug)."""
    summary = f"{ANN} [lead_scoring] [INFO] ✅ Batch 4 complete: 40 successful, 0 failed"
    assert OldTriage(early=True).classify(summary) == (Severity.ERROR, r"\bbatch.*failed")
    stats = f"{ANN} [lead_scoring] [INFO] 📊 Summary: scored: 40, failed: 0, batch size: 40"
    assert OldTriage().classify(stats) == (Severity.ERROR, r"\b(?:failed|error):\s*.*batch")


def test_numbered_batch_failure_is_missed_by_the_current_list() -> None:
    """`batch\\s+(?:run\\s+)?failed` needs the words adjacent, so 'Batch 3 failed' slips through."""
    line = f"{ANN} [lead_scoring] [ERROR] Batch 3 failed: 12 of 40 leads failed"
    assert OldTriage().classify(line) is None
    assert OldTriage(early=True).classify(line) == (Severity.ERROR, r"\bbatch.*failed")
    adjacent = f"{ANN} [lead_scoring] [ERROR] Batch run failed after 3 attempts"
    assert OldTriage().classify(adjacent) == (Severity.ERROR, r"batch\s+(?:run\s+)?failed")


def test_js_runtime_errors_are_missed() -> None:
    """TypeError / ReferenceError lines match no old pattern, tagged [ERROR] or not."""
    triage = OldTriage()
    for line in (
        "TypeError: leads.map is not a function",
        "[251103-081522-Guy-Wilson] [Guy-Wilson] [post_scoring] [ERROR] ReferenceError: runId is not defined",
        "TypeError: Cannot read properties of undefined (reading 'fields')",
        "    at scorePosts (/opt/render/project/src/services/postScoring.js:212:17)",
    ):
        assert triage.classify(line) is None, line


def test_app_tagged_error_with_unknown_wording_is_missed() -> None:
    """The old tool ignored the [ERROR] tag itself; only the regexes counted."""
    line = f"{ANN} [lead_scoring] [ERROR] Failed to parse AI response for lead recA1b2C3d4E5f6G7"
    assert OldTriage().classify(line) is None


def test_order_is_critical_then_error_then_warning() -> None:
    """A line matching patterns of several severities gets the worst, by list order."""
    triage = OldTriage()
    line = "[ERROR] Retrying after connect ECONNREFUSED 10.0.4.17:443: Request failed with status 503"
    assert triage.classify(line) == (Severity.CRITICAL, "ECONNREFUSED")
    line = "[WARN] Retrying: Failed to update record, rate limit"
    assert triage.classify(line) == (Severity.ERROR, "Failed to (create|update|fetch|delete)")
    assert triage.classify("[WARN] retrying in 2s, rate limit") == (Severity.WARNING, "retrying")


def test_case_insensitive_except_deprecation_warning() -> None:
    """Patterns ignore case, but lowercase 'deprecationwarning' is not a DeprecationWarning."""
    triage = OldTriage()
    assert triage.classify("CONNECTION REFUSED by upstream") == (Severity.CRITICAL, "Connection refused")
    assert triage.classify("(node:57) [DEP0040] DeprecationWarning: punycode") == (
        Severity.WARNING,
        "DeprecationWarning",
    )
    assert triage.classify("deprecationwarning: punycode") is None


def test_ids_differing_only_in_digits_or_record_ids_share_a_key() -> None:
    """Masking folds timestamps, UUIDs, rec ids and digit runs into one key."""
    a = (
        "[2025-11-03T08:15:22.429113507Z] [251103-081522-Ann-Lee] [Ann-Lee] [airtable-sync] [ERROR] "
        "Record not found: recA1b2C3d4E5f6G7 (request 4e1c2d8a-5b7f-4a61-9c3e-0d2f6b8a1e77, 3 tries)"
    )
    b = (
        "[2025-11-03T11:02:09.001Z] [251103-110200-Ann-Lee] [Ann-Lee] [airtable-sync] [ERROR] "
        "Record not found: recZZ9yy8XX7ww6VV (request 0a0b0c0d-1111-4222-8333-444455556666, 12 tries)"
    )
    triage = OldTriage()
    assert triage.dedupe_key(Severity.ERROR, a) == triage.dedupe_key(Severity.ERROR, b)
    assert mask("Lead recA1b2C3d4E5f6G7 scored 87") == "Lead <REC> scored <N>"


def test_same_defect_for_another_client_splits_into_a_new_key() -> None:
    """The whole line is the key, so a client name in it makes a separate record."""
    triage = OldTriage()
    a = f"{ANN} [run-record] [ERROR] Client run record not found for 251103-081522-Ann-Lee"
    b = a.replace("Ann-Lee", "Guy-Wilson")
    assert triage.dedupe_key(Severity.ERROR, a) != triage.dedupe_key(Severity.ERROR, b)


def test_run_folds_lines_and_records_positions() -> None:
    """run() returns one issue per key in first-seen order with 1-based positions of its lines."""
    lines = [
        "[251103-081522] [SYSTEM] [smart_resume] [INFO] Starting smart resume for stream 2",
        "[251103-081522-Ann-Lee] [Ann-Lee] [airtable-sync] [ERROR] Record not found: recA1b2C3d4E5f6G7",
        "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [WARN] Gemini rate limit hit, backing off 4000ms",
        "[251103-081522-Ann-Lee] [Ann-Lee] [airtable-sync] [ERROR] Record not found: recQ9w8E7r6T5y4U3",
        "TypeError: leads.map is not a function",
    ]
    issues = OldTriage().run(lines)
    assert [(i.severity, i.pattern, i.positions) for i in issues] == [
        (Severity.ERROR, "Record not found", [2, 4]),
        (Severity.WARNING, "rate limit", [3]),
    ]
    assert issues[0].line == lines[1]
    assert issues[0].occurrences == 2


def test_on_the_corpus_js_errors_are_missed_and_groups_split() -> None:
    """Over the labelled corpus: JS runtime error heads are all missed, and keys outnumber defects."""
    corpus = Path(__file__).parent / "data" / "corpus" / "corpus.jsonl"
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    triage = OldTriage()
    js_groups = (
        "ref-runid-not-defined",
        "type-leads-map-not-function",
        "cannot-read-fields",
        "tdz-runrecord",
    )
    js_heads = [r["line"] for r in records if r["group"] in js_groups and r["severity"]]
    assert len(js_heads) >= 20
    assert [line for line in js_heads if triage.classify(line)] == []
    issues = triage.run(r["line"] for r in records)
    gold_groups = {r["group"] for r in records if r["group"]}
    assert len(issues) > 2 * len(gold_groups)
    noise = [i for i in issues if all(records[p - 1]["group"] is None for p in i.positions)]
    assert noise, "success summaries and byte counts should produce records with no real problem behind them"
