"""The Airtable sink inside the real service: ``serve`` killed between send and ack, and ``Service`` wiring."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream_triage.app import Service
from stream_triage.config import load_config
from tests.e2e.prometheus import free_port, wait_for_http, wait_until
from tests.fakes.airtable import AirtableFake
from tests.sinks.airtable_rig import BASE, KEY, SYSTEM_ERROR, TABLE, full_schema, scoring_run, upserts

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class StallingAirtable(AirtableFake):
    """The fake, but the next ``stall`` upserts are committed and then left unanswered until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall = 0
        self.stalled = threading.Event()
        self.release = threading.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        last = self.requests[-1] if self.requests else None
        is_upsert = last is not None and isinstance(last.body, dict) and "performUpsert" in last.body
        if self.stall and is_upsert and last is not None and last.status == 200:
            self.stall -= 1
            self.stalled.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return response


def stamped(lines: list[str], start: float) -> str:
    """Lines as Render's log stream carries them: each prefixed by its ISO timestamp."""
    out = []
    for i, line in enumerate(lines):
        ts = datetime.fromtimestamp(start + i * 0.25, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        out.append(f"[{ts}] {line}")
    return "\n".join(out) + "\n"


def post_drain(port: int, body: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/drain", data=body.encode(), headers={"Content-Type": "text/plain"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def outbox_count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE sink='airtable'").fetchone()[0])


def fingerprints(fake: AirtableFake) -> list[str]:
    return [r["fields"]["Fingerprint"] for r in fake.records(TABLE)]


@pytest.fixture
def stalling_fake() -> Iterator[StallingAirtable]:
    fake = StallingAirtable(token=KEY, bases={BASE: {TABLE: full_schema()}})
    with fake:
        yield fake
        fake.release.set()


def start_serve(tmp_path: Path, fake: AirtableFake, port: int, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = tmp_path / "stream-triage.toml"
    config.write_text(
        '[server]\nhttp_host = "127.0.0.1"\nshutdown_deadline_s = 5.0\n'
        "[sources.syslog]\nenabled = false\n"
        "[sinks.airtable]\ntimeout_s = 60.0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRTABLE_", "STREAM_TRIAGE_", "RENDER_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PORT=str(port),
        STREAM_TRIAGE_DB=str(tmp_path / "issues.db"),
        AIRTABLE_API_KEY=KEY,
        AIRTABLE_BASE_ID=BASE,
        AIRTABLE_ENDPOINT_URL=fake.url,
    )
    stderr = tmp_path / f"{name}.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_triage", "serve", "--config", str(config)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return proc, stderr


def test_serve_killed_after_the_upsert_reached_airtable_redelivers_without_duplicates(
    stalling_fake: StallingAirtable, tmp_path: Path
) -> None:
    """SIGKILL while Airtable holds the answer to an upsert it already applied; the restarted service
    sends it again from the outbox: still one record per fingerprint, and the outbox empties."""
    fake = stalling_fake
    fake.stall = 1
    port = free_port()
    proc, log1 = start_serve(tmp_path, fake, port, "first")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        post_drain(port, stamped([*scoring_run("251103-081522"), SYSTEM_ERROR], time.time() - 60))
        assert fake.stalled.wait(20), "the service never sent its upsert"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        fake.release.set()
    sent_before = fingerprints(fake)
    assert len(sent_before) == len(set(sent_before)) == 2  # the run's two issues; the system bucket had not flushed
    assert outbox_count(tmp_path / "issues.db") == 2  # delivered but never acknowledged

    proc, log2 = start_serve(tmp_path, fake, port, "second")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        wait_until(lambda: outbox_count(tmp_path / "issues.db") == 0 or None, 20, "the outbox to empty")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    after = fingerprints(fake)
    assert len(after) == len(set(after)) == 2 and set(after) == set(sent_before)
    assert len(upserts(fake.requests)) == 2  # the same upsert, sent twice
    assert all(r["fields"]["Status"] == "NEW" and r["fields"]["Occurrences"] == 1 for r in fake.records(TABLE))
    for log in (log1, log2):
        assert KEY not in log.read_text(errors="replace")


def test_service_delivers_drained_lines_to_airtable_and_flushes_on_stop(tmp_path: Path) -> None:
    """Service(config) with the AIRTABLE_* settings: lines POSTed to /drain become records; on stop()
    the open run is flushed and delivered before the deadline; nothing stays in the outbox."""
    with AirtableFake(token=KEY, bases={BASE: {TABLE: full_schema()}}) as fake:
        config = load_config(
            None, {"AIRTABLE_API_KEY": KEY, "AIRTABLE_BASE_ID": BASE, "AIRTABLE_ENDPOINT_URL": fake.url}
        )
        config.server.http_port = 0
        config.server.shutdown_deadline_s = 10.0
        config.sources.syslog.enabled = False
        config.store.path = str(tmp_path / "issues.db")

        async def scenario() -> None:
            service = Service(config, registry=CollectorRegistry())
            assert [s.name for s in service.sinks] == ["airtable"]
            await service.start()
            try:
                url = f"http://127.0.0.1:{service.http_port}/drain"
                async with aiohttp.ClientSession() as http:
                    first = stamped(scoring_run("251103-081522"), time.time() - 120)
                    async with http.post(url, data=first, headers={"Content-Type": "text/plain"}) as resp:
                        assert resp.status == 200
                    for _ in range(200):
                        if len(fake.records(TABLE)) == 2:
                            break
                        await asyncio.sleep(0.05)
                    assert len(fake.records(TABLE)) == 2
                    apify = "[251103-101500] [Bo-Chen] [apify_webhook]"
                    second = stamped(
                        [f"{apify} [INFO] Apify webhook received stream=4", f"{apify} [ERROR] Apify actor run failed"],
                        time.time() - 30,
                    )
                    async with http.post(url, data=second, headers={"Content-Type": "text/plain"}) as resp:
                        assert resp.status == 200
                    await asyncio.sleep(0.2)  # queued and processed; the run stays open (no marker)
                    assert len(fake.records(TABLE)) == 2
            finally:
                await service.stop()

        asyncio.run(scenario())
        records = {r["fields"]["Error Message"]: r["fields"] for r in fake.records(TABLE)}
        assert len(records) == 3
        apify = records["Apify actor run failed"]
        assert apify["Run ID"] == "251103-101500" and apify["Stream"] == 4 and apify["Run Type"] == "apify-webhook"
        assert outbox_count(tmp_path / "issues.db") == 0
