"""Runs the synchronous pipeline inside the service: a bounded queue in, the store out.

Sources put their reads on a bounded queue — one item per read, holding one or more batches
(``LineBatch`` or a list of ``RawRecord``); when it is full, ``submit`` waits (TCP sources stop reading,
which pushes back on the sender) and ``offer`` refuses (HTTP answers 503 with Retry-After). Metrics
count lines, never batches.
One consumer task feeds the pipeline with the wall clock as its time; store writes run on one worker
thread so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from stream_triage.pipeline.triage import Triage
from stream_triage.records import EndReason, IssueChange, LineBatch, RunFlush
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.sources.batching import Batch, batch_lines
from stream_triage.telemetry import Metrics

log = logging.getLogger("stream_triage.runner")

ChangeListener = Callable[[list[IssueChange]], None]
# One read of one source: its batches in order, and their line count.
Item = tuple[str, tuple[Batch, ...], int]


class PipelineRunner:
    """Owns the pipeline, its input queue and the store writer."""

    def __init__(
        self,
        triage: Triage,
        store: IssueStore,
        metrics: Metrics,
        *,
        queue_max_batches: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.triage = triage
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_max_batches)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._listeners: list[ChangeListener] = []
        self._task: asyncio.Task[None] | None = None
        self._matched_seen: dict[tuple[str, str], int] = {}
        self._parked: list[Item] = []
        self.lines_processed = 0

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` (on the loop) with the changes of every store write."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ input
    async def submit(self, source: str, *batches: Batch) -> None:
        """Queue one read's batches as one item, waiting while the queue is full (backpressure for streams)."""
        lines = sum(batch_lines(b) for b in batches)
        if lines:
            self.metrics.lines_received.labels(source=source).inc(lines)
            self.metrics.last_line_received.labels(source=source).set(self.clock())
            item = (source, batches, lines)
            try:
                await self.queue.put(item)
            except asyncio.CancelledError:
                # Cancelled while waiting for room (a source stopping at shutdown): the batch was read and
                # counted, so keep it; ``drain`` processes it after the queue.
                self._parked.append(item)
                raise
            self.metrics.queue_depth.labels(source=source).inc(lines)

    def offer(self, source: str, *batches: Batch) -> bool:
        """Queue one request's batches as one item if there is room now; ``False`` means full (answer 503)."""
        lines = sum(batch_lines(b) for b in batches)
        if not lines:
            return True
        try:
            self.queue.put_nowait((source, batches, lines))
        except asyncio.QueueFull:
            self.metrics.frames_rejected.labels(source=source, reason="backpressure").inc(lines)
            return False
        self.metrics.lines_received.labels(source=source).inc(lines)
        self.metrics.last_line_received.labels(source=source).set(self.clock())
        self.metrics.queue_depth.labels(source=source).inc(lines)
        return True

    # ------------------------------------------------------------------ processing
    def start(self) -> None:
        """Start the consumer task."""
        self._task = asyncio.create_task(self._consume(), name="pipeline")

    async def _consume(self) -> None:
        queue = self.queue
        while True:
            source, batches, lines = await queue.get()
            try:
                now = self.clock()
                flushes = self._process(batches, now)
                self.lines_processed += lines
                last_ts = _last_ts(batches)
                if last_ts is not None:
                    self.metrics.pipeline_lag.observe(max(0.0, now - last_ts))
                if flushes:
                    await self.write(flushes)
            except Exception:  # the service must outlive any single bad batch
                log.exception("pipeline failed on a batch of %d lines from %s; batch skipped", lines, source)
            finally:
                queue.task_done()
                # Per source, in lines: the queue is shared, so its size would be every source's.
                self.metrics.queue_depth.labels(source=source).dec(lines)

    def _process(self, batches: tuple[Batch, ...], now: float) -> list[RunFlush]:
        flushes: list[RunFlush] = []
        for batch in batches:
            if isinstance(batch, LineBatch):
                flushes += self.triage.process_batch(batch, now)
            else:
                flushes += self.triage.process_many(batch, now)
        return flushes

    async def tick(self) -> None:
        """Advance pipeline time to now: flush runs whose grace window or idle timeout passed."""
        flushes = self.triage.tick(self.clock())
        self.metrics.runs_open.set(self.triage.open_runs)
        self._sync_match_counts()
        if flushes:
            await self.write(flushes)

    async def write(self, flushes: Sequence[RunFlush]) -> list[IssueChange]:
        """Commit flushes to the store (off the loop) and tell the listeners what changed."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        changes = await loop.run_in_executor(self._writer, self.store.apply, list(flushes), self.clock())
        self.metrics.flush_duration.observe(time.perf_counter() - started)
        for flush in flushes:
            ended = _run_end(flush)
            if ended is not None:
                self.metrics.runs_flushed.labels(ended=ended.value).inc()
        for change in changes:
            self.metrics.issues_changed.labels(severity=change.severity.value, change=change.kind.value).inc()
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("change listener failed")
        return changes

    def _sync_match_counts(self) -> None:
        # The pipeline counts matches in a plain dict (cheap per line); Prometheus gets the deltas here.
        for key, total in self.triage.match_counts.items():
            seen = self._matched_seen.get(key, 0)
            if total > seen:
                severity, pattern = key
                self.metrics.lines_matched.labels(severity=severity, pattern=pattern).inc(total - seen)
                self._matched_seen[key] = total

    # ------------------------------------------------------------------ shutdown
    async def drain(self, reason: EndReason = EndReason.SHUTDOWN) -> None:
        """Process everything queued (and batches whose submit was cancelled), then flush every open run."""
        await self.queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        parked, self._parked = self._parked, []
        for _source, batches, lines in parked:
            flushes = self._process(batches, self.clock())
            self.lines_processed += lines
            if flushes:
                await self.write(flushes)
        flushes = self.triage.flush_all(reason)
        self._sync_match_counts()
        if flushes:
            await self.write(flushes)
        self.metrics.runs_open.set(self.triage.open_runs)

    def close(self) -> None:
        """Stop the writer thread (after ``drain``)."""
        self._writer.shutdown(wait=True)


def _last_ts(batches: tuple[Batch, ...]) -> float | None:
    """The envelope time of the last line of a read (None when it has none)."""
    for batch in reversed(batches):
        if isinstance(batch, list):
            if batch:
                return batch[-1].ts
            continue
        if not batch.ts:
            return None
        ts = batch.ts[-1]
        return None if ts != ts else ts  # NaN: no envelope time
    return None


def _run_end(flush: RunFlush) -> EndReason | None:
    """How the run ended, if this flush is where that became known; each run is counted once.

    A completed run counts at its marker flush. Its final flush when the grace window closes (or at
    shutdown) carries only late lines and must not count it again as ``late``/``shutdown``; partial
    and periodic flushes leave the run open.
    """
    if flush.reason is EndReason.MARKER:
        return EndReason.MARKER
    if flush.run.final and not flush.run.marker_seen:
        return flush.reason
    return None
