"""Tests for stream_triage.telemetry: metric definitions, zero series, scrape-time issue counts, /metrics."""

from __future__ import annotations

import asyncio
import platform

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import stream_triage
from stream_triage.records import Severity, Status
from stream_triage.telemetry import (
    CHANGE_KINDS,
    END_REASONS,
    SOURCES,
    Metrics,
    exposed_names,
    metrics_handler,
    render,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_known_label_combinations_exist_at_zero_before_any_event(registry: CollectorRegistry) -> None:
    """Sources, change kinds, end reasons and configured sinks have series at 0 from the start."""
    Metrics(registry, sinks=("airtable",), patterns=[("db-timeout", Severity.CRITICAL)])
    v = registry.get_sample_value
    for source in SOURCES:
        assert v("stream_triage_lines_received_total", {"source": source}) == 0
        assert v("stream_triage_frames_rejected_total", {"source": source, "reason": "oversized"}) == 0
        assert v("stream_triage_auth_failures_total", {"source": source}) == 0
    for change in CHANGE_KINDS:
        assert v("stream_triage_issue_changes_total", {"severity": "CRITICAL", "change": change}) == 0
    for ended in END_REASONS:
        assert v("stream_triage_runs_flushed_total", {"ended": ended}) == 0
    assert v("stream_triage_sink_deliveries_total", {"sink": "airtable"}) == 0
    assert v("stream_triage_sink_errors_total", {"sink": "airtable", "kind": "permanent"}) == 0
    assert v("stream_triage_outbox_backlog", {"sink": "airtable"}) == 0
    assert v("stream_triage_lines_matched_total", {"severity": "CRITICAL", "pattern": "db-timeout"}) == 0
    # "Never delivered" is absence, not a timestamp of 0 that would read as 56 years ago.
    assert v("stream_triage_sink_last_success_timestamp_seconds", {"sink": "airtable"}) is None


def test_build_info_carries_version_and_python(registry: CollectorRegistry) -> None:
    """build_info is 1 with the package version and the interpreter version as labels."""
    Metrics(registry)
    labels = {"version": stream_triage.__version__, "python": platform.python_version()}
    assert registry.get_sample_value("stream_triage_build_info", labels) == 1


def test_line_received_counts_and_stamps_the_source(registry: CollectorRegistry) -> None:
    """line_received adds to the source's counter and records the arrival time."""
    m = Metrics(registry)
    m.line_received("syslog", now=1_762_157_722.5)
    m.line_received("syslog", now=1_762_157_723.0, count=3)
    assert registry.get_sample_value("stream_triage_lines_received_total", {"source": "syslog"}) == 4
    assert registry.get_sample_value(
        "stream_triage_last_line_received_timestamp_seconds", {"source": "syslog"}
    ) == 1_762_157_723.0
    assert registry.get_sample_value("stream_triage_lines_received_total", {"source": "http_drain"}) == 0


def test_pipeline_lag_buckets_reach_ten_minutes_and_clamp_clock_skew(registry: CollectorRegistry) -> None:
    """Lag lands in the right buckets; a line stamped in the future counts as 0 s; no timestamp, no sample."""
    m = Metrics(registry)
    m.observe_lag(1000.0, now=1000.2)  # 0.2 s
    m.observe_lag(1000.0, now=1300.0)  # 5 min: a reconnect catching up
    m.observe_lag(1005.0, now=1000.0)  # sender clock 5 s ahead
    m.observe_lag(None, now=1000.0)
    v = registry.get_sample_value
    assert v("stream_triage_pipeline_lag_seconds_count") == 3
    assert v("stream_triage_pipeline_lag_seconds_bucket", {"le": "0.05"}) == 1
    assert v("stream_triage_pipeline_lag_seconds_bucket", {"le": "0.25"}) == 2
    assert v("stream_triage_pipeline_lag_seconds_bucket", {"le": "120.0"}) == 2
    assert v("stream_triage_pipeline_lag_seconds_bucket", {"le": "300.0"}) == 3
    assert v("stream_triage_pipeline_lag_seconds_bucket", {"le": "600.0"}) == 3
    assert v("stream_triage_pipeline_lag_seconds_sum") == pytest.approx(300.2)


def test_delivered_counts_and_sets_last_success(registry: CollectorRegistry) -> None:
    """A delivery adds to the sink's counter and sets its last-success time."""
    m = Metrics(registry, sinks=("airtable",))
    m.delivered("airtable", now=1_762_157_800.0, count=10)
    assert registry.get_sample_value("stream_triage_sink_deliveries_total", {"sink": "airtable"}) == 10
    assert registry.get_sample_value(
        "stream_triage_sink_last_success_timestamp_seconds", {"sink": "airtable"}
    ) == 1_762_157_800.0


def test_open_issues_are_read_only_at_scrape_time_with_zeros_filled(registry: CollectorRegistry) -> None:
    """The open-issues callback runs per scrape; missing severity-by-status pairs read 0; enums are values."""
    m = Metrics(registry)
    calls: list[int] = []
    rows = [(Severity.CRITICAL, Status.NEW, 2), ("ERROR", "INVESTIGATING", 5)]

    def source() -> list[tuple[str, str, int]]:
        calls.append(1)
        return rows  # type: ignore[return-value]  # enums are accepted as well as strings

    m.set_open_issues_source(source)
    assert calls == []  # installing the source does not read the store
    v = registry.get_sample_value
    assert v("stream_triage_open_issues", {"severity": "CRITICAL", "status": "NEW"}) == 2
    assert v("stream_triage_open_issues", {"severity": "ERROR", "status": "INVESTIGATING"}) == 5
    assert v("stream_triage_open_issues", {"severity": "WARNING", "status": "REGRESSED"}) == 0
    rows[0] = (Severity.CRITICAL, Status.NEW, 3)
    assert v("stream_triage_open_issues", {"severity": "CRITICAL", "status": "NEW"}) == 3
    assert len(calls) >= 2


def test_failing_open_issues_source_does_not_break_the_scrape(registry: CollectorRegistry) -> None:
    """If the store cannot be read, /metrics still renders every other metric."""
    m = Metrics(registry)

    def broken() -> list[tuple[str, str, int]]:
        raise RuntimeError("database is locked")

    m.set_open_issues_source(broken)
    m.line_received("http_drain", now=1.0)
    body, _ = render(registry)
    text = body.decode()
    assert 'stream_triage_lines_received_total{source="http_drain"} 1.0' in text
    assert "stream_triage_open_issues{" not in text


def test_render_is_parseable_text_format(registry: CollectorRegistry) -> None:
    """render() returns the text format with its content type, and it parses back."""
    m = Metrics(registry, sinks=("airtable",))
    m.issues_changed.labels(severity="CRITICAL", change="created").inc()
    body, content_type = render(registry)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    changes = families["stream_triage_issue_changes"]
    created = [s for s in changes.samples if s.name.endswith("_total") and s.labels["change"] == "created"]
    assert {s.labels["severity"]: s.value for s in created} == {"CRITICAL": 1, "ERROR": 0, "WARNING": 0}


def test_exposed_names_cover_every_metric_with_suffixes(registry: CollectorRegistry) -> None:
    """exposed_names lists counter _total, histogram _bucket/_sum/_count, gauges, and the collector."""
    Metrics(registry)
    names = exposed_names(registry)
    assert {
        "stream_triage_lines_received_total",
        "stream_triage_lines_matched_total",
        "stream_triage_pipeline_lag_seconds_bucket",
        "stream_triage_flush_duration_seconds_count",
        "stream_triage_open_issues",
        "stream_triage_runs_open",
        "stream_triage_sink_last_success_timestamp_seconds",
        "stream_triage_build_info",
    } <= names
    assert all(n.startswith("stream_triage_") for n in names)


def test_two_registries_are_independent() -> None:
    """Metrics on one registry never leak into another (no global state)."""
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).line_received("syslog", now=1.0)
    Metrics(b)
    assert a.get_sample_value("stream_triage_lines_received_total", {"source": "syslog"}) == 1
    assert b.get_sample_value("stream_triage_lines_received_total", {"source": "syslog"}) == 0


async def _get(app: web.Application, headers: dict[str, str]) -> tuple[int, str, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/metrics", headers=headers
        ) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (None, {}, 200),
        ("s3cret-metrics", {"Authorization": "Bearer s3cret-metrics"}, 200),
        ("s3cret-metrics", {}, 401),
        ("s3cret-metrics", {"Authorization": "Bearer wrong"}, 401),
        ("s3cret-metrics", {"Authorization": "s3cret-metrics"}, 401),
    ],
)
def test_metrics_handler_serves_text_and_enforces_the_optional_token(
    token: str | None, headers: dict[str, str], status: int
) -> None:
    """GET /metrics returns the registry when no token is set or the bearer token matches, else 401."""
    m = Metrics(CollectorRegistry())
    m.line_received("render_tail", now=5.0)
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(m, token))
    got_status, content_type, text = asyncio.run(_get(app, headers))
    assert got_status == status
    if status == 200:
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert 'stream_triage_lines_received_total{source="render_tail"} 1.0' in text
    else:
        assert "stream_triage" not in text
