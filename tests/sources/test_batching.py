"""Syslog and logplex input as LineBatches: the C fast path, the Python fallback and the old record path agree."""

from __future__ import annotations

import math
import random
from array import array

import pytest

from stream_triage.records import LineBatch, RawRecord
from stream_triage.sources import batching
from stream_triage.sources.batching import (
    MAX_SOURCES,
    Batch,
    LineBatchBuilder,
    SyslogBatcher,
    batch_lines,
    logplex_batches,
)
from stream_triage.sources.files import split_lines
from stream_triage.sources.syslog_protocol import (
    LogplexFramingError,
    SyslogFramer,
    SyslogParseError,
    parse_logplex,
    parse_rfc3339,
    parse_syslog,
)

needs_c = pytest.mark.skipif(not batching.FAST, reason="the _syslog_fast extension is not built")

LINE = "[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] Failed to score lead 4711: timeout after 30000ms"
RENDER = f"<134>1 2025-11-03T08:15:22.429113Z srv-d3k8abc web srv-d3k8abc-5f7c9 - - {LINE}".encode()


def octet(frame: bytes) -> bytes:
    """Octet-count one frame."""
    return b"%d %s" % (len(frame), frame)


# ------------------------------------------------------------------------------------- references
def old_syslog(data: bytes, chunks: list[int], max_frame_bytes: int) -> tuple[list[tuple], list[str]]:
    """What the listener produced before batches: framer.feed, parse_syslog, RawRecord, split_lines."""
    framer = SyslogFramer(max_frame_bytes)
    lines: list[tuple] = []
    problems: list[str] = []
    for piece in [*pieces(data, chunks), b""]:
        frames = framer.feed(piece) if piece else framer.flush()
        problems += [e.kind for e in framer.pop_errors()]
        for frame in frames:
            try:
                msg = parse_syslog(frame)
            except SyslogParseError:
                problems.append("malformed")
                continue
            source = f"{msg.hostname or '-'}/{msg.app_name or '-'}/{msg.procid or '-'}"
            lines += [key(r) for r in split_lines(RawRecord(msg.message, source, msg.timestamp, 0))]
    return lines, problems


def old_logplex(body: bytes, drain: str) -> tuple[list[tuple], int]:
    """What the drain produced before batches for a logplex body: lines and the rejected count."""
    rejected = 0
    try:
        frames = parse_logplex(body)
    except LogplexFramingError as exc:
        frames = exc.frames
        rejected += 1
    lines: list[tuple] = []
    for frame in frames:
        try:
            msg = parse_syslog(frame, sd_omitted=True)
        except SyslogParseError:
            rejected += 1
            continue
        source = f"{drain}/{msg.app_name or '-'}/{msg.procid or '-'}"
        lines += [key(r) for r in split_lines(RawRecord(msg.message, source, msg.timestamp, 0))]
    return lines, rejected


def key(record: RawRecord) -> tuple:
    """What the pipeline sees of a line (positions are not used by live sources)."""
    return (record.text, record.source, record.ts)


