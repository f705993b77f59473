"""The Render logs API client against a local fake that follows the documented API."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest

from stream_triage.sources.render_api import (
    PermanentSourceError,
    RenderLog,
    RenderLogsClient,
    RetryableSourceError,
)
from tests.fakes.render_api import RenderFake, to_ns

SRV = "srv-d3k8abc"
OTHER = "srv-other42"


class SleepRecorder:
    """An injected sleep: records each requested wait and yields to the loop without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async scenario on a fresh loop, bounded so a hang fails instead of blocking."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), 60)

    asyncio.run(bounded())


def client_for(fake: RenderFake, sleep: SleepRecorder, **kw: Any) -> RenderLogsClient:
    """A client pointed at the fake, with no real waiting and deterministic jitter."""
    return RenderLogsClient(
        fake.api_key, fake.owner_id, base_url=fake.base_url, sleep=sleep, rng=random.Random(1), **kw
    )


def node_line(i: int) -> str:
    """A realistic line of the Node service."""
    return f"[251103-081522] [Ann-Lee] [lead_scoring] [INFO] scored lead {i} in {40 + i % 17}ms"


async def collect(it: Any) -> list[RenderLog]:
    """Drain an async iterator."""
    return [item async for item in it]


async def wait_for_count(items: list[RenderLog], count: int) -> None:
    """Wait (bounded) until a consumer task has gathered ``count`` items."""
    async with asyncio.timeout(20):
        while len(items) < count:
            await asyncio.sleep(0.005)


def test_window_of_250_logs_comes_back_complete_in_order_over_three_pages() -> None:
    """250 logs in the window arrive once each, ascending, over 3 pages of 100/100/50."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            wanted = [fake.make_log(SRV, node_line(i)) for i in range(250)]
            fake.add(*wanted)
            fake.add(fake.make_log(OTHER, "another service's line"))  # filtered out by resource
            sleep = SleepRecorder()
            pages: list[tuple[int, float | None]] = []
            async with client_for(fake, sleep) as client:
                got = await collect(
                    client.fetch_window(
                        "2025-11-03T08:00:00Z",
                        "2025-11-03T09:00:00Z",
                        [SRV],
                        on_page=lambda n, ts: pages.append((n, ts)),
                    )
                )
            assert [g.id for g in got] == [w["id"] for w in wanted]
            assert [g.message for g in got] == [node_line(i) for i in range(250)]
            assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(got))
            assert got[0].labels == {
                "resource": SRV,
                "instance": f"{SRV}-5f7c9",
                "level": "info",
                "type": "app",
            }
            assert [n for n, _ in pages] == [100, 200, 250]
            assert pages[-1][1] == got[-1].timestamp
            assert len(fake.requests) == 3
            second = dict(fake.requests[1])
            assert (second["startTime"], second["endTime"]) == (
                wanted[100]["timestamp"],
                "2025-11-03T09:00:00.000000000Z",
            )
            assert sleep.waits == []
            raw = got[0].to_raw(position=1)
            assert (raw.text, raw.source, raw.log_id, raw.ts) == (
                got[0].message,
                SRV,
                got[0].id,
                got[0].timestamp,
            )

    run(scenario)


def test_backward_window_and_repeated_array_params() -> None:
    """direction=backward yields newest first; resources and types repeat as array params."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            logs = [fake.make_log(SRV if i % 2 else OTHER, node_line(i), type="app") for i in range(120)]
            logs.append(fake.make_log(SRV, "==> Build successful 🎉", type="build"))
            logs.append(fake.make_log(SRV, 'clientIP="203.0.113.7" responseTimeMS=412', type="request"))
            fake.add(*logs)
            async with client_for(fake, SleepRecorder()) as client:
                got = await collect(
                    client.fetch_window(
                        "2025-11-03T08:00:00Z",
                        "2025-11-03T09:00:00Z",
                        [SRV, OTHER],
                        type=["app", "build"],
                        direction="backward",
                        limit=50,
                    )
                )
            assert [g.id for g in got] == [log["id"] for log in reversed(logs[:121])]
            query = fake.requests[0]
            assert [v for k, v in query if k == "resource"] == [SRV, OTHER]
            assert [v for k, v in query if k == "type"] == ["app", "build"]
            assert dict(query)["limit"] == "50" and dict(query)["direction"] == "backward"

    run(scenario)


