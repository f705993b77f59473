"""Test harness around the real ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``).

``run_prometheus(target)`` starts Prometheus on 127.0.0.1 with a generated config (1 s scrape and
evaluation, the repository's alert rules, one scrape job for ``target``, an optional bearer
token), waits until it is ready, yields a ``PrometheusServer`` to query its HTTP API, and stops it
(terminate, then kill) on exit. Typical use against a running service::

    with run_prometheus("127.0.0.1:8080", bearer_token=token) as prom:
        prom.wait_for_scrapes(3)
        result = prom.query('stream_triage_lines_received_total{source="syslog"}')

Against the real service (started by the test as a subprocess on a free port)::

    port = free_port()
    proc = subprocess.Popen(["stream-triage", "serve", "--config", cfg], env={..., "PORT": str(port)})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz")
        with run_prometheus(f"127.0.0.1:{port}", bearer_token=metrics_token) as prom:
            prom.wait_for_scrapes(3)
            ...  # send lines, then prom.value(...) / prom.wait_for_alert(...)
    finally:
        proc.terminate(); proc.wait(timeout=30)

``serve_app_in_thread(app)`` runs an aiohttp application on its own event loop in a thread, for
tests whose own code is synchronous. ``check_metrics(body)`` lints a scrape with promtool. Every
wait here is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "stream-triage"

T = TypeVar("T")


class PrometheusError(RuntimeError):
    """Prometheus did not start, or its API answered with an error."""


def require_binary(name: str, package: str = "prometheus") -> str:
    """Path of ``name``; skips the test when it is missing locally, fails when ``CI`` is set.

    CI installs the Debian ``prometheus`` package (see .ci/run), so a missing binary there is a
    broken setup, not a reason to pass quietly. ``package`` is the Debian package that ships it.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install the Debian package with `apt-get install -y {package}`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns a truthy value, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def prometheus_config(
    target: str,
    *,
    rule_files: list[Path],
    job: str = JOB,
    metrics_path: str = "/metrics",
    token_file: Path | None = None,
    interval: str = "1s",
) -> dict[str, Any]:
    """The Prometheus configuration the harness runs with, as a dict."""
    scrape: dict[str, Any] = {
        "job_name": job,
        "metrics_path": metrics_path,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{"targets": [target]}],
    }
    if token_file is not None:
        scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape],
    }


