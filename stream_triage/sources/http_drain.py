"""The HTTP drain source: ``POST /drain`` with logplex, NDJSON or plain-text bodies.

Replies 2xx only once the lines are on the pipeline's queue; when the queue is full the answer is 503
with ``Retry-After`` so the sender retries — never a silent drop. Logplex retries repeat
``Logplex-Frame-Id``; a frame id already accepted is acknowledged without being counted twice.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict

import orjson
from aiohttp import web

from stream_triage.config import HttpDrainSourceConfig
from stream_triage.records import RawRecord
from stream_triage.runner import PipelineRunner
from stream_triage.sources.files import log_object_record, split_lines
from stream_triage.sources.syslog_protocol import (
    LogplexFramingError,
    SyslogParseError,
    parse_logplex,
    parse_syslog,
    tokens_equal,
)
from stream_triage.telemetry import Metrics

log = logging.getLogger("stream_triage.sources.http_drain")

SOURCE = "http_drain"
_NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json"}


class HttpDrainSource:
    """The ``POST /drain`` handler and its duplicate-frame memory."""

    def __init__(
        self, config: HttpDrainSourceConfig, runner: PipelineRunner, metrics: Metrics, token: str | None = None
    ) -> None:
        self.config = config
        self.runner = runner
        self.metrics = metrics
        self.token = token
        self._frame_ids: OrderedDict[str, None] = OrderedDict()
        self.accepting = True

    def add_routes(self, app: web.Application) -> None:
        """Register ``POST {path}`` on the service's app."""
        app.router.add_post(self.config.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        """Accept one drain request."""
        if not self.accepting:
            return _error(503, "shutting down", retry_after=5)
        if self.token is not None and not self._authorised(request):
            self.metrics.auth_failures.labels(source=SOURCE).inc()
            return web.json_response(
                {"error": "missing or wrong drain token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="drain", Basic realm="drain"'},
            )
        ctype = request.content_type
        if ctype not in _NDJSON_TYPES and ctype not in ("application/logplex-1", "text/plain"):
            return _error(
                415,
                f"unsupported Content-Type {ctype!r}; use application/logplex-1, application/x-ndjson or text/plain",
            )
        frame_id = request.headers.get("Logplex-Frame-Id")
        if frame_id and frame_id in self._frame_ids:
            self.metrics.frames_rejected.labels(source=SOURCE, reason="duplicate").inc()
            return web.json_response({"accepted": 0, "duplicate": True})
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return _error(413, f"body larger than {limit} bytes")
        records, rejected = self._parse(bytes(body), ctype, request)
        if not self.accepting:
            # Shutdown began while the body arrived: the queue may be drained already, so a 2xx would lose it.
            return _error(503, "shutting down", retry_after=5)
        if not self.runner.offer(SOURCE, records):
            return _error(503, "pipeline queue full; retry", retry_after=1)
        if frame_id:
            self._remember(frame_id)
        if rejected:
            self.metrics.frames_rejected.labels(source=SOURCE, reason="malformed").inc(rejected)
        return web.json_response({"accepted": len(records), "rejected": rejected})

    def _authorised(self, request: web.Request) -> bool:
        assert self.token is not None
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return tokens_equal(value.strip(), self.token)
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Drain URLs carry `user:token@host`; some senders put the token in the user part instead.
            return tokens_equal(password, self.token) or tokens_equal(user, self.token)
        return False

    def _parse(self, body: bytes, ctype: str, request: web.Request) -> tuple[list[RawRecord], int]:
        records: list[RawRecord] = []
        rejected = 0
        if ctype == "application/logplex-1":
            try:
                frames = parse_logplex(body)
            except LogplexFramingError as exc:
                frames = exc.frames
                rejected += 1
                log.warning("drain: logplex body cut short (%s); kept %d complete frames", exc, len(frames))
            drain = request.headers.get("Logplex-Drain-Token", "drain")
            for frame in frames:
                try:
                    msg = parse_syslog(frame, sd_omitted=True)
                except SyslogParseError:
                    rejected += 1
                    continue
                source = f"{drain}/{msg.app_name or '-'}/{msg.procid or '-'}"
                records.extend(split_lines(RawRecord(msg.message, source, msg.timestamp, 0)))
        elif ctype in _NDJSON_TYPES:
            for raw in body.splitlines():
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    rejected += 1
                    continue
                for item in (
                    obj if isinstance(obj, list) else (obj.get("logs", [obj]) if isinstance(obj, dict) else [obj])
                ):
                    record = log_object_record(item, SOURCE, 0)
                    if isinstance(record, str):
                        rejected += 1
                    else:
                        records.extend(split_lines(record))
        else:
            text = body.decode("utf-8", "replace")
            source = request.headers.get("X-Source", SOURCE)
            records.extend(RawRecord(line, source, None, 0) for line in text.splitlines() if line)
        return records, rejected

    def _remember(self, frame_id: str) -> None:
        self._frame_ids[frame_id] = None
        if len(self._frame_ids) > self.config.dedupe_frame_ids:
            self._frame_ids.popitem(last=False)


def _error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)
