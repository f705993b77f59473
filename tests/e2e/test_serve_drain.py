"""``POST /drain`` on a running service: logplex, NDJSON and text bodies, auth, limits and retried frames."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.e2e.serve_harness import (
    Running,
    expected_issues,
    in_process_config,
    multi_run_lines,
    octet,
    run_async,
    running_service,
    stored_issues,
    wait_for,
)

pytestmark = pytest.mark.e2e

TOKEN = "drn_5e1f0c9b8a7d6e5f4a3b2c1d0e9f8a7b"
LOGPLEX = "application/logplex-1"
ERROR = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [ERROR] Batch 3 failed: 12 of 40 leads failed"
INFO = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Scoring 40 leads for Ann-Lee"


def logplex_frame(message: str, ts: str = "2025-11-03T08:15:22.429113+00:00") -> bytes:
    """One logplex frame: RFC 5424 with the STRUCTURED-DATA field left out, as HTTP drains send it."""
    return f"<134>1 {ts} pb-webhook-server app web.1 - {message}".encode()


def logplex_body(messages: list[str]) -> bytes:
    """An ``application/logplex-1`` body."""
    return b"".join(octet(logplex_frame(m)) for m in messages)


def logplex_headers(count: int, frame_id: str, token: str = "d.8f6c2a1e-drain") -> dict[str, str]:
    """The headers a logplex sender adds, with our bearer token."""
    return {
        "Content-Type": LOGPLEX,
        "Logplex-Msg-Count": str(count),
        "Logplex-Frame-Id": frame_id,
        "Logplex-Drain-Token": token,
        "Authorization": f"Bearer {TOKEN}",
    }


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


Scenario = Callable[[Running, aiohttp.ClientSession, str], Coroutine[Any, Any, Any]]


def with_drain(tmp_path: Path, scenario: Scenario, sections: dict | None = None, token: str | None = TOKEN) -> Any:
    """Run ``scenario(run, http, drain_url)`` against an in-process service with a drain token."""
    env = {"STREAM_TRIAGE_DRAIN_TOKEN": token} if token else {}
    config = in_process_config(tmp_path, sections, env=env)

    async def main() -> Any:
        async with running_service(config) as run, aiohttp.ClientSession() as http:
            return await scenario(run, http, f"http://127.0.0.1:{run.service.http_port}/drain")

    return run_async(main)


async def post(http: aiohttp.ClientSession, url: str, body: bytes | AsyncIterator[bytes], **kw: Any) -> tuple[int, Any]:
    """POST and return (status, JSON body)."""
    async with http.post(url, data=body, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


def test_logplex_body_is_accepted_with_the_drain_token_as_source(tmp_path: Path) -> None:
    """A logplex body (octet-counted frames, SD omitted) is split into lines; 200 once they are queued."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        body = logplex_body([INFO, ERROR, f"{ERROR}\n    at score (/opt/render/project/src/services/x.js:212:17)"])
        status, doc = await post(http, url, body, headers=logplex_headers(3, "f-0001"))
        assert (status, doc) == (200, {"accepted": 4, "rejected": 0})
        await wait_for(lambda: len(run.records) >= 4)
        assert run.texts == [INFO, ERROR, ERROR, "    at score (/opt/render/project/src/services/x.js:212:17)"]
        assert {r.source for r in run.records} == {"d.8f6c2a1e-drain/app/web.1"}
        assert run.records[0].ts == pytest.approx(1762157722.429113)
        assert run.metric("stream_triage_lines_received_total", source="http_drain") == 4

    with_drain(tmp_path, scenario)


def test_ndjson_and_text_plain_bodies_are_accepted(tmp_path: Path) -> None:
    """NDJSON objects ``{"timestamp","message"}`` and plain text lines become records."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ndjson = b"\n".join(
            orjson.dumps({"timestamp": f"2025-11-03T08:15:2{i}.000Z", "message": m})
            for i, m in enumerate([INFO, ERROR])
        )
        status, doc = await post(http, url, ndjson, headers={**auth, "Content-Type": "application/x-ndjson"})
        assert (status, doc) == (200, {"accepted": 2, "rejected": 0})
        text = f"{INFO}\n{ERROR}\n".encode()
        status, doc = await post(http, url, text, headers={**auth, "Content-Type": "text/plain; charset=utf-8"})
        assert (status, doc) == (200, {"accepted": 2, "rejected": 0})
        await wait_for(lambda: len(run.records) >= 4)
        assert run.texts == [INFO, ERROR, INFO, ERROR]
        assert run.records[1].ts == pytest.approx(1762157721.0)
        assert run.records[2].ts is None

    with_drain(tmp_path, scenario)


def test_basic_auth_with_the_token_as_password_or_user_is_accepted(tmp_path: Path) -> None:
    """Drain URLs ``https://user:TOKEN@host/drain`` send basic auth; the token may also be the user part."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        body = logplex_body([INFO])
        headers = {"Content-Type": LOGPLEX}
        in_url = url.replace("http://", f"http://render:{TOKEN}@")  # aiohttp turns this into basic auth
        assert (await post(http, in_url, body, headers=headers))[0] == 200
        assert (await post(http, url, body, headers={**headers, "Authorization": basic(TOKEN, "")}))[0] == 200
        assert run.metric("stream_triage_auth_failures_total", source="http_drain") == 0

    with_drain(tmp_path, scenario)


