"""``stream-triage backfill`` and ``tail``: triage logs pulled from Render's logs API.

``backfill`` re-analyses a past window (or one run, by its id) — the old system's manual step — with a
progress bar; ``tail`` follows the live WebSocket in a terminal and prints issues as runs flush.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import UTC, datetime, timedelta

from tqdm import tqdm

from stream_triage.config import Config, load_config
from stream_triage.errors import ConfigError, SourceError
from stream_triage.pipeline.parse import parse_iso_time
from stream_triage.records import EndReason, RunFlush
from stream_triage.report import iso
from stream_triage.session import TriageSession
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.sources.files import split_lines
from stream_triage.sources.render_api import RenderLogsClient


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backfill`` and ``tail``."""
    bf = sub.add_parser("backfill", help="pull a time window (or one run) from Render's logs API and triage it")
    window = bf.add_mutually_exclusive_group(required=True)
    window.add_argument("--run-id", help="a run id (YYMMDD-HHMMSS[-Client]); its window is derived from it")
    window.add_argument("--since", help="window start, RFC 3339 (e.g. 2025-11-03T08:00:00Z)")
    bf.add_argument("--until", help="window end, RFC 3339 (default: now)")
    bf.add_argument("--max-run-hours", type=float, default=3.0, help="with --run-id: how long a run may last")
    bf.add_argument(
        "--run-id-utc-offset-hours", type=float, default=0.0, help="with --run-id: the app's clock offset from UTC"
    )
    _render_args(bf)
    bf.add_argument("--no-store", action="store_true", help="do not write to the issue store")
    bf.add_argument("--json", action="store_true", help="print runs and issues as JSON")
    bf.add_argument("--no-progress", action="store_true", help="no progress bar")
    bf.set_defaults(func=cmd_backfill)

    tail = sub.add_parser("tail", help="follow Render's live logs, triage them and print issues as runs flush")
    _render_args(tail)
    tail.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    tail.set_defaults(func=cmd_tail)


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resource", action="append", help="service id srv-… (repeatable; default from config)")
    p.add_argument("--owner-id", help="workspace id (default: sources.render_tail.owner_id)")
    p.add_argument("--api-base-url", help="Render API base URL (default: sources.render_tail.api_base_url)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--db", help="SQLite store path")


def run_window(run_id: str, max_hours: float, offset_hours: float) -> tuple[datetime, datetime]:
    """The API window covering a run: from a minute before its id's start time to ``max_hours`` later."""
    try:
        start = datetime.strptime(run_id[:13], "%y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError([f"--run-id: {run_id!r} is not a run id of the form YYMMDD-HHMMSS"]) from None
    start -= timedelta(hours=offset_hours)
    return start - timedelta(minutes=1), start + timedelta(hours=max_hours)


def _sinks(config: Config) -> tuple[str, ...]:
    return ("airtable",) if config.airtable_enabled else ()


def _client(config: Config, args: argparse.Namespace) -> tuple[RenderLogsClient, list[str]]:
    tail = config.sources.render_tail
    key = config.secrets.get("RENDER_API_KEY")
    owner = args.owner_id or tail.owner_id
    resources = args.resource or tail.resources
    problems = []
    if not key:
        problems.append("RENDER_API_KEY: set it in the environment (Render → Account Settings → API Keys)")
    if not owner:
        problems.append("--owner-id: required (or sources.render_tail.owner_id), your workspace id tea-…")
    if not resources:
        problems.append("--resource: name at least one service id srv-… (or sources.render_tail.resources)")
    if problems:
        raise ConfigError(problems)
    assert key is not None
    return RenderLogsClient(key, owner, base_url=args.api_base_url or tail.api_base_url), resources


def cmd_backfill(args: argparse.Namespace) -> int:
    """``stream-triage backfill``."""
    from stream_triage.cli import print_report

    config = load_config(args.config)
    if args.db:
        config.store.path = args.db
    if args.run_id:
        start, end = run_window(args.run_id, args.max_run_hours, args.run_id_utc_offset_hours)
        base = args.run_id[:13]
    else:
        since = parse_iso_time(args.since)
        until = parse_iso_time(args.until) if args.until else time.time()
        if since is None or until is None:
            raise ConfigError(["--since/--until: use RFC 3339 times such as 2025-11-03T08:00:00Z"])
        start, end = datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC)
        base = None
    client, resources = _client(config, args)
    store = None if args.no_store else IssueStore(config.store.path, outbox_sinks=_sinks(config))
    keep = (lambda f: f.run.run_id == base) if base else None
    session = TriageSession(config, store, keep=keep)
    try:
        count = asyncio.run(_pull(client, session, resources, start, end, not args.no_progress))
    except SourceError as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 1
    finally:
        session.finish(EndReason.EOF)
        if store is not None:
            store.close()
    if not args.json:
        print(f"Fetched {count:,} logs from {iso(start.timestamp())} to {iso(end.timestamp())}")
    print_report(session, args.json, 1, None if store is None else config.store.path)
    return 0


async def _pull(
    client: RenderLogsClient, session: TriageSession, resources: list[str], start: datetime, end: datetime,
    progress: bool,
) -> int:  # fmt: skip
    total = max(1.0, end.timestamp() - start.timestamp())
    bar = tqdm(total=round(total), unit="s of logs", file=sys.stderr, disable=not progress, leave=False)
    done = 0
    count = 0

    def on_page(n: int, last_ts: float | None) -> None:
        nonlocal done
        if last_ts is not None:
            now_done = round(min(total, max(0.0, last_ts - start.timestamp())))
            bar.update(now_done - done)
            done = now_done
        bar.set_postfix(logs=n)

    try:
        async with client:
            async for log in client.fetch_window(start, end, resources, on_page=on_page):
                count += 1
                for record in split_lines(log.to_raw(count)):
                    session.feed(record)
    finally:
        bar.close()
    return count


def cmd_tail(args: argparse.Namespace) -> int:
    """``stream-triage tail``."""
    config = load_config(args.config)
    if args.db:
        config.store.path = args.db
    client, resources = _client(config, args)
    store = IssueStore(config.store.path, outbox_sinks=_sinks(config))

    def show(flushes: list[RunFlush]) -> None:
        for flush in flushes:
            for issue in flush.issues:
                print(
                    f"{iso(issue.last_seen) or '-'} {issue.severity.value:<8} {issue.fingerprint[:8]} "
                    f"{issue.occurrences:>4}× {flush.run.run_id or 'system'} {issue.pattern_id}: {issue.message[:160]}",
                    flush=True,
                )

    session = TriageSession(config, store, on_flush=show, batch=1)
    try:
        asyncio.run(_follow(client, session, resources, args.duration))
    except KeyboardInterrupt:
        pass
    except SourceError as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 1
    finally:
        session.finish(EndReason.SHUTDOWN)
        store.close()
    return 0


async def _follow(
    client: RenderLogsClient, session: TriageSession, resources: list[str], duration: float | None
) -> None:
    async def ticker() -> None:
        while True:
            await asyncio.sleep(1)
            session.tick(time.time())

    async def consume() -> None:
        stream = client.subscribe(resources)
        async with contextlib.aclosing(stream):
            async for log in stream:
                for record in split_lines(log.to_raw()):
                    session.feed(record, time.time())

    tick = asyncio.create_task(ticker())
    try:
        async with client:
            if duration is None:
                await consume()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(consume(), duration)
    finally:
        tick.cancel()
        await asyncio.gather(tick, return_exceptions=True)
