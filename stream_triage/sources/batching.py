"""Sources hand the pipeline ``LineBatch``es: many lines in one buffer instead of a ``RawRecord`` each.

``LineBatchBuilder`` collects the lines of one read (a TCP chunk, a drain request) in stream order.
Lines come in two ways:

- ``scan`` — the fast path: octet-counted RFC 5424 / logplex frames that the C extension
  ``_syslog_fast`` takes whole, without a Python object per line;
- ``add_message`` — the exact Python path, for every frame the fast path leaves alone.

``take`` returns the read as a list of parts, almost always one ``LineBatch``. A batch holds at most 256
source names (``source_of`` is one byte per line), so a read from more sources is several batches. A
single line ending in ``\\r`` cannot be carried by a ``LineBatch`` (its lines lose trailing ``\\r``), so
such a line travels as a one-element ``list[RawRecord]`` part, in its place.

``SyslogBatcher`` (one TCP connection) and ``logplex_batches`` (one drain body) put the pieces together.
Without the extension (``FAST`` is False) ``scan`` takes nothing and every frame takes the Python path;
the batches are identical either way.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from stream_triage.records import LineBatch, RawRecord
from stream_triage.sources.files import split_lines
from stream_triage.sources.syslog_protocol import (
    LogplexFramingError,
    SyslogFramer,
    SyslogMessage,
    SyslogParseError,
    next_logplex_frame,
    parse_syslog,
)

try:
    from stream_triage.sources._syslog_fast import scan as _c_scan
except ImportError:  # no compiler at install time: the Python path gives the same batches, slower
    _c_scan = None

__all__ = [
    "FAST",
    "MAX_SOURCES",
    "Batch",
    "LineBatchBuilder",
    "LogplexBatches",
    "SyslogBatcher",
    "batch_lines",
    "logplex_batches",
    "syslog_source_name",
]

FAST = _c_scan is not None
MAX_SOURCES = 256  # source_of is one byte per line
NO_LIMIT = 1 << 62

Batch = LineBatch | list[RawRecord]

_NAN = math.nan


def batch_lines(batch: Batch) -> int:
    """The number of lines in a batch (a ``LineBatch`` or a list of records)."""
    if isinstance(batch, list):
        return len(batch)
    if batch.lines is not None:
        return batch.lines
    # A well-formed batch has one time (or source index) per line; counting newlines costs ~1 ns a byte.
    if batch.ts is not None:
        return len(batch.ts)
    if batch.source_of is not None:
        return len(batch.source_of)
    data = batch.data
    # As LineBatch.records() counts: "\n" separates lines, a trailing one is optional.
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


class LineBatchBuilder:
    """Collects lines in order and hands them out as ``LineBatch``es (see the module docstring)."""

    __slots__ = ("_chunks", "_has_ts", "_lines", "_parts", "_source_of", "_sources", "_ts", "fast", "frames")

    def __init__(self, *, fast: bool = True) -> None:
        self.fast = fast and FAST
        self.frames = 0  # frames taken by ``scan`` so far
        self._parts: list[Batch] = []
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[bytes] = []
        self._ts = array("d")
        self._source_of = bytearray()
        self._sources: dict[str, int] = {}
        self._lines = 0
        self._has_ts = False

    def scan(self, data: bytes, pos: int, limit: int = NO_LIMIT, prefix: str | None = None) -> int:
        """Take the frames at ``data[pos:]`` the fast path understands; return where it stopped.

        ``prefix`` None: syslog over TCP (frames of at most ``limit`` bytes, source ``HOST/APP/PROCID``).
        ``prefix`` a str: a logplex body (structured data omitted, source ``prefix + "APP/PROCID"``).
        """
        if not self.fast:
            return pos
        pos, frames, lines, ts, source_of, timed = _c_scan(data, pos, limit, prefix, self._sources, MAX_SOURCES)
        if source_of:
            self._chunks.append(lines)
            self._ts.frombytes(ts)
            self._source_of += source_of
            self._lines += len(source_of)
            if timed:
                self._has_ts = True
        self.frames += frames
        return pos

    def add_message(self, text: str, source: str, ts: float | None) -> None:
        """One message as the Python path produced it: several lines if it has newlines (``split_lines``)."""
        if "\n" in text:
            for record in split_lines(RawRecord(text, source, ts, 0)):
                self.add_line(record.text, source, ts)
        else:
            self.add_line(text, source, ts)

    def add_line(self, text: str, source: str, ts: float | None) -> None:
        """One line, exactly as ``RawRecord(text, source, ts)`` would carry it."""
        if text[-1:] == "\r" or "\n" in text:
            self._add_record(RawRecord(text, source, ts, 0))
            return
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: LineBatch.records() would not give it back
            self._add_record(RawRecord(text, source, ts, 0))
            return
        index = self._sources.get(source)
        if index is None:
            if len(self._sources) >= MAX_SOURCES:
                self._close()
            index = self._sources[source] = len(self._sources)
        self._chunks.append(encoded + b"\n")
        if ts is None:
            self._ts.append(_NAN)
        else:
            self._ts.append(ts)
            self._has_ts = True
        self._source_of.append(index)
        self._lines += 1

    def _add_record(self, record: RawRecord) -> None:
        self._close()
        last = self._parts[-1] if self._parts else None
        if isinstance(last, list):
            last.append(record)
        else:
            self._parts.append([record])

    def _close(self) -> None:
        if not self._lines:
            return
        sources = list(self._sources)
        self._parts.append(
            LineBatch(
                data=b"".join(self._chunks),
                sources=sources,
                source_of=bytes(self._source_of) if len(sources) > 1 else None,
                ts=self._ts if self._has_ts else None,
            )
        )
        self._reset()

    def take(self) -> list[Batch]:
        """The lines collected so far, as batches in order; the builder starts empty again."""
        self._close()
        parts, self._parts = self._parts, []
        return parts


def syslog_source_name(msg: SyslogMessage) -> str:
    """The source of a syslog line: ``HOST/APP/PROCID`` (``-`` for a nil field)."""
    return f"{msg.hostname or '-'}/{msg.app_name or '-'}/{msg.procid or '-'}"


class SyslogBatcher:
    """One syslog connection without a token: bytes in, batches out, problems kept for the listener.

    ``feed`` (and ``flush`` at close) returns the batches completed by a chunk; ``pop_problems`` the
    framing errors and then the parse errors (``("malformed", reason)``) they met, in that order.
    """

    __slots__ = ("_builder", "_framer", "_malformed", "_scan")

    def __init__(self, max_frame_bytes: int, *, fast: bool = True) -> None:
        self._framer = SyslogFramer(max_frame_bytes)
        self._builder = LineBatchBuilder(fast=fast)
        self._scan = self._builder.scan if self._builder.fast else None
        self._malformed: list[str] = []

    def feed(self, data: bytes) -> list[Batch]:
        """The batches of the frames this chunk completes."""
        self._framer.feed_into(data, self._scan, self._frame)
        return self._builder.take()

    def flush(self) -> list[Batch]:
        """End of stream: the batch of a trailing unterminated LF frame, if any."""
        for frame in self._framer.flush():
            self._frame(frame)
        return self._builder.take()

    def pop_problems(self) -> list[tuple[str, str]]:
        """(kind, detail) of every frame dropped since the last call: framing errors first, then parse errors."""
        problems = [(e.kind, e.detail) for e in self._framer.pop_errors()]
        problems += [("malformed", reason) for reason in self._malformed]
        self._malformed.clear()
        return problems

    def _frame(self, frame: bytes) -> None:
        # The exact path, for every frame the fast path left.
        try:
            msg = parse_syslog(frame)
        except SyslogParseError as exc:
            self._malformed.append(str(exc))
            return
        self._builder.add_message(msg.message, syslog_source_name(msg), msg.timestamp)


@dataclass(slots=True)
class LogplexBatches:
    """A logplex body as batches. ``cut`` is why the body ended early (then ``kept`` frames were read)."""

    batches: list[Batch]
    rejected: int
    cut: str | None = None
    kept: int = 0


def logplex_batches(body: bytes, drain: str, *, fast: bool = True) -> LogplexBatches:
    """An ``application/logplex-1`` body as batches; sources are ``DRAIN/APP/PROCID``.

    Clean frames go through the fast path, the rest through ``parse_syslog(sd_omitted=True)``. A frame
    that does not parse counts as rejected, and so does a cut-short body (its complete frames are kept).
    """
    builder = LineBatchBuilder(fast=fast)
    prefix = f"{drain}/"
    result = LogplexBatches([], 0)
    slow_frames = 0
    n = len(body)
    pos = 0
    while True:
        pos = builder.scan(body, pos, prefix=prefix)
        if pos >= n:
            break
        try:
            frame, pos = next_logplex_frame(body, pos)
        except LogplexFramingError as exc:
            result.rejected += 1
            result.cut = str(exc)
            break
        if frame is None:
            break
        slow_frames += 1
        try:
            msg = parse_syslog(frame, sd_omitted=True)
        except SyslogParseError:
            result.rejected += 1
            continue
        builder.add_message(msg.message, f"{prefix}{msg.app_name or '-'}/{msg.procid or '-'}", msg.timestamp)
    result.kept = builder.frames + slow_frames
    result.batches = builder.take()
    return result
