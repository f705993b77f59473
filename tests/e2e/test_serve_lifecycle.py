"""Operating the service: health and readiness, graceful SIGTERM/SIGINT, backpressure, and what the logs show."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from stream_triage.app import Service
from tests.e2e.serve_harness import (
    COMPLETED_RUNS,
    UNFINISHED_RUN,
    RenderFakeThread,
    expected_issues,
    http_get,
    in_process_config,
    lf,
    multi_run_lines,
    octet,
    rfc5424,
    run_async,
    run_serve,
    running_service,
    send_tcp,
    stored_issues,
    stored_runs,
    wait_closed,
    wait_for,
)

pytestmark = pytest.mark.e2e

INFO = "[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Scoring 40 leads for Ann-Lee"


def gate_pipeline(gate: asyncio.Event) -> Callable[[Service], None]:
    """A ``before_start`` hook that holds the pipeline's consumer until ``gate`` is set (a blocked pipeline)."""

    def hook(service: Service) -> None:
        consume = service.runner._consume

        async def gated() -> None:
            await gate.wait()
            await consume()

        service.runner._consume = gated  # type: ignore[method-assign]

    return hook


def test_readyz_is_200_when_ready_and_503_when_a_listener_is_down(tmp_path: Path) -> None:
    """/readyz reports each check; a stopped syslog listener turns it 503 while /healthz stays 200."""

    async def scenario() -> None:
        async with running_service(in_process_config(tmp_path)) as run, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{run.service.http_port}"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
                assert await resp.json() == {
                    "ready": True,
                    "checks": {"store_writable": True, "syslog_listening": True, "accepting": True},
                }
            await run.service.syslog.stop()
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                doc = await resp.json()
                assert doc["ready"] is False and doc["checks"]["syslog_listening"] is False
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200

    run_async(scenario)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_flushes_every_open_run_and_exits_0(tmp_path: Path, sig: int) -> None:
    """Stopped while a run is still open, serve drains the queue, stores every issue and ends the run "shutdown"."""
    lines = multi_run_lines()
    with run_serve(tmp_path) as serve:
        send_tcp(serve.syslog_port, b"".join(octet(rfc5424(line)) for line in lines))
        serve.wait_metric("stream_triage_lines_received_total", len(lines), source="syslog")
        # Completed runs flushed at their marker; the unfinished one is still open, its issues unstored.
        assert UNFINISHED_RUN not in stored_runs(serve.db)
        assert set(stored_issues(serve.db)) < set(expected_issues(lines))
        assert serve.stop(sig, timeout=15) == 0
    assert stored_issues(serve.db) == expected_issues(lines)
    runs = stored_runs(serve.db)
    assert runs == {**dict.fromkeys(COMPLETED_RUNS, "marker"), UNFINISHED_RUN: "shutdown"}
    log = serve.log()
    assert "draining the queue and flushing open runs" in log and log.rstrip().endswith("stopped")


def test_stopping_refuses_new_input_and_still_processes_what_was_accepted(tmp_path: Path) -> None:
    """During shutdown the drain answers 503 and the syslog port is closed; queued lines still reach the store."""
    lines = multi_run_lines()

    async def scenario() -> None:
        gate = asyncio.Event()
        config = in_process_config(tmp_path, {"server": {"queue_max_batches": 4}})
        async with running_service(config, before_start=gate_pipeline(gate)) as run, aiohttp.ClientSession() as http:
            service = run.service
            port, url = service.syslog.port, f"http://127.0.0.1:{service.http_port}/drain"
            body = "\n".join(lines).encode()
            async with http.post(url, data=body, headers={"Content-Type": "text/plain"}) as resp:
                assert resp.status == 200
            stopping = asyncio.create_task(service.stop())
            await wait_for(lambda: not service.drain.accepting and not service.syslog.listening)
            async with http.post(url, data=b"late line\n", headers={"Content-Type": "text/plain"}) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            assert not stopping.done()  # held by the blocked pipeline, not giving up on the queue
            gate.set()
            await asyncio.wait_for(stopping, 15)
            assert run.texts == lines

    run_async(scenario)
    assert stored_issues(tmp_path / "store.db") == expected_issues(lines)
    assert stored_runs(tmp_path / "store.db")[UNFINISHED_RUN] == "shutdown"


