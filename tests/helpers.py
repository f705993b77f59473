"""Shared helpers for the core pipeline tests: build a ``Triage`` and feed it lines with log time."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from stream_triage.config import Config
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.triage import Triage, build_patterns
from stream_triage.records import EndReason, Issue, RawRecord, RunFlush

# 2025-11-03T08:15:22Z, the time of run 251103-081522.
T0 = 1762157722.0


@functools.cache
def default_patterns() -> PatternSet:
    """The default pack compiled once for the whole session (Hyperscan compilation takes seconds)."""
    return build_patterns(Config())


def make_triage(config: Config | None = None) -> Triage:
    """A ``Triage``; the compiled default pack is reused when the pattern settings are the defaults."""
    config = config or Config()
    patterns = default_patterns() if config.patterns == Config().patterns else None
    return Triage(config, patterns)


def feed(
    triage: Triage, lines: Iterable[str | tuple[str, str]], start: float = T0, step: float = 1.0
) -> list[RunFlush]:
    """Feed lines (``text`` or ``(source, text)``) one second apart in log time; return the flushes."""
    out: list[RunFlush] = []
    t = start
    for n, item in enumerate(lines, 1):
        source, text = ("app", item) if isinstance(item, str) else item
        out.extend(triage.process(RawRecord(text, source, t, n)))
        t += step
    return out


def issues_of(flushes: Iterable[RunFlush]) -> list[Issue]:
    """Every issue in the flushes, in order."""
    return [i for f in flushes for i in f.issues]


def replay(lines: Iterable[str | tuple[str, str]], config: Config | None = None, **kw: float) -> list[RunFlush]:
    """Feed lines into a fresh ``Triage`` and flush everything at EOF."""
    triage = make_triage(config)
    flushes = feed(triage, lines, **kw)
    flushes.extend(triage.flush_all(EndReason.EOF))
    return flushes
