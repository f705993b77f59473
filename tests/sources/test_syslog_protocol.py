"""Syslog framing, parsing and tokens on the bytes real senders produce."""

from __future__ import annotations

import asyncio
import calendar
import random
import shutil

import pytest

from stream_triage.sources.syslog_protocol import (
    LogplexFramingError,
    SyslogFramer,
    SyslogParseError,
    check_token,
    find_token,
    parse_logplex,
    parse_rfc3339,
    parse_syslog,
    token_candidates,
    tokens_equal,
)

LOGGER = shutil.which("logger") or "/usr/bin/logger"

# What Render's log stream sends for one line of the Node service (RFC 5424, SD nil).
RENDER_LINE = (
    b"<134>1 2025-11-03T08:15:22.429113Z srv-d3k8abc web srv-d3k8abc-5f7c9 - - "
    b"[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] Failed to score lead 4711: timeout after 30000ms"
)
# rsyslog forwarding with RSYSLOG_SyslogProtocol23Format (origin SD, trailing LF as rsyslog writes it).
RSYSLOG_LINE = (
    b'<30>1 2025-11-03T08:15:23.000118+01:00 web-1 node 4242 - [origin software="rsyslogd" '
    b'swVersion="8.2302.0" x-info="https://www.rsyslog.com"] '
    b"[SYSTEM] [SYSTEM] [client-service] [INFO] ready\n"
)


def octet(frame: bytes) -> bytes:
    """Octet-count one frame as RFC 6587 senders do."""
    return b"%d %s" % (len(frame), frame)


def frames_of(data: bytes, chunks: list[int] | None = None, **kw: int) -> tuple[list[bytes], list[str]]:
    """Run bytes through a fresh framer in the given chunk sizes; return frames and error kinds."""
    framer = SyslogFramer(**kw)
    out: list[bytes] = []
    pos = 0
    for size in chunks or [len(data)]:
        out += framer.feed(data[pos : pos + size])
        pos += size
    out += framer.feed(data[pos:])
    out += framer.flush()
    return out, [e.kind for e in framer.pop_errors()]


