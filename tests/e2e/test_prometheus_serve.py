"""The real Prometheus scrapes the real `stream-triage serve`: dashboard and alert PromQL answer with what was sent.

One module-scoped scenario: a local Airtable fake, the service as a subprocess (``python -m
stream_triage serve``) with a bearer-protected /metrics and a drain token, and Prometheus scraping
it every second with the repository's alert rules. A realistic slice of a production morning goes
in over ``POST /drain`` (text/plain) and over syslog TCP (util-linux ``logger``): a smart-resume run
with a CRITICAL ECONNREFUSED (twice, with its stack), an Airtable ERROR and a rate-limit WARNING
that completes with its marker; a client run over syslog that completes with ``Job status updated
to COMPLETED``; a batch run that goes silent without a marker; Render build, deploy and access
noise; a system-bucket ERROR; one drain request with a wrong token. The tests then read the figures
back through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_triage.sinks.sqlite import IssueStore
from tests.e2e.prometheus import (
    ROOT,
    PrometheusServer,
    alert_expressions,
    check_metrics,
    free_port,
    require_binary,
    require_module,
    run_prometheus,
    wait_for_http,
    wait_until,
)
from tests.fakes.airtable import AirtableFake
from tests.test_airtable_client import BASE, KEY, TABLE, full_schema

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

METRICS_TOKEN = "mt-6f1d0c2b9a8e7d6c5b4a3f2e1d0c9b8a"
DRAIN_TOKEN = "dt-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
IDLE_TIMEOUT_S = 3  # the silent batch run must end as "idle" while the test waits, not after 30 min

# Render's log stream as a text/plain drain delivers it: deploy noise, access lines, a completed run.
DRAIN_FIRST = """\
[2025-11-03T08:15:20.118372615Z] ==> Running build command 'npm install'...
[2025-11-03T08:15:21.004417206Z] ==> Your service is live 🎉
[2025-11-03T08:15:21.512030481Z] [GET]200 pb-webhook-server.onrender.com/health clientIP="203.0.113.7" \
requestID="0f3c2a91-6d1e-4b7a-9c55-2e8f1b7d4a10" responseTimeMS=4 responseBytes=23 userAgent="Render/1.0"
[SYSTEM] [SYSTEM] [client-service] [INFO] Loaded 14 active clients from Master Clients base
[251103-081522] [SYSTEM] [smart_resume] [INFO] 🚀 SMART RESUME PROCESSING STARTED (stream 2)
[251103-081522] [SYSTEM] [smart_resume] [INFO] Processing 14 clients, 3 with pending leads
[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [INFO] Scoring 40 leads for Ann-Lee
[251103-081522] [SYSTEM] [smart_resume] [ERROR] Error: connect ECONNREFUSED 10.0.4.12:5432
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)
    at Pool.connect (/opt/render/project/src/services/leadStore.js:212:17)
[251103-081522-Ann-Lee] [Ann-Lee] [lead_scoring] [ERROR] Failed to update record rec8XyZ12abcDEF: \
INVALID_VALUE_FOR_COLUMN Field "AI Score" cannot accept the provided value
[251103-081522-Tom-Baker] [Tom-Baker] [lead_scoring] [WARN] Airtable rate limit reached (429), retrying in 30s
[251103-081522] [SYSTEM] [smart_resume] [ERROR] Error: connect ECONNREFUSED 10.0.4.12:5432
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)
    at Pool.connect (/opt/render/project/src/services/leadStore.js:212:17)
