"""Detection quality targets on the labelled corpus (tests/data/corpus), with the baselines alongside."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_triage import eval as ev

CORPUS = Path(__file__).parent / "data" / "corpus" / "corpus.jsonl"


@pytest.fixture(scope="module")
def report() -> ev.EvalReport:
    return ev.evaluate(ev.load_corpus(CORPUS), baseline=True, name=str(CORPUS))


def _why(items: list[ev.LineVerdict]) -> str:
    return "\n".join(f"{v.position}: {v.gold_severity}/{v.gold_group} vs {v.pattern}: {v.text}" for v in items)


def test_precision_is_at_least_098(report: ev.EvalReport) -> None:
    """At most 2% of the lines reported as problems are not problems."""
    assert report.ours.precision >= 0.98, _why(report.ours.false_alarms)


def test_recall_is_at_least_098(report: ev.EvalReport) -> None:
    """At most 2% of the problem lines are missed."""
    assert report.ours.recall >= 0.98, _why(report.ours.misses)


def test_no_issue_mixes_two_gold_problems(report: ev.EvalReport) -> None:
    """Purity: every issue's occurrence lines belong to one gold group."""
    assert report.ours.mixed_issues == []


def test_at_most_11_issues_per_10_gold_problems(report: ev.EvalReport) -> None:
    """Fragmentation: issues / gold problems <= 1.1."""
    assert report.ours.issues_per_gold_problem <= 1.1, report.ours.split_groups


def test_severity_agrees_on_at_least_90_percent_of_true_positives(report: ev.EvalReport) -> None:
    """The issue's severity is the gold one on >= 90% of the correctly found lines."""
    assert report.ours.severity_agreement >= 0.9, _why(report.ours.severity_mismatches)


def test_crashed_runs_are_reported_as_run_level_issues(report: ev.EvalReport) -> None:
    """The five runs that crash without their completion marker are each reported incomplete."""
    runs = {r for issue in report.ours.run_level_issues for r in issue["runs"]}
    assert len(runs) == 5


def test_report_shows_both_baselines_and_they_are_worse(report: ev.EvalReport) -> None:
    """The old triage is scored side by side; both lists fall short where the pipeline does not."""
    current, early = report.baselines
    assert current.gold_problem_lines == early.gold_problem_lines == report.ours.gold_problem_lines
    assert current.recall < 0.7 and current.precision < 0.6
    assert early.precision < 0.2
    assert current.issues_per_gold_problem > 3 and early.issues_per_gold_problem > 10
    text = ev.report_text(report)
    assert "old (current list)" in text and "old (early list)" in text
