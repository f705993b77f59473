"""The syslog listener of a running service: framings, formats, TLS, tokens and per-connection limits."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from tests.e2e.serve_harness import (
    client_tls,
    expected_issues,
    in_process_config,
    lf,
    make_cert,
    multi_run_lines,
    octet,
    rfc3164,
    rfc5424,
    run_async,
    running_service,
    stored_issues,
    wait_for,
)

pytestmark = pytest.mark.e2e

TOKEN = "stk_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
LINE = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [ERROR] Batch 3 failed: 12 of 40 leads failed"
INFO = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Scoring 40 leads for Ann-Lee"
SYSLOG_LOG = "stream_triage.sources.syslog"


async def open_conn(port: int, tls: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection to the listener."""
    return await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None)


async def send_and_close(port: int, data: bytes, tls: ssl.SSLContext | None = None) -> None:
    """Send ``data`` on a fresh connection, then close it and wait for the server's close (bounded)."""
    reader, writer = await open_conn(port, tls)
    writer.write(data)
    await writer.drain()
    if tls is None:
        writer.write_eof()
    else:
        writer.close()
    await asyncio.wait_for(reader.read(), 10)
    writer.close()


def test_octet_lf_nul_framings_and_both_formats_share_one_connection(tmp_path: Path) -> None:
    """Octet-counted, LF, CRLF and NUL frames, RFC 5424 (with BOM) and RFC 3164, all arrive in order."""
    messages = [f"[SYSTEM] [SYSTEM] [client-service] [INFO] frame {i}" for i in range(7)]
    stream = b"".join(
        [
            octet(rfc5424(messages[0])),
            lf(rfc5424(messages[1])),
            rfc5424(messages[2], bom=True) + b"\0",
            octet(rfc5424(messages[3], bom=True)),
            rfc3164(messages[4]) + b"\r\n",
            octet(rfc3164(messages[5])),
            lf(rfc5424(messages[6], ts="-", host="-", app="-", procid="-")),
        ]
    )

    async def scenario() -> list[str]:
        async with running_service(in_process_config(tmp_path)) as run:
            # Split mid-frame so framing must carry state across reads.
            reader, writer = await open_conn(run.service.syslog.port)
            for i in range(0, len(stream), 37):
                writer.write(stream[i : i + 37])
                await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await wait_for(lambda: len(run.records) >= 7)
            assert run.metric("stream_triage_lines_received_total", source="syslog") == 7
            assert run.metric("stream_triage_frames_rejected_total", source="syslog", reason="malformed") == 0
            return run.texts

    assert run_async(scenario) == messages


def test_escaped_structured_data_is_parsed_and_not_part_of_the_message(tmp_path: Path) -> None:
    """SD values with escaped quote, backslash and bracket are parsed; the message starts after the SD."""
    sd = r'[meta sequenceId="7"][origin@41058 note="a \"quoted\" \] and \\ path"][auth@41058 token="' + TOKEN + '"]'

    async def scenario() -> list[str]:
        config = in_process_config(tmp_path, env={"STREAM_TRIAGE_SYSLOG_TOKEN": TOKEN})
        async with running_service(config) as run:
            await send_and_close(run.service.syslog.port, octet(rfc5424(LINE, sd=sd)))
            await wait_for(lambda: run.records)
            return run.texts

    assert run_async(scenario) == [LINE]


def test_token_in_structured_data_or_as_message_prefix_is_accepted_and_stripped(tmp_path: Path) -> None:
    """Render's token may sit in SD or lead the message; either way it is checked and not kept."""
    frames = [
        octet(rfc5424(LINE, sd=f'[auth@41058 token="{TOKEN}"]')),
        lf(rfc5424(f"{TOKEN} {INFO}")),
        lf(rfc3164(f"{TOKEN} {LINE}")),
        lf(rfc5424(f"token={TOKEN} {INFO}")),
    ]

    async def scenario() -> list[str]:
        config = in_process_config(tmp_path, env={"STREAM_TRIAGE_SYSLOG_TOKEN": TOKEN})
        async with running_service(config) as run:
            await send_and_close(run.service.syslog.port, b"".join(frames))
            await wait_for(lambda: len(run.records) >= 4)
            assert run.metric("stream_triage_auth_failures_total", source="syslog") == 0
            return run.texts

    texts = run_async(scenario)
    assert texts == [LINE, INFO, LINE, INFO]
    assert all(TOKEN not in t for t in texts)


