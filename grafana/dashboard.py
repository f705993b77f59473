"""The stream-triage Grafana dashboard, built in code with grafana-foundation-sdk.

Run ``python grafana/dashboard.py`` to regenerate ``grafana/dashboards/stream-triage.json``; the
JSON is committed and ``tests/deploy/test_grafana_dashboard.py`` fails when it drifts from this
file. Every query goes to the Prometheus data source chosen by the ``$datasource`` variable and is
filtered by ``$instance``.

``expressions()`` returns each panel's PromQL with Grafana's template variables replaced by
concrete values, so tests can run them against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.common import StackingConfig as StackingModel

UID = "stream-triage"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "stream-triage.json"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$instance"'

# What Grafana would substitute at query time; used to run the expressions outside Grafana.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
}


def _query(expr: str, legend: str, ref: str, *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def _targets(queries: list[tuple[str, str]], *, instant: bool = False) -> list[Builder[Any]]:
    return [
        _query(expr, legend, chr(ord("A") + i), instant=instant) for i, (expr, legend) in enumerate(queries)
    ]


def _sum_by(labels: str, func: str, metric: str, window: str = "$__rate_interval") -> str:
    """``sum by (labels) (func(metric{instance filter}[window]))``."""
    return f"sum by ({labels}) ({func}({metric}{{{SEL}}}[{window}]))"


def _series(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    bars: bool = False,
    stacked: bool = False,
    width: int = 12,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(80) if bars else panel.fill_opacity(10)
    if stacked:
        panel = panel.stacking(_stacking())
    return panel


def _stacking() -> Builder[StackingModel]:
    return StackingConfig().mode(StackingMode.NORMAL).group("A")


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _stat(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    thresholds: dashboard.ThresholdsConfig,
    *,
    width: int = 6,
    height: int = 5,
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=True))
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.BACKGROUND)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds)
    )


def _bars(title: str, description: str, queries: list[tuple[str, str]], *, width: int = 12) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=True))
        .unit("short")
        .min(0)
        .span(width)
        .height(8)
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.BASIC)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds((None, "blue")))
    )


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def build() -> model.Dashboard:
    """Build the dashboard model."""
    datasource_var = (
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )
    instance_var = (
        dashboard.QueryVariable("instance")
        .label("Instance")
        .datasource(DATASOURCE)
        .query("label_values(stream_triage_build_info, instance)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
        .multi(True)
    )
    b = (
        dashboard.Dashboard("stream-triage")
        .uid(UID)
        .description("Log ingest, issue triage, run flushing and sink delivery of stream-triage.")
        .tags(["stream-triage", "logs"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var)
        .with_variable(instance_var)
    )

    b = b.with_row(dashboard.Row("Ingest"))
    b = b.with_panel(
        _series(
            "Lines received by source",
            "Log lines accepted per second from each source (syslog, HTTP drain, Render live tail, "
            "backfill, replay).",
            "cps",
            [(_sum_by("source", "rate", "stream_triage_lines_received_total"), "{{source}}")],
            stacked=True,
        )
    )
    b = b.with_panel(
        _series(
            "Rejected frames and auth failures",
            "Frames dropped before parsing by source and reason, and requests refused for a bad token. "
            "A steady auth-failure rate usually means a rotated token was not updated on the sender.",
            "cps",
            [
                (_sum_by("source, reason", "rate", "stream_triage_frames_rejected_total"),
                 "{{source}} {{reason}}"),
                (_sum_by("source", "rate", "stream_triage_auth_failures_total"), "{{source}} auth failure"),
            ],
        )
    )
    b = b.with_panel(
        _series(
            "Queue depth by source",
            "Records waiting between a source and the pipeline. Growth means the pipeline is not keeping up.",
            "short",
            [(f"sum by (source) (stream_triage_queue_depth{{{SEL}}})", "{{source}}")],
        )
    )
    b = b.with_panel(
        _stat(
            "Time since last line",
            "Seconds since each source last delivered a line.",
            "s",
            [(f"time() - max by (source) (stream_triage_last_line_received_timestamp_seconds{{{SEL}}})",
              "{{source}}")],
            _thresholds((None, "green"), (600, "orange"), (1800, "red")),
            width=12,
            height=8,
        )
    )

    b = b.with_row(dashboard.Row("Issues"))
    b = b.with_panel(
        _series(
            "Issue changes by severity",
            "Stored issues created, updated or regressed, per interval.",
            "short",
            [(_sum_by("severity, change", "increase", "stream_triage_issue_changes_total"),
              "{{severity}} {{change}}")],
            bars=True,
            stacked=True,
        )
    )
    b = b.with_panel(
        _bars(
            "Stored issues by severity and status",
            "Issues in the store right now, counted when Prometheus scrapes.",
            [(f"sum by (severity, status) (stream_triage_open_issues{{{SEL}}})", "{{severity}} {{status}}")],
        )
    )
    b = b.with_panel(
        _bars(
            "Top patterns",
            "The ten patterns that matched the most lines over the dashboard's time range.",
            [("topk(10, "
              + _sum_by("pattern, severity", "increase", "stream_triage_lines_matched_total", "$__range")
              + ")",
              "{{pattern}} ({{severity}})")],
        )
    )
    b = b.with_panel(
        _series(
            "Matched lines by severity",
            "Lines per second that matched a pattern, by the winning pattern's severity.",
            "cps",
            [(_sum_by("severity", "rate", "stream_triage_lines_matched_total"), "{{severity}}")],
        )
    )

    b = b.with_row(dashboard.Row("Runs and pipeline"))
    b = b.with_panel(
        _series(
            "Runs open",
            "Runs buffered in memory, waiting for their completion marker or idle timeout.",
            "short",
            [(f"sum(stream_triage_runs_open{{{SEL}}})", "open runs")],
            width=8,
        )
    )
    b = b.with_panel(
        _series(
            "How runs end",
            "Runs ended, by how: marker (completed; counted once, when the marker arrives), idle (no "
            "marker: often a crash), shutdown (still open when the service stopped), evicted (too many open runs).",
            "short",
            [(_sum_by("ended", "increase", "stream_triage_runs_flushed_total"), "{{ended}}")],
            bars=True,
            stacked=True,
            width=16,
        )
    )
    b = b.with_panel(
        _series(
            "Pipeline lag",
            "Time from a line's own timestamp to the end of its processing.",
            "s",
            _quantiles("stream_triage_pipeline_lag_seconds"),
        )
    )
    b = b.with_panel(
        _series(
            "Flush duration",
            "Time to write one run's flush to the store.",
            "s",
            _quantiles("stream_triage_flush_duration_seconds"),
        )
    )

    b = b.with_row(dashboard.Row("Sinks"))
    b = b.with_panel(
        _series(
            "Sink deliveries",
            "Issue changes delivered per second to each external sink (Airtable).",
            "cps",
            [(_sum_by("sink", "rate", "stream_triage_sink_deliveries_total"), "{{sink}}")],
            width=8,
        )
    )
    b = b.with_panel(
        _series(
            "Sink errors",
            "Failed deliveries per second. Retryable ones stay queued; permanent ones are parked.",
            "cps",
            [(_sum_by("sink, kind", "rate", "stream_triage_sink_errors_total"), "{{sink}} {{kind}}")],
            width=8,
        )
    )
    b = b.with_panel(
        _series(
            "Outbox backlog and parked changes",
            "Changes waiting in each sink's outbox, and changes parked after a permanent error.",
            "short",
            [
                (f"sum by (sink) (stream_triage_outbox_backlog{{{SEL}}})", "{{sink}} queued"),
                (f"sum by (sink) (stream_triage_outbox_parked{{{SEL}}})", "{{sink}} parked"),
            ],
            width=8,
        )
    )
    b = b.with_panel(
        _stat(
            "Time since last successful delivery",
            "Seconds since each sink last accepted a change. Empty until the first delivery.",
            "s",
            [(f"time() - max by (sink) (stream_triage_sink_last_success_timestamp_seconds{{{SEL}}})",
              "{{sink}}")],
            _thresholds((None, "green"), (900, "orange"), (1800, "red")),
            width=12,
        )
    )
    b = b.with_panel(
        _stat(
            "Service up",
            "1 when Prometheus can scrape the instance.",
            "none",
            [(f'up{{job="stream-triage",{SEL}}}', "{{instance}}")],
            _thresholds((None, "red"), (1, "green")),
        )
    )
    b = b.with_panel(
        _stat(
            "Firing alerts",
            "stream-triage alerts currently firing (see deploy/prometheus/alerts.yml).",
            "none",
            [('count(ALERTS{alertname=~"StreamTriage.*",alertstate="firing"}) or vector(0)', "firing")],
            _thresholds((None, "green"), (1, "red")),
        )
    )
    return b.build()


def _number_panels(doc: dict[str, Any]) -> None:
    """Give every panel (rows included) a stable id in layout order; the SDK leaves them unset."""
    for i, panel in enumerate(doc.get("panels", []), start=1):
        panel["id"] = i


def to_json(dash: model.Dashboard | None = None) -> str:
    """The dashboard as deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    doc = json.loads(json.dumps(build() if dash is None else dash, cls=JSONEncoder))
    _number_panels(doc)
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def iter_panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard document, including those nested in collapsed rows."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str) -> str:
    """Replace Grafana's template variables with the values in ``SUBSTITUTIONS``."""
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
    return expr


def expressions(doc: dict[str, Any] | None = None, *, substituted: bool = True) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every query target of the dashboard."""
    doc = json.loads(to_json()) if doc is None else doc
    out: list[tuple[str, str]] = []
    for panel in iter_panels(doc):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            out.append((panel.get("title", ""), substitute(expr) if substituted else expr))
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard JSON (to ``argv[0]`` if given, else the committed location)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUTPUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
