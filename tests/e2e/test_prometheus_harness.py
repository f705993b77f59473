"""Real Prometheus scrapes stream-triage's metrics; every dashboard and alert expression evaluates on them."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream_triage.records import Severity, Status
from stream_triage.telemetry import Metrics, metrics_handler
from tests.e2e.prometheus import (
    PrometheusServer,
    alert_expressions,
    check_metrics,
    require_binary,
    require_module,
    run_prometheus,
    serve_app_in_thread,
    wait_until,
)

pytestmark = pytest.mark.e2e

PATTERNS = [
    ("db-connection-refused", Severity.CRITICAL),
    ("unhandled-promise-rejection", Severity.ERROR),
    ("airtable-rate-limited", Severity.WARNING),
    ("slow-request", Severity.WARNING),
]
NOW = 1_762_157_722.0  # 2025-11-03T08:15:22Z, the sample run's start


def load_realistic_traffic(m: Metrics) -> None:
    """What a few minutes of one busy production day leave in the metrics."""
    m.line_received("syslog", NOW, count=1200)
    m.line_received("http_drain", NOW + 5, count=340)
    m.line_received("render_tail", NOW + 7, count=15)
    m.frames_rejected.labels(source="syslog", reason="oversized").inc()
    m.frames_rejected.labels(source="http_drain", reason="bad_token").inc(2)
    m.auth_failures.labels(source="http_drain").inc(2)
    m.lines_matched.labels(severity="ERROR", pattern="unhandled-promise-rejection").inc(9)
    m.lines_matched.labels(severity="WARNING", pattern="slow-request").inc(31)
    m.issues_changed.labels(severity="ERROR", change="created").inc(3)
    m.issues_changed.labels(severity="WARNING", change="updated").inc(12)
    m.runs_open.set(4)
    m.runs_flushed.labels(ended="marker").inc(7)
    m.runs_flushed.labels(ended="periodic").inc(3)
    for lag in (0.4, 0.9, 1.7, 3.2, 240.0):
        m.observe_lag(NOW - lag, NOW)
    for seconds in (0.004, 0.012, 0.03):
        m.flush_duration.observe(seconds)
    m.queue_depth.labels(source="syslog").set(3)
    m.delivered("airtable", NOW + 9, count=15)
    m.sink_errors.labels(sink="airtable", kind="retryable").inc(2)
    m.outbox_backlog.labels(sink="airtable").set(5)


@dataclass(slots=True)
class Scraped:
    prom: PrometheusServer
    metrics: Metrics
    url: str


def _app(m: Metrics, token: str | None) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(m, token))
    return app


@pytest.fixture(scope="module")
def scraped() -> Iterator[Scraped]:
    m = Metrics(CollectorRegistry(), sinks=("airtable",), patterns=PATTERNS)
    m.set_open_issues_source(lambda: [(Severity.CRITICAL, Status.NEW, 1), (Severity.ERROR, Status.INVESTIGATING, 2)])
    load_realistic_traffic(m)
    with serve_app_in_thread(_app(m, None)) as port, run_prometheus(f"127.0.0.1:{port}") as prom:
        prom.wait_for_scrapes(3)
        yield Scraped(prom=prom, metrics=m, url=f"http://127.0.0.1:{port}/metrics")


def test_prometheus_scrapes_the_service_metrics(scraped: Scraped) -> None:
    """The stored samples equal what the service counted, including scrape-time open issues."""
    prom = scraped.prom
    (target,) = prom.targets()
    assert target["health"] == "up"
    assert target["labels"]["job"] == "stream-triage"
    assert prom.value('stream_triage_lines_received_total{source="syslog"}') == 1200
    assert prom.value('stream_triage_lines_received_total{source="replay"}') == 0
    assert prom.value('stream_triage_open_issues{severity="ERROR",status="INVESTIGATING"}') == 2
    assert prom.value('stream_triage_outbox_backlog{sink="airtable"}') == 5
    assert prom.value("stream_triage_pipeline_lag_seconds_count") == 5
    assert prom.value("count(stream_triage_build_info)") == 1


def test_every_dashboard_expression_returns_data(scraped: Scraped) -> None:
    """Each panel's PromQL (variables substituted) succeeds and returns at least one series."""
    require_module("grafana_foundation_sdk", "'grafana-foundation-sdk==1769699379!11.6.0'")
    from grafana.dashboard import expressions

    exprs = expressions()
    assert len(exprs) >= 20
    empty = []
    for title, expr in exprs:
        data = scraped.prom.query(expr)
        assert data["resultType"] in {"vector", "matrix", "scalar"}, (title, expr, data)
        if data["resultType"] != "scalar" and not data["result"]:
            empty.append((title, expr))
    assert empty == []