def test_wrong_token_closes_the_connection_and_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A frame with a wrong token ends its connection (earlier good frames kept); other connections go on."""
    wrong = "stk_00000000000000000000000000000000"

    async def scenario() -> tuple[list[str], bytes]:
        config = in_process_config(tmp_path, env={"STREAM_TRIAGE_SYSLOG_TOKEN": TOKEN})
        async with running_service(config) as run:
            port = run.service.syslog.port
            reader, writer = await open_conn(port)
            writer.write(octet(rfc5424(INFO, sd=f'[auth@41058 token="{TOKEN}"]')))
            writer.write(octet(rfc5424(LINE, sd=f'[auth@41058 token="{wrong}"]')))
            writer.write(octet(rfc5424(LINE, sd=f'[auth@41058 token="{TOKEN}"]')))
            await writer.drain()
            closed_with = await asyncio.wait_for(reader.read(), 10)  # b"" once the server closes
            writer.close()
            await send_and_close(port, lf(rfc5424(LINE)))  # no token at all: refused as well
            await send_and_close(port, lf(rfc5424(LINE, sd=f'[auth@41058 token="{TOKEN}"]')))
            await wait_for(lambda: len(run.records) >= 2)
            assert run.metric("stream_triage_auth_failures_total", source="syslog") == 2
            assert run.metric("stream_triage_frames_rejected_total", source="syslog", reason="bad_token") == 2
            return run.texts, closed_with

    with caplog.at_level(logging.INFO, logger="stream_triage"):
        texts, closed_with = run_async(scenario)
    assert closed_with == b""
    assert texts == [INFO, LINE]
    assert "wrong or missing token" in caplog.text
    assert wrong not in caplog.text and TOKEN not in caplog.text


def test_oversized_and_malformed_frames_are_counted_reported_once_per_connection_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad frames are counted by reason, logged once per connection and kind; the good frames between arrive."""
    big = "x" * 600
    good = [f"[SYSTEM] [SYSTEM] [client-service] [INFO] good {i}" for i in range(5)]
    stream = b"".join(
        [
            octet(rfc5424(good[0])),
            octet(rfc5424(big)),  # oversized, octet-counted: skipped by its length
            lf(rfc5424(good[1])),
            lf(rfc5424(big)),  # oversized, LF: skipped to its terminator
            lf(b"<999>1 - - - - - - bad PRI"),
            lf(b"\xff\xfe\x00garbage"),
            lf(b"just text without a PRI"),
            octet(rfc5424(good[2])),
            lf(b"<13>1 2025-13-45T99:00:00Z host app - - - bad timestamp"),
            lf(rfc5424(good[3])),
            b"12x4 not a length\n",
            octet(rfc5424(good[4])),
        ]
    )

    async def scenario() -> list[str]:
        config = in_process_config(tmp_path, {"sources.syslog": {"max_frame_bytes": 512}})
        async with running_service(config) as run:
            await send_and_close(run.service.syslog.port, stream)
            await send_and_close(run.service.syslog.port, octet(rfc5424(big)) + lf(rfc5424(good[0])))
            await wait_for(lambda: len(run.records) >= 6)
            rejected = {
                reason: run.metric("stream_triage_frames_rejected_total", source="syslog", reason=reason)
                for reason in ("oversized", "malformed")
            }
            assert rejected == {"oversized": 3, "malformed": 6}
            return run.texts

    with caplog.at_level(logging.WARNING, logger=SYSLOG_LOG):
        texts = run_async(scenario)
    assert texts == [*good, good[0]]
    warnings = [r.getMessage() for r in caplog.records if r.name == SYSLOG_LOG]
    # Connection 1: one oversized, one malformed, one bad_length report; connection 2: one oversized.
    assert sum("oversized" in w for w in warnings) == 2
    assert sum("malformed frame" in w for w in warnings) == 1
    assert sum("bad_length" in w for w in warnings) == 1
    assert len(warnings) == 4


