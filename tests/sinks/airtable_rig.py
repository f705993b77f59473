"""Shared rig for the Airtable sink tests: realistic log runs through the real pipeline, a real store
with the Airtable outbox, the real sink and pyairtable client pointed at the local Airtable fake.

Time is a :class:`ManualClock` shared by the fake (its rate windows), the client's limiter and the
sink, so outages, 429 penalties and backoff run in simulated seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stream_triage.config import Config, load_config
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.triage import Triage, build_patterns
from stream_triage.records import EndReason, RawRecord, RunFlush
from stream_triage.sinks.airtable import AirtableSink, rate_limiter
from stream_triage.sinks.airtable_client import AirtableClient, AirtableFieldMap
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.telemetry import Metrics
from tests.fakes.airtable import AirtableFake, LoggedRequest, ManualClock
from tests.test_airtable_client import BASE, KEY, TABLE, full_schema

__all__ = ["BASE", "KEY", "TABLE", "full_schema"]

T0 = 1762157722.0  # 2025-11-03T08:15:22Z, the first run's first line
_PATTERNS: dict[str, PatternSet] = {}


def default_config() -> Config:
    """The shipped defaults, without reading the environment."""
    return load_config(None, {})


def triage(config: Config | None = None) -> Triage:
    """A pipeline on the default pattern pack (compiled once per process)."""
    config = config or default_config()
    if "default" not in _PATTERNS:
        _PATTERNS["default"] = build_patterns(config)
    return Triage(config, _PATTERNS["default"])


def scoring_run(
    run_id: str,
    *,
    client: str = "Ann-Lee",
    stream: int | None = 2,
    before: int = 30,
    after: int = 30,
    extra_errors: Iterable[str] = (),
    marker: bool = True,
    width: int = 0,
) -> list[str]:
    """A batch-score run as the Node service logs it: a TypeError with its stack, a timeout, a marker.

    ``width`` pads the INFO lines (for context-size tests); ``extra_errors`` are more ERROR messages.
    """
    tag = f"[{run_id}] [{client}] [lead_scoring]"
    pad = (" " + "x" * width) if width else ""
    lines = [
        f"{tag} [INFO] Starting batch scoring" + (f" stream={stream}" if stream is not None else "") + " for 40 leads"
    ]
    lines += [f"{tag} [INFO] scored lead {4700 + i}: score {i % 100}{pad}" for i in range(before)]
    lines += [
        f"{tag} [ERROR] Scoring failed for lead 4821: TypeError: Cannot read properties of undefined (reading 'score')",
        "    at scoreLead (/opt/render/project/src/services/scoring.js:212:17)",
        "    at async Promise.all (index 3)",
    ]
    lines += [f"{tag} [INFO] scored lead {4900 + i}: score {i % 100}{pad}" for i in range(after)]
    lines.append(f"{tag} [WARN] Request timed out after 30000ms calling https://api.openai.com/v1/chat/completions")
    lines += [f"{tag} [ERROR] {e}" for e in extra_errors]
    if marker:
        lines.append(f"{tag} [INFO] Job {run_id} status updated to COMPLETED")
    return lines


SYSTEM_ERROR = (
    "[SYSTEM] [SYSTEM] [client-service] [ERROR] Failed to refresh client list: connect ECONNREFUSED 10.0.0.5:5432"
)


def flushes_of(lines: list[str], t0: float, config: Config | None = None, step: float = 0.25) -> list[RunFlush]:
    """Run ``lines`` through a fresh pipeline (line i at ``t0 + i*step``) and flush everything at EOF."""
    t = triage(config)
    out: list[RunFlush] = []
    for i, text in enumerate(lines):
        out += t.process(RawRecord(text, "render", t0 + i * step, i + 1))
    out += t.flush_all(EndReason.EOF)
    return out


async def fast_sleep(clock: ManualClock, seconds: float) -> None:
    """The sink's sleep in simulated time: advance the clock, yield to the loop."""
    clock.sleep(seconds)
    await asyncio.sleep(0)


