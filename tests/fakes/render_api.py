"""A local fake of Render's logs API: ``GET /v1/logs`` and the ``/v1/logs/subscribe`` WebSocket.

Follows the documented behaviour: bearer auth (401), ``ownerId`` and ``resource`` required (400),
``startTime``/``endTime`` window (inclusive), ``direction`` (forward/backward, default backward),
``limit`` (default 20, at most 100), repeated array params (``resource=a&resource=b``; also
``text``, ``level``, ``type``), pagination by ``hasMore``/``nextStartTime``/``nextEndTime``, and
429 responses with ``Ratelimit-*`` headers when a test asks for them. Timestamps are compared as
integer nanoseconds so paging is exact.

    async with RenderFake() as fake:
        fake.push(fake.make_log("srv-a", "hello"))
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)\Z")
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def to_ns(text: str) -> int:
    """Integer nanoseconds since the epoch from RFC 3339 text; ValueError when malformed."""
    m = _TS.match(text)
    if not m:
        raise ValueError(f"not RFC 3339: {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    frac = int((m.group(7) or "").ljust(9, "0"))
    zone = m.group(8)
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        secs -= offset if zone[0] == "+" else -offset
    return secs * 1_000_000_000 + frac


def from_ns(ns: int) -> str:
    """RFC 3339 UTC text with nanoseconds, as Render writes timestamps."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


@dataclass(slots=True)
class _Subscriber:
    resources: set[str]
    queue: asyncio.Queue[str]
    request: web.Request
    ws: web.WebSocketResponse
    filters: dict[str, list[str]] = field(default_factory=dict)