def test_every_alert_expression_evaluates_cleanly(scraped: Scraped) -> None:
    """Alert expressions run as queries and as loaded rules without errors."""
    alerts = alert_expressions()
    assert len(alerts) >= 7
    for name, expr in alerts.items():
        data = scraped.prom.query(expr)
        assert data["resultType"] == "vector", (name, data)
    rules = scraped.prom.wait_for_rule_evaluations()
    assert {r["name"] for r in rules} == set(alerts)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_promtool_accepts_the_scraped_exposition(scraped: Scraped) -> None:
    """`promtool check metrics` finds no lint problem in the /metrics body Prometheus scrapes."""
    with urllib.request.urlopen(scraped.url, timeout=10) as resp:
        body = resp.read()
    assert b"stream_triage_lines_received_total" in body
    assert check_metrics(body) == []


def test_check_metrics_reports_lint_problems() -> None:
    """The promtool helper surfaces problems, e.g. a counter without the _total suffix."""
    problems = check_metrics("# HELP lines Lines.\n# TYPE lines counter\nlines 3\n")
    assert any("_total" in p for p in problems)


def test_a_new_critical_issue_fires_its_alert(scraped: Scraped) -> None:
    """After a CRITICAL issue is created, Prometheus' rule evaluation fires StreamTriageNewCriticalIssue."""
    prom = scraped.prom
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "StreamTriageNewCriticalIssue"]
    scraped.metrics.issues_changed.labels(severity="CRITICAL", change="created").inc()
    alert = prom.wait_for_alert("StreamTriageNewCriticalIssue")
    assert alert["labels"]["change"] == "created"
    assert alert["labels"]["severity"] == "critical"
    assert "CRITICAL production issue was created" in alert["annotations"]["summary"]


@pytest.mark.parametrize(("prom_token", "up"), [("scrape-token-1", True), ("stale-token", False)])
def test_scraping_with_a_bearer_token(prom_token: str, up: bool) -> None:
    """With a metrics token set, Prometheus' credentials_file must match it or the target is down (401)."""
    m = Metrics(CollectorRegistry())
    m.line_received("syslog", NOW, count=7)
    with (
        serve_app_in_thread(_app(m, "scrape-token-1")) as port,
        run_prometheus(f"127.0.0.1:{port}", bearer_token=prom_token, rule_files=[]) as prom,
    ):
        if up:
            prom.wait_for_scrapes(2)
            assert prom.value('stream_triage_lines_received_total{source="syslog"}') == 7
        else:
            target = wait_until(
                lambda: next((t for t in prom.targets() if t["health"] == "down"), None),
                30,
                "the target to be reported down",
            )
            assert "401" in target["lastError"]
            assert prom.value("stream_triage_lines_received_total") is None


def test_missing_tools_skip_locally_but_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """require_binary/require_module skip without CI and fail with CI set, so CI cannot pass vacuously."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_binary("stream-triage-no-such-tool")
    with pytest.raises(pytest.skip.Exception):
        require_module("stream_triage_no_such_module", "nothing")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y prometheus"):
        require_binary("stream-triage-no-such-tool")
    with pytest.raises(pytest.fail.Exception):
        require_module("stream_triage_no_such_module", "nothing")
