"""Tests for stream_triage.eval: corpus loading, line-level scoring, grouping figures and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stream_triage import eval as ev
from stream_triage.errors import InputError
from stream_triage.records import Severity

RUN = "[251103-081522-Ann-Lee] [Ann-Lee]"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(line: str, severity: str | None = None, group: str | None = None, ts: str = "08:15:22") -> dict:
    return {"line": line, "timestamp": f"2025-11-03T{ts}.000Z", "severity": severity, "group": group}


def _gold(rows: list[tuple[str | None, str | None]]) -> list[ev.GoldLine]:
    return [
        ev.GoldLine(i, f"line {i}", None, Severity(s) if s else None, g) for i, (s, g) in enumerate(rows, 1)
    ]


def _issue(key: str, severity: str, positions: list[int]) -> ev.PredictedIssue:
    return ev.PredictedIssue(key, Severity(severity), "p", f"message {key}", positions)


# A small corpus with a stack trace, a success summary (hard negative), an INFO retry (hard negative),
# one defect logged twice for two clients, and a run that never completes.
SMALL = [
    _row(f"{RUN} [lead_scoring] [INFO] Fetched 429 leads pending scoring", ts="08:15:22"),
    _row("TypeError: leads.map is not a function", "ERROR", "leads-map", ts="08:15:23"),
    _row(
        "    at scoreLeadBatch (/opt/render/project/src/services/leadScoring.js:158:29)",
        None,
        "leads-map",
        ts="08:15:23",
    ),
    _row(f"{RUN} [lead_scoring] [INFO] ✅ Batch 4 complete: 40 successful, 0 failed", ts="08:15:24"),
    _row(f"{RUN} [lead_scoring] [INFO] Retrying in 2s (attempt 1/3) as planned for cold start", ts="08:15:25"),
    _row(
        f"{RUN} [airtable-sync] [ERROR] Record not found: recA1b2C3d4E5f6G7",
        "ERROR",
        "record-not-found",
        ts="08:15:26",
    ),
    _row(
        "[251103-081522-Guy-Wilson] [Guy-Wilson] [airtable-sync] [ERROR] Record not found: recQ9w8E7r6T5y4U3",
        "ERROR",
        "record-not-found",
        ts="08:15:27",
    ),
    _row(f"{RUN} [lead_scoring] [WARN] Lead recQ9w8E7r6T5y4U3 has no LinkedIn URL", "WARNING", "no-url", ts="08:15:28"),
]


def test_load_corpus_reads_lines_positions_timestamps_and_labels(tmp_path: Path) -> None:
    """Records become GoldLines numbered from 1, with epoch timestamps and Severity labels."""
    corpus = ev.load_corpus(_write(tmp_path / "c.jsonl", SMALL))
    assert [g.position for g in corpus] == list(range(1, len(SMALL) + 1))
    assert corpus[1].severity is Severity.ERROR and corpus[1].group == "leads-map"
    assert corpus[2].severity is None and corpus[2].group == "leads-map"
    assert corpus[0].ts == 1762157722.0


def test_load_corpus_names_file_and_line_of_a_bad_record(tmp_path: Path) -> None:
    """A record that is not JSON, or has a bad severity, is an InputError at file:line."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row("ok")) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        ev.load_corpus(path)
    _write(path, [_row("ok"), _row("x", "SEVERE", "g")])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: severity must be"):
        ev.load_corpus(path)
    _write(path, [_row("x", "ERROR", None)])
    with pytest.raises(InputError, match="needs a group"):
        ev.load_corpus(path)


