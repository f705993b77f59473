"""The compiled kernel against the line-by-line pipeline, on seeded hostile input.

Every way in — one record at a time (the exact reference), chunks of records, ``LineBatch`` buffers —
must leave the same runs (rings, counters, times, clients, activity order) and store the same issues.
"""

from __future__ import annotations

import random
from array import array

import pytest

from stream_triage.config import load_config
from stream_triage.pipeline import fastpath
from stream_triage.pipeline.triage import Triage
from stream_triage.records import EndReason, LineBatch, RawRecord, RunFlush
from stream_triage.sinks.memory import MemoryStore
from tests.helpers import default_patterns

pytestmark = pytest.mark.skipif(not fastpath.native_available(), reason="the C kernel is not built")

RUNS = ["251103-081522", "251103-090000", "251103-093011", "251104-000001"]
CLIENTS = ["Ann-Lee", "Guy-Wilson", "SYSTEM", "", "Zoë-Müller", "a b", "Dean[x"]
LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "info", "WARN", "warning", "ERROR", "Err", "FATAL", "NOTICE"]
MESSAGES = [
    "Processed lead rec{n} score={n} in {n} ms (batch 3 of 40)",
    "Batch {n} complete: {n} successful, 0 failed",
    "Batch {n} complete: {n} successful, 10 failed",
    "batch 4 failed: 0 failures reported",
    "Queued {n} leads for scoring on stream {s}",
    "Starting smart resume for stream {s}",
    "connect ECONNREFUSED 10.0.0.{n}:5432",
    "Request failed with status code 503 for rec{n}",
    "Gemini API rate limited (429 Too Many Requests), retrying in {n} s",
    "rate limit configured: 5 per second",
    "socket hang up, retrying",
    "Failed to update Airtable record rec{n}",
    "🎉 SMART RESUME PROCESSING COMPLETED ✅",
    "SMART RESUME PROCESSING COMPLETED",
    "token=sk-live-abcdef0123456789abcdef and password=hunter2",
    "Cannot read properties of undefined (reading 'fields')",
    "x" * 700,
    "",
    "tab\tseparated\x0bvertical",
    "\x1b[31mred error\x1b[0m",
    "resumé sent",
    "timeout of 30000ms exceeded",
    # Symbols only (the kernel takes these when no pattern matches), and their near misses.
    "✅ Lead rec{n} scored in {n} ms ➜ next",
    "Queued {n} leads 🚀 for scoring on stream {s}",
    "— dash {n} – en dash … done",
    "🎉" * 520 + " a line longer than the context line limit in characters, not in bytes",
    "✔️ verified {n}",
    "non\u00a0breaking space {n}",
    "Cannot read properties of undefined ❌ (reading 'fields')",
    "Gemini rate limited 🚦 (429 Too Many Requests), retrying in {n} s",
    "🎉 Batch {n} complete: 0 failed ✅",
]
UNTAGGED = [
    "    at scoreChunk (/opt/render/project/src/services/leadScoring.js:{n}:21)",
    "    at processTicksAndRejections (node:internal/process/task_queues:95:5)",
    "Caused by: java.io.IOException: boom",
    "}}",
    "]);",
    "Traceback (most recent call last):",
    '  File "/app/job.py", line {n}, in run',
    "ValueError: bad value",
    "2025-11-03 08:15:22.123 ERROR [main] c.a.App - failed",
    "2025-11-03T08:15:22.123Z plain line with a time",
    'clientIP="203.0.113.{n}" requestID="abc" responseTimeMS={n} responseBytes=12',
    'clientIP="203.0.113.9" requestID="abc" responseTimeMS=5000 responseBytes=12',
    'clientIP="203.0.113.9" requestID="abc" responseTimeMS=004999 responseBytes=12',
    "==> Build successful 🎉",
    "==> Running build command 'npm install'...",
    "npm warn deprecated glob@7.2.3",
    "[worker] [x] [op] [ERROR] not a run tag",
    "[notarun]",
    "",
    "line with carriage return\r",
    "nul\x00byte",
    "Uncaught exception in worker",
    "[251103-0815229] looks like a run tag",
    "[251103-081522-] empty suffix",
]
PREFIXES = [
    "",
    "",
    "[{iso}Z] ",
    "[{iso}.123456789Z] ",
    "[{iso}.1Z] ",
    "[{iso}.1234567890Z] ",
    "[{iso}+02:00] ",
    "{iso}.5Z ",
    "[2025-02-30T08:00:00Z] ",
    "[{iso}Z]\t",
    "[{iso}Z]",
]