def pieces(data: bytes, chunks: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes (the rest in one last piece)."""
    out = []
    pos = 0
    for size in chunks:
        out.append(data[pos : pos + size])
        pos += size
    out.append(data[pos:])
    return [p for p in out if p]


def new_syslog(data: bytes, chunks: list[int], max_frame_bytes: int, fast: bool) -> tuple[list[list[Batch]], list[str]]:
    """The batches of every read and the problem kinds, through ``SyslogBatcher``."""
    batcher = SyslogBatcher(max_frame_bytes, fast=fast)
    reads: list[list[Batch]] = []
    problems: list[str] = []
    for piece in [*pieces(data, chunks), b""]:
        reads.append(batcher.feed(piece) if piece else batcher.flush())
        problems += [kind for kind, _ in batcher.pop_problems()]
    return reads, problems


def flat(reads: list[list[Batch]]) -> list[tuple]:
    """Every line of every batch, as the pipeline sees it."""
    out: list[tuple] = []
    for batches in reads:
        for batch in batches:
            out += [key(r) for r in (batch if isinstance(batch, list) else batch.records())]
    return out


def same_ts(a: array | None, b: array | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def assert_same_batches(fast: list[list[Batch]], slow: list[list[Batch]]) -> None:
    """The fast path and the Python fallback produced the same batches, read for read."""
    assert len(fast) == len(slow)
    for f_read, s_read in zip(fast, slow, strict=True):
        assert [type(b) for b in f_read] == [type(b) for b in s_read]
        for f, s in zip(f_read, s_read, strict=True):
            if isinstance(f, list):
                assert [key(r) for r in f] == [key(r) for r in s]  # type: ignore[union-attr]
                continue
            assert isinstance(s, LineBatch)
            assert (f.data, f.sources, f.source_of, f.first_position) == (
                s.data,
                s.sources,
                s.source_of,
                s.first_position,
            )
            assert same_ts(f.ts, s.ts)


def assert_syslog_equivalent(data: bytes, chunks: list[int] | None = None, max_frame_bytes: int = 65536) -> None:
    chunks = chunks or []
    expected, expected_problems = old_syslog(data, chunks, max_frame_bytes)
    slow, slow_problems = new_syslog(data, chunks, max_frame_bytes, fast=False)
    assert flat(slow) == expected
    assert slow_problems == expected_problems
    if batching.FAST:
        fast, fast_problems = new_syslog(data, chunks, max_frame_bytes, fast=True)
        assert_same_batches(fast, slow)
        assert fast_problems == expected_problems


def assert_logplex_equivalent(body: bytes, drain: str = "d.drain") -> None:
    expected, expected_rejected = old_logplex(body, drain)
    slow = logplex_batches(body, drain, fast=False)
    assert flat([slow.batches]) == expected
    assert slow.rejected == expected_rejected
    if batching.FAST:
        fast = logplex_batches(body, drain, fast=True)
        assert_same_batches([fast.batches], [slow.batches])
        assert (fast.rejected, fast.cut, fast.kept) == (slow.rejected, slow.cut, slow.kept)


# ------------------------------------------------------------------------------------- frames
def frame(
    msg: str | bytes,
    *,
    pri: str = "134",
    ts: str = "2025-11-03T08:15:22.429113Z",
    host: str = "srv-d3k8abc",
    app: str = "web",
    procid: str = "srv-d3k8abc-5f7c9",
    msgid: str = "-",
    sd: str | None = "-",
) -> bytes:
    """An RFC 5424 frame (``sd=None`` leaves the STRUCTURED-DATA field out, as logplex does)."""
    body = msg.encode() if isinstance(msg, str) else msg
    head = f"<{pri}>1 {ts} {host} {app} {procid} {msgid}".encode()
    return head + (b" " + sd.encode() if sd is not None else b"") + b" " + body


# Timestamps the fast path takes and ones it must leave to Python (valid or not there).
TIMESTAMPS = [
    "2025-11-03T08:15:22.429113Z",
    "2025-11-03T08:15:22Z",
    "2025-11-03t08:15:22z",
    "2025-11-03T08:15:22.1+01:00",
    "2025-11-03T08:15:22,5-05:30",
    "2025-11-03T08:15:22+00:00",
    "2024-02-29T23:59:60.999999999999999999Z",
    "2023-02-29T00:00:00Z",
    "2025-11-03T08:15:61Z",
    "2025-11-03T08:60:00Z",
    "2025-11-31T08:15:22Z",
    "1969-12-31T23:59:59.5Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "0000-01-01T00:00:00Z",
    "2025-13-03T08:15:22Z",
    "2025-11-03T24:00:00Z",
    "2025-11-03T08:+5:22Z",
    "2025-11-03T08:15:22.Z",
    "2025-11-03T08:15:22.12a3Z",
    "2025-11-03T08:15:22+0100",
    "2025-11-03T08:15:22+99:99",
    "2025-11-03 08:15:22Z",
    "2025-11-03T08:15:22",
    "2025-11-03T08:15:22.00000000000000000000000000000000000000000000000000000000000000000000000001Z",
    "2025-11-03T08:15:2Z",
    "-",
    "",
    "--",
    "２025-11-03T08:15:22Z",
]

MESSAGES: list[str | bytes] = [
    LINE,
    "",
    "-",
    "- ",
    "- -",
    "-leading dash",
    "--",
    "\ufeff" + LINE,
    "\ufeff\ufeff" + LINE,
    LINE + "\n",
    LINE + "\r\n\r\n",
    LINE + "\r",
    LINE + "\r\r",
    "a\rb",
    f"{LINE}\n    at score (/opt/render/project/src/x.js:212:17)\n    at next (node:internal/x:1:1)",
    "multi\r\nline\r\n\r\nwith CRLF\r",
    "\n\nleading newlines",
    "x\n\r",
    "[251103-081522] [SYSTEM] [smart_resume] [INFO] started",
    '[meta sequenceId="7"] message after SD',
    '[origin@41058 note="a \\"q\\" \\] b"] after escaped SD',
    "[timeQuality tzKnown=\"1\"]",
    "[nosuchid] bracketed",
    "[] empty brackets",
    "[a=b] not an id",
    "[unterminated",
    '[x@1 token="stk_0123456789abcdef"] token-ish SD',
    "tab\tand\x00nul inside",
    "ünïcödé ✓ 𝄞 emoji 🚀",
    b"invalid \xff\xfe utf-8",
    b"overlong \xc0\xaf",
    b"surrogate \xed\xa0\x80",
    b"truncated \xe2\x82",
    b"above max \xf4\x90\x80\x80",
    "x" * 3000,
]


def hostile_frames(rng: random.Random, count: int) -> list[bytes]:
    """A mix of clean Render frames and everything odd a sender (or an attacker) could send."""
    out: list[bytes] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:
            procid = f"web.{rng.randint(1, 3)}"
            out.append(octet(frame(rng.choice(MESSAGES), ts=rng.choice(TIMESTAMPS[:11]), procid=procid)))
        elif roll < 0.6:
            out.append(octet(frame(rng.choice(MESSAGES), ts=rng.choice(TIMESTAMPS))))
        elif roll < 0.67:
            fields = {k: rng.choice(["-", "", "h", "ü", "a/b", "x" * 40]) for k in ("host", "app", "procid", "msgid")}
            out.append(octet(frame(rng.choice(MESSAGES), **fields)))
        elif roll < 0.72:
            out.append(octet(frame(LINE, pri=rng.choice(["0", "191", "192", "007", "", "1344", "x"]))))
        elif roll < 0.77:
            out.append(frame(rng.choice(MESSAGES)).replace(b"\n", b" ") + rng.choice([b"\n", b"\r\n", b"\0"]))
        elif roll < 0.8:
            out.append(octet(b"<13>Nov  3 08:15:22 web-1 node[42]: " + LINE.encode()))
        elif roll < 0.83:
            out.append(octet(rng.choice([b"<134>1 2025-11-03T08:15:22Z host app", b"<134>1 - host app procid"])))
        elif roll < 0.86:
            out.append(octet(rng.choice([b"", b"x", b"<134>", b"<134>1", b"<134>1 ", b"not syslog at all"])))
        elif roll < 0.89:
            out.append(rng.choice([b"12x4 not a length\n", b"1234567890 absurd\n", b"\n\r\0", b"00 ", b"0 "]))
        elif roll < 0.92:
            out.append(octet(frame("y" * rng.randint(200, 900))))  # oversized for small limits
        elif roll < 0.95:
            whole = octet(frame(LINE))
            out.append(b"%d %s" % (len(whole) + rng.randint(-5, 5), whole[whole.index(b" ") + 1 :]))  # wrong length
        else:
            out.append(octet(frame(LINE, sd=rng.choice(["[x@1 a=\"b\"]", "[meta]", "-", "[", "]"]))))
    return out


# ------------------------------------------------------------------------------------- tests
def test_render_frames_become_one_line_batch_with_source_and_time() -> None:
    """Clean Render frames from two instances: one LineBatch, lines in order, per-line source and envelope time."""
    data = b"".join(octet(frame(f"{LINE} {i}", procid=f"web.{i % 2}")) for i in range(6))
    reads, problems = new_syslog(data, [], 65536, fast=True)
    [batch] = reads[0]
    assert problems == []
    assert isinstance(batch, LineBatch)
    assert batch.sources == ["srv-d3k8abc/web/web.0", "srv-d3k8abc/web/web.1"]
    assert batch.source_of == bytes([0, 1, 0, 1, 0, 1])
    assert batch.data == b"".join(f"{LINE} {i}\n".encode() for i in range(6))
    assert batch.ts is not None and list(batch.ts) == [pytest.approx(1762157722.429113)] * 6
    assert batch_lines(batch) == 6


def test_every_message_shape_gives_what_the_record_path_gave() -> None:
    """Each message, timestamp and framing shape alone: same lines, sources, times and problems as before."""
    for head in (b"<134>1 - host app procid", b"<134>1 - host app procid ", b"<134>1 - host app procid msgid"):
        assert_syslog_equivalent(octet(head))
        assert_logplex_equivalent(octet(head))
    for msg in MESSAGES:
        for data in (octet(frame(msg)), octet(frame(msg, sd=None)), frame(msg) + b"\n"):
            assert_syslog_equivalent(data, max_frame_bytes=4096)
        assert_logplex_equivalent(octet(frame(msg, sd=None)))
    for ts in TIMESTAMPS:
        assert_syslog_equivalent(octet(frame(LINE, ts=ts)))
        assert_logplex_equivalent(octet(frame(LINE, ts=ts, sd=None)))


@pytest.mark.parametrize("seed", range(40))
def test_hostile_streams_in_random_reads_give_what_the_record_path_gave(seed: int) -> None:
    """Random mixes of good and bad frames, cut into random reads, with small and large frame limits."""
    rng = random.Random(seed)
    data = b"".join(hostile_frames(rng, 300))
    chunks = [rng.choice([1, 7, 37, 512, 4096, 65536]) for _ in range(rng.randint(0, 60))]
    assert_syslog_equivalent(data, chunks, max_frame_bytes=rng.choice([512, 4096, 1 << 20]))


@pytest.mark.parametrize("seed", range(20))
def test_hostile_logplex_bodies_give_what_the_record_path_gave(seed: int) -> None:
    """Logplex bodies with odd frames, whitespace between frames and a cut-short end."""
    rng = random.Random(1000 + seed)
    frames = [octet(frame(rng.choice(MESSAGES), ts=rng.choice(TIMESTAMPS), sd=None)) for _ in range(100)]
    frames += hostile_frames(rng, 20)
    rng.shuffle(frames)
    body = rng.choice([b"", b"\n", b" \t\r\n"]).join(frames)
    if rng.random() < 0.5:
        body = body[: rng.randint(0, len(body))]
    assert_logplex_equivalent(body, drain=rng.choice(["d.8f6c2a1e-drain", "drain", "ü"]))


def test_a_frame_split_across_every_possible_read_boundary() -> None:
    """Two clean frames around an odd one, cut at every byte: the pending-frame state carries over."""
    data = octet(frame(LINE)) + octet(frame(LINE + "\r")) + octet(frame("second", procid="web.2"))
    for cut in range(1, len(data)):
        assert_syslog_equivalent(data, [cut])


def test_more_than_256_sources_in_one_read_start_a_new_batch() -> None:
    """source_of is one byte per line: the 257th source name starts a second batch, nothing is lost."""
    data = b"".join(octet(frame(f"line {i}", host=f"h{i}")) for i in range(MAX_SOURCES + 44))
    assert_syslog_equivalent(data)
    for fast in (True, False):
        reads, _ = new_syslog(data, [], 65536, fast=fast)
        assert [len(b.sources) for b in reads[0]] == [MAX_SOURCES, 44]  # type: ignore[union-attr]
        assert sum(batch_lines(b) for b in reads[0]) == MAX_SOURCES + 44


def test_a_single_line_ending_in_cr_travels_as_a_record_in_its_place() -> None:
    """A LineBatch cannot carry a trailing CR, so that line is a one-record part between two batches."""
    data = octet(frame("before")) + octet(frame("kept\r")) + octet(frame("after"))
    reads, _ = new_syslog(data, [], 65536, fast=True)
    [first, middle, last] = reads[0]
    assert isinstance(first, LineBatch) and isinstance(last, LineBatch)
    assert [r.text for r in middle] == ["kept\r"]  # type: ignore[union-attr]
    assert_syslog_equivalent(data)


def test_huge_frames_and_huge_reads() -> None:
    """A 1 MB message (octet-counted and multi-line) and 20,000 frames in one read."""
    big = ("z" * 999 + "\n") * 1000
    assert_syslog_equivalent(octet(frame(big)) + octet(frame(LINE)), [65536] * 40, max_frame_bytes=2 << 20)
    assert_syslog_equivalent(octet(frame(big)) + octet(frame(LINE)), max_frame_bytes=1 << 19)
    many = octet(RENDER) * 20_000
    assert_syslog_equivalent(many, [256 * 1024] * 20)
    assert_logplex_equivalent(many)


@needs_c
def test_fast_path_takes_the_clean_frames_and_leaves_the_rest() -> None:
    """The C scanner stops exactly at the first frame it does not understand."""
    builder = LineBatchBuilder()
    clean = octet(RENDER)
    odd = octet(b"<13>Nov  3 08:15:22 web-1 node[42]: rfc3164")
    data = clean * 3 + odd + clean
    assert builder.scan(data, 0, 65536) == 3 * len(clean)
    assert builder.frames == 3
    assert builder.scan(data, 3 * len(clean) + len(odd), 65536) == len(data)
    assert builder.scan(data, len(data), 65536) == len(data)
    [batch] = builder.take()
    assert batch_lines(batch) == 4


@needs_c
def test_fast_path_survives_garbage_of_every_kind() -> None:
    """Random bytes, random lengths, random offsets: the scanner never crashes and never reads past the end."""
    from stream_triage.sources._syslog_fast import scan

    rng = random.Random(7)
    for _ in range(3000):
        size = rng.randint(0, 300)
        data = bytes(rng.choice(b"0123456789 <>1-:TZ.\n\r\0[]@=\"\xff\xef\xbb\xbf") for _ in range(size))
        if rng.random() < 0.5:
            data = octet(frame(data)) + data
        pos = rng.randint(-2, len(data) + 2)
        sources: dict[str, int] = {}
        new_pos, frames, lines, ts, source_of, timed = scan(data, pos, rng.choice([0, 10, 65536]), None, sources, 256)
        assert max(0, min(pos, len(data))) <= new_pos <= max(len(data), pos)
        assert len(ts) == 8 * len(source_of) and lines.count(b"\n") == len(source_of) >= frames
        assert timed <= len(source_of)
    with pytest.raises(TypeError):
        scan(b"", 0, 1, b"not a str", {}, 256)


def test_batch_lines_counts_lines_as_records_does() -> None:
    """batch_lines agrees with LineBatch.records() with and without a trailing newline, and for lists."""
    for data in (b"", b"\n", b"a", b"a\n", b"a\nb", b"a\n\n", b"\n\n\n"):
        batch = LineBatch(data, ["s"])
        assert batch_lines(batch) == len(batch.records())
        lines = len(batch.records())
        timed = LineBatch(data, ["s", "t"], bytes(lines), array("d", [0.0] * lines))
        assert batch_lines(timed) == lines
    assert batch_lines([RawRecord("x"), RawRecord("y")]) == 2


def test_lines_the_builder_cannot_batch_keep_their_order() -> None:
    """Trailing CRs, embedded newlines and lone surrogates go out as records, in place, never altered."""
    builder = LineBatchBuilder(fast=False)
    texts = ["a", "b\r", "c\r", "d", "bad \ud800 surrogate", "e"]
    for text in texts:
        builder.add_line(text, "src", None)
    parts = builder.take()
    assert [type(p).__name__ for p in parts] == ["LineBatch", "list", "LineBatch", "list", "LineBatch"]
    got = [r.text for p in parts for r in (p if isinstance(p, list) else p.records())]
    assert got == texts
    assert all(p.ts is None for p in parts if isinstance(p, LineBatch))  # no line had an envelope time


@needs_c
def test_fast_path_times_are_bit_for_bit_those_of_parse_rfc3339() -> None:
    """Random dates, fractions of 1 to 30 digits and UTC offsets: the C value equals the Python one exactly."""
    rng = random.Random(11)
    stamps = []
    for _ in range(5000):
        date = f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 60):02d}"
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 30)))
        frac = f"{rng.choice('.,')}{digits}" if digits else ""
        zone = rng.choice(["Z", "z", f"{rng.choice('+-')}{rng.randint(0, 99):02d}:{rng.randint(0, 99):02d}"])
        stamps.append(f"{date}{rng.choice('Tt')}{clock}{frac}{zone}")
    data = b"".join(octet(frame(LINE, ts=ts)) for ts in stamps)
    builder = LineBatchBuilder()
    assert builder.scan(data, 0, 65536) == len(data)
    [batch] = builder.take()
    assert batch.ts is not None
    assert [x.hex() for x in batch.ts] == [parse_rfc3339(ts).hex() for ts in stamps]


def test_the_multi_run_log_as_render_sends_it() -> None:
    """The realistic multi-run log (runs, stack traces, access lines) in Render's frames, in 4 KB reads."""
    from tests.e2e.serve_harness import multi_run_lines

    lines = multi_run_lines()
    data = b"".join(
        octet(frame(line, ts=f"2025-11-03T08:{15 + i // 60:02d}:{i % 60:02d}.{i:06d}Z", procid=f"web.{i % 3}"))
        for i, line in enumerate(lines)
    )
    assert_syslog_equivalent(data, [4096] * (len(data) // 4096))
    assert_logplex_equivalent(b"".join(octet(frame(line, sd=None)) for line in lines))
    reads, _ = new_syslog(data, [], 65536, fast=True)
    assert [r[0] for r in flat(reads)] == lines
