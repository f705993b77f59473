"""Helpers for the live-service tests: the multi-run log, its expected issues, ``serve`` as a subprocess
or in-process, syslog frames, a self-signed certificate, the Render fake on a thread, store readers.

Every wait is bounded; every process and server started here is stopped by the context that started it.

    with run_serve(tmp_path, {"sources.syslog": {"max_frame_bytes": 1024}}) as serve:
        send_tcp(serve.syslog_port, b"".join(octet(rfc5424(line)) for line in lines))
        serve.wait_metric("stream_triage_lines_received_total", len(lines), source="syslog")
        assert serve.stop() == 0
    assert stored_issues(serve.db) == expected_issues(lines)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stream_triage.app import Service
from stream_triage.config import SECRET_ENV, Config, load_config
from stream_triage.records import EndReason, LineBatch, RawRecord
from stream_triage.session import TriageSession
from tests.e2e.prometheus import wait_until
from tests.fakes.render_api import RenderFake

ROOT = Path(__file__).resolve().parents[2]
MULTI_RUN_LOG = ROOT / "tests" / "data" / "serve" / "multi_run.log"
T = TypeVar("T")

# The multi-run log's runs and how each ends in the service: two complete, one never does (a crash).
COMPLETED_RUNS = ("251103-081522", "251103-084008")
UNFINISHED_RUN = "251103-083010"

# Variables that would change a service's config behind the test's back.
_CONFIG_ENV = (
    *SECRET_ENV,
    "STREAM_TRIAGE_DB",
    "PORT",
    "RENDER_API_BASE_URL",
    "AIRTABLE_BASE_ID",
    "AIRTABLE_ENDPOINT_URL",
)


# ------------------------------------------------------------------------------------------ data
def multi_run_lines() -> list[str]:
    """The lines of the realistic multi-run log (three runs, system lines, stack traces, access lines)."""
    return MULTI_RUN_LOG.read_text(encoding="utf-8").splitlines()


def expected_issues(lines: list[str], run_id: str | None = None) -> dict[str, int]:
    """Fingerprint → occurrences that the offline pipeline finds in ``lines`` (the reference), optionally of one run."""
    session = TriageSession(load_config(None, {}))
    for i, line in enumerate(lines, 1):
        session.feed(RawRecord(line, "expected", None, i))
    session.finish(EndReason.EOF)
    return {
        fp: issue.occurrences for fp, issue in session.memory.issues.items() if run_id is None or issue.run_id == run_id
    }


def stored_issues(db: str | Path) -> dict[str, int]:
    """Fingerprint → occurrences in a store file."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT fingerprint, occurrences FROM issues").fetchall())


def stored_runs(db: str | Path) -> dict[str, str | None]:
    """Run id → how it ended, from a store file."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT run_id, ended FROM runs").fetchall())


# ------------------------------------------------------------------------------------------ syslog
def rfc5424(
    message: str,
    *,
    sd: str = "-",
    host: str = "render",
    app: str = "lead-scoring",
    procid: str = "web.1",
    ts: str | None = None,
    bom: bool = False,
    pri: int = 134,
) -> bytes:
    """One RFC 5424 frame (without framing), as a Render log stream writes it."""
    stamp = ts or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = ("\ufeff" if bom else "") + message
    return f"<{pri}>1 {stamp} {host} {app} {procid} - {sd} {text}".encode()


def rfc3164(message: str, *, host: str = "render", tag: str = "lead-scoring[41]", pri: int = 14) -> bytes:
    """One BSD syslog frame (RFC 3164)."""
    stamp = time.strftime("%b %e %H:%M:%S", time.gmtime())
    return f"<{pri}>{stamp} {host} {tag}: {message}".encode()


def octet(frame: bytes) -> bytes:
    """RFC 6587 octet counting."""
    return b"%d %s" % (len(frame), frame)


def lf(frame: bytes) -> bytes:
    """RFC 6587 non-transparent framing (LF)."""
    return frame + b"\n"


def connect(port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> socket.socket:
    """A client socket to 127.0.0.1:port (TLS when ``tls`` is given)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def send_tcp(port: int, data: bytes, tls: ssl.SSLContext | None = None) -> None:
    """Send ``data`` on one connection, close our side, and wait (bounded) for the server to close."""
    with connect(port, tls) as sock:
        sock.sendall(data)
        if tls is None:
            sock.shutdown(socket.SHUT_WR)
        else:
            sock = sock.unwrap()  # close_notify; the server then sees end of stream
            sock.shutdown(socket.SHUT_WR)
        wait_closed(sock)


def wait_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the peer closes (bounded); returns what it sent."""
    sock.settimeout(timeout)
    got = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        while chunk := sock.recv(4096):
            got += chunk
    return got


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with the ``openssl`` CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def client_tls(cert: Path) -> ssl.SSLContext:
    """A client context trusting ``cert``."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


# ------------------------------------------------------------------------------------------ config
def toml_text(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document from ``{"section.sub": {key: value}}`` (scalars and lists of scalars)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    out = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in table.items())
        out.append("")
    return "\n".join(out)