def _lines(
    seed: int, count: int, runs: list[str] = RUNS, step: float = 0.02
) -> list[tuple[str, str, float | None]]:
    """(text, source, envelope time) triples: interleaved runs, sources and every odd form above."""
    rng = random.Random(seed)
    out = []
    t = 1_762_157_700.0
    for i in range(count):
        t += rng.random() * step
        iso = f"2025-11-03T08:15:{i * 40 // count:02d}"
        n = rng.randint(0, 99999)
        prefix = rng.choice(PREFIXES).format(iso=iso)
        if rng.random() < 0.25:
            text = prefix + rng.choice(UNTAGGED).format(n=n)
        else:
            run = rng.choice(runs)
            client = rng.choice(CLIENTS)
            suffix = f"-{client}" if client and rng.random() < 0.5 else ""
            msg = rng.choice(MESSAGES).format(n=n, s=rng.randint(1, 3))
            sep = rng.choice([" ", " ", "", "  ", "\t"])
            if rng.random() < 0.1:
                text = f"{prefix}[{run}{suffix}]{sep}{msg}"
            else:
                text = f"{prefix}[{run}{suffix}]{sep}[{client}]{sep}[op{n % 3}]{sep}[{rng.choice(LEVELS)}]{sep}{msg}"
        source = rng.choice(["app/web.1", "app/web.1", "app/web.2"])
        out.append((text, source, t if rng.random() < 0.5 else None))
    return out


def _records(lines: list[tuple[str, str, float | None]]) -> list[RawRecord]:
    return [RawRecord(text, source, ts, i + 1) for i, (text, source, ts) in enumerate(lines)]


def _state(triage: Triage, flushes: list[RunFlush]) -> tuple:
    """Everything a way in can change: stored issues and runs, and every open run's state."""
    store = MemoryStore()
    store.apply(flushes)
    issues = {
        fp: (i.severity, i.pattern, i.occurrences, sorted(i.positions), i.service, i.stack_trace, i.client_id,
             i.run_ids, i.first_seen, i.last_seen, i.context, i.error_message)
        for fp, i in store.issues.items()
    }  # fmt: skip
    runs = {
        rid: (r.lines, r.first_ts, r.last_ts, r.ended, r.run_type, r.stream, r.client_ids)
        for rid, r in store.runs.items()
    }
    open_runs = [
        (k, r.ring, r.lines, r.first_ts, r.last_ts, r.last_activity, r.client_ids, r.run_type, r.stream)
        for k, r in ((r.key, r) for r in triage.runs_by_activity())
    ]
    systems = {k: (r.ring, r.lines, r.first_ts, r.last_ts, r.last_activity) for k, r in triage.systems.items()}
    return issues, runs, open_runs, systems, triage.now, triage.lines_processed


def _triage() -> Triage:
    return Triage(load_config(None, {}), default_patterns())


def _before_and_after_finish(triage: Triage, out: list[RunFlush]) -> tuple[tuple, tuple]:
    before = _state(triage, out)
    return before, _state(triage, out + triage.flush_all(EndReason.EOF))


def _one_by_one(records: list[RawRecord]) -> tuple[tuple, tuple]:
    triage = _triage()
    return _before_and_after_finish(triage, [f for r in records for f in triage.process(r)])


def _chunked(records: list[RawRecord], size: int) -> tuple[tuple, tuple]:
    triage = _triage()
    assert triage._kernel is not None
    out = [f for i in range(0, len(records), size) for f in triage.process_chunk(records[i : i + size])]
    return _before_and_after_finish(triage, out)


