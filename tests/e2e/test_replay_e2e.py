"""End to end: a realistic multi-run Render log replayed through the CLI gives exactly the expected issues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_triage import cli
from stream_triage.config import Config
from stream_triage.pipeline import triage as triage_mod
from stream_triage.records import EndReason
from stream_triage.sources.files import read_inputs
from tests.helpers import default_patterns, make_triage

LOG = Path(__file__).resolve().parent.parent / "data" / "multi_run.log"
A, B, C, D = "251103-081522", "251103-081940", "251103-083005", "251103-090010"
UPDATE_RUN = "updateClientRun (services/clientRunService.js)"

# (pattern, severity, occurrences, line numbers, run ids, client, service) — one row per fingerprint.
EXPECTED = {
    ("run-incomplete", "CRITICAL", 1, (), (C,), "Dan-Ng", "smart-resume"),
    ("node-fatal-error", "CRITICAL", 1, (114,), (), None, None),
    # the same defect for three clients in two runs, with different record ids
    ("airtable-unknown-field", "ERROR", 3, (39, 63, 90), (A, C), "Dan-Ng", UPDATE_RUN),
    # ...and a different field name is a different defect
    ("airtable-unknown-field", "ERROR", 1, (95,), (C,), "Dan-Ng", UPDATE_RUN),
    ("js-syntax-error", "ERROR", 2, (59, 62), (B,), "Cara-Diaz", "lead_scoring"),
    # within one run the issue shows its first occurrence (Ann-Lee's)
    ("timeout", "ERROR", 2, (28, 61), (A,), "Ann-Lee", "smart_resume"),
    ("http-error-status", "ERROR", 2, (138, 146), (D,), "Eve-Ora", "apify"),
    ("http-error-status", "ERROR", 1, (145,), (D,), "Eve-Ora", "apify"),
    ("js-type-error", "ERROR", 1, (68,), (B,), "Cara-Diaz", "scoreLead (services/leadScoring.js)"),
    ("js-reference-error", "ERROR", 1, (139,), (D,), "Eve-Ora", "handleWebhook (routes/apifyWebhook.js)"),
    ("js-reference-error", "ERROR", 1, (142,), (D,), "Eve-Ora", "handleWebhook (routes/apifyWebhook.js)"),
    ("render-build-failed", "ERROR", 1, (118,), (), None, None),
    ("batch-failed", "ERROR", 1, (73,), (B,), "Cara-Diaz", "lead_scoring"),
    # logged after run A's completion marker: a late line, not lost
    # A [SYSTEM] line of a run with several clients names none of them (it is about Bo-Chen, not the
    # first client seen).
    ("record-not-found", "ERROR", 1, (86,), (A,), None, "job-tracking"),
    ("deprecation", "WARNING", 2, (11, 120), (), None, None),
    # npm's own deprecation notice for a dependency: a warning worth tracking (see the corpus README).
    ("npm-deprecated", "WARNING", 1, (4,), (), None, None),
    ("missing-optional-field", "WARNING", 2, (60, 74), (B,), "Cara-Diaz", "lead_scoring"),
    ("rate-limited", "WARNING", 1, (57,), (A,), "Bo-Chen", "smart_resume"),
    ("slow-request", "WARNING", 1, (101,), (), None, None),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _reuse_compiled_default_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replays in this process reuse the compiled default pack."""
    real = triage_mod.build_patterns
    monkeypatch.setattr(
        triage_mod, "build_patterns", lambda c: default_patterns() if c.patterns == Config().patterns else real(c)
    )


