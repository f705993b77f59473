"""Every Prometheus metric stream-triage exposes, defined once on an injected registry.

``Metrics(registry)`` creates the metrics; components receive the ``Metrics`` object and touch
its attributes. Nothing here uses prometheus_client's global registry, so tests build a fresh
``CollectorRegistry`` and read values back with ``registry.get_sample_value``.

Naming follows the Prometheus conventions: a ``stream_triage_`` prefix, ``_total`` on counters,
base units in the name (``_seconds``, ``_bytes``). Label values are bounded: a source, a reason,
a severity, a pattern id from the pack, a sink name. Never a run id, a client name or a message.

Label combinations known at start-up are created at zero in the constructor, so that a series
exists before its first event: ``increase()`` in an alert rule sees the step from 0 to 1, and a
dashboard shows a flat 0 instead of "no data".
"""

from __future__ import annotations

import hmac
import logging
import platform
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import stream_triage
from stream_triage.records import ChangeKind, EndReason, Severity, Status

log = logging.getLogger(__name__)

PREFIX: Final = "stream_triage"

SOURCES: Final = ("syslog", "http_drain", "render_tail", "render_backfill", "replay")
"""Every source label value. Live sources are the first three; the alert on silence uses only those."""

LIVE_SOURCES: Final = ("syslog", "http_drain", "render_tail")

REJECT_REASONS: Final = ("oversized", "malformed", "bad_token", "duplicate", "backpressure")
"""Reasons a frame is dropped before parsing; others may be added, these exist at zero up front."""