class RenderFake:
    """The fake server. Start it with ``async with``; every socket and the listener stop on exit."""

    def __init__(
        self, *, api_key: str = "rnd_fAkEkEy0123456789abcdef", owner_id: str = "tea-fake0001"
    ) -> None:
        self.api_key = api_key
        self.owner_id = owner_id
        self.logs: list[dict[str, Any]] = []
        self.requests: list[list[tuple[str, str]]] = []  # query items of every /v1/logs request
        self.subscribe_requests: list[list[tuple[str, str]]] = []
        self._ns: list[int] = []
        self._subs: list[_Subscriber] = []
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._ids = itertools.count(1)
        self._clock_ns = to_ns("2025-11-03T08:15:22.000000000Z")
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> RenderFake:
        app = web.Application()
        app.router.add_get("/v1/logs", self._logs)
        app.router.add_get("/v1/logs/subscribe", self._subscribe)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in self._subs:
            await sub.ws.close()
        self._subs.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests call --------------------------------------------------------------------------

    def make_log(
        self,
        resource: str,
        message: str,
        *,
        ts: str | None = None,
        level: str = "info",
        type: str = "app",  # the API's label name (shadows the builtin)
        instance: str | None = None,
    ) -> dict[str, Any]:
        """A log object as the API returns it. Without ``ts``, each log is 1 ms after the previous."""
        if ts is None:
            self._clock_ns += 1_000_000
            ts = from_ns(self._clock_ns)
        return {
            "id": f"log-{next(self._ids):08d}",
            "timestamp": ts,
            "message": message,
            "labels": [
                {"name": "resource", "value": resource},
                {"name": "instance", "value": instance or f"{resource}-5f7c9"},
                {"name": "level", "value": level},
                {"name": "type", "value": type},
            ],
        }

    def add(self, *logs: dict[str, Any]) -> None:
        """Store logs (visible to ``/v1/logs``) without sending them to subscribers."""
        for log in logs:
            self.logs.append(log)
            self._ns.append(to_ns(log["timestamp"]))

    def push(self, *logs: dict[str, Any]) -> None:
        """Store logs and send each to every open subscription whose filters it matches."""
        self.add(*logs)
        for log in logs:
            text = json.dumps(log)
            for sub in self._subs:
                if _matches(log, sub.resources, sub.filters):
                    sub.queue.put_nowait(text)

    def fail_next(self, count: int, status: int = 429, *, reset_s: int = 2) -> None:
        """The next ``count`` requests (either endpoint) fail with ``status`` (429 carries Ratelimit-*)."""
        headers = {}
        if status == 429:
            headers = {"Ratelimit-Limit": "30", "Ratelimit-Remaining": "0", "Ratelimit-Reset": str(reset_s)}
        self._failures += [(status, headers)] * count

    def drop_sockets(self) -> int:
        """Cut every open subscription abruptly (no close frame); return how many were cut."""
        subs, self._subs = self._subs, []
        for sub in subs:
            transport = sub.request.transport
            if transport is not None:
                transport.abort()
        return len(subs)

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions."""
        return len(self._subs)

    async def wait_subscribers(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until ``count`` subscriptions are open."""
        async with asyncio.timeout(timeout_s):
            while len(self._subs) < count:
                await asyncio.sleep(0.005)

    # --- handlers ---------------------------------------------------------------------------------

    def _check(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"id": "unauthorized", "message": "unauthorized"}, status=401)
        if self._failures:
            status, headers = self._failures.pop(0)
            return web.json_response({"message": "injected failure"}, status=status, headers=headers)
        q = request.query
        if "ownerId" not in q:
            return web.json_response({"message": "ownerId is required"}, status=400)
        if q["ownerId"] != self.owner_id:
            return web.json_response({"message": "not authorized for this owner"}, status=403)
        if not q.getall("resource", []):
            return web.json_response({"message": "at least one resource is required"}, status=400)
        return None

    async def _logs(self, request: web.Request) -> web.Response:
        self.requests.append(list(request.query.items()))
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        q = request.query
        try:
            end_ns = to_ns(q["endTime"]) if "endTime" in q else time.time_ns()
            start_ns = to_ns(q["startTime"]) if "startTime" in q else end_ns - 3600 * 1_000_000_000
            limit = int(q.get("limit", DEFAULT_LIMIT))
        except ValueError as exc:
            return web.json_response({"message": str(exc)}, status=400)
        if not 1 <= limit <= MAX_LIMIT:
            return web.json_response({"message": f"limit must be between 1 and {MAX_LIMIT}"}, status=400)
        direction = q.get("direction", "backward")
        if direction not in ("forward", "backward"):
            return web.json_response({"message": "direction must be forward or backward"}, status=400)
        resources = set(q.getall("resource"))
        filters = {k: q.getall(k) for k in ("text", "level", "type") if k in q}
        hits = sorted(
            (
                (ns, log["id"], log)
                for ns, log in zip(self._ns, self.logs, strict=True)
                if start_ns <= ns <= end_ns and _matches(log, resources, filters)
            ),
            key=lambda hit: (hit[0], hit[1]),
            reverse=direction == "backward",
        )
        page, rest = hits[:limit], hits[limit:]
        next_start, next_end = start_ns, end_ns
        if rest:
            if direction == "forward":
                next_start = rest[0][0]
            else:
                next_end = rest[0][0]
        return web.json_response(
            {
                "hasMore": bool(rest),
                "nextStartTime": from_ns(next_start),
                "nextEndTime": from_ns(next_end),
                "logs": [log for _, _, log in page],
            }
        )

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        self.subscribe_requests.append(list(request.query.items()))
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        q = request.query
        filters = {k: q.getall(k) for k in ("text", "level", "type") if k in q}
        ws = web.WebSocketResponse()
        sub = _Subscriber(set(q.getall("resource")), asyncio.Queue(), request, ws, filters)
        self._subs.append(sub)  # before the handshake completes, so no push after it is missed
        await ws.prepare(request)
        sender = asyncio.create_task(self._send_loop(sub))
        try:
            async for _ in ws:  # clients send nothing we need; this waits for the close
                pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if sub in self._subs:
                self._subs.remove(sub)
        return ws

    @staticmethod
    async def _send_loop(sub: _Subscriber) -> None:
        while True:
            text = await sub.queue.get()
            await sub.ws.send_str(text)


def _matches(log: dict[str, Any], resources: set[str], filters: dict[str, list[str]]) -> bool:
    labels = {label["name"]: label["value"] for label in log.get("labels", [])}
    if labels.get("resource") not in resources:
        return False
    for name, values in filters.items():
        if name == "text":
            if not any(v in log.get("message", "") for v in values):
                return False
        elif labels.get(name) not in values:
            return False
    return True