def replay_json(capsys: pytest.CaptureFixture[str], *files: str) -> dict:
    assert cli.main(["replay", "--no-store", "--json", *files]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def rows(doc: dict) -> set[tuple]:
    return {
        (i["pattern"], i["severity"], i["occurrences"], tuple(i["line_numbers"]), tuple(i["run_ids"]), i["client_id"],
         i["service"])
        for i in doc["issues"]
    }  # fmt: skip


def test_log_is_realistic_and_interleaved() -> None:
    """The fixture log has 150 to 300 lines, four interleaved runs, ANSI build output, frames and access lines."""
    text = LOG.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert 150 <= len(lines) <= 300
    assert "\x1b[" in text and "responseTimeMS=" in text and "    at " in text
    order = [run for line in lines for run in (A, B, C, D) if f"[{run}" in line]
    assert order.index(B) < len(order) - 1 - order[::-1].index(A)  # run B starts before run A ends


def test_replay_finds_exactly_the_expected_issues(capsys: pytest.CaptureFixture[str]) -> None:
    """Exactly these 18 issues: severities, patterns, occurrences, line numbers, runs; noise gives none."""
    doc = replay_json(capsys, str(LOG))
    assert len({i["fingerprint"] for i in doc["issues"]}) == len(doc["issues"]) == len(EXPECTED)
    assert rows(doc) == EXPECTED
    # Every line that is not one of the defects above — build output, access lines, "0 failed"
    # summaries, debug dumps, 429/500/503 digits in ids and timings, INFO retries — produced nothing.
    flagged = sorted(n for i in doc["issues"] for n in i["line_numbers"])
    assert flagged == sorted(n for row in EXPECTED for n in row[3])


def test_replay_runs_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Four runs with their type, stream, clients, and how each ended."""
    doc = replay_json(capsys, str(LOG))
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert {k: (r["run_type"], r["stream"], r["client_ids"], r["ended"]) for k, r in runs.items()} == {
        A: ("smart-resume", 1, ["Ann-Lee", "Bo-Chen"], "marker"),
        B: ("batch-score", 2, ["Cara-Diaz"], "marker"),
        C: ("smart-resume", 3, ["Dan-Ng"], "idle"),
        D: ("apify-webhook", 1, ["Eve-Ora"], "marker"),
    }
    assert runs[C]["issues"] == {"ERROR": 2, "CRITICAL": 1}
    assert runs[A]["first_seen"] == "2025-11-03T08:15:22.429Z"
    assert runs[A]["last_seen"] == "2025-11-03T08:21:40.000Z"  # the late line


def test_issue_details(capsys: pytest.CaptureFixture[str]) -> None:
    """Stack traces, context marking, run-incomplete context and the system-bucket issues."""
    doc = replay_json(capsys, str(LOG))
    by_line = {i["line_numbers"][0] if i["line_numbers"] else None: i for i in doc["issues"]}
    type_error = by_line[68]
    assert type_error["stack_trace"].splitlines() == [
        "    at scoreLead (/opt/render/project/src/services/leadScoring.js:141:33)",
        "    at Array.map (<anonymous>)",
        "    at scoreBatch (/opt/render/project/src/services/leadScoring.js:97:28)",
        "    at async runBatchScoring (/opt/render/project/src/jobs/batchScorer.js:54:7)",
    ]
    marked = [c for c in type_error["context"] if c.startswith(">> ")]
    assert marked == [">> [251103-081940-Cara-Diaz] [Cara-Diaz] [lead_scoring] [ERROR] TypeError: Cannot read "
                      "properties of undefined (reading 'score')"]  # fmt: skip
    # context holds only run B's lines although runs A and B interleave
    assert all(c[3:].startswith(("[251103-081940", "    at ")) for c in type_error["context"])
    assert len([c for c in type_error["context"] if c.startswith("   ")]) <= 50
    incomplete = by_line[None]
    assert incomplete["run_id"] == C
    assert incomplete["context"][-1].endswith("Scored 20 of 31 leads")
    fatal = by_line[114]
    assert fatal["run_id"] is None
    assert fatal["stack_trace"] == ""
    assert fatal["context"][0].startswith("   ")  # the system bucket's own preceding lines
    assert ">> FATAL ERROR: Reached heap limit" in "\n".join(fatal["context"])
    assert " 1: 0xb7a940 node::Abort() [node]" in "\n".join(fatal["context"])
    unknown = by_line[39]
    assert unknown["message"] == 'Failed to update recBc5Df7Gh9Jk1Lm: Unknown field name: "Stream"'  # latest
    assert unknown["first_seen"] == "2025-11-03T08:19:41.000Z"
    assert unknown["last_seen"] == "2025-11-03T08:30:07.000Z"


def test_flush_reasons_follow_the_log_time() -> None:
    """Markers flush runs; the late line flushes as late after 10 quiet minutes; run C goes idle."""
    triage = make_triage()
    flushes = []
    for record in read_inputs([str(LOG)]):
        flushes.extend(triage.process(record))
    flushes.extend(triage.flush_all(EndReason.EOF))
    reasons: dict[str | None, list[str]] = {}
    for f in flushes:
        reasons.setdefault(f.run.run_id, []).append(f.reason.value)
    assert reasons[A] == ["marker", "late"]
    assert reasons[B] == ["marker", "late"]
    assert reasons[C] == ["idle"]
    assert reasons[D] == ["marker", "late"]  # the log goes on 11 min after D's marker
    late = next(f for f in flushes if f.run.run_id == A and f.reason is EndReason.LATE)
    assert [i.pattern_id for i in late.issues] == ["record-not-found"]


def to_render_logs(path: Path) -> list[dict]:
    logs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        ts, _, message = line[1:].partition("] ")
        logs.append({"id": f"{n:08d}", "timestamp": ts, "message": message,
                     "labels": [{"name": "instance", "value": "srv-d3abc-7f9k2"}]})  # fmt: skip
    return logs


def test_render_dump_and_ndjson_give_the_same_issues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same log as a Render API dump and as NDJSON gives the identical issue set."""
    logs = to_render_logs(LOG)
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"logs": logs, "hasMore": False}), encoding="utf-8")
    ndjson = tmp_path / "logs.ndjson"
    ndjson.write_text("".join(json.dumps(o) + "\n" for o in logs), encoding="utf-8")
    plain = replay_json(capsys, str(LOG))
    for path in (dump, ndjson):
        doc = replay_json(capsys, str(path))
        assert rows(doc) == EXPECTED
        assert {i["fingerprint"] for i in doc["issues"]} == {i["fingerprint"] for i in plain["issues"]}


def test_replay_into_the_store_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stored: 18 issues, 4 runs; replaying again doubles occurrences but not runs affected."""
    db = str(tmp_path / "issues.db")
    assert cli.main(["replay", "--db", db, str(LOG)]) == 0
    assert cli.main(["replay", "--db", db, str(LOG)]) == 0
    capsys.readouterr()
    assert cli.main(["issues", "list", "--db", db, "--json", "--limit", "100"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert len(stored) == len(EXPECTED)
    unknown = next(i for i in stored if i["message"].endswith('Unknown field name: "Stream"'))
    assert unknown["occurrences"] == 6
    assert unknown["run_ids"] == [A, C]
    assert {i["status"] for i in stored} == {"NEW"}