def service_config(tmp_path: Path, sections: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    """Loopback ports chosen by the kernel, a store in ``tmp_path``, quick shutdown; then ``sections``."""
    merged: dict[str, dict[str, Any]] = {
        "store": {"path": str(tmp_path / "store.db")},
        "server": {"http_port": 0, "shutdown_deadline_s": 10, "tick_interval_s": 0.2},
        "sources.syslog": {"port": 0},
    }
    for name, table in (sections or {}).items():
        merged.setdefault(name, {}).update(table)
    return merged


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without stream-triage settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


# ------------------------------------------------------------------------------------------ metrics
def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value from a Prometheus text scrape."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET with urllib; returns (status, body) for any status."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ------------------------------------------------------------------------------------------ subprocess
@dataclass(slots=True)
class ServeProcess:
    """A running ``stream-triage serve``: its ports, store and captured output."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    db: Path
    http_port: int = 0
    syslog_port: int = 0
    returncode: int | None = field(default=None)
    metrics_headers: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """Everything the service printed so far (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def url(self, path: str) -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.http_port}{path}"

    def metrics(self, headers: Mapping[str, str] | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """A parsed scrape of ``/metrics``."""
        status, body = http_get(self.url("/metrics"), headers or self.metrics_headers)
        assert status == 200, body
        return parse_metrics(body.decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of a fresh scrape (0 when absent)."""
        return sample(self.metrics(), name, **labels)

    def wait_logged(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the service has printed ``text``."""
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in the service log", interval=0.05)

    def wait_metric(self, name: str, value: float, timeout: float = 20.0, **labels: str) -> float:
        """Wait until the sample is at least ``value``; returns it."""
        return wait_until(
            lambda: (v := self.metric(name, **labels)) >= value and (v or 1.0),
            timeout,
            f"{name}{labels} >= {value} (service log:\n{self.log()})",
            interval=0.05,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait (bounded) for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode


_PORT_LINES = {
    "http_port": re.compile(r"HTTP on 127\.0\.0\.1:(\d+)"),
    "syslog_port": re.compile(r"syslog listening on 127\.0\.0\.1:(\d+)"),
}


@contextlib.contextmanager
def run_serve(
    tmp_path: Path,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "serve",
) -> Iterator[ServeProcess]:
    """Start ``python -m stream_triage serve --config …`` on kernel-chosen ports; stop it on exit."""
    config = service_config(tmp_path, sections)
    path = tmp_path / f"{name}.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_triage", "serve", "--config", str(path)],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(env), cwd=ROOT,
        )  # fmt: skip
    serve = ServeProcess(proc, log_path, Path(config["store"]["path"]))
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{serve.log()}")
            return "stream-triage ready" in serve.log()

        wait_until(ready, 30, "serve to start", interval=0.05)
        text = serve.log()
        for attr, rx in _PORT_LINES.items():
            if m := rx.search(text):
                setattr(serve, attr, int(m.group(1)))
        yield serve
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ in-process
def in_process_config(
    tmp_path: Path, sections: Mapping[str, Mapping[str, Any]] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """A validated ``Config`` like ``run_serve`` would load, for a ``Service`` in this process."""
    path = tmp_path / "inproc.toml"
    path.write_text(toml_text(service_config(tmp_path, sections)), encoding="utf-8")
    return load_config(path, dict(env or {}))


@dataclass(slots=True)
class Running:
    """An in-process service and the records that reached its pipeline, in order."""

    service: Service
    registry: CollectorRegistry
    records: list[RawRecord]

    @property
    def texts(self) -> list[str]:
        """The text of every record the pipeline processed."""
        return [r.text for r in self.records]

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the service's own registry (0 when absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_service(
    config: Config, *, before_start: Callable[[Service], None] | None = None
) -> AsyncIterator[Running]:
    """Start a ``Service`` on this loop with a fresh registry; stop it (gracefully) on exit."""
    registry = CollectorRegistry()
    service = Service(config, registry=registry)
    records: list[RawRecord] = []
    process_many = service.triage.process_many
    process_batch = service.triage.process_batch
    in_batch = False

    def recording(batch: list[RawRecord], now: float | None = None) -> Any:
        if not in_batch:
            records.extend(batch)
        return process_many(batch, now)

    def recording_batch(batch: LineBatch, now: float | None = None) -> Any:
        # process_batch may itself go through process_many: record each line once.
        nonlocal in_batch
        records.extend(batch.records())
        in_batch = True
        try:
            return process_batch(batch, now)
        finally:
            in_batch = False

    service.triage.process_many = recording  # type: ignore[method-assign]
    service.triage.process_batch = recording_batch  # type: ignore[method-assign]
    if before_start is not None:
        before_start(service)
    await service.start()
    try:
        yield Running(service, registry, records)
    finally:
        await service.stop()


async def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` on the loop until truthy, at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.01)
    return value


def run_async(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run one async scenario on a fresh loop, bounded so a hang fails instead of blocking."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


# ------------------------------------------------------------------------------------------ Render fake
class RenderFakeThread:
    """``RenderFake`` on its own event loop in a thread, for tests that drive a subprocess.

    ``call(fn, *args)`` runs ``fn`` on the fake's loop and returns its result.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = RenderFake()
        self._thread = threading.Thread(target=self.loop.run_forever, name="render-fake", daemon=True)

    def __enter__(self) -> RenderFakeThread:
        self._thread.start()
        self.run(self.fake.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.fake.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        """Run a coroutine on the fake's loop (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the fake's loop."""

        async def call() -> T:
            return fn(*args)

        return self.run(call())

    def wait_subscribers(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` WebSocket subscriptions are open."""
        self.run(self.fake.wait_subscribers(count, timeout), timeout + 5)

    def push_lines(self, resource: str, lines: list[str]) -> None:
        """Push each line as a Render log to the live subscribers (and the history)."""

        def push() -> None:
            self.fake.push(*(self.fake.make_log(resource, line) for line in lines))

        self.call(push)