def _batches(lines: list[tuple[str, str, float | None]], size: int) -> tuple[tuple, tuple]:
    triage = _triage()
    out = []
    for i in range(0, len(lines), size):
        part = lines[i : i + size]
        names = sorted({s for _, s, _ in part})
        batch = LineBatch(
            "".join(f"{t}\n" for t, _, _ in part).encode("utf-8"),  # each line ended: the last may be empty
            names,
            bytes(names.index(s) for _, s, _ in part),
            array("d", [float("nan") if ts is None else ts for _, _, ts in part]),
            i + 1,
        )
        out += triage.process_batch(batch)
    return _before_and_after_finish(triage, out)


@pytest.mark.parametrize("seed", range(4))
def test_every_way_in_leaves_the_same_state(seed: int) -> None:
    """Open runs compared before the final flush, stored issues (with context) after it."""
    lines = _lines(seed, 1500)
    records = _records(lines)
    expected = _one_by_one(records)
    assert expected[0][2], "the input leaves runs open"
    assert len(expected[1][0]) >= 10, "the input yields issues"
    for size in (8, 97, 1500):
        assert _chunked(records, size) == expected, ("chunk", size)
        assert _batches(lines, size) == expected, ("batch", size)


def test_thousands_of_runs_closing_and_reopening_leave_the_same_state() -> None:
    """Enough runs to grow the kernel's run table several times; envelope times step far enough for
    grace and idle timeouts to close runs, and later lines reopen them (the kernel must forget a
    closed run and route to the new one)."""
    runs = [f"251103-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}" for i in range(2000)]
    lines = _lines(7, 12_000, runs=runs, step=0.6)
    records = _records(lines)
    expected = _one_by_one(records)
    assert len(expected[0][1]) > 100, "runs were closed while lines still came"
    for size in (97, 4000):
        assert _chunked(records, size) == expected, ("chunk", size)
        assert _batches(lines, size) == expected, ("batch", size)


def test_the_kernel_takes_most_lines_of_ordinary_input() -> None:
    """Not a timing test: the fast path must actually be taken for ordinary lines."""
    triage = _triage()
    lines = [f"[251103-081522-Ann-Lee] [Ann-Lee] [smart_resume] [INFO] Starting smart resume for stream {1}"]
    lines += [f"[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Processed lead {i}" for i in range(2000)]
    lines += [
        f"[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Batch {i} complete: 9 ok, 0 failed"
        for i in range(500)
    ]
    taken = []
    original = triage.process_line
    triage.process_line = lambda line, *rest: taken.append(line) or original(line, *rest)  # type: ignore[method-assign]
    triage.process_batch(LineBatch("\n".join(lines).encode(), ["s"]))
    assert triage.lines_processed == len(lines)
    assert len(taken) <= 2, [t.text for t in taken]
    assert triage.runs["251103-081522"].ring[-1].endswith("Batch 499 complete: 9 ok, 0 failed")


def test_the_kernel_takes_lines_whose_only_non_ascii_characters_are_symbols() -> None:
    """Emoji and arrows in a message keep a line on the fast path; a letter, a non-ASCII space, a
    non-ASCII client tag or bytes that are not UTF-8 send it to Python, which decodes as a reader
    would ("replace")."""
    head = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] "
    symbols = [f"{head}✅ Processed lead {i} ➜ scored — 🚀" for i in range(300)]
    others = [f"{head}résumé {1}", f"{head}non\u00a0breaking", "[251103-081522-Zoë] [Zoë] [op] [INFO] ✅ done"]
    start = f"{head.replace('lead_scoring', 'smart_resume')}Starting smart resume for stream 1"
    data = "\n".join([start, *symbols, *others]).encode() + b"\n" + head.encode() + b"bad \xff\xfe bytes \xe2\x9c\n"
    triage = _triage()
    taken = []
    original = triage.process_line
    triage.process_line = lambda line, *rest: taken.append(line) or original(line, *rest)  # type: ignore[method-assign]
    triage.process_batch(LineBatch(data, ["s"]))
    assert triage.lines_processed == len(symbols) + len(others) + 2
    bad = "bad \ufffd\ufffd bytes \ufffd"
    assert [t.message for t in taken][1:] == ["résumé 1", "non\u00a0breaking", "✅ done", bad]
    ring = triage.runs["251103-081522"].ring
    assert ring[-5] == symbols[-1] and ring[-1].endswith(bad)
    # The same lines one by one (the Python path throughout) leave the same state.
    texts = data.decode("utf-8", "replace").splitlines()
    expected = _one_by_one([RawRecord(t, "s", None, i + 1) for i, t in enumerate(texts)])
    assert _before_and_after_finish(triage, []) == expected


