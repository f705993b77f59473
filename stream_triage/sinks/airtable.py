"""The Airtable sink: delivers the outbox to a Production Issues table and reads human status back.

    IssueStore.apply ──(same transaction)──▶ outbox rows ──worker──▶ AirtableClient.upsert (by Fingerprint)

Every change is committed locally first; the worker delivers in order, idempotently (upsert by
Fingerprint), so an outage, a 429 storm or a restart loses nothing and duplicates nothing. Retryable
failures back off (honouring Airtable's penalty); permanent ones park only the offending issue, with
its error, for ``stream-triage doctor`` — the rest keep flowing. Before an occurrence update, and
periodically, Status / Fixed Time / Fix Notes / Fix Commit are read back: a record the team set to
FIXED that shows up again becomes REGRESSED (in Airtable and locally); IGNORED only keeps counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from stream_triage.config import Config
from stream_triage.records import ChangeKind, IssueChange, Status, StoredIssue
from stream_triage.report import iso
from stream_triage.sinks.airtable_client import (
    AirtableClient,
    AirtableFieldMap,
    AirtablePermanentError,
    AirtableRetryableError,
    RateLimiter,
    RemoteIssue,
    UpsertItem,
)
from stream_triage.sinks.outbox import Outbox, OutboxEntry
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.telemetry import Metrics

log = logging.getLogger("stream_triage.sinks.airtable")

SINK = "airtable"
_BATCH = 50


@dataclass(slots=True)
class _Due:
    """The outbox rows of one fingerprint in this round."""

    ids: list[int] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    attempts: int = 0

    @property
    def max_id(self) -> int:
        return max(self.ids)


def render_log_url(template: str) -> Callable[[StoredIssue], str | None]:
    """Build the Render Log URL of an issue from a template with ``{start}``, ``{end}``, ``{run_id}``.

    ``start``/``end`` are ISO times five minutes either side of the issue's last occurrence.
    """

    def build(issue: StoredIssue) -> str | None:
        if not template or issue.last_seen is None:
            return None
        return template.format(
            start=iso(issue.last_seen - 300), end=iso(issue.last_seen + 300), run_id=issue.run_id or ""
        )

    return build


class AirtableSink:
    """Background delivery of one store's outbox to Airtable."""

    name = SINK

    def __init__(
        self,
        client: AirtableClient,
        store: IssueStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        status_sync_interval_s: float = 300.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.client = client
        self.store = store
        self.outbox = Outbox(store, SINK)
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.status_sync_interval_s = status_sync_interval_s
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_sync = 0.0

    @classmethod
    def from_config(
        cls, config: Config, store: IssueStore, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> AirtableSink:
        """Build from ``[sinks.airtable]`` and ``AIRTABLE_API_KEY``."""
        a = config.sinks.airtable
        client = AirtableClient(
            config.secrets["AIRTABLE_API_KEY"],
            a.base_id,
            a.table,
            endpoint_url=a.endpoint_url or None,
            timeout_s=a.timeout_s,
            rate_limiter=RateLimiter(a.requests_per_second, penalty_s=a.rate_limit_penalty_s),
            field_map=AirtableFieldMap.from_mapping(a.fields),
            render_log_url=render_log_url(a.render_log_url) if a.render_log_url else None,
        )
        return cls(
            client,
            store,
            metrics,
            clock=clock,
            status_sync_interval_s=a.status_sync_interval_s,
            max_backoff_s=a.retry_max_backoff_s,
        )

    # ------------------------------------------------------------------ lifecycle
    def notify(self, changes: list[IssueChange]) -> None:
        """New changes are in the outbox: wake the worker."""
        if changes:
            self._wake.set()

    async def start(self) -> None:
        """Load known record ids and start the worker."""
        known = await asyncio.to_thread(self.outbox.record_ids)
        self.client.remember(known)
        self._next_sync = self.clock() + self.status_sync_interval_s
        self._task = asyncio.create_task(self._run(), name="airtable-sink")

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Deliver what is due within ``deadline_s``, then stop. Undelivered changes stay in the outbox."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), deadline_s)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.to_thread(self.client.close)

    async def _run(self) -> None:
        while True:
            try:
                handled = await self.deliver_once()
                if not self._stopping and self.clock() >= self._next_sync:
                    await self.sync_status()
            except Exception:  # never let the worker die; the outbox keeps everything
                log.exception("airtable delivery round failed; retrying shortly")
                handled = 0
                if self._stopping:
                    return
                await self.sleep(5)
            if self._stopping and handled == 0:
                return
            if handled:
                continue
            await self._idle()

    async def _idle(self) -> None:
        next_due = await asyncio.to_thread(self.outbox.next_due_at)
        now = self.clock()
        wait = self._next_sync - now
        if next_due is not None:
            wait = min(wait, next_due - now)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.05, wait))

    # ------------------------------------------------------------------ delivery
    async def deliver_once(self) -> int:
        """Deliver one batch of due changes; returns how many outbox rows it handled."""
        now = self.clock()
        entries = await asyncio.to_thread(self.outbox.due, now, _BATCH)
        if not entries:
            await self._gauge()
            return 0
        due = _group(entries)
        issues = await asyncio.to_thread(lambda: {fp: self.store.get(fp) for fp in due})
        gone = [fp for fp, issue in issues.items() if issue is None]
        if gone:  # rows for issues deleted from the store: nothing to deliver
            await asyncio.to_thread(self.outbox.ack, {fp: due[fp].max_id for fp in gone})
        live = {fp: i for fp, i in issues.items() if i is not None}
        status_only = [fp for fp in live if due[fp].kinds == {"status"}]
        updates = [fp for fp in live if fp not in status_only]
        try:
            items = await self._prepare(updates, live, due, now)
            ids = await asyncio.to_thread(self.client.upsert, items) if items else {}
            await self._delivered(ids, due, now)
            for fp in status_only:
                issue = live[fp]
                rid = await asyncio.to_thread(self.client.set_status, fp, issue.status, fixed_time=issue.fixed_time)
                await self._delivered({fp: rid} if rid else {}, due, now, ack=[fp])
        except AirtableRetryableError as exc:
            await self._delivered(exc.delivered, due, now)
            failed = [fp for fp in due if fp not in exc.delivered and fp in live]
            attempts = max((due[fp].attempts for fp in failed), default=0)
            wait = min(self.max_backoff_s, max(exc.retry_after_s or 0.0, 2.0 ** min(attempts, 16)))
            ids_ = [i for fp in failed for i in due[fp].ids]
            await asyncio.to_thread(self.outbox.defer, ids_, now + wait, str(exc))
            self.metrics.sink_errors.labels(sink=SINK, kind="retryable").inc()
            log.warning("airtable: %s; %d change(s) retry in %.0f s", exc, len(failed), wait)
        except AirtablePermanentError as exc:
            await self._delivered(exc.delivered, due, now)
            await self._isolate(exc, due, now)
        await self._gauge()
        return len(entries)

    async def _prepare(
        self, updates: list[str], issues: dict[str, StoredIssue], due: dict[str, _Due], now: float
    ) -> list[UpsertItem]:
        """Read human status back before updating, so a FIXED record that recurred becomes REGRESSED."""
        remote: dict[str, RemoteIssue] = {}
        known = [fp for fp in updates if self.client.known_record(fp) is not None]
        if known:
            remote = await asyncio.to_thread(self.client.read_status, known)
        items = []
        for fp in updates:
            issue = issues[fp]
            regression = "regressed" in due[fp].kinds
            r = remote.get(fp)
            if r is not None:
                issue, regressed = await self._reconcile(issue, r, now)
                regression = regression or regressed
            items.append(UpsertItem(issue, regression=regression, record_id=self.client.known_record(fp)))
        return items

    async def _reconcile(self, issue: StoredIssue, remote: RemoteIssue, now: float) -> tuple[StoredIssue, bool]:
        """Apply what humans set in Airtable to the local issue; True when it must be sent as REGRESSED."""
        status = remote.status
        if status is None or (status is issue.status and not remote.fix_notes and not remote.fix_commit):
            return issue, False
        if status is Status.FIXED and issue.status is not Status.REGRESSED:
            recurred = remote.fixed_time is None or issue.last_seen is None or issue.last_seen > remote.fixed_time
            if recurred:
                updated = await asyncio.to_thread(
                    self.store.sync_human_fields, issue.fingerprint, Status.REGRESSED,
                    fixed_time=remote.fixed_time, notes=remote.fix_notes, commit=remote.fix_commit, now=now,
                )  # fmt: skip
                self.metrics.issues_changed.labels(
                    severity=issue.severity.value, change=ChangeKind.REGRESSED.value
                ).inc()
                log.info("airtable: issue %s was FIXED and recurred: REGRESSED", issue.fingerprint)
                return updated or issue, True
        if status is not issue.status or remote.fix_notes or remote.fix_commit:
            updated = await asyncio.to_thread(
                self.store.sync_human_fields, issue.fingerprint, status,
                fixed_time=remote.fixed_time, notes=remote.fix_notes, commit=remote.fix_commit, now=now,
            )  # fmt: skip
            return updated or issue, False
        return issue, False

    async def _delivered(
        self, ids: dict[str, str], due: dict[str, _Due], now: float, ack: list[str] | None = None
    ) -> None:
        fps = list(ids) + [fp for fp in ack or [] if fp not in ids]
        if not fps:
            return
        await asyncio.to_thread(self.outbox.save_record_ids, ids)
        await asyncio.to_thread(self.outbox.ack, {fp: due[fp].max_id for fp in fps if fp in due})
        self.metrics.delivered(SINK, now, len(fps))

    async def _isolate(self, exc: AirtablePermanentError, due: dict[str, _Due], now: float) -> None:
        """A chunk failed permanently: send its issues one by one and park only those that fail."""
        for item in exc.failed:
            fp = item.issue.fingerprint
            try:
                rid = await asyncio.to_thread(self.client.upsert_one, item)
            except AirtablePermanentError as one:
                await asyncio.to_thread(self.outbox.park, due[fp].ids, str(one))
                self.metrics.sink_errors.labels(sink=SINK, kind="permanent").inc()
                log.error("airtable: parked issue %s: %s (see `stream-triage doctor airtable`)", fp, one)
            except AirtableRetryableError as one:
                wait = min(self.max_backoff_s, max(one.retry_after_s or 0.0, 2.0))
                await asyncio.to_thread(self.outbox.defer, due[fp].ids, now + wait, str(one))
                self.metrics.sink_errors.labels(sink=SINK, kind="retryable").inc()
            else:
                await self._delivered({fp: rid}, due, now)

    async def sync_status(self) -> int:
        """Mirror Status / Fixed Time / Fix Notes / Fix Commit of every known record into the store."""
        self._next_sync = self.clock() + self.status_sync_interval_s
        known = await asyncio.to_thread(self.outbox.record_ids)
        if not known:
            return 0
        try:
            remote = await asyncio.to_thread(self.client.read_status, list(known))
        except (AirtableRetryableError, AirtablePermanentError) as exc:
            log.warning("airtable: status sync failed: %s", exc)
            return 0
        changed = 0
        now = self.clock()
        for fp, r in remote.items():
            issue = await asyncio.to_thread(self.store.get, fp)
            if issue is None or r.status is None:
                continue
            if r.status is not issue.status or (r.fix_notes and r.fix_notes != issue.fix_notes):
                await asyncio.to_thread(
                    self.store.sync_human_fields, fp, r.status,
                    fixed_time=r.fixed_time, notes=r.fix_notes, commit=r.fix_commit, now=now,
                )  # fmt: skip
                changed += 1
        return changed

    async def _gauge(self) -> None:
        backlog = await asyncio.to_thread(self.outbox.backlog)
        parked = await asyncio.to_thread(lambda: len(self.outbox.parked()))
        self.metrics.outbox_backlog.labels(sink=SINK).set(backlog)
        self.metrics.outbox_parked.labels(sink=SINK).set(parked)


def _group(entries: list[OutboxEntry]) -> dict[str, _Due]:
    due: dict[str, _Due] = {}
    for e in entries:
        d = due.setdefault(e.fingerprint, _Due())
        d.ids.append(e.id)
        d.kinds.add(e.change)
        d.attempts = max(d.attempts, e.attempts)
    return due
