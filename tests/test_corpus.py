"""Tests for the labelled corpus in tests/data/corpus: format, labelling rules, reproducibility."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"
CORPUS = CORPUS_DIR / "corpus.jsonl"
GENERATOR = CORPUS_DIR / "generate.py"
SEVERITIES = {"CRITICAL", "ERROR", "WARNING"}
RANK = {"WARNING": 1, "ERROR": 2, "CRITICAL": 3}

TS_PREFIX = re.compile(r"^\[\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z\] ")
APP_LEVEL = re.compile(r"^\[[^\]]+\] \[[^\]]*\] \[[^\]]*\] \[(?P<level>[A-Z]+)\]")
# Shapes that are always continuation lines, never heads.
CONTINUATION_SHAPE = re.compile(r"^(?:\s|Traceback \(most recent call last\):|Caused by: )")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    with CORPUS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _body(line: str) -> str:
    return TS_PREFIX.sub("", line, count=1)


def test_records_have_exactly_the_documented_fields(records: list[dict]) -> None:
    """Every record has line/timestamp/severity/group with the documented types and values."""
    for i, rec in enumerate(records, 1):
        assert set(rec) == {"line", "timestamp", "severity", "group"}, i
        assert isinstance(rec["line"], str), i
        assert rec["severity"] is None or rec["severity"] in SEVERITIES, i
        assert rec["group"] is None or re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", rec["group"]), i
        assert rec["severity"] is None or rec["group"] is not None, f"line {i}: a head line needs a group"


def test_timestamps_are_iso_utc_and_in_time_order(records: list[dict]) -> None:
    """Timestamps parse as ISO UTC with milliseconds and never go backwards."""
    times = [datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ") for r in records]
    assert all(r["timestamp"].endswith("Z") and len(r["timestamp"]) == 24 for r in records)
    assert times == sorted(times)


def test_corpus_is_large_and_has_many_groups(records: list[dict]) -> None:
    """At least 3,000 lines and 40 distinct problems."""
    assert len(records) >= 3000
    assert len({r["group"] for r in records if r["group"]}) >= 40


def test_every_group_recurs_with_one_severity(records: list[dict]) -> None:
    """Each group has 2 to 20 head-line occurrences, all with the same gold severity."""
    heads: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        if rec["severity"] is not None:
            heads[rec["group"]].append(rec["severity"])
    groups = {r["group"] for r in records if r["group"]}
    assert set(heads) == groups, "a group has continuation lines but no head line"
    for group, sevs in heads.items():
        assert 2 <= len(sevs) <= 20, (group, len(sevs))
        assert len(set(sevs)) == 1, (group, Counter(sevs))


def test_continuation_lines_follow_their_head(records: list[dict]) -> None:
    """A continuation line (group, no severity) comes right after its head or another line of its event."""
    for i, rec in enumerate(records):
        if rec["group"] is not None and rec["severity"] is None:
            assert i > 0 and records[i - 1]["group"] == rec["group"], f"line {i + 1}: {rec['line']!r}"


def test_frame_and_indented_lines_never_carry_a_severity(records: list[dict]) -> None:
    """Stack frames, Traceback, Caused by and indented lines are never head lines."""
    shaped = [r for r in records if CONTINUATION_SHAPE.match(_body(r["line"]))]
    assert len(shaped) > 300
    assert [r["line"] for r in shaped if r["severity"] is not None] == []


def test_app_tagged_error_and_warn_lines_are_problems_at_least_at_their_level(records: list[dict]) -> None:
    """[ERROR] lines are ERROR or CRITICAL, [WARN] lines at least WARNING (rule 2)."""
    tagged = 0
    for rec in records:
        m = APP_LEVEL.match(_body(rec["line"]))
        if m and m["level"] in ("ERROR", "WARN"):
            tagged += 1
            floor = 2 if m["level"] == "ERROR" else 1
            assert rec["severity"] is not None and RANK[rec["severity"]] >= floor, rec["line"]
    assert tagged > 150


def test_hard_negatives_are_present_and_unlabelled(records: list[dict]) -> None:
    """The documented look-alikes occur and are labelled null/null."""
    # Digits in timestamps, request ids and byte counts land on problem lines too, by chance; what
    # matters is that plenty of ordinary lines carry them.
    incidental = [
        r"\.\d*429\d*Z\] ",
        r"\.\d*503\d*Z\] ",
        r'requestID="[^"]*(?:429|503)',
        r"responseBytes=503\b",
    ]
    for needle in incidental:
        plain = [r for r in records if re.search(needle, r["line"]) and r["group"] is None]
        assert len(plain) >= 5, needle
    needles = [
        r"Processed (?:429|500|503) leads",
        r"successful, 0 failed",
        r"failed: 0",
        r"errors: 0",
        r"errorCount=0",
        r'Updated field "Error Message"',
        r"/api/error-report\?client=",
        r"⚠️ Skipping client",
        r"❌ 0 leads rejected",
        r"\[INFO\] Retrying in \d+s \(attempt 1/3\) as planned",
        r'"timeout": 30000',
        r"==> Build successful",
        r"npm notice",
    ]
    for needle in needles:
        hits = [r for r in records if re.search(needle, r["line"])]
        assert hits, needle
        assert all(r["severity"] is None and r["group"] is None for r in hits), needle


def test_runs_complete_crash_and_log_late(records: list[dict]) -> None:
    """Markers of all three kinds occur, crashed runs have no marker, and some lines come after markers."""
    lines = [_body(r["line"]) for r in records]
    for marker in (
        "SMART RESUME PROCESSING COMPLETED",
        "ALL CLIENTS UP TO DATE",
        "Job status updated to COMPLETED",
    ):
        assert sum(marker in line for line in lines) >= 2, marker
    crashed = {m[1] for line in lines if (m := re.search(r"Run (\d{6}-\d{6}) marked as CRASHED", line))}
    assert len(crashed) == 5
    for run_id in crashed:
        own = [line for line in lines if line.startswith(f"[{run_id}")]
        assert own and not any("COMPLETED" in line or "UP TO DATE" in line for line in own), run_id
    late = [r for r in records if r["group"] == "client-run-record-not-found"]
    assert late
    for rec in late:
        run = re.search(r"not found for (\d{6}-\d{6})-", rec["line"])[1]  # type: ignore[index]
        idx = records.index(rec)
        assert any(
            re.search(rf"\[{run}(?:-[^\]]+)?\] .*(?:COMPLETED|UP TO DATE)", r["line"]) for r in records[:idx]
        ), rec["line"]


def test_readme_table_matches_the_corpus(records: list[dict]) -> None:
    """The README group table is exactly what generate.py --table prints for this corpus."""
    readme = (CORPUS_DIR / "README.md").read_text(encoding="utf-8")
    body = readme.split("<!-- table:start -->\n", 1)[1].split("\n<!-- table:end -->", 1)[0]
    assert body == _load_generator().table(records)


def test_generator_reproduces_the_committed_file_byte_for_byte(tmp_path: Path) -> None:
    """Running generate.py --out writes a file identical to corpus.jsonl."""
    out = tmp_path / "corpus.jsonl"
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True, timeout=60
    )
    assert out.read_bytes() == CORPUS.read_bytes()