def test_why_the_fast_path_is_off_is_told() -> None:
    assert _triage().fast_path_off is None
    config = load_config(None, {})
    config.parse.line_regex = r"^(?P<level>[A-Z]+) run=(?P<run>\S+) (?P<message>.*)$"
    assert "line_regex" in (Triage(config, default_patterns()).fast_path_off or "")


@pytest.mark.parametrize("capacity", [0, 1, 2, 5, 25])
def test_the_byte_ring_keeps_what_a_bounded_deque_keeps(capacity: int) -> None:
    """The C ring stores lines as UTF-8 in one circular buffer that grows: any str (non-ASCII,
    lone surrogates, empty, long enough to force growth and wrap-around) comes back unchanged."""
    from collections import deque

    from stream_triage.pipeline._kernel import RunState

    rng = random.Random(capacity)
    pieces = ["a", "é", "🎉", "\ud800", "", "x" * 300, "[251103-081522] [A] [op] [INFO] line", "\x00\r\x1b"]
    state, expected = RunState(capacity), deque(maxlen=capacity)
    for i in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12 if i % 97 else 60)))
        state.add_line(text)
        expected.append(text)
        assert state.ring == list(expected), i


@pytest.mark.parametrize(("before", "after"), [(0, 0), (1, 3), (25, 25), (5, 40), (40, 2)])
@pytest.mark.parametrize("twin", ["c", "python"])
def test_pending_collectors_get_the_context_eager_copies_got(before: int, after: int, twin: str) -> None:
    """A pending collector reads its context from the ring when it is due or rendered. Against the
    eager way (copy the ring at the match, append every later line until ``wanted``), with repeats
    dropped unread, flushes rendering early and collectors overlapping, both RunStates agree."""
    from stream_triage.pipeline._kernel import RunState

    from stream_triage.pipeline.runs import ContextCollector, _PyRunState

    rng = random.Random(before * 100 + after)
    state = (RunState if twin == "c" else _PyRunState)(before, after + 1)
    ring: list[str] = []
    open_: list[tuple[ContextCollector, list[str], str, list[str]]] = []  # pending, expected
    done, frozen = 0, set()
    for i in range(4000):
        text = "".join(rng.choice(["a", "é", "🎉", "", "x" * 90]) for _ in range(rng.randint(0, 6))) + str(i)
        collector = ContextCollector.pending(state, after) if rng.random() < 0.15 else None  # type: ignore[arg-type]
        expected = (ring[-before:] if before else [], text, []) if collector else None
        for _, _, _, exp_after in open_:
            if len(exp_after) < after:
                exp_after.append(text)
        state.add_line(text)
        ring.append(text)
        if collector is not None and expected is not None:
            state.collectors = (*state.collectors, collector)
            open_.append((collector, *expected))
        roll = rng.random()
        if open_ and roll < 0.05:  # a repeat occurrence: dropped, never read
            drop = open_.pop(rng.randrange(len(open_)))[0]
            state.collectors = tuple(c for c in state.collectors if c is not drop)
        elif open_ and roll < 0.15:  # a flush: rendered now (perhaps before its after-context is full)
            c, exp_before, exp_line, exp_after = open_.pop(rng.randrange(len(open_)))
            assert c.render() == ["   " + s for s in exp_before] + [">> " + exp_line] + ["   " + s for s in exp_after]
            state.collectors = tuple(x for x in state.collectors if x is not c)
            done += 1
        for c, exp_before, exp_line, exp_after in open_:  # frozen ones already hold their lines
            if c.run is None:
                assert (c.before, c.line, c.after) == (exp_before, exp_line, exp_after), i
                frozen.add(id(c))
        assert state.ring == (ring[-before:] if before else [])
    assert done > 100 and len(frozen) > 20
    with pytest.raises(IndexError, match="not in the ring"):
        state.context(0, after)