def test_full_queue_answers_503_with_retry_after_and_loses_nothing(tmp_path: Path) -> None:
    """With the pipeline blocked, drain posts beyond the queue get 503 + Retry-After; every 2xx line is processed."""
    bodies = [[f"[SYSTEM] [SYSTEM] [client-service] [INFO] post {i} line {j}" for j in range(3)] for i in range(6)]

    async def scenario() -> None:
        gate = asyncio.Event()
        config = in_process_config(tmp_path, {"server": {"queue_max_batches": 2}})
        async with running_service(config, before_start=gate_pipeline(gate)) as run, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{run.service.http_port}/drain"
            accepted: list[str] = []
            refused: list[list[str]] = []
            for body in bodies:
                data = "\n".join(body).encode()
                async with http.post(url, data=data, headers={"Content-Type": "text/plain"}) as resp:
                    if resp.status == 200:
                        accepted.extend(body)
                    else:
                        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                        refused.append(body)
            assert len(accepted) == 6 and len(refused) == 4
            assert run.metric("stream_triage_frames_rejected_total", source="http_drain", reason="backpressure") == 12
            assert run.metric("stream_triage_lines_received_total", source="http_drain") == 6
            gate.set()
            await wait_for(lambda: len(run.records) == len(accepted))
            for body in refused:  # what a drain sender does after Retry-After
                async with http.post(url, data="\n".join(body).encode(), headers={"Content-Type": "text/plain"}) as r:
                    assert r.status == 200
                    accepted.extend(body)
            await wait_for(lambda: len(run.records) == 18)
            assert sorted(run.texts) == sorted(line for body in bodies for line in body)
            assert run.metric("stream_triage_lines_received_total", source="http_drain") == 18

    run_async(scenario)


def test_full_queue_pauses_tcp_reading_and_resumes_without_loss(tmp_path: Path) -> None:
    """A blocked pipeline stops the syslog connection being read (TCP pushes back); released, every frame arrives."""
    frames = [f"[SYSTEM] [SYSTEM] [client-service] [INFO] frame {i:04d} " + "p" * 4000 for i in range(1000)]
    payload = b"".join(lf(rfc5424(f)) for f in frames)

    async def scenario() -> None:
        gate = asyncio.Event()
        config = in_process_config(tmp_path, {"server": {"queue_max_batches": 1}})
        async with running_service(config, before_start=gate_pipeline(gate)) as run:
            listener = run.service.syslog._server.sockets[0]
            # Fixed small kernel buffers (no autotuning), so a few MB are enough to fill the path.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", run.service.syslog.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(payload)
            await wait_for(lambda: run.service.runner.queue.full())
            received = run.metric("stream_triage_lines_received_total", source="syslog")
            await asyncio.sleep(0.3)  # the listener had every chance to read on; it must not have
            assert run.metric("stream_triage_lines_received_total", source="syslog") == received < len(frames)
            assert writer.transport.get_write_buffer_size() > 0  # the sender is held back, nothing dropped
            assert run.records == []
            gate.set()
            await asyncio.wait_for(writer.drain(), 30)
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 30)
            writer.close()
            await wait_for(lambda: len(run.records) == len(frames), timeout=30)
            assert run.texts == frames
            assert run.metric("stream_triage_frames_rejected_total", source="syslog", reason="backpressure") == 0

    run_async(scenario)


def test_shutdown_while_a_connection_waits_on_a_full_queue_keeps_its_lines(tmp_path: Path) -> None:
    """A connection blocked on the full queue when shutdown starts still gets its batch into the store."""
    lines = [f"[SYSTEM] [SYSTEM] [client-service] [INFO] batch line {i}" for i in range(2)]

    async def scenario() -> None:
        gate = asyncio.Event()
        config = in_process_config(tmp_path, {"server": {"queue_max_batches": 1}})
        async with running_service(config, before_start=gate_pipeline(gate)) as run:
            service = run.service
            _reader, writer = await asyncio.open_connection("127.0.0.1", service.syslog.port)
            for n, line in enumerate(lines[:2], 1):  # one read, one batch each: the second waits for room
                writer.write(lf(rfc5424(line)))
                await writer.drain()
                await wait_for(lambda n=n: run.metric("stream_triage_lines_received_total", source="syslog") == n)
            assert service.runner.queue.full()
            stopping = asyncio.create_task(service.stop())
            await wait_for(lambda: not service.syslog.listening)
            gate.set()
            await asyncio.wait_for(stopping, 15)
            writer.close()
            assert run.metric("stream_triage_lines_received_total", source="syslog") == 2
            assert run.texts == lines[:2]  # the batch that was waiting is processed, not dropped

    run_async(scenario)


