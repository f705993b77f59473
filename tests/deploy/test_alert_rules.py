"""deploy/prometheus/alerts.yml is valid, unit-tested by promtool, documented, and names real metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from stream_triage.telemetry import Metrics, exposed_names
from tests.e2e.prometheus import ALERT_RULES, alert_expressions, promtool

ALERT_TESTS = ALERT_RULES.parent / "alerts_test.yml"
METRIC_NAME = re.compile(r"\bstream_triage_[a-zA-Z0-9_:]*")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules_accepts_the_file() -> None:
    """`promtool check rules` parses every rule and its PromQL."""
    proc = promtool("check", "rules", str(ALERT_RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules alerts_test.yml`: every alert fires on its scenario and stays quiet otherwise."""
    proc = promtool("test", "rules", str(ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """alerts_test.yml covers each alert at least once firing and once not firing."""
    doc = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in _rules()}
    assert names - firing == set()
    assert names - quiet == set()


def test_every_alert_says_what_it_means_and_how_urgent_it_is() -> None:
    """Each alert has a summary, a description that says what to do, and a critical/warning severity."""
    for rule in _rules():
        name = rule["alert"]
        assert name.startswith("StreamTriage"), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > 120, name


def test_alerts_only_name_metrics_the_service_exposes() -> None:
    """Every stream_triage_* name in an alert expression is a sample name of the Metrics registry."""
    exposed = exposed_names(Metrics(CollectorRegistry()).registry)
    used = {name for expr in alert_expressions().values() for name in METRIC_NAME.findall(expr)}
    assert used, "no stream_triage metric found in the alert rules"
    assert used - exposed == set()


def test_the_down_alert_watches_the_scrape_job_prometheus_uses() -> None:
    """StreamTriageDown selects job="stream-triage", the job name of deploy/prometheus/prometheus.yml."""
    expr = alert_expressions()["StreamTriageDown"]
    config = yaml.safe_load((Path(ALERT_RULES).parent / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {s["job_name"] for s in config["scrape_configs"]}
    assert 'job="stream-triage"' in expr
    assert "stream-triage" in jobs