def test_the_run_order_matches_its_python_twin() -> None:
    """touch / remove / oldest / iteration of the C activity list against the OrderedDict twin, and a
    run linked in one order cannot be moved by another."""
    from stream_triage.pipeline._kernel import RunOrder, RunState

    from stream_triage.pipeline.runs import _PyRunOrder, _PyRunState

    rng = random.Random(5)
    c_runs, py_runs = [RunState(1) for _ in range(40)], [_PyRunState(1) for _ in range(40)]
    c_order, py_order = RunOrder(), _PyRunOrder()
    index = {id(r): i for i, r in enumerate(c_runs)} | {id(r): i for i, r in enumerate(py_runs)}
    for step in range(5000):
        i = rng.randrange(40)
        if rng.random() < 0.8:
            c_order.touch(c_runs[i])
            py_order.touch(py_runs[i])
        else:
            c_order.remove(c_runs[i])
            py_order.remove(py_runs[i])
        assert [index[id(r)] for r in c_order] == [index[id(r)] for r in py_order], step
        assert len(c_order) == len(py_order)
        oldest_c, oldest_py = c_order.oldest(), py_order.oldest()
        assert (oldest_c is None) == (oldest_py is None)
        assert oldest_c is None or index[id(oldest_c)] == index[id(oldest_py)]
    c_order.touch(c_runs[0])
    with pytest.raises(ValueError, match="another order"):
        RunOrder().touch(c_runs[0])


@pytest.mark.parametrize("seed", range(3))
def test_line_fields_parse_as_the_line_parser_does(seed: int) -> None:
    """Lines the kernel hands back to Python are rebuilt from the head C parsed; every field must be
    what LineParser gives (and lines it cannot vouch for come back as None)."""
    from stream_triage.pipeline.fastpath import index_lines, line_fields
    from stream_triage.pipeline.parse import LineParser
    from stream_triage.pipeline.triage import _line_of

    triage = _triage()
    parser = LineParser(triage.config.parse.line_regex)
    lines = _lines(seed, 3000)
    data = "".join(f"{t}\n" for t, _, _ in lines).encode("utf-8")
    starts = index_lines(data)
    assert triage._fast is not None
    heads = triage._fast.classify(data, starts)[4]
    envelope = array("d", [float("nan") if ts is None else ts for _, _, ts in lines])
    names = sorted({s for _, s, _ in lines})
    source_of = bytes(names.index(s) for _, s, _ in lines)
    vouched = 0
    for i, (text, source, ts) in enumerate(lines):
        fields = line_fields(data, starts, heads, i)
        if fields is None:
            continue
        vouched += 1
        got = _line_of(fields, names, source_of, envelope, 1, i)
        assert got == parser(RawRecord(text, source, ts, i + 1)), text
    assert vouched > 500


def test_packed_context_renders_as_its_lines_do() -> None:
    """The C renderer of packed context lines against the lines themselves: ASCII, UTF-8, escapes
    and carriage returns before UTF-8, lone surrogates, empty and long lines."""
    from stream_triage.pipeline._kernel import render_context

    from stream_triage.pipeline.runs import pack_lines, unpack_lines

    lines = ["plain", "", "é 🎉", "\x1b[31mred é\x1b[0m", "cr\r then é", "x" * 600, "lone \udcff surrogate"]
    blob, lens = pack_lines(lines)
    assert unpack_lines(blob, lens) == lines
    for at in range(len(lines)):
        assert render_context(blob, lens, at) == [(">> " if i == at else "   ") + s for i, s in enumerate(lines)]
    with pytest.raises(ValueError, match="do not add up"):
        render_context(blob[:-1], lens, 0)