def test_json_logs_are_structured_and_never_print_secrets(tmp_path: Path) -> None:
    """With [logging] json, every output line is a JSON object; no token or key (right or wrong) is printed."""
    secrets = {
        "STREAM_TRIAGE_SYSLOG_TOKEN": "stk_live_4c1d8e2f9a0b7c6d5e4f3a2b",
        "STREAM_TRIAGE_DRAIN_TOKEN": "drn_live_7a6b5c4d3e2f1a0b9c8d7e6f",
        "STREAM_TRIAGE_METRICS_TOKEN": "mtk_live_1f2e3d4c5b6a79880706f5e4",
        "RENDER_API_KEY": "rnd_live_0a9b8c7d6e5f4a3b2c1d0e9f",  # not the fake's key: the tail is rejected
    }
    wrong = ["stk_wrong_9d8c7b6a5f4e3d2c1b0a", "drn_wrong_5a4b3c2d1e0f9a8b7c6d", "mtk_wrong_0f1e2d3c4b5a69788796"]
    with RenderFakeThread() as render:
        sections = {
            "logging": {"json": True, "level": "DEBUG"},
            "metrics": {"require_token": True},
            "sources.render_tail": {
                "enabled": True,
                "api_base_url": render.fake.base_url,
                "owner_id": render.fake.owner_id,
                "resources": ["srv-d3k8abc"],
            },
        }
        with run_serve(tmp_path, sections, env=secrets) as serve:
            serve.metrics_headers = {"Authorization": f"Bearer {secrets['STREAM_TRIAGE_METRICS_TOKEN']}"}
            send_tcp(serve.syslog_port, octet(rfc5424(INFO, sd=f'[auth@41058 token="{wrong[0]}"]')))
            send_tcp(serve.syslog_port, lf(rfc5424(f"{secrets['STREAM_TRIAGE_SYSLOG_TOKEN']} {INFO}")))
            assert http_get(serve.url("/metrics"), {"Authorization": f"Bearer {wrong[2]}"})[0] == 401
            drain = urllib.request.Request(
                serve.url("/drain"),
                data=INFO.encode(),
                headers={"Content-Type": "text/plain", "Authorization": f"Bearer {wrong[1]}"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(drain, timeout=10)
            assert refused.value.code == 401
            # A broken request quoting the real token: aiohttp logs the offending bytes with a traceback.
            token = secrets["STREAM_TRIAGE_DRAIN_TOKEN"]
            with socket.create_connection(("127.0.0.1", serve.http_port), timeout=10) as raw:
                raw.sendall(
                    b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {token}\r\n\r\n".encode()
                )
                assert wait_closed(raw).startswith(b"HTTP/1.0 400")
            serve.wait_logged("Error handling request")
            serve.wait_metric("stream_triage_lines_received_total", 1, source="syslog")
            assert serve.metric("stream_triage_auth_failures_total", source="syslog") == 1
            assert serve.metric("stream_triage_auth_failures_total", source="http_drain") == 1
            serve.wait_logged("RENDER_API_KEY rejected")
            assert serve.stop() == 0
    output = serve.log()
    records = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = " ".join(r["message"] for r in records)
    assert "wrong or missing token" in messages
    assert "RENDER_API_KEY rejected" in messages
    for value in [*secrets.values(), *wrong]:
        assert value not in output


class SlowSink:
    """An outbox sink that takes its time to stop, as Airtable does while delivering the last changes."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def stop(self, timeout: float) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.release.wait(), timeout)


def test_a_drain_upload_straddling_shutdown_is_refused_not_acknowledged_and_lost(tmp_path: Path) -> None:
    """A body that completes after the queue was drained gets 503 (the sender retries), never a 2xx for lost lines."""

    async def scenario() -> None:
        async with running_service(in_process_config(tmp_path)) as run, aiohttp.ClientSession() as http:
            service = run.service
            sink = SlowSink()
            service.sinks.append(sink)
            release = asyncio.Event()

            async def body() -> AsyncIterator[bytes]:
                yield (INFO + "\n").encode()
                await release.wait()
                yield (INFO + "\n").encode()

            url = f"http://127.0.0.1:{service.http_port}/drain"
            upload = asyncio.create_task(http.post(url, data=body(), headers={"Content-Type": "text/plain"}))
            await asyncio.sleep(0.2)  # the handler is now waiting for the rest of the body
            stopping = asyncio.create_task(service.stop())
            await asyncio.wait_for(sink.stopping.wait(), 10)  # queue drained, runs flushed; sinks finishing
            release.set()
            resp = await asyncio.wait_for(upload, 10)
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"
            sink.release.set()
            await asyncio.wait_for(stopping, 15)
            assert run.metric("stream_triage_lines_received_total", source="http_drain") == 0

    run_async(scenario)
