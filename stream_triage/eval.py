"""Detection quality on a labelled corpus: ``stream-triage eval CORPUS [--json] [--baseline]``.

The corpus is JSONL, one log line per record: ``line``, optional ``timestamp`` (ISO 8601), gold
``severity`` (CRITICAL / ERROR / WARNING on the head line of a problem, else null) and gold ``group``
(a slug naming the defect, on head and continuation lines). See tests/data/corpus/README.md.

The lines are replayed through the real pipeline exactly as ``replay --json`` does (one source, each
record's ``position`` is its 1-based corpus line, ``flush_all(EOF)`` at the end, aggregation by
``MemoryStore``), and scored line by line:

* a line is **predicted a problem** when it is an occurrence position of some issue; it is a **gold
  problem** when it has a gold severity. Precision and recall follow; continuation lines (gold group,
  no severity) are not problems, so a stack frame reported as its own issue is a false alarm;
* **severity agreement**: among true positives, the share whose issue severity equals the gold one;
* **issues per gold problem**: issues with occurrence lines over distinct gold groups;
* **mixed issues** (purity): issues whose lines belong to two or more gold groups; must be none;
* **split groups**: gold groups whose lines ended up in more than one issue.

Run-level issues. The pipeline adds a synthetic ``run-incomplete`` issue when a run goes silent
without its completion marker; it names a run, not a line, so it has no positions. It is listed
separately ("run-level issues") and is outside the line-level figures: the corpus labels a crash on
its lines (the heap OOM or segfault head, the later ``marked as CRASHED`` line), and those lines are
scored like any other.

The baseline (``stream_triage.baseline``, both the current and the early pattern list) is scored the
same way, its dedupe keys standing in for issues.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stream_triage.baseline import OldTriage
from stream_triage.config import Config, load_config
from stream_triage.errors import InputError
from stream_triage.pipeline.parse import parse_iso_time
from stream_triage.pipeline.triage import RUN_INCOMPLETE, Triage
from stream_triage.records import EndReason, RawRecord, Severity, StoredIssue
from stream_triage.sinks.memory import MemoryStore

_SOURCE = "corpus"
_TEXT_LIST_LIMIT = 40  # misses / false alarms printed in the text report; --json has them all


@dataclass(slots=True, frozen=True)
class GoldLine:
    """One labelled corpus line. ``position`` is its 1-based line number in the corpus file."""

    position: int
    line: str
    ts: float | None
    severity: Severity | None
    group: str | None


@dataclass(slots=True)
class PredictedIssue:
    """An issue as scored: what a detector reported and which corpus lines it counted."""

    key: str
    severity: Severity
    pattern: str
    message: str
    positions: list[int]


@dataclass(slots=True, frozen=True)
class LineVerdict:
    """A miss, a false alarm or a severity disagreement on one corpus line."""

    position: int
    text: str
    gold_severity: Severity | None
    gold_group: str | None
    predicted_severity: Severity | None
    issue: str | None  # issue key (fingerprint / baseline key) the line was counted in
    pattern: str | None


@dataclass(slots=True)
class Scores:
    """Line-level and grouping figures of one detector on one corpus."""

    name: str
    lines: int
    gold_problem_lines: int
    predicted_problem_lines: int
    true_positives: int
    precision: float
    recall: float
    severity_agreement: float
    issues: int
    gold_problems: int
    issues_per_gold_problem: float
    mixed_issues: list[dict[str, object]]
    split_groups: dict[str, int]
    misses: list[LineVerdict]
    false_alarms: list[LineVerdict]
    severity_mismatches: list[LineVerdict]
    run_level_issues: list[dict[str, object]] = field(default_factory=list)


@dataclass(slots=True)
class EvalReport:
    """The pipeline's scores and, when asked for, the baselines' on the same corpus."""

    corpus: str
    ours: Scores
    baselines: list[Scores]


# ------------------------------------------------------------------------------------------ input
def load_corpus(path: str | Path) -> list[GoldLine]:
    """Read a labelled JSONL corpus; raises ``InputError`` naming the file and line of a bad record."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"cannot read corpus: {exc.strerror or exc}") from None
    out: list[GoldLine] = []
    for number, text in enumerate(raw.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            rec = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InputError(where, f"not valid JSON ({exc})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("line"), str):
            raise InputError(where, 'each record must be an object with a string "line"')
        sev = rec.get("severity")
        if sev is not None and sev not in Severity.__members__:
            raise InputError(where, f"severity must be CRITICAL, ERROR, WARNING or null, got {sev!r}")
        group = rec.get("group")
        if group is not None and not isinstance(group, str):
            raise InputError(where, f"group must be a string or null, got {group!r}")
        if sev is not None and group is None:
            raise InputError(where, "a line with a gold severity needs a group")
        stamp = rec.get("timestamp")
        ts = parse_iso_time(stamp) if isinstance(stamp, str) else None
        if stamp is not None and ts is None:
            raise InputError(where, f"timestamp is not ISO 8601: {stamp!r}")
        out.append(GoldLine(number, rec["line"], ts, Severity(sev) if sev else None, group))
    return out


# ------------------------------------------------------------------------------------------ detectors
def run_pipeline(
    corpus: Sequence[GoldLine], config: Config | None = None
) -> tuple[list[PredictedIssue], list[StoredIssue]]:
    """Replay the corpus through ``Triage`` as ``replay --json`` does.

    Returns (line-level issues, run-level issues); the latter are the stored issues without positions
    (``run-incomplete``).
    """
    config = config if config is not None else load_config(None, {})
    triage = Triage(config)
    memory = MemoryStore()
    for gold in corpus:
        flushes = triage.process(RawRecord(gold.line, _SOURCE, gold.ts, gold.position))
        if flushes:
            memory.apply(flushes)
    memory.apply(triage.flush_all(EndReason.EOF))
    issues: list[PredictedIssue] = []
    run_level: list[StoredIssue] = []
    for stored in memory.issues.values():
        if not stored.positions:
            run_level.append(stored)
            continue
        issues.append(
            PredictedIssue(
                key=stored.fingerprint,
                severity=stored.severity,
                pattern=stored.pattern,
                message=stored.error_message,
                positions=sorted(stored.positions),
            )
        )
    return issues, run_level


def run_baseline(corpus: Sequence[GoldLine], early: bool = False) -> list[PredictedIssue]:
    """The old grep-and-dedupe triage over the raw lines; each dedupe key is one issue."""
    return [
        PredictedIssue(key=i.key, severity=i.severity, pattern=i.pattern, message=i.line, positions=i.positions)
        for i in OldTriage(early=early).run(g.line for g in corpus)
    ]


# ------------------------------------------------------------------------------------------ scoring
def score(name: str, corpus: Sequence[GoldLine], issues: Iterable[PredictedIssue]) -> Scores:
    """Score one detector's issues against the gold labels."""
    issues = list(issues)
    by_pos = {g.position: g for g in corpus}
    predicted: dict[int, PredictedIssue] = {}
    for issue in issues:
        for pos in issue.positions:
            # A line can only be in one issue; if a detector reports it twice keep the worst.
            prev = predicted.get(pos)
            if prev is None or issue.severity.rank > prev.severity.rank:
                predicted[pos] = issue
    gold_lines = [g for g in corpus if g.severity is not None]
    gold_pos = {g.position for g in gold_lines}
    tp = [p for p in predicted if p in gold_pos]

    def verdict(pos: int) -> LineVerdict:
        g = by_pos.get(pos)
        issue = predicted.get(pos)
        return LineVerdict(
            position=pos,
            text=g.line if g else "",
            gold_severity=g.severity if g else None,
            gold_group=g.group if g else None,
            predicted_severity=issue.severity if issue else None,
            issue=issue.key if issue else None,
            pattern=issue.pattern if issue else None,
        )

    agree = sum(1 for p in tp if predicted[p].severity is by_pos[p].severity)
    mismatches = [verdict(p) for p in sorted(tp) if predicted[p].severity is not by_pos[p].severity]
    misses = [verdict(g.position) for g in gold_lines if g.position not in predicted]
    false_alarms = [verdict(p) for p in sorted(predicted) if p not in gold_pos]

    mixed: list[dict[str, object]] = []
    issues_of_group: dict[str, set[str]] = defaultdict(set)
    for issue in issues:
        groups = Counter(by_pos[p].group for p in issue.positions if p in by_pos and by_pos[p].group)
        for group in groups:
            issues_of_group[group].add(issue.key)
        if len(groups) > 1:
            mixed.append({"issue": issue.key, "message": issue.message, "groups": dict(groups)})
    gold_groups = {g.group for g in gold_lines if g.group}
    split = {g: len(keys) for g, keys in sorted(issues_of_group.items()) if g in gold_groups and len(keys) > 1}
    n_pred = len(predicted)
    return Scores(
        name=name,
        lines=len(corpus),
        gold_problem_lines=len(gold_pos),
        predicted_problem_lines=n_pred,
        true_positives=len(tp),
        precision=len(tp) / n_pred if n_pred else 1.0,
        recall=len(tp) / len(gold_pos) if gold_pos else 1.0,
        severity_agreement=agree / len(tp) if tp else 1.0,
        issues=len(issues),
        gold_problems=len(gold_groups),
        issues_per_gold_problem=len(issues) / len(gold_groups) if gold_groups else float(len(issues)),
        mixed_issues=mixed,
        split_groups=split,
        misses=misses,
        false_alarms=false_alarms,
        severity_mismatches=mismatches,
    )


def evaluate(
    corpus: Sequence[GoldLine], config: Config | None = None, baseline: bool = False, name: str = ""
) -> EvalReport:
    """Score the pipeline (and with ``baseline`` both old pattern lists) on ``corpus`` (named ``name``)."""
    issues, run_level = run_pipeline(corpus, config)
    ours = score("stream-triage", corpus, issues)
    ours.run_level_issues = [
        {
            "issue": s.fingerprint,
            "pattern": s.pattern,
            "severity": s.severity.value,
            "runs": list(s.run_ids),
            "message": s.error_message,
        }
        for s in run_level
    ]
    baselines = []
    if baseline:
        baselines = [
            score("old (current list)", corpus, run_baseline(corpus, early=False)),
            score("old (early list)", corpus, run_baseline(corpus, early=True)),
        ]
    return EvalReport(corpus=name, ours=ours, baselines=baselines)


# ------------------------------------------------------------------------------------------ output
def _verdict_json(v: LineVerdict) -> dict[str, object]:
    return {
        "line_number": v.position,
        "text": v.text,
        "gold_severity": v.gold_severity.value if v.gold_severity else None,
        "gold_group": v.gold_group,
        "predicted_severity": v.predicted_severity.value if v.predicted_severity else None,
        "issue": v.issue,
        "pattern": v.pattern,
    }


def scores_json(s: Scores) -> dict[str, object]:
    """The JSON shape of one detector's scores."""
    return {
        "name": s.name,
        "lines": s.lines,
        "gold_problem_lines": s.gold_problem_lines,
        "predicted_problem_lines": s.predicted_problem_lines,
        "true_positives": s.true_positives,
        "precision": round(s.precision, 4),
        "recall": round(s.recall, 4),
        "severity_agreement": round(s.severity_agreement, 4),
        "issues": s.issues,
        "gold_problems": s.gold_problems,
        "issues_per_gold_problem": round(s.issues_per_gold_problem, 4),
        "mixed_issues": s.mixed_issues,
        "split_groups": s.split_groups,
        "run_level_issues": s.run_level_issues,
        "misses": [_verdict_json(v) for v in s.misses],
        "false_alarms": [_verdict_json(v) for v in s.false_alarms],
        "severity_mismatches": [_verdict_json(v) for v in s.severity_mismatches],
    }


def report_json(report: EvalReport) -> dict[str, object]:
    """The ``eval --json`` document."""
    return {
        "corpus": report.corpus,
        "ours": scores_json(report.ours),
        "baselines": [scores_json(b) for b in report.baselines],
        "notes": {
            "problem_line": "a line with a gold severity; continuation lines are not problem lines",
            "predicted_line": "an occurrence position of an issue (the head line of each occurrence)",
            "run_level_issues": "issues without lines (run-incomplete); not in the line-level figures",
        },
    }


_ROWS: tuple[tuple[str, str], ...] = (
    ("gold problem lines", "gold_problem_lines"),
    ("predicted problem lines", "predicted_problem_lines"),
    ("true positives", "true_positives"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("severity agreement", "severity_agreement"),
    ("issues", "issues"),
    ("gold problems (groups)", "gold_problems"),
    ("issues per gold problem", "issues_per_gold_problem"),
    ("mixed issues", "mixed"),
    ("split gold groups", "split"),
)


def _cell(s: Scores, attr: str) -> str:
    if attr == "mixed":
        return str(len(s.mixed_issues))
    if attr == "split":
        return str(len(s.split_groups))
    value = getattr(s, attr)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _verdict_text(v: LineVerdict) -> str:
    gold = f"{v.gold_severity.value if v.gold_severity else '-'}/{v.gold_group or '-'}"
    pred = f"{v.predicted_severity.value if v.predicted_severity else '-'}/{v.pattern or '-'}"
    text = v.text if len(v.text) <= 140 else v.text[:139] + "…"
    return f"  {v.position:>6}  gold {gold:<40} predicted {pred:<32} {text}"


def report_text(report: EvalReport) -> str:
    """The human-readable report: a side-by-side table, then our misses and false alarms."""
    cols = [report.ours, *report.baselines]
    width = max(22, *(len(c.name) + 2 for c in cols))
    out = [f"Corpus {report.corpus}: {report.ours.lines} lines", ""]
    out.append(f"{'':<26}" + "".join(f"{c.name:>{width}}" for c in cols))
    for label, attr in _ROWS:
        out.append(f"{label:<26}" + "".join(f"{_cell(c, attr):>{width}}" for c in cols))
    ours = report.ours
    if ours.run_level_issues:
        out += ["", f"Run-level issues (no lines, not scored): {len(ours.run_level_issues)}"]
        for r in ours.run_level_issues:
            out.append(f"  {r['issue']}  {r['pattern']}  runs: {', '.join(map(str, r['runs']))}")
    for title, items in (
        ("Misses", ours.misses),
        ("False alarms", ours.false_alarms),
        ("Severity disagreements", ours.severity_mismatches),
    ):
        out += ["", f"{title} ({len(items)}):"]
        out += [_verdict_text(v) for v in items[:_TEXT_LIST_LIMIT]]
        if len(items) > _TEXT_LIST_LIMIT:
            out.append(f"  … {len(items) - _TEXT_LIST_LIMIT} more (see --json)")
    if ours.mixed_issues:
        out += ["", f"Mixed issues ({len(ours.mixed_issues)}):"]
        out += [f"  {m['issue']}  {m['groups']}  {m['message']}" for m in ours.mixed_issues]
    if ours.split_groups:
        out += ["", "Split gold groups: " + ", ".join(f"{g} ({n})" for g, n in ours.split_groups.items())]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ CLI
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the CLI's subparsers."""
    p = subparsers.add_parser("eval", help="score detection quality on a labelled JSONL corpus")
    p.add_argument("corpus", metavar="CORPUS", help="labelled corpus (JSONL: line, timestamp, severity, group)")
    p.add_argument("--config", help="TOML config file (its pattern packs and settings are evaluated)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--baseline", action="store_true", help="also score the old regex triage, both lists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``eval``: 0 on success, 2 when the corpus cannot be read."""
    try:
        corpus = load_corpus(args.corpus)
    except InputError as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 2
    config = load_config(getattr(args, "config", None), {})
    report = evaluate(corpus, config, baseline=args.baseline, name=str(args.corpus))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(report_text(report))
    return 0


__all__ = [
    "RUN_INCOMPLETE",
    "EvalReport",
    "GoldLine",
    "LineVerdict",
    "PredictedIssue",
    "Scores",
    "add_parser",
    "evaluate",
    "load_corpus",
    "report_json",
    "report_text",
    "run",
    "run_baseline",
    "run_pipeline",
    "score",
]