def test_wrong_or_missing_auth_is_401_and_counted(tmp_path: Path) -> None:
    """Wrong bearer, wrong basic password, garbage basic and no header all get 401 with WWW-Authenticate."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        body = logplex_body([ERROR])
        attempts: list[dict[str, str]] = [
            {"Authorization": "Bearer drn_wrong_wrong_wrong"},
            {"Authorization": basic("render", "drn_wrong")},
            {"Authorization": "Basic !!!not-base64!!!"},
            {"Authorization": f"Token {TOKEN}"},
            {},
        ]
        for headers in attempts:
            async with http.post(url, data=body, headers={"Content-Type": LOGPLEX, **headers}) as resp:
                assert resp.status == 401
                assert "Bearer" in resp.headers["WWW-Authenticate"]
        assert run.metric("stream_triage_auth_failures_total", source="http_drain") == len(attempts)
        assert run.metric("stream_triage_lines_received_total", source="http_drain") == 0

    with_drain(tmp_path, scenario)


def test_too_large_body_is_413_with_or_without_content_length(tmp_path: Path) -> None:
    """Bodies over max_body_bytes are refused with 413, whether declared up front or streamed (chunked)."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}
        big = (INFO + "\n").encode() * 40  # ~3.4 KB
        status, doc = await post(http, url, big, headers=headers)
        assert status == 413 and "2048" in doc["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield (INFO + "\n").encode()

        status, _ = await post(http, url, chunks(), headers=headers)
        assert status == 413
        status, doc = await post(http, url, (INFO + "\n").encode() * 10, headers=headers)
        assert (status, doc["accepted"]) == (200, 10)
        assert run.metric("stream_triage_lines_received_total", source="http_drain") == 10

    with_drain(tmp_path, scenario, {"sources.http_drain": {"max_body_bytes": 2048}})


def test_unsupported_content_type_is_415(tmp_path: Path) -> None:
    """A body type the drain cannot read is refused with 415 naming the accepted types."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/xml"}
        status, doc = await post(http, url, b"<log>x</log>", headers=headers)
        assert status == 415
        assert "application/logplex-1" in doc["error"]

    with_drain(tmp_path, scenario)


def test_malformed_frames_and_lines_are_counted_and_the_good_ones_kept(tmp_path: Path) -> None:
    """A bad frame, a cut-short body and a non-JSON NDJSON line are counted; the valid rest is accepted."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        body = (
            octet(logplex_frame(INFO)) + octet(b"not syslog at all") + octet(logplex_frame(ERROR)) + b"999 <134>1 cut"
        )
        status, doc = await post(http, url, body, headers=logplex_headers(4, "f-bad"))
        assert (status, doc) == (200, {"accepted": 2, "rejected": 2})
        ndjson = orjson.dumps({"message": INFO}) + b"\n{not json\n" + orjson.dumps({"no_message": 1})
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
        status, doc = await post(http, url, ndjson, headers=headers)
        assert (status, doc) == (200, {"accepted": 1, "rejected": 2})
        assert run.metric("stream_triage_frames_rejected_total", source="http_drain", reason="malformed") == 4
        await wait_for(lambda: len(run.records) >= 3)
        assert run.texts == [INFO, ERROR, INFO]

    with_drain(tmp_path, scenario)


def test_a_retried_logplex_frame_id_is_counted_once_in_the_store(tmp_path: Path) -> None:
    """The multi-run log in three logplex posts, the middle one sent twice: the store counts it once."""
    lines = multi_run_lines()
    parts = [lines[:10], lines[10:20], lines[20:]]

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        for i, part in enumerate(parts):
            status, doc = await post(http, url, logplex_body(part), headers=logplex_headers(len(part), f"frame-{i}"))
            assert (status, doc["accepted"]) == (200, len(part))
        middle = parts[1]
        status, doc = await post(http, url, logplex_body(middle), headers=logplex_headers(len(middle), "frame-1"))
        assert (status, doc) == (200, {"accepted": 0, "duplicate": True})
        assert run.metric("stream_triage_frames_rejected_total", source="http_drain", reason="duplicate") == 1
        assert run.metric("stream_triage_lines_received_total", source="http_drain") == len(lines)
        await wait_for(lambda: len(run.records) >= len(lines))

    with_drain(tmp_path, scenario)
    store = stored_issues(tmp_path / "store.db")
    assert store == expected_issues(lines)
    assert sum(store.values()) == 12


def test_without_a_configured_token_the_drain_is_open(tmp_path: Path) -> None:
    """With STREAM_TRIAGE_DRAIN_TOKEN unset (a loopback-only setup), requests need no auth."""

    async def scenario(run: Running, http: aiohttp.ClientSession, url: str) -> None:
        status, doc = await post(http, url, (ERROR + "\n").encode(), headers={"Content-Type": "text/plain"})
        assert (status, doc) == (200, {"accepted": 1, "rejected": 0})

    with_drain(tmp_path, scenario, token=None)