def test_score_counts_precision_recall_misses_and_false_alarms() -> None:
    """Precision and recall are over head lines; continuation lines reported as issues are false alarms."""
    gold = _gold([("ERROR", "a"), (None, "a"), ("WARNING", "b"), (None, None), ("ERROR", "c")])
    issues = [_issue("i1", "ERROR", [1]), _issue("i2", "ERROR", [2]), _issue("i3", "ERROR", [3])]
    s = ev.score("t", gold, issues)
    assert (s.gold_problem_lines, s.predicted_problem_lines, s.true_positives) == (3, 3, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert [v.position for v in s.misses] == [5]
    assert [(v.position, v.gold_group, v.issue) for v in s.false_alarms] == [(2, "a", "i2")]
    assert s.severity_agreement == pytest.approx(1 / 2)
    assert [(v.position, v.gold_severity, v.predicted_severity) for v in s.severity_mismatches] == [
        (3, Severity.WARNING, Severity.ERROR)
    ]


def test_score_reports_mixed_issues_and_split_groups() -> None:
    """An issue over two gold groups is mixed; a group spread over two issues is split."""
    gold = _gold([("ERROR", "a"), ("ERROR", "a"), ("ERROR", "b"), ("ERROR", "a")])
    s = ev.score("t", gold, [_issue("x", "ERROR", [1, 3]), _issue("y", "ERROR", [2]), _issue("z", "ERROR", [4])])
    assert s.mixed_issues == [{"issue": "x", "message": "message x", "groups": {"a": 1, "b": 1}}]
    assert s.split_groups == {"a": 3}
    assert (s.issues, s.gold_problems, s.issues_per_gold_problem) == (3, 2, 1.5)


def test_pipeline_on_small_corpus_finds_every_problem_and_no_hard_negative(tmp_path: Path) -> None:
    """The real pipeline: frames fold into their head, one issue per defect across clients, no noise."""
    corpus = ev.load_corpus(_write(tmp_path / "c.jsonl", SMALL))
    report = ev.evaluate(corpus)
    s = report.ours
    assert (s.precision, s.recall, s.severity_agreement) == (1.0, 1.0, 1.0)
    assert s.misses == [] and s.false_alarms == [] and s.mixed_issues == []
    assert (s.issues, s.gold_problems) == (3, 3)
    issues, _ = ev.run_pipeline(corpus)
    assert sorted(i.positions for i in issues) == [[2], [6, 7], [8]]


def test_run_incomplete_is_a_run_level_issue_outside_the_line_figures(tmp_path: Path) -> None:
    """A run silent past the idle timeout yields run-incomplete with no lines; it is listed apart."""
    rows = [
        _row(f"{RUN} [lead_scoring] [INFO] Starting scoring for stream 2", ts="08:00:00"),
        _row(f"{RUN} [lead_scoring] [ERROR] Scoring failed: AI response missing score", "ERROR", "s", ts="08:00:05"),
        _row("[251103-120000] [SYSTEM] [smart_resume] [INFO] Starting smart resume for stream 1", ts="12:00:00"),
    ]
    report = ev.evaluate(ev.load_corpus(_write(tmp_path / "c.jsonl", rows)))
    assert [(r["pattern"], r["runs"]) for r in report.ours.run_level_issues] == [
        (ev.RUN_INCOMPLETE, ["251103-081522"])
    ]
    assert (report.ours.issues, report.ours.predicted_problem_lines, report.ours.precision) == (1, 1, 1.0)


def test_baselines_are_scored_with_their_dedupe_keys_as_issues(tmp_path: Path) -> None:
    """Both old lists are scored; the early one flags the success summary and the 429 in a count."""
    corpus = ev.load_corpus(_write(tmp_path / "c.jsonl", SMALL))
    report = ev.evaluate(corpus, baseline=True)
    current, early = report.baselines
    assert (current.name, early.name) == ("old (current list)", "old (early list)")
    assert 4 in {v.position for v in early.false_alarms}
    assert 1 in {v.position for v in early.false_alarms}
    assert 2 in {v.position for v in current.misses}  # the TypeError matches no old pattern
    # One defect for two clients is two old records (the client is part of the key).
    assert current.split_groups == {"record-not-found": 2}


def test_cli_run_prints_json_with_ours_and_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`eval CORPUS --json --baseline` prints one JSON document with every figure and verdict list."""
    path = _write(tmp_path / "c.jsonl", SMALL)
    parser = argparse.ArgumentParser()
    ev.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", str(path), "--json", "--baseline"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["corpus"] == str(path)
    assert doc["ours"]["precision"] == 1.0 and doc["ours"]["misses"] == []
    assert [b["name"] for b in doc["baselines"]] == ["old (current list)", "old (early list)"]
    alarm = next(a for a in doc["baselines"][1]["false_alarms"] if a["line_number"] == 4)
    assert alarm["gold_severity"] is None and alarm["predicted_severity"] == "ERROR"
    assert "Batch 4 complete" in alarm["text"]


def test_cli_text_report_shows_columns_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report has one column per detector and lists misses and false alarms."""
    rows = [*SMALL, _row("    at lonely (/opt/render/project/src/x.js:1:1)", None, None, ts="08:16:00")]
    rows.append(_row(f"{RUN} [lead_scoring] [INFO] Lead scored 87", "WARNING", "gold-says-warning", ts="08:16:01"))
    path = _write(tmp_path / "c.jsonl", rows)
    args = argparse.Namespace(corpus=str(path), json=False, baseline=True, config=None)
    assert ev.run(args) == 0
    out = capsys.readouterr().out
    assert "stream-triage" in out and "old (current list)" in out and "old (early list)" in out
    assert "Misses (1):" in out and "gold-says-warning" in out


def test_cli_unreadable_corpus_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing corpus file is reported with its path and exit status 2."""
    args = argparse.Namespace(corpus=str(tmp_path / "nope.jsonl"), json=False, baseline=False, config=None)
    assert ev.run(args) == 2
    assert "nope.jsonl" in capsys.readouterr().err
