"""Client for Render's logs API: windowed backfill (``GET /v1/logs``) and the live tail (WebSocket).

Errors are ``stream_triage.errors.SourceError`` and its retryable / permanent subclasses.

The API key goes only into the ``Authorization`` header: never into a log line or exception message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from stream_triage.errors import PermanentSourceError, RetryableSourceError, SourceError
from stream_triage.records import RawRecord
from stream_triage.sources.syslog_protocol import parse_rfc3339

__all__ = [
    "PermanentSourceError",
    "RenderLog",
    "RenderLogsClient",
    "RetryableSourceError",
    "SourceError",
    "format_rfc3339",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.render.com"
MAX_PAGE_LIMIT = 100  # the API's maximum page size

Sleep = Callable[[float], Awaitable[None]]
TimeArg = float | datetime | str


@dataclass(slots=True)
class RenderLog:
    """One log from the Render API. ``timestamp`` is epoch seconds; ``raw_timestamp`` the API's string
    (kept verbatim so a window can restart exactly there, with no float rounding)."""

    id: str
    timestamp: float
    message: str
    labels: dict[str, str] = field(default_factory=dict)
    raw_timestamp: str = ""

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> RenderLog:
        """Build from one API log object; raises ``ValueError`` when it lacks id or timestamp."""
        try:
            raw_ts = str(obj["timestamp"])
            log_id = str(obj["id"])
        except KeyError as exc:
            raise ValueError(f"Render log object without {exc.args[0]!r}") from None
        labels = {
            str(label.get("name")): str(label.get("value", ""))
            for label in obj.get("labels") or ()
            if isinstance(label, Mapping)
        }
        return cls(log_id, parse_rfc3339(raw_ts), str(obj.get("message", "")), labels, raw_ts)

    def to_raw(self, position: int = 0) -> RawRecord:
        """The pipeline's input record: source is the resource (service) id."""
        return RawRecord(
            text=self.message,
            source=self.labels.get("resource", "render"),
            ts=self.timestamp,
            position=position,
            log_id=self.id,
        )