SEVERITIES: Final = tuple(s.value for s in Severity)
STATUSES: Final = tuple(s.value for s in Status)
CHANGE_KINDS: Final = tuple(c.value for c in ChangeKind)
END_REASONS: Final = tuple(e.value for e in EndReason)
SINK_ERROR_KINDS: Final = ("retryable", "permanent")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format. prometheus_client >= 0.22 labels its output ``version=1.0.0`` (UTF-8 metric
names); every name here is a legacy name, so the body is the same and 0.0.4 is what every Prometheus
2.x/3.x and other scrapers (VictoriaMetrics, Grafana Agent) parse without negotiation."""

# Lag from a line's own timestamp to the end of processing. Live lines arrive within seconds;
# the long tail (up to 10 min) is Render's log stream catching up after a reconnect.
PIPELINE_LAG_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A flush writes one run's issues to SQLite in one transaction: milliseconds, seconds at worst.
FLUSH_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OpenIssuesSource = Callable[[], Iterable[tuple[str, str, int]]]
"""Returns ``(severity, status, count)`` rows; called on each scrape, so it reads the store then."""


class OpenIssuesCollector(Collector):
    """``stream_triage_open_issues{severity,status}``, read from the store only when scraped.

    A gauge kept up to date on every flush would need the store's counts after each write; asking
    the store at scrape time is simpler and always right. Every severity-by-status pair is emitted
    (0 when absent) so dashboards have stable series. If the source raises, the scrape still
    succeeds, without this family's samples, and the error is logged: one locked database must not
    blind Prometheus to every other metric.
    """

    NAME: Final = f"{PREFIX}_open_issues"
    DOC: Final = "Stored issues by severity and triage status, counted at scrape time."

    def __init__(self) -> None:
        self._source: OpenIssuesSource | None = None

    def set_source(self, source: OpenIssuesSource | None) -> None:
        """Install (or remove, with None) the callback that counts stored issues."""
        self._source = source

    def describe(self) -> Iterable[Metric]:
        """Name the family without calling the source, so registration never touches the store."""
        return [GaugeMetricFamily(self.NAME, self.DOC, labels=("severity", "status"))]

    def collect(self) -> Iterable[Metric]:
        """Yield the family with one sample per severity-by-status."""
        family = GaugeMetricFamily(self.NAME, self.DOC, labels=("severity", "status"))
        if self._source is None:
            return [family]
        counts: dict[tuple[str, str], float] = {(sev, st): 0.0 for sev in SEVERITIES for st in STATUSES}
        try:
            for severity, status, count in self._source():
                key = (_label(severity), _label(status))
                counts[key] = counts.get(key, 0.0) + float(count)
        except Exception:
            log.exception("open issues could not be counted for /metrics; the family is empty this scrape")
            return [family]
        for (severity, status), count in sorted(counts.items()):
            family.add_metric((severity, status), count)
        return [family]


def _label(value: object) -> str:
    """Enum members become their value; ``str(Severity.ERROR)`` would give the class-qualified name."""
    inner = getattr(value, "value", value)
    return str(inner)


class Metrics:
    """All of stream-triage's metrics on one registry.

    ``sinks`` names the sinks configured (e.g. ``("airtable",)``) and ``patterns`` the
    ``(pattern_id, severity)`` pairs of the loaded pack; both only pre-create zero series.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        sinks: Iterable[str] = (),
        patterns: Iterable[tuple[str, str | Severity]] = (),
        version: str = stream_triage.__version__,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        p = PREFIX

        self.lines_received = Counter(
            f"{p}_lines_received_total", "Log lines accepted from a source.", ["source"], registry=r
        )
        self.frames_rejected = Counter(
            f"{p}_frames_rejected_total",
            "Frames or lines dropped before parsing, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            f"{p}_auth_failures_total",
            "Requests or connections refused for a missing or wrong token.",
            ["source"],
            registry=r,
        )
        self.lines_matched = Counter(
            f"{p}_lines_matched_total",
            "Lines that matched a pattern, by the winning pattern's id.",
            ["severity", "pattern"],
            registry=r,
        )
        self.issues_changed = Counter(
            f"{p}_issue_changes_total",
            "Stored issues created, updated or regressed by flushes.",
            ["severity", "change"],
            registry=r,
        )
        self.open_issues = OpenIssuesCollector()
        r.register(self.open_issues)
        self.runs_open = Gauge(f"{p}_runs_open", "Runs currently buffered, waiting to be flushed.", registry=r)
        self.runs_flushed = Counter(
            f"{p}_runs_flushed_total",
            "Runs ended, by how; a completed run counts once, at its marker.",
            ["ended"],
            registry=r,
        )
        self.pipeline_lag = Histogram(
            f"{p}_pipeline_lag_seconds",
            "Time from a line's own timestamp to the end of its processing.",
            buckets=PIPELINE_LAG_BUCKETS,
            registry=r,
        )
        self.flush_duration = Histogram(
            f"{p}_flush_duration_seconds",
            "Time to write one run flush to the store.",
            buckets=FLUSH_DURATION_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{p}_queue_depth",
            "Records from a source waiting in the pipeline's queue.",
            ["source"],
            registry=r,
        )
        self.sink_deliveries = Counter(
            f"{p}_sink_deliveries_total", "Issue changes delivered to an external sink.", ["sink"], registry=r
        )
        self.sink_errors = Counter(
            f"{p}_sink_errors_total",
            "Failed deliveries to a sink; permanent ones park the change.",
            ["sink", "kind"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            f"{p}_outbox_backlog",
            "Changes queued in a sink's outbox, not yet delivered.",
            ["sink"],
            registry=r,
        )
        self.outbox_parked = Gauge(
            f"{p}_outbox_parked",
            "Changes parked after a permanent error; they need a human.",
            ["sink"],
            registry=r,
        )
        self.sink_last_success = Gauge(
            f"{p}_sink_last_success_timestamp_seconds",
            "Unix time of the last successful delivery to a sink.",
            ["sink"],
            registry=r,
        )
        self.last_line_received = Gauge(
            f"{p}_last_line_received_timestamp_seconds",
            "Unix time the last line arrived from a source.",
            ["source"],
            registry=r,
        )
        self.build_info = Gauge(
            f"{p}_build_info",
            "Always 1; labels carry the running version.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version=version, python=platform.python_version()).set(1)

        for source in SOURCES:
            self.lines_received.labels(source=source)
            self.auth_failures.labels(source=source)
            self.queue_depth.labels(source=source)
            for reason in REJECT_REASONS:
                self.frames_rejected.labels(source=source, reason=reason)
        for severity in SEVERITIES:
            for change in CHANGE_KINDS:
                self.issues_changed.labels(severity=severity, change=change)
        for ended in END_REASONS:
            self.runs_flushed.labels(ended=ended)
        for sink in sinks:
            self.add_sink(sink)
        self.add_patterns(patterns)

    def add_sink(self, sink: str) -> None:
        """Create a sink's series at zero. Its last-success gauge stays absent until a delivery."""
        self.sink_deliveries.labels(sink=sink)
        self.outbox_backlog.labels(sink=sink)
        self.outbox_parked.labels(sink=sink)
        for kind in SINK_ERROR_KINDS:
            self.sink_errors.labels(sink=sink, kind=kind)

    def add_patterns(self, patterns: Iterable[tuple[str, str | Severity]]) -> None:
        """Create ``lines_matched`` series at zero for the pack's ``(pattern_id, severity)`` pairs."""
        for pattern_id, severity in patterns:
            self.lines_matched.labels(severity=_label(severity), pattern=pattern_id)

    def set_open_issues_source(self, source: OpenIssuesSource | None) -> None:
        """Install the callback that counts stored issues by severity and status at scrape time."""
        self.open_issues.set_source(source)

    def line_received(self, source: str, now: float, count: int = 1) -> None:
        """Count ``count`` accepted lines from ``source`` arriving at ``now`` (Unix seconds)."""
        self.lines_received.labels(source=source).inc(count)
        self.last_line_received.labels(source=source).set(now)

    def observe_lag(self, line_ts: float | None, now: float) -> None:
        """Record processing lag for a line with a timestamp; lines without one are not measured.

        A negative lag (a sender's clock ahead of ours) is recorded as 0 rather than dropped, so
        the histogram's count still equals the number of timestamped lines.
        """
        if line_ts is not None:
            self.pipeline_lag.observe(max(0.0, now - line_ts))

    def delivered(self, sink: str, now: float, count: int = 1) -> None:
        """Count ``count`` successful deliveries to ``sink`` at ``now`` (Unix seconds)."""
        self.sink_deliveries.labels(sink=sink).inc(count)
        self.sink_last_success.labels(sink=sink).set(now)


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose, whether or not a child exists yet.

    A counter ``x`` exposes ``x_total`` (and ``x_created``), a histogram ``x_bucket``, ``x_sum``,
    ``x_count``; used to check that dashboard and alert expressions name real metrics.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus text format, with the content type to serve it under."""
    return generate_latest(registry), CONTENT_TYPE


def metrics_handler(metrics: Metrics, token: str | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for ``GET /metrics``.

    With a ``token`` the request must carry ``Authorization: Bearer <token>``; anything else gets
    401 (compared in constant time). Scraping runs the open-issues callback on the event loop's
    thread, which is where the store's SQLite connection lives.
    """
    expected = f"Bearer {token}".encode() if token else None

    async def handle(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="missing or wrong bearer token for /metrics\n",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body, content_type = render(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle
