"""The Airtable sink: delivers the outbox to a Production Issues table and reads human status back.

    IssueStore.apply ──(same transaction)──▶ outbox rows ──worker──▶ AirtableClient.upsert (by Fingerprint)

Every change is committed locally first; the worker delivers strictly in outbox order, idempotently
(upsert by Fingerprint), so an outage, a 429 storm or a restart loses nothing and duplicates nothing.
Retryable failures back off (honouring Airtable's penalty); a permanent refusal of a record (422: an
unknown field, a bad value) parks only that issue, with its error, for ``stream-triage doctor`` — the
rest keep flowing. A refusal that is not about a record (a rejected key, a missing table) parks
nothing: every change waits with a long backoff until the cause is fixed.

Two-way status: before an occurrence update, and periodically for issues with nothing pending,
Status / Fixed Time / Fix Notes / Fix Commit are read back. Airtable's Status wins, except that a
record the team set to FIXED whose error occurs after its Fixed Time becomes REGRESSED (in Airtable
and locally); IGNORED only keeps counting. A status set locally (``issues set-status``) and not yet
delivered wins over Airtable's older value and is sent with its fix notes and commit.
"""

from __future__ import annotations

import asyncio
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


def rate_limiter(
    requests_per_second: float,
    *,
    penalty_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RateLimiter:
    """A limiter that sends at most ``requests_per_second`` requests in any one-second window.

    A token bucket lets ``burst + rate`` requests into a window, so the steady rate is one less than
    the cap (4/s for Airtable's 5): with a full bucket, a rate of 5 would put 6 requests into one
    second and earn a 30 s penalty.
    """
    rate = requests_per_second - 1 if requests_per_second >= 2 else requests_per_second / 2
    return RateLimiter(rate, burst=1, penalty_s=penalty_s, clock=clock, sleep=sleep)


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
            rate_limiter=rate_limiter(a.requests_per_second, penalty_s=a.rate_limit_penalty_s),
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
        # Clear before reading the outbox: a notify() after this point is not lost.
        self._wake.clear()
        next_due = await asyncio.to_thread(self.outbox.next_due_at)
        now = self.clock()
        wait = self._next_sync - now
        if next_due is not None:
            wait = min(wait, next_due - now)
        if self._wake.is_set():
            return
        woken = asyncio.ensure_future(self._wake.wait())
        slept = asyncio.ensure_future(self.sleep(max(0.05, wait)))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, slept):
                task.cancel()
            await asyncio.gather(woken, slept, return_exceptions=True)

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
        # A status a person set locally (`issues set-status`) goes as its own request, after any update.
        with_status = [fp for fp in live if "status" in due[fp].kinds]
        updates = [fp for fp in live if due[fp].kinds != {"status"}]
        done: set[str] = set()
        try:
            items = await self._prepare(updates, live, due, now)
            ids = await asyncio.to_thread(self.client.upsert, items) if items else {}
            done |= await self._delivered(ids, due, now, skip=with_status)
            for fp in with_status:
                done |= await self._deliver_status(fp, due, now)
        except AirtableRetryableError as exc:
            done |= await self._delivered(exc.delivered, due, now, skip=with_status)
            failed = [fp for fp in live if fp not in done]
            attempts = max((due[fp].attempts for fp in failed), default=0)
            wait = min(self.max_backoff_s, max(exc.retry_after_s or 0.0, 2.0 ** min(attempts, 16)))
            await self._defer(failed, due, now + wait, str(exc))
            self.metrics.sink_errors.labels(sink=SINK, kind="retryable").inc()
            log.warning("airtable: %s; %d change(s) retry in %.0f s", exc, len(failed), wait)
        except AirtablePermanentError as exc:
            done |= await self._delivered(exc.delivered, due, now, skip=with_status)
            if exc.failed and _about_the_records(exc):
                await self._isolate(exc, due, now, with_status)
            else:
                # Not about any one issue (a rejected key, a missing table or merge field): parking
                # would strand every change, so all of them wait, with a long backoff, for a fix.
                failed = [fp for fp in live if fp not in done]
                attempts = max((due[fp].attempts for fp in failed), default=0)
                wait = min(self.max_backoff_s, max(30.0, 2.0 ** min(attempts, 16)))
                await self._defer(failed, due, now + wait, str(exc))
                self.metrics.sink_errors.labels(sink=SINK, kind="permanent").inc()
                log.error("airtable: %s; %d change(s) wait %.0f s (see `stream-triage doctor airtable`)",
                          exc, len(failed), wait)  # fmt: skip
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
            # A status set locally and not yet delivered is newer than Airtable's: it wins.
            if r is not None and r.status is not None and "status" not in due[fp].kinds:
                issue, regression = await self._reconcile(issue, r, now)
            items.append(UpsertItem(issue, regression=regression, record_id=self.client.known_record(fp)))
        return items

    async def _reconcile(self, issue: StoredIssue, remote: RemoteIssue, now: float) -> tuple[StoredIssue, bool]:
        """Take what people set in Airtable into the local issue; True when it must be sent as REGRESSED.

        Airtable's Status wins, except that a FIXED record whose error occurred after its Fixed Time
        (or that has no Fixed Time) has regressed. An occurrence from before the Fixed Time, delivered
        late, leaves it FIXED.
        """
        assert remote.status is not None
        regression = False
        target = remote.status
        if remote.status is Status.FIXED:
            last = issue.last_seen
            regression = remote.fixed_time is None or last is None or last > remote.fixed_time
            if regression:
                target = Status.REGRESSED
        if not _differs(issue, remote, target):
            return issue, regression
        if target is Status.REGRESSED and issue.status is not Status.REGRESSED:
            self.metrics.issues_changed.labels(severity=issue.severity.value, change=ChangeKind.REGRESSED.value).inc()
            log.info("airtable: issue %s was FIXED and recurred: REGRESSED", issue.fingerprint)
        updated = await asyncio.to_thread(
            self.store.sync_human_fields, issue.fingerprint, target,
            fixed_time=remote.fixed_time, notes=remote.fix_notes, commit=remote.fix_commit, now=now,
        )  # fmt: skip
        return updated or issue, regression

    async def _deliver_status(self, fp: str, due: dict[str, _Due], now: float) -> set[str]:
        """Send a locally set Status (with Fixed Time, Fix Notes, Fix Commit); park it if Airtable refuses it."""
        issue = await asyncio.to_thread(self.store.get, fp)
        if issue is None:
            return await self._delivered({}, due, now, ack=[fp])
        try:
            rid = await asyncio.to_thread(
                self.client.set_status, fp, issue.status,
                fixed_time=issue.fixed_time if issue.status is Status.FIXED else None,
                notes=issue.fix_notes or None, commit=issue.fix_commit or None,
            )  # fmt: skip
        except AirtablePermanentError as exc:
            if not _about_the_records(exc):
                raise
            await self._park(fp, due, exc)
            return {fp}
        if rid is None:
            log.info("airtable: no record for issue %s (deleted in Airtable?); status %s not sent", fp, issue.status)
        return await self._delivered({fp: rid} if rid else {}, due, now, ack=[fp])

    async def _delivered(
        self,
        ids: dict[str, str],
        due: dict[str, _Due],
        now: float,
        ack: list[str] | None = None,
        skip: list[str] | None = None,
    ) -> set[str]:
        """Remember record ids; acknowledge ``ack`` (default: every fingerprint in ``ids`` not in ``skip``)."""
        if ids:
            await asyncio.to_thread(self.outbox.save_record_ids, ids)
        fps = [fp for fp in (ids if ack is None else ack) if fp in due and fp not in (skip or ())]
        if not fps:
            return set()
        await asyncio.to_thread(self.outbox.ack, {fp: due[fp].max_id for fp in fps})
        self.metrics.delivered(SINK, now, len(fps))
        return set(fps)

    async def _defer(self, fps: list[str], due: dict[str, _Due], at: float, error: str) -> None:
        ids = [i for fp in fps for i in due[fp].ids]
        await asyncio.to_thread(self.outbox.defer, ids, at, error)

    async def _park(self, fp: str, due: dict[str, _Due], exc: AirtablePermanentError) -> None:
        await asyncio.to_thread(self.outbox.park, due[fp].ids, str(exc))
        self.metrics.sink_errors.labels(sink=SINK, kind="permanent").inc()
        log.error("airtable: parked issue %s: %s (see `stream-triage doctor airtable`)", fp, exc)

    async def _isolate(
        self, exc: AirtablePermanentError, due: dict[str, _Due], now: float, with_status: list[str]
    ) -> None:
        """A chunk failed permanently: send its issues one by one and park only those that fail."""
        for item in exc.failed:
            fp = item.issue.fingerprint
            try:
                rid = await asyncio.to_thread(self.client.upsert_one, item)
                await self._delivered({fp: rid}, due, now, skip=with_status)
                if fp in with_status:
                    await self._deliver_status(fp, due, now)
            except AirtablePermanentError as one:
                if not _about_the_records(one):
                    raise
                await self._park(fp, due, one)
            except AirtableRetryableError as one:
                wait = min(self.max_backoff_s, max(one.retry_after_s or 0.0, 2.0))
                await self._defer([fp], due, now + wait, str(one))
                self.metrics.sink_errors.labels(sink=SINK, kind="retryable").inc()

    async def sync_status(self) -> int:
        """Mirror Status / Fixed Time / Fix Notes / Fix Commit of known records into the store.

        Issues with changes still in the outbox are left alone: their delivery reconciles them, and
        a status set locally but not yet delivered must not be undone by Airtable's older value.
        """
        self._next_sync = self.clock() + self.status_sync_interval_s
        known = await asyncio.to_thread(self.outbox.record_ids)
        pending = await asyncio.to_thread(self.outbox.pending_fingerprints)
        wanted = [fp for fp in known if fp not in pending]
        if not wanted:
            return 0
        try:
            remote = await asyncio.to_thread(self.client.read_status, wanted)
        except (AirtableRetryableError, AirtablePermanentError) as exc:
            log.warning("airtable: status sync failed: %s", exc)
            return 0
        changed = 0
        now = self.clock()
        for fp, r in remote.items():
            issue = await asyncio.to_thread(self.store.get, fp)
            if issue is None or r.status is None or not _differs(issue, r, r.status):
                continue
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


def _about_the_records(exc: AirtablePermanentError) -> bool:
    """Whether Airtable refused the records themselves (422: a field or value), not the request."""
    return exc.status == 422


def _differs(issue: StoredIssue, remote: RemoteIssue, status: Status) -> bool:
    """Whether the human-owned fields in Airtable (with ``status``) differ from the local issue."""
    return (
        status is not issue.status
        or bool(remote.fix_notes and remote.fix_notes != issue.fix_notes)
        or bool(remote.fix_commit and remote.fix_commit != issue.fix_commit)
        or (
            remote.fixed_time is not None
            and (issue.fixed_time is None or abs(remote.fixed_time - issue.fixed_time) >= 0.001)
        )
    )


def _group(entries: list[OutboxEntry]) -> dict[str, _Due]:
    due: dict[str, _Due] = {}
    for e in entries:
        d = due.setdefault(e.fingerprint, _Due())
        d.ids.append(e.id)
        d.kinds.add(e.change)
        d.attempts = max(d.attempts, e.attempts)
    return due