[251103-081522-Tom-Baker] [Tom-Baker] [lead_scoring] [INFO] Scored 12 leads in 8412 ms
[251103-081522] [SYSTEM] [smart_resume] [INFO] 🎉 SMART RESUME PROCESSING COMPLETED ✅
"""

# A batch run that logs an error and then nothing more: it must end as idle (no marker).
DRAIN_SECOND = """\
[251103-091500] [SYSTEM] [batch-score] [INFO] Batch scoring started for 12 clients
[251103-091500-Omar-Haddad] [Omar-Haddad] [batch-score] [ERROR] Batch scoring failed for Omar-Haddad: \
request to api.openai.com timed out after 30000ms
[2025-11-03T09:15:31.771203118Z] [POST]200 pb-webhook-server.onrender.com/api/apify-webhook \
clientIP="203.0.113.44" requestID="6a0e5b8c-1f2d-4c3b-8e7a-9d6c5b4a3f21" responseTimeMS=412 responseBytes=583 \
userAgent="Apify-Webhooks/2.0"
"""

# One syslog message per line, sent by `logger`: a client run that completes, and a system error.
SYSLOG = """\
[SYSTEM] [SYSTEM] [client-service] [INFO] Refreshing client cache
[251103-090014-Kenji-Sato] [Kenji-Sato] [run-record] [INFO] Job status updated to RUNNING
[251103-090014-Kenji-Sato] [Kenji-Sato] [lead_scoring] [WARN] Airtable rate limit reached (429), retrying in 30s
[251103-090014-Kenji-Sato] [Kenji-Sato] [lead_scoring] [INFO] Scored 25 leads in 10233 ms
[251103-090014-Kenji-Sato] [Kenji-Sato] [run-record] [INFO] Job status updated to COMPLETED
[SYSTEM] [SYSTEM] [client-service] [ERROR] Failed to load client Guy-Wilson from Master Clients base: NOT_FOUND
[2025-11-03T09:00:41.204417206Z] [GET]200 pb-webhook-server.onrender.com/health clientIP="203.0.113.7" \
requestID="9b1d7e2a-3c4f-4a5b-8d6e-7f8091a2b3c4" responseTimeMS=3 responseBytes=23 userAgent="Render/1.0"
"""

DRAIN_LINES = len(DRAIN_FIRST.splitlines()) + len(DRAIN_SECOND.splitlines())
SYSLOG_LINES = len(SYSLOG.splitlines())

# What the pipeline makes of it. Stored issues: the ECONNREFUSED (2 occurrences, one issue), the
# Airtable INVALID_VALUE, the rate-limit warning (seen again in Kenji-Sato's run: updated), the
# system-bucket NOT_FOUND, the batch failure and the idle run's run-incomplete.
CREATED_BY_SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 1}
UPDATED_BY_SEVERITY = {"CRITICAL": 0, "ERROR": 0, "WARNING": 1}
STORED_ISSUES = sum(CREATED_BY_SEVERITY.values())
OPEN_ISSUES = {(sev, "NEW"): n for sev, n in CREATED_BY_SEVERITY.items()}
MATCHED = {
    ("CRITICAL", "connection-refused"): 2,
    ("ERROR", "airtable-invalid-value"): 1,
    ("ERROR", "scoring-failed"): 1,
    ("ERROR", "failed-operation"): 1,
    ("WARNING", "rate-limited"): 2,
}
# Evaluated as plain queries now, only these alert expressions have a result; the others are quiet.
ALERTS_WITH_RESULT = {"StreamTriageNewCriticalIssue", "StreamTriageRunsEndedWithoutMarker"}


@dataclass(slots=True)
class Served:
    """The running scenario: the service's process and URLs, Prometheus, the Airtable fake."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    db_path: Path
    prom: PrometheusServer
    airtable: AirtableFake

    def log_text(self) -> str:
        """The service's own stderr/stdout so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _config(tmp: Path, http_port: int, syslog_port: int, airtable_url: str) -> Path:
    path = tmp / "stream-triage.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            http_host = "127.0.0.1"
            http_port = {http_port}
            tick_interval_s = 0.25
            shutdown_deadline_s = 10

            [sources.syslog]
            enabled = true
            host = "127.0.0.1"
            port = {syslog_port}

            [sources.http_drain]
            enabled = true

            [flush]
            idle_timeout_s = {IDLE_TIMEOUT_S}
            system_flush_interval_s = 1

            [metrics]
            enabled = true
            require_token = true

            [store]
            path = "{tmp / "issues.db"}"

            [sinks.airtable]
            base_id = "{BASE}"
            table = "{TABLE}"
            endpoint_url = "{airtable_url}"
            """
        ),
        encoding="utf-8",
    )
    return path


