"""The pipeline runner's metrics: every run is counted once in runs_flushed, by how it ended."""

from __future__ import annotations

import asyncio
import math
from array import array
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream_triage.config import load_config
from stream_triage.pipeline.triage import Triage
from stream_triage.records import EndReason, LineBatch, RawRecord
from stream_triage.runner import PipelineRunner
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.telemetry import Metrics

T0 = 1_762_157_722.0  # 2025-11-03T08:15:22Z

COMPLETED_RUN = [
    "[251103-081522] [SYSTEM] [smart_resume] [INFO] 🚀 SMART RESUME PROCESSING STARTED",
    "[251103-081522] [SYSTEM] [smart_resume] [ERROR] Error: connect ECONNREFUSED 10.0.4.12:5432",
    "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)",
    "[251103-081522] [SYSTEM] [smart_resume] [INFO] 🎉 SMART RESUME PROCESSING COMPLETED ✅",
]
SILENT_RUN = [
    "[251103-082000-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Scoring 40 leads",
    "[251103-082000-Ann-Lee] [Ann-Lee] [lead_scoring] [ERROR] Failed to score lead rec8XyZ: timeout after 30000ms",
]
OPEN_RUN = ["[251103-083000] [SYSTEM] [batch-score] [INFO] Batch scoring started for 12 clients"]


def _flushed(registry: CollectorRegistry) -> dict[str, float]:
    return {
        e.value: registry.get_sample_value("stream_triage_runs_flushed_total", {"ended": e.value}) or 0.0
        for e in EndReason
    }


def test_each_run_is_counted_once_by_how_it_ended(tmp_path: Path) -> None:
    """A completed run counts as marker only (not again when its grace window closes), a silent one as idle."""
    config = load_config(env={})
    config.flush.grace_after_marker_s = 60.0
    config.flush.idle_timeout_s = 300.0
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = IssueStore(tmp_path / "issues.db")
    clock = [T0]

    async def scenario() -> None:
        runner = PipelineRunner(Triage(config), store, metrics, clock=lambda: clock[0])
        runner.start()
        await runner.submit("http_drain", [RawRecord(t, "drain") for t in COMPLETED_RUN + SILENT_RUN])
        await runner.queue.join()
        assert _flushed(registry)["marker"] == 1
        clock[0] = T0 + 120  # the completed run's grace window closes: its final flush is not a new end
        await runner.tick()
        clock[0] = T0 + 600  # the silent run passes the idle timeout
        await runner.tick()
        await runner.submit("http_drain", [RawRecord(t, "drain") for t in OPEN_RUN])
        await runner.drain(EndReason.SHUTDOWN)
        runner.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    counts = _flushed(registry)
    assert counts == {e.value: 0.0 for e in EndReason} | {"marker": 1.0, "idle": 1.0, "shutdown": 1.0}
    assert registry.get_sample_value("stream_triage_runs_open") == 0


def test_queue_depth_counts_each_sources_waiting_records(tmp_path: Path) -> None:
    """queue_depth{source} is that source's records still queued, not the shared queue's size."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = IssueStore(tmp_path / "issues.db")

    def depth(source: str) -> float | None:
        return registry.get_sample_value("stream_triage_queue_depth", {"source": source})

    async def scenario() -> None:
        runner = PipelineRunner(Triage(load_config(env={})), store, metrics, clock=lambda: T0)
        await runner.submit("syslog", [RawRecord(t, "syslog/node") for t in SILENT_RUN])
        assert runner.offer("http_drain", [RawRecord(t, "drain") for t in COMPLETED_RUN])
        await runner.submit("syslog", [RawRecord(t, "syslog/node") for t in OPEN_RUN])
        assert (depth("syslog"), depth("http_drain")) == (3, 4)  # nothing consumed yet
        runner.start()
        await runner.queue.join()
        assert (depth("syslog"), depth("http_drain")) == (0, 0)
        await runner.drain()
        runner.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


class RecordingTriage:
    """A stand-in pipeline that records what it is fed: line batches and record lists alike."""

    open_runs = 0

    def __init__(self) -> None:
        self.match_counts: dict[tuple[str, str], int] = {}
        self.seen: list[tuple[str, str, float | None]] = []

    def process_batch(self, batch: LineBatch, now: float | None = None) -> list:
        return self.process_many(batch.records(), now)

    def process_many(self, records: list[RawRecord], now: float | None = None) -> list:
        self.seen.extend((r.text, r.source, r.ts) for r in records)
        return []

    def tick(self, now: float) -> list:
        return []

    def flush_all(self, reason: EndReason) -> list:
        return []


def test_a_read_of_several_batches_is_one_queue_item_counted_in_lines(tmp_path: Path) -> None:
    """A LineBatch and a record list from one read: one queue item; metrics and lag count its 4 lines."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = IssueStore(tmp_path / "issues.db")
    batch = LineBatch(
        "\n".join(SILENT_RUN + OPEN_RUN).encode() + b"\n",
        ["syslog/a", "syslog/b"],
        bytes([0, 1, 0]),
        array("d", [T0 - 30, math.nan, T0 - 5]),
    )
    triage = RecordingTriage()

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async def scenario() -> None:
        runner = PipelineRunner(triage, store, metrics, clock=lambda: T0)  # type: ignore[arg-type]
        await runner.submit("syslog", batch, [RawRecord("tail line\r", "syslog/c", None)])
        assert runner.queue.qsize() == 1
        assert sample("stream_triage_queue_depth", source="syslog") == 4
        assert sample("stream_triage_lines_received_total", source="syslog") == 4
        runner.start()
        await runner.queue.join()
        assert runner.lines_processed == 4
        assert sample("stream_triage_queue_depth", source="syslog") == 0
        # The last line of the read has no envelope time, so no lag sample.
        assert sample("stream_triage_pipeline_lag_seconds_count") == 0
        await runner.submit("syslog", batch)
        await runner.queue.join()
        assert sample("stream_triage_pipeline_lag_seconds_count") == 1
        assert sample("stream_triage_pipeline_lag_seconds_sum") == 5
        await runner.drain()
        runner.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    texts = SILENT_RUN + OPEN_RUN
    assert triage.seen[:4] == [
        (texts[0], "syslog/a", T0 - 30),
        (texts[1], "syslog/b", None),
        (texts[2], "syslog/a", T0 - 5),
        ("tail line\r", "syslog/c", None),
    ]


def test_offer_refuses_a_whole_read_when_the_queue_is_full(tmp_path: Path) -> None:
    """With no room, offer queues none of a request's batches and counts its lines as backpressure."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = IssueStore(tmp_path / "issues.db")

    async def scenario() -> None:
        runner = PipelineRunner(Triage(load_config(env={})), store, metrics, queue_max_batches=1, clock=lambda: T0)
        first = LineBatch(b"a\nb\n", ["drain"])
        assert runner.offer("http_drain", first)
        assert not runner.offer("http_drain", LineBatch(b"c\n", ["drain"]), [RawRecord("d", "drain")])
        assert runner.offer("http_drain")  # nothing to queue is always accepted
        rejected = registry.get_sample_value(
            "stream_triage_frames_rejected_total", {"source": "http_drain", "reason": "backpressure"}
        )
        assert rejected == 2
        assert registry.get_sample_value("stream_triage_lines_received_total", {"source": "http_drain"}) == 2
        runner.start()
        await runner.drain()
        assert runner.lines_processed == 2
        runner.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