async def _capture_logger(args: list[str], stdin: bytes | None = None) -> bytes:
    """Run util-linux logger against a one-shot TCP server on 127.0.0.1; return the bytes it sent."""
    received = bytearray()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            LOGGER, "--tcp", "-n", "127.0.0.1", "-P", str(port), *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(proc.communicate(stdin), 10)
        assert proc.returncode == 0
        await asyncio.wait_for(done.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()
    return bytes(received)


needs_logger = pytest.mark.skipif(not shutil.which("logger"), reason="util-linux logger not installed")


@needs_logger
def test_logger_octet_counted_frames_parse_with_token_in_structured_data() -> None:
    """logger --rfc5424 --octet-count: several stdin lines arrive as octet-counted frames with SD."""
    lines = b"[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] first\nsecond line\nthird\n"
    data = asyncio.run(
        _capture_logger(
            ["--rfc5424", "--octet-count", "-t", "client-service", "--id=4242", "--msgid", "LOG",
             "--sd-id", "auth@41058", "--sd-param", 'token="s3cr\\"et"'],
            stdin=lines,
        )
    )  # fmt: skip
    assert data[:1].isdigit()
    frames, errors = frames_of(data)
    assert errors == []
    assert len(frames) == 3
    msgs = [parse_syslog(f) for f in frames]
    assert [m.message for m in msgs] == [
        "[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] first",
        "second line",
        "third",
    ]
    first = msgs[0]
    assert (first.format, first.app_name, first.procid, first.msgid) == (
        "5424",
        "client-service",
        "4242",
        "LOG",
    )
    assert (first.facility, first.severity) == (1, 5)  # logger's default user.notice
    assert first.structured_data["auth@41058"] == {"token": 's3cr"et'}
    assert first.structured_data["timeQuality"]["tzKnown"] == "1"
    assert first.timestamp is not None
    assert find_token(first) == ('s3cr"et', first.message)
    # One byte at a time gives exactly the same frames.
    assert frames_of(data, [1] * len(data))[0] == frames


@needs_logger
def test_logger_lf_framed_rfc5424_and_rfc3164() -> None:
    """Without --octet-count logger terminates frames with LF; both RFC formats parse."""
    data5424 = asyncio.run(_capture_logger(["--rfc5424", "-t", "web", "hello world"]))
    data3164 = asyncio.run(_capture_logger(["--rfc3164", "-t", "web", "bsd style"]))
    assert data5424.endswith(b"\n") and data3164.endswith(b"\n")
    frames, errors = frames_of(data5424 + data3164)
    assert errors == []
    modern, bsd = (parse_syslog(f) for f in frames)
    assert (modern.format, modern.app_name, modern.message) == ("5424", "web", "hello world")
    assert (bsd.format, bsd.app_name, bsd.message) == ("3164", "web", "bsd style")
    assert bsd.timestamp is not None and bsd.hostname


def test_render_frame_keeps_bracketed_run_tags_in_the_message() -> None:
    """A Render line whose message starts with [run] tags is message text, not structured data."""
    msg = parse_syslog(RENDER_LINE)
    assert msg.hostname == "srv-d3k8abc"
    assert msg.app_name == "web"
    assert msg.procid == "srv-d3k8abc-5f7c9"
    assert msg.msgid is None
    assert msg.structured_data == {}
    assert msg.message.startswith("[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] Failed to score lead")
    assert msg.timestamp == pytest.approx(calendar.timegm((2025, 11, 3, 8, 15, 22)) + 0.429113)
    assert (msg.facility, msg.severity) == (16, 6)


def test_render_frame_without_sd_field_is_read_as_message() -> None:
    """A sender that omits the SD field entirely still yields the whole message."""
    frame = b"<134>1 2025-11-03T08:15:22Z srv-1 web srv-1-a - ==> Running build command 'npm install'..."
    assert parse_syslog(frame).message == "==> Running build command 'npm install'..."


def test_rsyslog_forwarded_frame_with_origin_sd_and_trailing_newline() -> None:
    """rsyslog's protocol-23 format: origin SD parsed, trailing LF dropped, +01:00 offset applied."""
    data = octet(RSYSLOG_LINE) + octet(RSYSLOG_LINE)
    frames, errors = frames_of(data, [7, 50, 3])
    assert errors == [] and len(frames) == 2
    msg = parse_syslog(frames[0])
    assert msg.structured_data == {
        "origin": {"software": "rsyslogd", "swVersion": "8.2302.0", "x-info": "https://www.rsyslog.com"}
    }
    assert msg.message == "[SYSTEM] [SYSTEM] [client-service] [INFO] ready"
    assert msg.timestamp == pytest.approx(calendar.timegm((2025, 11, 3, 7, 15, 23)) + 0.000118)


def test_rfc5424_examples_with_nil_fields_fractions_and_offsets() -> None:
    """The RFC 5424 examples: nil fields, .003Z and microsecond offsets, multiple SD elements."""
    ex1 = parse_syslog(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed"
    )
    assert (ex1.hostname, ex1.app_name, ex1.procid, ex1.msgid) == (
        "mymachine.example.com",
        "su",
        None,
        "ID47",
    )
    assert ex1.message == "'su root' failed"  # BOM stripped
    assert ex1.timestamp == pytest.approx(calendar.timegm((2003, 10, 11, 22, 14, 15)) + 0.003)
    ex2 = parse_syslog(b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time")
    assert ex2.timestamp == pytest.approx(calendar.timegm((2003, 8, 24, 12, 14, 15)) + 0.000003)
    assert ex2.message == "%% It's time"
    ex3 = parse_syslog(
        b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
        b'eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]'
    )
    assert ex3.structured_data == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
        "examplePriority@32473": {"class": "high"},
    }
    assert ex3.message == ""
    nil = parse_syslog(b"<13>1 - - - - - -")
    assert (nil.timestamp, nil.hostname, nil.app_name, nil.procid, nil.msgid, nil.message) == (
        None, None, None, None, None, "",
    )  # fmt: skip


def test_escaped_structured_data_values_are_unescaped() -> None:
    """\\" \\\\ and \\] in SD values are unescaped; other backslashes stay."""
    frame = rb'<14>1 2025-11-03T08:15:22Z h a - - [x@1 q="say \"hi\"" b="a\\b" r="[x\]" w="C:\dir"] msg'
    msg = parse_syslog(frame)
    assert msg.structured_data["x@1"] == {"q": 'say "hi"', "b": "a\\b", "r": "[x]", "w": "C:\\dir"}
    assert msg.message == "msg"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Invalid UTF-8 in the message becomes U+FFFD and the rest survives."""
    msg = parse_syslog(b"<14>1 2025-11-03T08:15:22Z h a - - - caf\xe9 ok")
    assert msg.message == "caf\ufffd ok"


def test_logplex_body_frames_parse_with_sd_omitted() -> None:
    """A Heroku-style logplex body: octet-counted frames whose SD field is left out."""
    lines = [
        b"<190>1 2025-11-03T08:15:22.429113+00:00 host app web.1 - [251103-081522] [Ann-Lee] [x] [ERROR] "
        b"boom\n",
        b"<190>1 2025-11-03T08:15:22.500000+00:00 host app web.1 - - dash-led message",
        b'<158>1 2025-11-03T08:15:23+00:00 host heroku router - at=info method=GET path="/" status=200',
    ]
    frames = parse_logplex(b"".join(octet(line) for line in lines))
    assert frames == lines
    msgs = [parse_syslog(f, sd_omitted=True) for f in frames]
    assert msgs[0].procid == "web.1" and msgs[0].msgid is None
    assert msgs[0].message == "[251103-081522] [Ann-Lee] [x] [ERROR] boom"
    assert msgs[1].message == "- dash-led message"
    assert msgs[2].app_name == "heroku" and msgs[2].message.startswith("at=info method=GET")


def test_truncated_logplex_body_keeps_complete_frames() -> None:
    """A truncated last frame raises, carrying the frames before it."""
    good = b"<190>1 2025-11-03T08:15:22+00:00 host app web.1 - ok"
    body = octet(good) + b"120 <190>1 2025-11-03T08:15:22+00:00 host app web.1 - cut"
    with pytest.raises(LogplexFramingError) as info:
        parse_logplex(body)
    assert info.value.frames == [good]
    assert "declares 120 bytes" in str(info.value)
    with pytest.raises(LogplexFramingError, match="expected a frame length"):
        parse_logplex(b"garbage " + octet(good))


def test_rfc3164_year_is_inferred_near_now() -> None:
    """RFC 3164 has no year: the year that puts the line nearest now, in UTC."""
    now = calendar.timegm((2025, 11, 3, 12, 0, 0))
    msg = parse_syslog(
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8", now=now
    )
    assert (msg.format, msg.hostname, msg.app_name, msg.facility, msg.severity) == (
        "3164",
        "mymachine",
        "su",
        4,
        2,
    )
    assert msg.message == "'su root' failed for lonvick on /dev/pts/8"
    assert msg.timestamp == calendar.timegm((2025, 10, 11, 22, 14, 15))
    january = calendar.timegm((2026, 1, 2, 0, 0, 0))
    december = parse_syslog(b"<13>Dec 31 23:59:59 host cron[991]: job done", now=january)
    assert december.timestamp == calendar.timegm((2025, 12, 31, 23, 59, 59))
    assert (december.app_name, december.procid) == ("cron", "991")


def test_malformed_frames_raise_a_short_reason() -> None:
    """Non-syslog frames raise SyslogParseError, which is a ValueError."""
    cases = {
        b"": "empty",
        b"hello there": "missing <PRI>",
        b"<999>1 - - - - - -": "PRI",
        b"<13>1 yesterday h a - - - msg": "TIMESTAMP",
        b"<13>1 2025-13-03T08:15:22Z h a - - - msg": "TIMESTAMP",
        b"<13>1 2025-11-03T08:15:22 h a - - - msg": "TIMESTAMP",  # no offset
        b"<13>1 - h a": "too few fields",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03": "missing <PRI>",  # TLS ClientHello on a plain port
        b"<13": "unterminated <PRI>",
    }
    for frame, reason in cases.items():
        with pytest.raises(SyslogParseError, match=reason):
            parse_syslog(frame)
    assert issubclass(SyslogParseError, ValueError)


def test_token_in_sd_param_sd_id_or_message_prefix() -> None:
    """The token is found in an SD param, as the SD-ID itself, or as a message prefix (then removed)."""
    in_param = parse_syslog(b'<14>1 2025-11-03T08:15:22Z h a - - [auth@41058 token="tok-123"] hello')
    assert find_token(in_param) == ("tok-123", "hello")
    assert find_token(in_param, sd_ids={"other@1"}) == (None, "hello")
    as_sd_id = parse_syslog(b'<14>1 2025-11-03T08:15:22Z h a - - [b7d1c0ffee42@41058 tag="x"] hello')
    assert find_token(as_sd_id) == ("b7d1c0ffee42", "hello")
    kv_prefix = parse_syslog(
        b"<14>1 2025-11-03T08:15:22Z h a - - - token=abc [251103-081522] [A] [op] [INFO] hi"
    )
    assert find_token(kv_prefix) == ("abc", "[251103-081522] [A] [op] [INFO] hi")
    bare = parse_syslog(b"<14>1 2025-11-03T08:15:22Z h a - - - 9f8e7d6c5b4a39281706f5e4 [SYSTEM] up")
    assert find_token(bare) == ("9f8e7d6c5b4a39281706f5e4", "[SYSTEM] up")
    render = parse_syslog(RENDER_LINE)
    assert find_token(render) == (None, render.message)  # an ordinary first word is not a token


def test_check_token_tries_every_candidate_in_constant_time() -> None:
    """check_token accepts a short bare-prefix token and strips it; a wrong token is refused."""
    short = parse_syslog(b"<14>1 2025-11-03T08:15:22Z h a - - - s3cret [251103-081522] [A] [op] [INFO] hi")
    assert check_token(short, "s3cret") == "[251103-081522] [A] [op] [INFO] hi"
    assert check_token(short, "wrong") is None
    in_sd = parse_syslog(
        b'<14>1 2025-11-03T08:15:22Z h a - - [auth@41058 token="s3cret"] s3cret-looking text'
    )
    assert check_token(in_sd, "s3cret") == "s3cret-looking text"
    assert [t for t, _ in token_candidates(in_sd)] == ["s3cret", "auth", "s3cret-looking"]
    assert tokens_equal("abc", "abc") and not tokens_equal("abc", "abd")
    assert not tokens_equal("", "") and not tokens_equal(None, "x")


def test_oversized_frames_are_skipped_and_following_frames_survive() -> None:
    """An oversized octet-counted or LF frame is dropped whole; the next valid frames come through."""
    good = RENDER_LINE
    big = b"<14>1 - h a - - - " + b"x" * 500
    data = octet(good) + octet(big) + octet(good) + big + b"\n" + good + b"\n"
    for chunks in (None, [1] * len(data), [300, 17, 200, 5, 400]):
        frames, errors = frames_of(data, chunks, max_frame_bytes=256)
        assert frames == [good, good, good]
        assert errors == ["oversized", "oversized"]


def test_oversized_unterminated_lf_frame_is_skipped_up_to_its_newline() -> None:
    """An LF frame growing past the limit across chunks is discarded up to its LF."""
    framer = SyslogFramer(max_frame_bytes=100)
    good = b"<14>1 - h a - - - fine"
    assert framer.feed(b"<14>1 - h a - - - " + b"y" * 60) == []
    assert framer.feed(b"z" * 60) == []
    assert framer.feed(b"w" * 60 + b"\n" + good[:10]) == []
    assert framer.feed(good[10:] + b"\n" + good) == [good]
    assert framer.flush() == [good]  # the unterminated last frame at close
    assert [e.kind for e in framer.pop_errors()] == ["oversized"]


def test_garbage_length_prefixes_resync_at_the_next_newline() -> None:
    """A non-numeric or absurd length prefix is an error; framing resumes after the next LF."""
    good = RENDER_LINE
    data = b"12ab <garbage>\n" + octet(good) + b"99999999999999 more junk\n" + good + b"\n"
    for chunks in (None, [1] * len(data), [5, 5, 5, 100]):
        frames, errors = frames_of(data, chunks)
        assert frames == [good, good]
        assert errors == ["bad_length", "bad_length"]


def test_mixed_framings_nul_and_crlf_in_any_split_give_the_same_frames() -> None:
    """Octet, LF, CRLF and NUL framing mixed in one stream; 1-byte and random splits agree."""
    other = b"<14>1 2025-11-03T08:15:22Z h a - - - line with\nembedded newline"
    data = (
        octet(RENDER_LINE)
        + RENDER_LINE + b"\r\n"
        + octet(other)
        + b"\n\n"
        + RENDER_LINE + b"\x00"
        + b"<13>Oct 11 22:14:15 host su: tail without newline"
    )  # fmt: skip
    expected = [
        RENDER_LINE,
        RENDER_LINE,
        other,
        RENDER_LINE,
        b"<13>Oct 11 22:14:15 host su: tail without newline",
    ]
    assert frames_of(data) == (expected, [])
    assert frames_of(data, [1] * len(data)) == (expected, [])
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        sizes = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
        assert frames_of(data, sizes) == (expected, [])


def test_many_lf_frames_in_big_chunks_take_the_fast_path_intact() -> None:
    """Thousands of LF frames split at arbitrary 4 KiB boundaries come back byte-exact."""
    lines = [RENDER_LINE + b" #%d" % i for i in range(5000)]
    data = b"\n".join(lines) + b"\n"
    frames, errors = frames_of(data, [4096] * (len(data) // 4096))
    assert frames == lines and errors == []


def test_truncated_octet_frame_at_close_is_reported() -> None:
    """Connection closing inside an octet-counted frame records a truncated error, yields nothing."""
    framer = SyslogFramer()
    assert framer.feed(octet(RENDER_LINE)[:-10]) == []
    assert framer.flush() == []
    assert [e.kind for e in framer.pop_errors()] == ["truncated"]


def test_parse_rfc3339_variants() -> None:
    """Nanosecond fractions, Z and ±HH:MM offsets; bad input raises ValueError."""
    base = calendar.timegm((2025, 11, 3, 8, 15, 22))
    assert parse_rfc3339("2025-11-03T08:15:22.429113507Z") == pytest.approx(base + 0.429113507)
    assert parse_rfc3339("2025-11-03T09:45:22+01:30") == base
    assert parse_rfc3339("2025-11-03T03:15:22.5-05:00") == base + 0.5
    for bad in ("2025-11-03", "2025-11-03T08:15:22", "2025-11-03T08:15:22.Z", "2025-02-30T08:15:22Z"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
