"""The sink boundary: what every store or sink of flushed runs provides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stream_triage.records import IssueChange, RunFlush


class FlushSink(Protocol):
    """Receives flushed runs. ``apply`` is synchronous and transactional; callers run it off-loop."""

    def apply(self, flushes: Sequence[RunFlush], now: float) -> list[IssueChange]:
        """Persist the flushes; return what changed, one entry per stored issue touched."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...
