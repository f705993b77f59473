"""The chunked fast path stores exactly what feeding records one by one stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_triage.config import load_config
from stream_triage.pipeline.triage import Triage
from stream_triage.records import EndReason, RawRecord, RunFlush
from stream_triage.sinks.memory import MemoryStore
from stream_triage.sources.files import read_inputs
from tests.helpers import default_patterns

DATA = Path(__file__).resolve().parent.parent / "data"


def _summary(flushes: list[RunFlush], context: bool = True) -> tuple[dict, dict]:
    """What the store ends up with: issues by fingerprint and the final state of every run.

    Time-driven flushes (periodic, late, idle) may fall at other points of the input when lines are
    processed in chunks, so the sequence of flushes is not compared — what they add up to is. A
    system bucket's periodic flush also ends its issues' after-context, so their context is not
    compared; ``context=False`` leaves out every context.
    """
    store = MemoryStore()
    store.apply(flushes)
    issues = {
        fp: (i.severity.value, i.pattern, i.occurrences, sorted(i.positions), i.service, i.stack_trace,
             i.client_id, i.run_ids, i.first_seen, i.last_seen, i.context if context and i.run_ids else None)
        for fp, i in store.issues.items()
    }  # fmt: skip
    runs = {
        rid: (r.lines, r.first_ts, r.last_ts, r.ended, r.run_type, r.stream, r.marker_seen)
        for rid, r in store.runs.items()
    }
    return issues, runs


def _one_by_one(records: list[RawRecord]) -> list[RunFlush]:
    triage = Triage(load_config(None, {}), default_patterns())
    out = []
    for r in records:
        out.extend(triage.process(r))
    return out + triage.flush_all(EndReason.EOF)


def _chunked(records: list[RawRecord], chunk: int) -> list[RunFlush]:
    triage = Triage(load_config(None, {}), default_patterns())
    assert triage._fast is not None, "the default configuration uses the fast path"
    out = []
    for i in range(0, len(records), chunk):
        out.extend(triage.process_chunk(records[i : i + chunk]))
    return out + triage.flush_all(EndReason.EOF)


def _corpus_records() -> list[RawRecord]:
    from stream_triage.pipeline.parse import parse_iso_time

    records = []
    with (DATA / "corpus" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            obj = json.loads(raw)
            ts = parse_iso_time(obj["timestamp"]) if obj.get("timestamp") else None
            records.append(RawRecord(obj["line"], "corpus", ts, n))
    return records


@pytest.mark.parametrize("chunk", [64, 2048])
def test_chunks_match_one_by_one_on_the_labelled_corpus(chunk: int) -> None:
    """4,000 realistic lines (emoji, stack traces, late lines, crashes): identical runs and issues."""
    records = _corpus_records()
    assert _summary(_chunked(records, chunk), context=False) == _summary(_one_by_one(records), context=False)


def test_chunks_match_one_by_one_on_the_multi_run_log() -> None:
    """The hand-written multi-run log: identical runs and issues, chunk boundaries anywhere."""
    records = [r for r in read_inputs([str(DATA / "multi_run.log")]) if isinstance(r, RawRecord)]
    expected = _summary(_one_by_one(records))
    for chunk in (9, 17, 50, 500):
        assert _summary(_chunked(records, chunk)) == expected, chunk


def test_every_problem_line_of_a_chunk_is_flagged() -> None:
    """Many lines matching the same pattern in one chunk are all reported, not just the first."""
    lines = [f"[251103-081522] [Ann-Lee] [op] [INFO] processed lead {i}" for i in range(300)]
    for i in range(0, 300, 7):
        lines[i] = f"[251103-081522] [Ann-Lee] [op] [INFO] connect ECONNREFUSED 10.0.0.{i}:5432"
    records = [RawRecord(t, "s", 1_700_000_000.0 + i, i + 1) for i, t in enumerate(lines)]
    flushes = _chunked(records, 2048)
    (issue,) = [i for f in flushes for i in f.issues]
    assert issue.occurrences == len(range(0, 300, 7))


@pytest.mark.parametrize(
    "unless",
    [
        r"\x30 zork(?:ed)? failed",  # an escape the single-line rewrite does not take
        r"(?<![\d.])0 zork(?:ed)? failed",  # a lookbehind: Hyperscan rejects it
    ],
)
def test_an_unless_the_scan_cannot_take_exactly_still_suppresses(tmp_path: Path, unless: str) -> None:
    """A pattern whose ``unless`` is left out of the batch scan: its hits are confirmed, not settled."""
    pack = tmp_path / "pack.toml"
    pack.write_text(
        f"""
[[pattern]]
id = "zork-failed"
severity = "ERROR"
regex = '\\bzork(?:ed)? failed\\b'
unless = '{unless}'
description = "zorking failed"
""",
        encoding="utf-8",
    )
    config = load_config(None, {})
    config.patterns.files = [str(pack)]
    lines = [f"[251103-081522] [Ann-Lee] [op] [INFO] processed lead {i} for stream 1" for i in range(200)]
    for i in range(5, 200, 10):  # zero-failure summaries: suppressed by the unless
        lines[i] = f"[251103-081522] [Ann-Lee] [op] [INFO] round {i}: 0 zork failed"
    lines[101] = "[251103-081522] [Ann-Lee] [op] [INFO] round 101: 3 zorked failed"
    records = [RawRecord(t, "s", 1_700_000_000.0 + i, i + 1) for i, t in enumerate(lines)]

    def run(chunk: int | None) -> list[RunFlush]:
        triage = Triage(config)
        assert triage._fast is not None
        if chunk is None:
            out = [f for r in records for f in triage.process(r)]
        else:
            out = [f for i in range(0, len(records), chunk) for f in triage.process_chunk(records[i : i + chunk])]
        return out + triage.flush_all(EndReason.EOF)

    chunked = run(2048)
    (issue,) = [i for f in chunked for i in f.issues if i.pattern_id == "zork-failed"]
    assert issue.message == "round 101: 3 zorked failed" and issue.occurrences == 1
    assert _summary(chunked) == _summary(run(None))


def test_an_exact_hit_of_a_pattern_with_level_conditions_still_checks_the_level() -> None:
    """"retrying" fires at WARN, not at INFO: the batch scan's exact hit spares the regex, not the level."""
    lines = [f"[251103-081522] [Ann-Lee] [op] [INFO] processed lead {i} for stream 1" for i in range(300)]
    for i in range(3, 300, 6):
        level = "WARN" if i % 4 == 1 else "INFO"
        lines[i] = f"[251103-081522] [Ann-Lee] [op] [{level}] Airtable call {i} failed, retrying in 5 s"
    records = [RawRecord(t, "s", 1_700_000_000.0 + i, i + 1) for i, t in enumerate(lines)]
    chunked = _chunked(records, 2048)
    (issue,) = [i for f in chunked for i in f.issues]
    assert issue.pattern_id == "retrying"
    assert issue.occurrences == sum(1 for i in range(3, 300, 6) if i % 4 == 1)
    assert _summary(chunked) == _summary(_one_by_one(records))
