"""The HTTP drain source: ``POST /drain`` with logplex, NDJSON or plain-text bodies.

Replies 2xx only once the lines are on the pipeline's queue; when the queue is full the answer is 503
with ``Retry-After`` so the sender retries — never a silent drop. Logplex retries repeat
``Logplex-Frame-Id``; a frame id already accepted is acknowledged without being counted twice.

A request becomes one queue item: logplex and text bodies as ``LineBatch``es (clean logplex frames
through the C fast path of ``sources.batching``), NDJSON as records.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict

import orjson
from aiohttp import web

from stream_triage.config import HttpDrainSourceConfig
from stream_triage.records import LineBatch, RawRecord
from stream_triage.runner import PipelineRunner
from stream_triage.sources.batching import Batch, batch_lines, logplex_batches
from stream_triage.sources.files import log_object_record, split_lines
from stream_triage.sources.syslog_protocol import tokens_equal
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
        batches, rejected = self._parse(bytes(body), ctype, request)
        if not self.accepting:
            # Shutdown began while the body arrived: the queue may be drained already, so a 2xx would lose it.
            return _error(503, "shutting down", retry_after=5)
        if not self.runner.offer(SOURCE, *batches):
            return _error(503, "pipeline queue full; retry", retry_after=1)
        if frame_id:
            self._remember(frame_id)
        if rejected:
            self.metrics.frames_rejected.labels(source=SOURCE, reason="malformed").inc(rejected)
        return web.json_response({"accepted": sum(batch_lines(b) for b in batches), "rejected": rejected})

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

    def _parse(self, body: bytes, ctype: str, request: web.Request) -> tuple[list[Batch], int]:
        if ctype == "application/logplex-1":
            result = logplex_batches(body, request.headers.get("Logplex-Drain-Token", "drain"))
            if result.cut is not None:
                log.warning("drain: logplex body cut short (%s); kept %d complete frames", result.cut, result.kept)
            return result.batches, result.rejected
        records: list[RawRecord] = []
        rejected = 0
        if ctype in _NDJSON_TYPES:
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
            return ([records] if records else []), rejected
        # text/plain: splitlines() leaves no "\r" or "\n" in a line, so the lines fit one LineBatch as they are.
        lines = [line for line in body.decode("utf-8", "replace").splitlines() if line]
        if not lines:
            return [], 0
        source = request.headers.get("X-Source", SOURCE)
        return [LineBatch("\n".join(lines).encode("utf-8") + b"\n", [source])], 0

    def _remember(self, frame_id: str) -> None:
        self._frame_ids[frame_id] = None
        if len(self._frame_ids) > self.config.dedupe_frame_ids:
            self._frame_ids.popitem(last=False)


def _error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)