@dataclass
class Rig:
    """Fake Airtable + store + sink sharing one manual clock."""

    fake: AirtableFake
    db: Path
    clock: ManualClock
    store: IssueStore = field(init=False)
    sink: AirtableSink = field(init=False)
    metrics: Metrics = field(init=False)
    requests_per_second: float = 5.0
    field_map: AirtableFieldMap | None = None

    def __post_init__(self) -> None:
        self.open()

    def open(self) -> None:
        """(Re)open the store and build a new sink on it, as a restarted process would."""
        self.store = IssueStore(self.db, outbox_sinks=("airtable",))
        self.metrics = Metrics(CollectorRegistry(), sinks=("airtable",))
        client = AirtableClient(
            KEY,
            BASE,
            TABLE,
            endpoint_url=self.fake.url,
            timeout_s=5,
            rate_limiter=rate_limiter(self.requests_per_second, clock=self.clock, sleep=self.clock.sleep),
            field_map=self.field_map,
        )
        self.sink = AirtableSink(
            client,
            self.store,
            self.metrics,
            clock=self.clock,
            sleep=lambda s: fast_sleep(self.clock, s),
            status_sync_interval_s=300.0,
        )
        # What AirtableSink.start does before its worker runs: record ids saved by earlier processes.
        client.remember(self.sink.outbox.record_ids())

    def close(self) -> None:
        """Close client and store (the sink must be stopped or never started)."""
        self.sink.client.close()
        self.store.close()

    def apply(self, lines: list[str], t0: float, config: Config | None = None) -> list[str]:
        """Triage ``lines`` and apply the flushes to the store; returns the changed fingerprints."""
        changes = self.store.apply(flushes_of(lines, t0, config), now=self.clock())
        self.sink.notify(changes)
        return [c.fingerprint for c in changes]

    async def deliver_all(self, rounds: int = 200) -> None:
        """Run delivery rounds (advancing simulated time over backoffs) until nothing is pending."""
        for _ in range(rounds):
            if await self.sink.deliver_once():
                continue
            nxt = self.sink.outbox.next_due_at()
            if nxt is None:
                return
            self.clock.advance(max(0.0, nxt - self.clock()) + 0.001)
        raise AssertionError(f"outbox not empty after {rounds} rounds")

    def records(self) -> dict[str, dict[str, Any]]:
        """Fingerprint → fields of every record in the fake, asserting one record per fingerprint."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.fake.records(TABLE):
            fp = r["fields"].get("Fingerprint")
            assert fp not in out, f"duplicate Airtable record for {fp}"
            out[fp] = r["fields"]
        return out

    def record_id(self, fingerprint: str) -> str:
        """The fake's record id of a fingerprint."""
        return next(r["id"] for r in self.fake.records(TABLE) if r["fields"].get("Fingerprint") == fingerprint)

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the rig's registry."""
        return self.metrics.registry.get_sample_value(name, labels)


def upserts(requests: Iterable[LoggedRequest], ok_only: bool = True) -> list[LoggedRequest]:
    """The record writes (upserts) among logged requests."""
    return [
        r
        for r in requests
        if r.method == "PATCH"
        and isinstance(r.body, dict)
        and "performUpsert" in r.body
        and (r.status == 200 or not ok_only)
    ]


def upserted_fingerprints(requests: Iterable[LoggedRequest]) -> list[str]:
    """Fingerprints in the order successful upserts carried them."""
    return [rec["fields"]["Fingerprint"] for r in upserts(requests) for rec in r.body["records"]]


def bodies_text(requests: Iterable[LoggedRequest]) -> str:
    """Every logged request (path, query, body) as one string, for secret scans."""
    return "\n".join(json.dumps([r.path, r.query, r.body], ensure_ascii=False) for r in requests)


def outbox_rows(store: IssueStore) -> list[tuple[int, str, str, int]]:
    """(id, fingerprint, change, parked) of every outbox row, oldest first."""
    with store.lock:
        return [
            tuple(row)
            for row in store.connection.execute("SELECT id, fingerprint, change, parked FROM outbox ORDER BY id")
        ]


def iter_windows(times: list[float], width: float = 1.0) -> Iterator[int]:
    """Number of events in each closed window ``[t - width, t]`` ending at an event."""
    times = sorted(times)
    lo = 0
    for hi, t in enumerate(times):
        while times[lo] < t - width - 1e-9:
            lo += 1
        yield hi - lo + 1