def format_rfc3339(value: TimeArg) -> str:
    """RFC 3339 UTC text for an epoch float or datetime (naive means UTC); a string passes unchanged."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(float(value), UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _RecentIds:
    """Bounded LRU of log ids: dedupes page overlaps and WebSocket/backfill overlaps in O(1)."""

    __slots__ = ("_ids", "_max")

    def __init__(self, max_size: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._max = max_size

    def add(self, log_id: str) -> bool:
        """Remember ``log_id``; False when it was already there."""
        if log_id in self._ids:
            self._ids.move_to_end(log_id)
            return False
        self._ids[log_id] = None
        if len(self._ids) > self._max:
            self._ids.popitem(last=False)
        return True


class RenderLogsClient:
    """Render logs API client for one owner (workspace).

    ``session`` may be shared (then the caller closes it); otherwise one is made on first use and closed
    by ``close()`` or ``async with``. ``sleep`` and ``rng`` are injectable so back-off is testable
    without waiting.
    """

    def __init__(
        self,
        api_key: str,
        owner_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 5,
        max_backoff_s: float = 60.0,
        request_timeout_s: float = 30.0,
        max_reconnects: int = 10,
        heartbeat_s: float = 30.0,
        dedupe_ids: int = 10_000,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise PermanentSourceError("RENDER_API_KEY is empty: set it to a Render API key")
        if not owner_id:
            raise PermanentSourceError("Render ownerId is empty: set it to your workspace id (tea-…)")
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.owner_id = owner_id
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self.max_retries = max_retries
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s
        self.max_reconnects = max_reconnects
        self.heartbeat_s = heartbeat_s
        self.dedupe_ids = dedupe_ids
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock

    def __repr__(self) -> str:
        return f"RenderLogsClient(owner_id={self.owner_id!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> RenderLogsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client made it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No session-wide total: it would also bound the life of the WebSocket. GETs set their own.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout_s)
            )
            self._owns_session = True
        return self._session

    def _params(
        self,
        resources: Sequence[str],
        text: str | Sequence[str] | None,
        level: str | Sequence[str] | None,
        type: str | Sequence[str] | None,  # the API's parameter name (shadows the builtin)
    ) -> list[tuple[str, str]]:
        if isinstance(resources, str):
            resources = [resources]
        if not resources:
            raise PermanentSourceError("no Render resource ids given: pass at least one service id (srv-…)")
        params = [("ownerId", self.owner_id)]
        params += [("resource", r) for r in resources]
        for name, value in (("text", text), ("level", level), ("type", type)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            params += [(name, v) for v in values]  # array params repeat the key
        return params

    # --- windowed fetch -----------------------------------------------------------------------------

    async def fetch_window(
        self,
        start: TimeArg | None,
        end: TimeArg | None,
        resources: Sequence[str],
        *,
        text: str | Sequence[str] | None = None,
        level: str | Sequence[str] | None = None,
        type: str | Sequence[str] | None = None,  # the API's parameter name (shadows the builtin)
        limit: int = MAX_PAGE_LIMIT,
        direction: str = "forward",
        on_page: Callable[[int, float | None], None] | None = None,
    ) -> AsyncIterator[RenderLog]:
        """Yield every log in [start, end] across pages, in the API's order for ``direction``.

        ``start``/``end`` are epoch seconds, datetimes or RFC 3339 strings (passed verbatim); None
        leaves the API's default. Pages follow ``nextStartTime``/``nextEndTime`` while ``hasMore``;
        a log repeated across a page boundary is yielded once. ``on_page(n_so_far, last_ts)`` runs
        after each page. Raises ``PermanentSourceError`` (rejected key, bad request) or
        ``RetryableSourceError`` (rate limit or server errors beyond ``max_retries``).
        """
        if direction not in ("forward", "backward"):
            raise PermanentSourceError(f"direction must be 'forward' or 'backward', got {direction!r}")
        limit = max(1, min(int(limit), MAX_PAGE_LIMIT))
        base = self._params(resources, text, level, type)
        base += [("direction", direction), ("limit", str(limit))]
        start_s = None if start is None else format_rfc3339(start)
        end_s = None if end is None else format_rfc3339(end)
        seen = _RecentIds(max(self.dedupe_ids, 4 * limit))
        count = 0
        last_ts: float | None = None
        while True:
            params = list(base)
            if start_s is not None:
                params.append(("startTime", start_s))
            if end_s is not None:
                params.append(("endTime", end_s))
            page = await self._get_json("/v1/logs", params)
            new = 0
            for obj in page.get("logs") or ():
                try:
                    item = RenderLog.from_api(obj)
                except (ValueError, TypeError, AttributeError) as exc:
                    log.warning("skipping malformed Render log object: %s", exc)
                    continue
                if not seen.add(item.id):
                    continue
                new += 1
                count += 1
                last_ts = item.timestamp
                yield item
            if on_page is not None:
                on_page(count, last_ts)
            if not page.get("hasMore"):
                return
            next_start, next_end = page.get("nextStartTime"), page.get("nextEndTime")
            if (next_start, next_end) == (start_s, end_s) and new == 0:
                # Same window again with nothing new: following it would loop forever.
                raise RetryableSourceError(
                    f"Render API pagination did not advance at startTime={start_s} endTime={end_s}"
                )
            start_s = next_start if next_start is not None else start_s
            end_s = next_end if next_end is not None else end_s

    async def _get_json(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        url = self.base_url + path
        attempt = 0
        while True:
            delay: float | None
            what: str
            try:
                timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
                async with self._http().get(url, params=params, headers=self._headers, timeout=timeout) as resp:
                    if resp.status == 200:
                        body = await resp.read()
                        try:
                            data = orjson.loads(body)
                        except orjson.JSONDecodeError:
                            raise RetryableSourceError(f"Render API returned invalid JSON for GET {path}") from None
                        if not isinstance(data, dict):
                            raise RetryableSourceError(f"Render API returned a non-object for GET {path}")
                        return data
                    if resp.status in (401, 403):
                        raise PermanentSourceError(
                            f"RENDER_API_KEY rejected (HTTP {resp.status} on GET {path}): check the key and ownerId"
                        )
                    text = (await resp.text(errors="replace"))[:300]
                    if resp.status == 429:
                        delay = _rate_limit_wait(resp.headers)
                        what = "rate limited (HTTP 429)"
                    elif resp.status >= 500:
                        delay = None
                        what = f"HTTP {resp.status}"
                    else:
                        raise PermanentSourceError(f"Render API refused GET {path} (HTTP {resp.status}): {text}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                delay = None
                what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            attempt += 1
            if attempt > self.max_retries:
                raise RetryableSourceError(
                    f"Render API GET {path} still failing after {self.max_retries} retries: {what}"
                )
            wait = self._backoff(attempt) if delay is None else min(delay, self.max_backoff_s)
            log.info("Render API GET %s: %s; retry %d in %.1fs", path, what, attempt, wait)
            await self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter in [50%, 100%] so many clients do not retry in lockstep.
        ceiling = min(self.max_backoff_s, 0.5 * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    # --- live tail ----------------------------------------------------------------------------------

    async def subscribe(
        self,
        resources: Sequence[str],
        *,
        text: str | Sequence[str] | None = None,
        level: str | Sequence[str] | None = None,
        type: str | Sequence[str] | None = None,  # the API's parameter name (shadows the builtin)
        since: TimeArg | None = None,
    ) -> AsyncIterator[RenderLog]:
        """Yield logs live from ``/v1/logs/subscribe``, forever, losing and repeating none across drops.

        On every reconnect the gap since the last log seen (or since the first connection) is
        backfilled through ``/v1/logs``, after the new socket is open so nothing falls between the
        two; ids are deduped with a bounded LRU. ``since`` backfills from that time on the first
        connection too. Reconnects back off exponentially with jitter; ``max_reconnects`` failures in
        a row raise ``RetryableSourceError``. A rejected key raises ``PermanentSourceError``.
        Close the iterator (``contextlib.aclosing``) to stop it.
        """
        params = self._params(resources, text, level, type)
        seen = _RecentIds(self.dedupe_ids)
        cursor: str | None = None if since is None else format_rfc3339(since)
        failures = 0
        url = self.base_url + "/v1/logs/subscribe"
        while True:
            try:
                ws = await self._http().ws_connect(
                    url, params=params, headers=self._headers, heartbeat=self.heartbeat_s
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    raise PermanentSourceError(
                        f"RENDER_API_KEY rejected (HTTP {exc.status} on the log subscription): "
                        "check the key and ownerId"
                    ) from None
                if 400 <= exc.status < 500 and exc.status != 429:
                    raise PermanentSourceError(f"Render API refused the log subscription (HTTP {exc.status})") from None
                wait_hint = _rate_limit_wait(exc.headers) if exc.status == 429 and exc.headers else None
                failures = await self._reconnect_wait(failures, f"HTTP {exc.status}", wait_hint)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures = await self._reconnect_wait(failures, exc.__class__.__name__, None)
                continue
            try:
                failures = 0
                if cursor is not None:
                    async for item in self.fetch_window(cursor, None, resources, text=text, level=level, type=type):
                        if seen.add(item.id):
                            cursor = item.raw_timestamp
                            yield item
                else:
                    # Nothing seen yet: a gap after a drop starts at this first connection.
                    cursor = format_rfc3339(self._clock())
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT and msg.type is not aiohttp.WSMsgType.BINARY:
                        break
                    for item in _ws_logs(msg.data):
                        if seen.add(item.id):
                            cursor = item.raw_timestamp
                            yield item
                reason = f"socket closed ({ws.close_code})"
            finally:
                await ws.close()
            failures = await self._reconnect_wait(failures, reason, None)

    async def _reconnect_wait(self, failures: int, reason: str, wait_hint: float | None) -> int:
        failures += 1
        if failures > self.max_reconnects:
            raise RetryableSourceError(
                f"Render log subscription failed {self.max_reconnects} times in a row; last: {reason}"
            )
        wait = self._backoff(failures) if wait_hint is None else min(wait_hint, self.max_backoff_s)
        log.info("Render log subscription: %s; reconnecting in %.1fs", reason, wait)
        await self._sleep(wait)
        return failures


def _ws_logs(data: str | bytes) -> list[RenderLog]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("skipping a non-JSON message on the Render log subscription")
        return []
    objs = payload if isinstance(payload, list) else [payload]
    out = []
    for obj in objs:
        try:
            out.append(RenderLog.from_api(obj))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("skipping malformed Render log object: %s", exc)
    return out


def _rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Ratelimit-Reset`` (seconds until the window resets) or ``Retry-After``."""
    for name in ("Ratelimit-Reset", "Retry-After"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            continue
    return None