def test_429_waits_for_ratelimit_reset_then_completes() -> None:
    """A 429 with Ratelimit-Reset: 3 makes the client wait 3 s (injected) and retry; nothing is lost."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            fake.add(*(fake.make_log(SRV, node_line(i)) for i in range(150)))
            sleep = SleepRecorder()
            async with client_for(fake, sleep) as client:
                stream = client.fetch_window("2025-11-03T08:00:00Z", "2025-11-03T09:00:00Z", [SRV])
                first = await anext(stream)
                for _ in range(99):
                    await anext(stream)
                fake.fail_next(2, 429, reset_s=3)  # the second page is rate-limited twice
                rest = await collect(stream)
            assert sleep.waits == [3.0, 3.0]
            assert 1 + 99 + len(rest) == 150
            assert first.message == node_line(0) and rest[-1].message == node_line(149)

    run(scenario)


def test_server_errors_back_off_then_give_up_with_a_retryable_error() -> None:
    """5xx is retried with growing jittered waits; past max_retries a RetryableSourceError names it."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            fake.add(fake.make_log(SRV, node_line(1)))
            sleep = SleepRecorder()
            async with client_for(fake, sleep, max_retries=3) as client:
                fake.fail_next(2, 503)
                got = await collect(client.fetch_window("2025-11-03T08:00:00Z", None, [SRV]))
                assert [g.message for g in got] == [node_line(1)]
                assert len(sleep.waits) == 2 and sleep.waits[0] < sleep.waits[1]
                fake.fail_next(10, 429, reset_s=1)
                with pytest.raises(RetryableSourceError, match="after 3 retries: rate limited"):
                    await collect(client.fetch_window("2025-11-03T08:00:00Z", None, [SRV]))

    run(scenario)


def test_rejected_key_is_a_clear_error_that_never_shows_the_key() -> None:
    """401 from either endpoint says to check RENDER_API_KEY and ownerId, without the key itself."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            secret = "rnd_wrongKEY9876543210zyxw"
            client = RenderLogsClient(secret, fake.owner_id, base_url=fake.base_url, sleep=SleepRecorder())
            async with client:
                with pytest.raises(PermanentSourceError) as window_error:
                    await collect(client.fetch_window(None, None, [SRV]))
                with pytest.raises(PermanentSourceError) as tail_error:
                    await collect(client.subscribe([SRV]))
            for info in (window_error, tail_error):
                text = str(info.value)
                assert "RENDER_API_KEY rejected" in text and "check the key and ownerId" in text
                assert secret not in text and secret not in repr(info.value)
                assert info.value.__cause__ is None
            assert secret not in repr(client)

    run(scenario)


def test_fake_requires_owner_and_resource_and_caps_limit() -> None:
    """The fake refuses what the real API refuses: no ownerId, no resource, limit over 100."""

    async def scenario() -> None:
        async with RenderFake() as fake, aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {fake.api_key}"}
            url = fake.base_url + "/v1/logs"
            for params, status in (
                ({"resource": SRV}, 400),
                ({"ownerId": fake.owner_id}, 400),
                ({"ownerId": fake.owner_id, "resource": SRV, "limit": "101"}, 400),
                ({"ownerId": fake.owner_id, "resource": SRV}, 200),
            ):
                async with http.get(url, params=params, headers=auth) as resp:
                    assert resp.status == status, params

    run(scenario)


def test_subscribe_survives_a_dropped_socket_without_losing_or_repeating_lines() -> None:
    """Live tail: logs pushed while the socket was down arrive once via backfill; none twice."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            sleep = SleepRecorder()
            client = client_for(fake, sleep)
            got: list[RenderLog] = []

            async def consume() -> None:
                async with contextlib.aclosing(client.subscribe([SRV], since="2025-11-03T08:00:00Z")) as tail:
                    async for item in tail:
                        got.append(item)
                        if len(got) == 45:
                            return

            pushed: list[dict[str, Any]] = []

            def push(n: int) -> None:
                batch = [fake.make_log(SRV, node_line(len(pushed) + i)) for i in range(n)]
                pushed.extend(batch)
                fake.push(*batch)

            async with client:
                task = asyncio.create_task(consume())
                await fake.wait_subscribers(1)
                push(10)
                await wait_for_count(got, 10)
                assert fake.drop_sockets() == 1
                push(15)  # the gap: no socket is open, so only /v1/logs has these
                await fake.wait_subscribers(1)
                push(10)  # after reconnect: over the socket, possibly also seen by the backfill
                await wait_for_count(got, 35)
                fake.drop_sockets()
                push(10)
                await asyncio.wait_for(task, 20)
            ids = [g.id for g in got]
            assert len(ids) == len(set(ids)) == 45
            assert sorted(ids) == sorted(p["id"] for p in pushed)
            assert [g.message for g in got] == [p["message"] for p in pushed]  # order kept too
            assert len(sleep.waits) == 2  # one back-off per drop
            backfills = [dict(q) for q in fake.requests]
            assert backfills[0]["startTime"] == "2025-11-03T08:00:00Z"  # since= on first connect, verbatim
            assert backfills[1]["startTime"] == pushed[9]["timestamp"]  # from the last line seen, verbatim
            assert to_ns(backfills[2]["startTime"]) >= to_ns(pushed[24]["timestamp"])

    run(scenario)


def test_subscribe_gives_up_after_bounded_reconnects() -> None:
    """When every reconnect fails, the tail raises RetryableSourceError after max_reconnects tries."""

    async def scenario() -> None:
        async with RenderFake() as fake:
            sleep = SleepRecorder()
            async with client_for(fake, sleep, max_reconnects=4) as client:
                fake.fail_next(100, 503)
                with pytest.raises(RetryableSourceError, match="failed 4 times in a row; last: HTTP 503"):
                    await collect(client.subscribe([SRV]))
            assert len(sleep.waits) == 4
            assert all(0 < w <= 60 for w in sleep.waits)

    run(scenario)
