"""The syslog source: RFC 5424 / 3164 over TCP or TLS, as Render Log Streams deliver it.

Framing and parsing live in ``syslog_protocol`` (pure); this module owns the sockets. Each connection
is bounded (frame size, idle timeout, a cap on connections); a malformed or oversized frame is counted,
reported once per connection and skipped, and the connection's valid frames still go through. With a
token configured, every frame must carry it (structured data or message prefix); a wrong token closes
the connection. When the pipeline's queue is full, ``submit`` waits and the connection stops being
read, so TCP flow control pushes back on the sender instead of anything being dropped.

Each read becomes one queue item of ``LineBatch``es (``sources.batching``): octet-counted RFC 5424
frames go through the C fast path when it is built, everything else through ``parse_syslog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from stream_triage.config import SyslogSourceConfig
from stream_triage.errors import ConfigError
from stream_triage.records import RawRecord
from stream_triage.runner import PipelineRunner
from stream_triage.sources.batching import SyslogBatcher, syslog_source_name
from stream_triage.sources.files import split_lines
from stream_triage.sources.syslog_protocol import SyslogFramer, SyslogParseError, check_token, parse_syslog
from stream_triage.telemetry import Metrics

log = logging.getLogger("stream_triage.sources.syslog")

SOURCE = "syslog"
_READ_BYTES = 256 * 1024


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class SyslogSource:
    """A TCP/TLS syslog listener feeding the pipeline."""

    def __init__(
        self, config: SyslogSourceConfig, runner: PipelineRunner, metrics: Metrics, token: str | None = None
    ) -> None:
        self.config = config
        self.runner = runner
        self.metrics = metrics
        self.token = token
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = None
        if config.tls_cert_file:
            try:
                self._ssl = tls_context(config.tls_cert_file, config.tls_key_file)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    [
                        f"sources.syslog.tls_cert_file / tls_key_file: cannot load {config.tls_cert_file!r} and "
                        f"{config.tls_key_file!r} ({exc}); give a PEM certificate and its matching private key"
                    ]
                ) from None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        """Whether the listener accepts connections."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, ssl=self._ssl, limit=_READ_BYTES
        )
        log.info("syslog listening on %s:%d (%s)", self.config.host, self.port, "TLS" if self._ssl else "plain TCP")

    async def stop(self) -> None:
        """Stop accepting and close every connection; a batch already read is still processed (see ``submit``)."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.config.max_connections:
            self.metrics.frames_rejected.labels(source=SOURCE, reason="max_connections").inc()
            log.warning("syslog: connection refused, %d connections open (max_connections)", len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("syslog: connection from %s ended: %s", peer, exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        if self.token is not None:
            await self._serve_with_token(reader, peer)
            return
        # Without a token every frame stands alone: the clean octet-counted RFC 5424 ones go through
        # the fast path straight into a LineBatch, the rest through parse_syslog, in stream order.
        batcher = SyslogBatcher(self.config.max_frame_bytes)
        reported: set[str] = set()
        while True:
            data = await self._read(reader, peer)
            batches = batcher.feed(data) if data else batcher.flush()
            for kind, detail in batcher.pop_problems():
                if kind == "malformed":
                    self._reject(kind, f"malformed frame: {detail}", peer, reported)
                else:
                    self._reject(kind, f"{kind}: {detail}", peer, reported)
            if batches:
                await self.runner.submit(SOURCE, *batches)
            if not data:
                return

    async def _serve_with_token(self, reader: asyncio.StreamReader, peer: object) -> None:
        framer = SyslogFramer(self.config.max_frame_bytes)
        reported: set[str] = set()
        while True:
            data = await self._read(reader, peer)
            frames = framer.feed(data) if data else framer.flush()
            for err in framer.pop_errors():
                self._reject(err.kind, f"{err.kind}: {err.detail}", peer, reported)
            if frames:
                records, ok = self._records(frames, peer, reported)
                if records:
                    await self.runner.submit(SOURCE, records)
                if not ok:
                    return
            if not data:
                return

    async def _read(self, reader: asyncio.StreamReader, peer: object) -> bytes:
        idle = self.config.idle_timeout_s
        try:
            return await asyncio.wait_for(reader.read(_READ_BYTES), idle)
        except TimeoutError:
            log.info("syslog: closing %s after %.0f s without data", peer, idle)
            return b""

    def _records(self, frames: list[bytes], peer: object, reported: set[str]) -> tuple[list[RawRecord], bool]:
        records: list[RawRecord] = []
        token = self.token
        for frame in frames:
            try:
                msg = parse_syslog(frame)
            except SyslogParseError as exc:
                self._reject("malformed", f"malformed frame: {exc}", peer, reported)
                continue
            text = msg.message
            if token is not None:
                checked = check_token(msg, token)
                if checked is None:
                    self.metrics.auth_failures.labels(source=SOURCE).inc()
                    self.metrics.frames_rejected.labels(source=SOURCE, reason="bad_token").inc()
                    log.warning("syslog: wrong or missing token from %s; closing the connection", peer)
                    return records, False
                text = checked
            record = RawRecord(text, syslog_source_name(msg), msg.timestamp, 0)
            if "\n" in text:
                records.extend(split_lines(record))
            else:
                records.append(record)
        return records, True

    def _reject(self, reason: str, message: str, peer: object, reported: set[str]) -> None:
        self.metrics.frames_rejected.labels(source=SOURCE, reason=_reason(reason)).inc()
        if reason not in reported:
            # Once per connection and kind: a broken sender must not flood our own logs.
            reported.add(reason)
            log.warning("syslog: %s from %s; skipped (further ones on this connection are only counted)", message, peer)


def _reason(kind: str) -> str:
    return {"oversized": "oversized", "malformed": "malformed"}.get(kind, "malformed")
