"""The committed Grafana dashboard equals the generator's output and queries only real metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_triage.telemetry import Metrics, exposed_names
from tests.e2e.prometheus import ROOT, require_module

GRAFANA = ROOT / "grafana"
COMMITTED = GRAFANA / "dashboards" / "stream-triage.json"
METRIC_NAME = re.compile(r"\bstream_triage_[a-zA-Z0-9_:]*")
SDK_PIN = "grafana-foundation-sdk==1769699379!11.6.0"


@pytest.fixture(scope="module")
def dashboard_module() -> Any:
    require_module("grafana_foundation_sdk", f"'{SDK_PIN}'")
    from grafana import dashboard

    return dashboard


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_regenerating_gives_the_committed_json(dashboard_module: Any) -> None:
    """`grafana/dashboard.py` output equals the committed JSON; rerun it after changing the code."""
    assert dashboard_module.to_json() == COMMITTED.read_text(encoding="utf-8"), (
        "grafana/dashboards/stream-triage.json is stale: run `python grafana/dashboard.py` and commit"
    )


def test_the_script_writes_the_dashboard_file(tmp_path: Path, dashboard_module: Any) -> None:
    """`python grafana/dashboard.py OUT` runs standalone and writes the same JSON."""
    out = tmp_path / "d.json"
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "dashboard.py"), str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")


def test_every_panel_has_a_promql_target_on_the_datasource_variable(doc: dict[str, Any]) -> None:
    """Each non-row panel queries Prometheus through ${datasource} with a non-empty expression."""
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap(doc: dict[str, Any]) -> None:
    """Ids are unique and no two panels share a grid cell."""
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine


def test_dashboard_has_a_prometheus_datasource_variable(doc: dict[str, Any]) -> None:
    """A `datasource` variable of type prometheus lets the dashboard work with any data source name."""
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"


def test_required_views_are_present(doc: dict[str, Any]) -> None:
    """The panels the operators asked for exist, each querying the metric it is about."""
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in doc["panels"]}
    expected = {
        "Lines received by source": "stream_triage_lines_received_total",
        "Rejected frames and auth failures": "stream_triage_frames_rejected_total",
        "Issue changes by severity": "stream_triage_issue_changes_total",
        "Stored issues by severity and status": "stream_triage_open_issues",
        "Top patterns": "topk(10",
        "Runs open": "stream_triage_runs_open",
        "How runs end": "stream_triage_runs_flushed_total",
        "Pipeline lag": "histogram_quantile(0.99",
        "Flush duration": "stream_triage_flush_duration_seconds_bucket",
        "Sink deliveries": "stream_triage_sink_deliveries_total",
        "Sink errors": "stream_triage_sink_errors_total",
        "Outbox backlog and parked changes": "stream_triage_outbox_backlog",
        "Time since last successful delivery": "stream_triage_sink_last_success_timestamp_seconds",
    }
    for title, needle in expected.items():
        assert needle in exprs.get(title, ""), title


def test_dashboard_only_names_metrics_the_service_exposes(doc: dict[str, Any]) -> None:
    """Every stream_triage_* name in a panel query is a sample name of the Metrics registry."""
    exposed = exposed_names(Metrics(CollectorRegistry()).registry)
    used = {
        name
        for p in doc["panels"]
        for t in p.get("targets", [])
        for name in METRIC_NAME.findall(t["expr"])
    }
    assert len(used) >= 14
    assert used - exposed == set()


def test_expressions_substitute_grafana_variables(dashboard_module: Any, doc: dict[str, Any]) -> None:
    """expressions() yields every target with $__rate_interval, $__range and $instance replaced."""
    pairs = dashboard_module.expressions(doc)
    assert len(pairs) == sum(len(p.get("targets", [])) for p in doc["panels"])
    for title, expr in pairs:
        assert "$" not in expr, (title, expr)
    assert any("[1m]" in e for _, e in pairs)
    assert any("[1h]" in e for _, e in pairs)
