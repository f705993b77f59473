"""The service: builds the topology from config, runs it, and shuts it down without losing anything.

    sources (syslog TCP/TLS, POST /drain, Render live tail)
        → PipelineRunner (bounded queue → Triage → IssueStore, off-loop writer)
        → outbox sinks (Airtable), metrics

Shutdown order (SIGTERM/SIGINT): stop accepting input, drain the queue, flush every open run to the
store, give the outbox sinks the rest of the deadline to deliver, then close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from stream_triage.config import Config, load_config
from stream_triage.errors import ConfigError, PatternError, StoreError
from stream_triage.logs import setup_logging
from stream_triage.pipeline.triage import Triage, build_patterns
from stream_triage.records import EndReason
from stream_triage.runner import PipelineRunner
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.sources.batching import FAST as INGEST_FAST
from stream_triage.sources.http_drain import HttpDrainSource
from stream_triage.sources.syslog import SyslogSource
from stream_triage.telemetry import Metrics, metrics_handler

log = logging.getLogger("stream_triage.app")


class Service:
    """One stream-triage process: sources, pipeline, store, sinks, HTTP endpoints."""

    def __init__(
        self, config: Config, *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        patterns = build_patterns(config)
        sinks = ("airtable",) if config.airtable_enabled else ()
        self.metrics = Metrics(registry, sinks=sinks, patterns=[(s.id, s.severity.value) for s in patterns.specs])
        self.store = IssueStore(config.store.path, outbox_sinks=sinks)
        self.metrics.set_open_issues_source(self.store.open_issue_counts)
        self.triage = Triage(config, patterns)
        self.runner = PipelineRunner(
            self.triage, self.store, self.metrics, queue_max_batches=config.server.queue_max_batches, clock=clock
        )
        secrets = config.secrets
        self.syslog = (
            SyslogSource(config.sources.syslog, self.runner, self.metrics, secrets.get("STREAM_TRIAGE_SYSLOG_TOKEN"))
            if config.sources.syslog.enabled
            else None
        )
        self.drain = (
            HttpDrainSource(
                config.sources.http_drain, self.runner, self.metrics, secrets.get("STREAM_TRIAGE_DRAIN_TOKEN")
            )
            if config.sources.http_drain.enabled
            else None
        )
        self.render_tail = None
        if config.sources.render_tail.enabled:
            from stream_triage.sources.render_tail import RenderTailSource

            self.render_tail = RenderTailSource(config.sources.render_tail, self.runner, secrets["RENDER_API_KEY"])
        self.sinks: list = []
        if config.airtable_enabled:
            from stream_triage.sinks.airtable import AirtableSink

            self.sinks.append(AirtableSink.from_config(config, self.store, self.metrics, clock=clock))
        self._http: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = False
        self.http_port = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the pipeline, the sinks, the HTTP server and every source."""
        self.runner.start()
        for sink in self.sinks:
            self.runner.add_listener(sink.notify)
            await sink.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="ticker")
        app = web.Application(client_max_size=self.config.sources.http_drain.max_body_bytes + 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.config.metrics.enabled:
            token = (
                self.config.secrets.get("STREAM_TRIAGE_METRICS_TOKEN") if self.config.metrics.require_token else None
            )
            app.router.add_get("/metrics", metrics_handler(self.metrics, token))
        if self.drain is not None:
            self.drain.add_routes(app)
        self._http = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
        await self._http.setup()
        server = self.config.server
        self._site = web.TCPSite(self._http, server.http_host, server.http_port)
        await self._site.start()
        sockets = self._site._server.sockets if self._site._server else []  # type: ignore[union-attr]
        self.http_port = sockets[0].getsockname()[1] if sockets else server.http_port
        log.info(
            "HTTP on %s:%d (healthz, readyz, metrics%s)",
            server.http_host,
            self.http_port,
            f", {self.config.sources.http_drain.path}" if self.drain else "",
        )
        if self.syslog is not None:
            await self.syslog.start()
        if self.render_tail is not None:
            await self.render_tail.start()
        log.info("stream-triage ready; store %s", self.config.store.path)
        slow = self.triage.fast_path_off
        if slow is not None:
            log.warning("pipeline fast path off (%s): every line takes the full Python path, far slower", slow)
        if not INGEST_FAST and (self.syslog is not None or self.drain is not None):
            log.warning(
                "syslog/logplex fast path off (stream_triage.sources._syslog_fast is not built): every frame is "
                "parsed in Python, far slower; reinstall with a C compiler"
            )

    async def stop(self) -> None:
        """Graceful shutdown within ``server.shutdown_deadline_s``; every open run is flushed."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + self.config.server.shutdown_deadline_s
        log.info("stopping: no new input; draining the queue and flushing open runs")
        if self.drain is not None:
            self.drain.accepting = False
        if self.syslog is not None:
            await self.syslog.stop()
        if self.render_tail is not None:
            await self.render_tail.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        try:
            await asyncio.wait_for(self.runner.drain(EndReason.SHUTDOWN), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.error("shutdown deadline passed before the queue drained; %d batches left", self.runner.queue.qsize())
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.stop(max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            await self._http.cleanup()
        self.runner.close()
        self.store.close()
        log.info("stopped")

    async def _tick_forever(self) -> None:
        interval = self.config.server.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.runner.tick()
            except Exception:
                log.exception("periodic flush failed; will retry")

    # ------------------------------------------------------------------ endpoints
    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = {
            "store_writable": await asyncio.get_running_loop().run_in_executor(None, self.store.writable),
            "syslog_listening": self.syslog is None or self.syslog.listening,
            "accepting": not self._stopping,
        }
        ok = all(checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def serve(config: Config, stop_event: asyncio.Event | None = None) -> int:
    """Run the service until SIGTERM/SIGINT (or ``stop_event``); returns the exit code."""
    service = Service(config)
    stop_event = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
    try:
        await service.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await service.stop()
        return 2
    await stop_event.wait()
    await service.stop()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``serve``."""
    p = sub.add_parser("serve", help="run the live service (syslog, HTTP drain, Render tail) on the store")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--db", help="SQLite store path (default: store.path, or $STREAM_TRIAGE_DB)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """``stream-triage serve``."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 2
    if args.db:
        config.store.path = args.db
    setup_logging(config.logging.level, config.logging.json, config.secrets.values())
    try:
        return asyncio.run(serve(config))
    except (ConfigError, PatternError, StoreError) as exc:
        log.error("%s", exc)
        return 2