@dataclass(slots=True)
class PrometheusServer:
    """A running Prometheus: its base URL, log file and a small HTTP API client."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>``; returns ``data``, raises ``PrometheusError`` unless status is success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            # Bad queries answer 400/422 with a JSON error body worth showing.
            raw = exc.read().decode("utf-8", "replace")
            raise PrometheusError(f"{path} {params}: HTTP {exc.code}: {raw}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> dict[str, Any]:
        """Evaluate an instant query now; returns ``{"resultType": ..., "result": ...}``."""
        return self.api("query", {"query": expr})

    def value(self, expr: str) -> float | None:
        """The single value of an instant query returning one sample, or None if it returns none."""
        data = self.query(expr)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) != 1:
            raise PrometheusError(f"{expr} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with ``health``, ``lastError``, ``lastScrape``."""
        return list(self.api("targets")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as loaded, each with ``rules`` carrying ``state``, ``health``, ``lastError``."""
        return list(self.api("rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts currently pending or firing."""
        return list(self.api("alerts")["alerts"])

    def wait_for_scrapes(self, count: int = 3, job: str = JOB, timeout: float = 30.0) -> None:
        """Wait until the job's targets are up and at least ``count`` scrapes are stored.

        Rates need two samples in their window; waiting for three scrapes leaves a margin.
        """

        def scraped() -> bool:
            n = self.value(f'count_over_time(up{{job="{job}"}}[5m])')
            healthy = all(t["health"] == "up" for t in self.targets() if t["labels"]["job"] == job)
            return healthy and n is not None and n >= count

        try:
            wait_until(scraped, timeout, f"{count} successful scrapes of job {job}")
        except TimeoutError as exc:
            raise PrometheusError(f"{exc}; targets: {self.targets()}") from None

    def wait_for_alert(self, name: str, state: str = "firing", timeout: float = 30.0) -> dict[str, Any]:
        """Wait until alert ``name`` is in ``state``; returns the alert."""

        def found() -> dict[str, Any] | None:
            matching = (a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == state)
            return next(matching, None)

        return wait_until(found, timeout, f"alert {name} to be {state}")

    def wait_for_rule_evaluations(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every loaded rule has been evaluated at least once; returns the rules."""

        def evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in self.rules() for r in g["rules"]]
            # A rule never evaluated reports Go's zero time, 0001-01-01T00:00:00Z.
            done = rules and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
            return rules if done else None

        return wait_until(evaluated, timeout, "every rule to be evaluated")


@contextlib.contextmanager
def run_prometheus(
    target: str,
    *,
    rule_files: list[Path] | None = None,
    bearer_token: str | None = None,
    job: str = JOB,
    metrics_path: str = "/metrics",
    startup_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Run the real Prometheus scraping ``target`` (``host:port``) every second; stop it on exit."""
    binary = require_binary("prometheus")
    rules = [ALERT_RULES] if rule_files is None else rule_files
    with tempfile.TemporaryDirectory(prefix="st-prom-") as tmp:
        workdir = Path(tmp)
        token_file = None
        if bearer_token is not None:
            token_file = workdir / "metrics-token"
            token_file.write_text(bearer_token, encoding="utf-8")
            token_file.chmod(0o600)
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                prometheus_config(target, rule_files=rules, job=job, metrics_path=metrics_path, token_file=token_file)
            ),
            encoding="utf-8",
        )
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = PrometheusServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
        try:
            _wait_ready(server, startup_timeout)
            yield server
        finally:
            _stop(process)


def _wait_ready(server: PrometheusServer, timeout: float) -> None:
    def ready() -> bool:
        if server.process.poll() is not None:
            raise PrometheusError(f"prometheus exited with {server.process.returncode}:\n{server.log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    try:
        wait_until(ready, timeout, "prometheus to be ready")
    except TimeoutError as exc:
        raise PrometheusError(f"{exc}\n{server.log_path.read_text()}") from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def promtool(*args: str, stdin: bytes | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args``; output as text, never raises on a non-zero exit."""
    binary = require_binary("promtool")
    return subprocess.run(
        [binary, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_metrics(exposition: bytes | str) -> list[str]:
    """Problems ``promtool check metrics`` reports for a scrape body; empty when it passes."""
    body = exposition.encode() if isinstance(exposition, str) else exposition
    proc = promtool("check", "metrics", stdin=body)
    if proc.returncode == 0:
        return []
    # Lint findings exit 3 and go to stderr, one per line.
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return problems or [f"promtool check metrics exited {proc.returncode}"]


def alert_expressions(path: Path = ALERT_RULES) -> dict[str, str]:
    """``{alert name: expr}`` for every alerting rule in a rules file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


@contextlib.contextmanager
def serve_app_in_thread(app: web.Application, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve an aiohttp app on ``host`` from a background event loop; yields the bound port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    thread = threading.Thread(target=run, name="aiohttp-test-server", daemon=True)
    thread.start()

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        started.set()
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        yield port
    finally:
        if started.is_set():
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def require_module(name: str, install: str) -> Any:
    """Import ``name``; skips the test when it is missing locally, fails when ``CI`` is set."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} is not importable ({exc}); install it with `pip install {install}`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def wait_for_http(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> int:
    """Wait until ``url`` answers 2xx (e.g. a freshly started ``serve``'s /readyz); returns the status."""

    def ok() -> int | None:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return int(resp.status)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    return wait_until(ok, timeout, f"{url} to answer 2xx")
