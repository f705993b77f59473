"""An offline triage session: the pipeline plus the in-memory aggregate and, optionally, the store.

Shared by ``replay`` (files), ``backfill`` (Render API windows) and ``tail`` (the live WebSocket in a
terminal): records in, flushes batched into store transactions, the aggregate kept for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from stream_triage.config import Config
from stream_triage.errors import InputError
from stream_triage.pipeline.triage import Triage
from stream_triage.records import EndReason, LineBatch, RawRecord, RunFlush
from stream_triage.sinks.memory import MemoryStore
from stream_triage.sinks.sqlite import IssueStore

_STORE_BATCH = 256  # flushes per store transaction
_CHUNK = 2048  # records per pipeline chunk


class TriageSession:
    """Feed records; flushes go to the aggregate and (batched) to the store."""

    def __init__(
        self,
        config: Config,
        store: IssueStore | None = None,
        on_flush: Callable[[list[RunFlush]], None] | None = None,
        batch: int = _STORE_BATCH,
        keep: Callable[[RunFlush], bool] | None = None,
    ) -> None:
        self.triage = Triage(config)
        self.memory = MemoryStore()
        self.store = store
        self.on_flush = on_flush
        self._batch = batch
        self._pending: list[RunFlush] = []
        self._keep = keep

    def feed(self, record: RawRecord, now: float | None = None) -> None:
        """Process one record (time: ``now``, else the record's own timestamp)."""
        flushes = self.triage.process(record, now)
        if flushes:
            self._deliver(flushes)

    def feed_all(
        self,
        items: Iterable[RawRecord | LineBatch | InputError],
        on_error: Callable[[InputError], None] | None = None,
    ) -> int:
        """Process every record (and line batch) of an input stream in order, records in chunks; bad
        records go to ``on_error``.

        Returns how many records were bad.
        """
        bad = 0
        chunk: list[RawRecord] = []
        process = self.triage.process_chunk
        for item in items:
            if isinstance(item, InputError):
                bad += 1
                if on_error is not None:
                    on_error(item)
                continue
            if isinstance(item, LineBatch):
                flushes = process(chunk) if chunk else []
                chunk = []
                flushes += self.triage.process_batch(item)
                if flushes:
                    self._deliver(flushes)
                continue
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                flushes = process(chunk)
                chunk = []
                if flushes:
                    self._deliver(flushes)
        if chunk:
            flushes = process(chunk)
            if flushes:
                self._deliver(flushes)
        return bad

    def tick(self, now: float) -> None:
        """Advance time without input (live use)."""
        flushes = self.triage.tick(now)
        if flushes:
            self._deliver(flushes, force=True)

    def finish(self, reason: EndReason = EndReason.EOF) -> None:
        """Flush every open run and everything pending."""
        self._deliver(self.triage.flush_all(reason), force=True)

    def _deliver(self, flushes: list[RunFlush], force: bool = False) -> None:
        pending = self._pending
        pending.extend(flushes if self._keep is None else [f for f in flushes if self._keep(f)])
        if pending and (force or len(pending) >= self._batch):
            self.memory.apply(pending)
            if self.store is not None:
                self.store.apply(pending, time.time())
            if self.on_flush is not None:
                self.on_flush(list(pending))
            pending.clear()

    @property
    def lines(self) -> int:
        """Lines processed so far."""
        return self.triage.lines_processed