def _service_env(tmp: Path) -> dict[str, str]:
    # The developer's own tokens or store path must not leak into the service under test.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STREAM_TRIAGE_", "AIRTABLE_", "RENDER_"))
    }
    env.pop("PORT", None)
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        STREAM_TRIAGE_METRICS_TOKEN=METRICS_TOKEN,
        STREAM_TRIAGE_DRAIN_TOKEN=DRAIN_TOKEN,
        AIRTABLE_API_KEY=KEY,
    )
    return env


def _post_drain(base_url: str, body: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{base_url}/drain",
        data=body.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _get(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _send_syslog(logger: str, port: int, tmp: Path) -> None:
    lines = tmp / "syslog-lines.txt"
    lines.write_text(SYSLOG, encoding="utf-8")
    subprocess.run(
        [logger, "--tcp", "--octet-count", "--rfc5424", "-n", "127.0.0.1", "-P", str(port),
         "-t", "pb-webhook-server", "-f", str(lines)],
        check=True,
        timeout=10,
        capture_output=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _by(prom: PrometheusServer, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    """An instant vector as ``{label values: value}``."""
    data = prom.query(expr)
    assert data["resultType"] == "vector", (expr, data)
    return {tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1]) for s in data["result"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_binary("prometheus")
    logger = require_binary("logger", "bsdutils")
    tmp = tmp_path_factory.mktemp("serve")
    http_port, syslog_port = free_port(), free_port()
    with AirtableFake(token=KEY, bases={BASE: {TABLE: full_schema()}}, rate_limit_per_s=None) as airtable:
        config = _config(tmp, http_port, syslog_port, airtable.url)
        log_path = tmp / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stream_triage", "serve", "--config", str(config)],
                cwd=ROOT,
                env=_service_env(tmp),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{http_port}"
        try:
            try:
                wait_for_http(f"{base_url}/readyz", timeout=30)
            except TimeoutError:
                pytest.fail(f"serve did not become ready:\n{log_path.read_text()}")
            with run_prometheus(f"127.0.0.1:{http_port}", bearer_token=METRICS_TOKEN) as prom:
                # Scrapes before any line: counters step from 0, so increase() and the alerts see it.
                prom.wait_for_scrapes(2)
                served = Served(proc, base_url, log_path, tmp / "issues.db", prom, airtable)
                _feed(served, logger, syslog_port, tmp)
                _wait_for_outcome(served)
                yield served
        finally:
            _stop(proc)


def _feed(served: Served, logger: str, syslog_port: int, tmp: Path) -> None:
    status, body = _post_drain(served.base_url, DRAIN_FIRST, "dt-rotated-last-week")
    assert status == 401, body
    status, body = _post_drain(served.base_url, DRAIN_FIRST, DRAIN_TOKEN)
    assert status == 200, body
    assert json.loads(body) == {"accepted": len(DRAIN_FIRST.splitlines()), "rejected": 0}
    _send_syslog(logger, syslog_port, tmp)
    status, body = _post_drain(served.base_url, DRAIN_SECOND, DRAIN_TOKEN)
    assert status == 200, body


def _wait_for_outcome(served: Served) -> None:
    """Until Prometheus holds the final figures: all lines in, the idle run ended, Airtable caught up."""
    prom = served.prom

    def settled() -> bool:
        return (
            prom.value('stream_triage_lines_received_total{source="syslog"}') == SYSLOG_LINES
            and prom.value('stream_triage_runs_flushed_total{ended="idle"}') == 1
            and prom.value('sum(stream_triage_open_issues{status="NEW"})') == STORED_ISSUES
            and prom.value('stream_triage_outbox_backlog{sink="airtable"}') == 0
            and prom.value('stream_triage_sink_deliveries_total{sink="airtable"}') not in (None, 0)
        )

    try:
        wait_until(settled, 30, "the scenario's figures in Prometheus")
    except TimeoutError as exc:
        pytest.fail(f"{exc}\nservice log:\n{served.log_text()}")


def test_metrics_need_the_bearer_token_and_use_the_classic_text_format(served: Served) -> None:
    """/metrics answers 401 without the token or with a wrong one, 200 in text format 0.0.4 with it."""
    url = f"{served.base_url}/metrics"
    status, _, body = _get(url)
    assert status == 401
    assert b"stream_triage" not in body
    assert _get(url, "not-the-token")[0] == 401
    status, content_type, body = _get(url, METRICS_TOKEN)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"stream_triage_lines_received_total" in body


def test_prometheus_scrapes_with_the_token_file(served: Served) -> None:
    """The scrape config's `authorization: credentials_file` gets through: the target is up."""
    (target,) = served.prom.targets()
    assert target["health"] == "up", target
    assert target["labels"]["job"] == "stream-triage"
    assert served.prom.value('up{job="stream-triage"}') == 1


def test_promtool_accepts_the_real_service_exposition(served: Served) -> None:
    """`promtool check metrics` finds nothing to lint in a scrape of the running service."""
    status, _, body = _get(f"{served.base_url}/metrics", METRICS_TOKEN)
    assert status == 200
    assert b'stream_triage_runs_flushed_total{ended="marker"} 2.0' in body
    assert check_metrics(body) == []


def test_counters_equal_what_was_sent(served: Served) -> None:
    """Lines by source, issue changes by severity, runs by how they ended and auth failures are exact."""
    prom = served.prom
    received = _by(prom, "sum by (source) (stream_triage_lines_received_total)", "source")
    assert received == {
        ("http_drain",): DRAIN_LINES,
        ("syslog",): SYSLOG_LINES,
        ("render_tail",): 0,
        ("render_backfill",): 0,
        ("replay",): 0,
    }
    created = _by(prom, 'stream_triage_issue_changes_total{change="created"}', "severity")
    assert created == {(sev,): n for sev, n in CREATED_BY_SEVERITY.items()}
    updated = _by(prom, 'stream_triage_issue_changes_total{change="updated"}', "severity")
    assert updated == {(sev,): n for sev, n in UPDATED_BY_SEVERITY.items()}
    ended = _by(prom, "stream_triage_runs_flushed_total > 0", "ended")
    assert ended == {("marker",): 2, ("idle",): 1}
    assert prom.value('stream_triage_auth_failures_total{source="http_drain"}') == 1
    assert prom.value("sum(stream_triage_frames_rejected_total)") == 0
    matched = _by(prom, "stream_triage_lines_matched_total > 0", "severity", "pattern")
    assert matched == MATCHED


def test_every_dashboard_expression_returns_the_expected_data(served: Served) -> None:
    """Each panel's PromQL succeeds with data; the key panels show the scenario's own figures."""
    require_module("grafana_foundation_sdk", "'grafana-foundation-sdk==1769699379!11.6.0'")
    from grafana.dashboard import expressions

    prom = served.prom
    prom.wait_for_alert("StreamTriageNewCriticalIssue")  # so the "Firing alerts" stat has one to count
    exprs = expressions()
    assert len(exprs) >= 20
    empty = []
    for title, expr in exprs:
        data = prom.query(expr)
        assert data["resultType"] in {"vector", "matrix"}, (title, expr, data)
        if not data["result"]:
            empty.append((title, expr))
    assert empty == []

    by_title: dict[str, list[str]] = {}
    for title, expr in exprs:
        by_title.setdefault(title, []).append(expr)
    rates = _by(prom, by_title["Lines received by source"][0], "source")
    assert {s for (s,), v in rates.items() if v > 0} == {"http_drain", "syslog"}
    changes = _by(prom, by_title["Issue changes by severity"][0], "severity", "change")
    assert {k for k, v in changes.items() if v > 0} == {
        ("CRITICAL", "created"), ("ERROR", "created"), ("WARNING", "created"), ("WARNING", "updated"),
    }
    stored = _by(prom, by_title["Stored issues by severity and status"][0], "severity", "status")
    assert {k: v for k, v in stored.items() if v} == OPEN_ISSUES
    assert len(stored) == 3 * 5  # every severity-by-status pair is a series, zero or not
    ends = _by(prom, by_title["How runs end"][0], "ended")
    assert {e for (e,), v in ends.items() if v > 0} == {"marker", "idle"}
    top = _by(prom, by_title["Top patterns"][0], "severity", "pattern")
    assert {k for k, v in top.items() if v > 0} == set(MATCHED)
    assert prom.value(by_title["Runs open"][0]) == 2  # the two completed runs wait out their grace window
    assert prom.value(by_title["Service up"][0]) == 1
    assert prom.value(by_title["Firing alerts"][0]) >= 1
    deliveries = _by(prom, by_title["Sink deliveries"][0], "sink")
    assert deliveries[("airtable",)] > 0
    backlog, parked = (_by(prom, e, "sink") for e in by_title["Outbox backlog and parked changes"])
    assert backlog == {("airtable",): 0} and parked == {("airtable",): 0}


def test_every_alert_rule_is_healthy_and_only_the_right_ones_match(served: Served) -> None:
    """Every alert expression runs; only the new-CRITICAL and run-without-marker ones have a result."""
    prom = served.prom
    alerts = alert_expressions()
    assert len(alerts) >= 9
    with_result = set()
    for name, expr in alerts.items():
        data = prom.query(expr)
        assert data["resultType"] == "vector", (name, data)
        if data["result"]:
            with_result.add(name)
    assert with_result == ALERTS_WITH_RESULT
    rules = prom.wait_for_rule_evaluations()
    assert {r["name"] for r in rules} == set(alerts)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_the_critical_issue_fires_its_alert(served: Served) -> None:
    """StreamTriageNewCriticalIssue fires for the created CRITICAL issues; the silent run fires its own."""
    critical = served.prom.wait_for_alert("StreamTriageNewCriticalIssue", "firing")
    assert critical["labels"]["change"] == "created"
    assert critical["labels"]["severity"] == "critical"
    assert critical["labels"]["instance"].startswith("127.0.0.1:")
    assert "CRITICAL production issue was created" in critical["annotations"]["summary"]
    idle = served.prom.wait_for_alert("StreamTriageRunsEndedWithoutMarker", "firing")
    assert idle["labels"]["ended"] == "idle"
    firing = {a["labels"]["alertname"] for a in served.prom.alerts() if a["state"] == "firing"}
    assert firing == ALERTS_WITH_RESULT


def test_issues_reached_airtable(served: Served) -> None:
    """Every stored issue was delivered to the (fake) Airtable table through the outbox."""
    records = served.airtable.records(TABLE)
    assert len(records) == STORED_ISSUES


def test_sigterm_stops_serve_cleanly_with_the_issues_stored(served: Served) -> None:
    """SIGTERM: exit code 0, no traceback in the log, the store holds the issues the metrics reported."""
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=20) == 0
    log = served.log_text()
    assert "Traceback" not in log, log
    assert "stopped" in log
    store = IssueStore(served.db_path)
    try:
        counts = {(sev, st): n for sev, st, n in store.open_issue_counts() if n}
    finally:
        store.close()
    assert counts == OPEN_ISSUES