def test_connections_beyond_max_connections_are_refused_and_counted(tmp_path: Path) -> None:
    """The third connection with max_connections = 2 is closed at once; freeing a slot admits a new one."""

    async def scenario() -> list[str]:
        config = in_process_config(tmp_path, {"sources.syslog": {"max_connections": 2}})
        async with running_service(config) as run:
            port = run.service.syslog.port
            held = [await open_conn(port) for _ in range(2)]
            await wait_for(lambda: len(run.service.syslog._connections) == 2)
            reader, writer = await open_conn(port)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            assert run.metric("stream_triage_frames_rejected_total", source="syslog", reason="max_connections") == 1
            r0, w0 = held.pop()
            w0.write_eof()
            await asyncio.wait_for(r0.read(), 10)
            w0.close()
            await wait_for(lambda: len(run.service.syslog._connections) == 1)
            await send_and_close(port, lf(rfc5424(LINE)))
            for r, w in held:
                w.write(lf(rfc5424(INFO)))
                w.write_eof()
                await asyncio.wait_for(r.read(), 10)
                w.close()
            await wait_for(lambda: len(run.records) >= 2)
            return run.texts

    assert sorted(run_async(scenario)) == sorted([LINE, INFO])


def test_idle_connection_is_closed_and_its_unterminated_last_frame_kept(tmp_path: Path) -> None:
    """After idle_timeout_s without data the server closes; a trailing frame without LF still arrives."""

    async def scenario() -> list[str]:
        config = in_process_config(tmp_path, {"sources.syslog": {"idle_timeout_s": 0.3}})
        async with running_service(config) as run:
            reader, writer = await open_conn(run.service.syslog.port)
            writer.write(lf(rfc5424(INFO)) + rfc5424(LINE))  # the second frame has no terminator
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server, not by us
            writer.close()
            await wait_for(lambda: len(run.records) >= 2)
            return run.texts

    assert run_async(scenario) == [INFO, LINE]


def test_multi_run_log_over_tls_yields_the_expected_issues(tmp_path: Path) -> None:
    """Over TLS (self-signed cert from openssl), the multi-run log ends up in the store as replay finds it."""
    cert, key = make_cert(tmp_path)
    lines = multi_run_lines()
    payload = b"".join(octet(rfc5424(line, sd=f'[auth@41058 token="{TOKEN}"]')) for line in lines)
    config = in_process_config(
        tmp_path,
        {"sources.syslog": {"tls_cert_file": str(cert), "tls_key_file": str(key)}},
        env={"STREAM_TRIAGE_SYSLOG_TOKEN": TOKEN},
    )

    async def scenario() -> None:
        async with running_service(config) as run:
            await send_and_close(run.service.syslog.port, payload, client_tls(cert))
            await wait_for(lambda: len(run.records) >= len(lines))
            assert run.texts == lines

    run_async(scenario)
    assert stored_issues(config.store.path) == expected_issues(lines)


def test_multi_run_log_without_token_takes_the_fast_path_and_yields_the_expected_issues(tmp_path: Path) -> None:
    """Render's octet-counted frames without a token (the C fast path when built): the store matches replay."""
    lines = multi_run_lines()
    payload = b"".join(octet(rfc5424(line)) for line in lines)
    config = in_process_config(tmp_path)

    async def scenario() -> None:
        async with running_service(config) as run:
            reader, writer = await open_conn(run.service.syslog.port)
            for i in range(0, len(payload), 1000):  # frames cut across reads
                writer.write(payload[i : i + 1000])
                await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await wait_for(lambda: len(run.records) >= len(lines))
            assert run.texts == lines
            assert run.metric("stream_triage_lines_received_total", source="syslog") == len(lines)

    run_async(scenario)
    assert stored_issues(config.store.path) == expected_issues(lines)


def test_plain_tcp_client_is_refused_by_the_tls_listener_without_harm(tmp_path: Path) -> None:
    """Plain-text syslog sent to the TLS port fails the handshake; the listener keeps serving TLS clients."""
    cert, key = make_cert(tmp_path)
    config = in_process_config(tmp_path, {"sources.syslog": {"tls_cert_file": str(cert), "tls_key_file": str(key)}})

    async def scenario() -> list[str]:
        async with running_service(config) as run:
            port = run.service.syslog.port
            reader, writer = await open_conn(port)
            writer.write(lf(rfc5424(LINE)) * 3)
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await send_and_close(port, lf(rfc5424(INFO)), client_tls(cert))
            await wait_for(lambda: run.records)
            assert run.service.syslog.listening
            return run.texts

    assert run_async(scenario) == [INFO]
