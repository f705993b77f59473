"""The pipeline: parse → route (per run) → match → context → fingerprint → flush.

``Triage`` is synchronous and does no I/O; time is passed in (log time in replay, wall clock live),
so every timeout is testable without sleeping. Sources feed it ``RawRecord``s; it returns
``RunFlush`` batches for the sinks.
"""

from __future__ import annotations

import contextlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

import regex

from stream_triage.config import Config
from stream_triage.patterns import PatternSpec, default_pack_path, load_pack
from stream_triage.pipeline.fastpath import (
    FLAG_CAND,
    FLAG_MARKER,
    FastPath,
    index_lines,
    line_fields,
    unavailable_reason,
)
from stream_triage.pipeline.fingerprint import fingerprint, mask_message
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.parse import LEVEL_ALIASES, LineParser
from stream_triage.pipeline.redact import Redactor
from stream_triage.pipeline.runs import (
    MAX_POSITIONS_PER_ISSUE,
    ContextCollector,
    Event,
    IssueAccumulator,
    RunBuffer,
    RunOrder,
)
from stream_triage.pipeline.stacktrace import is_continuation, starts_traceback, top_app_frame, trace_lines
from stream_triage.records import EndReason, Issue, LineBatch, LogLine, Match, RawRecord, RunFlush, RunSummary, Severity

RUN_INCOMPLETE = "run-incomplete"
_METADATA_LINES = 100  # run type / stream are announced at a run's start; later lines are not examined
_TICK_EVERY_S = 1.0
_CHUNK = 2048  # records per fast-path chunk
_NAN = float("nan")


class _Unknown:
    """A line's match not looked for yet (``None`` says it has none)."""


_UNKNOWN = _Unknown()
_MASK_CACHE = 4096
_STOP_END, _STOP_LINE, _STOP_EVENT, _STOP_TICK = 0, 1, 2, 3  # why the kernel's scan returned (_kernel.c)


@dataclass(slots=True)
class _SourceState:
    """Per source: the run of the last head line (continuation lines join it) and its open event."""

    event: Event | None = None
    run: RunBuffer | None = None
    in_traceback: bool = False


def _record_at(
    data: bytes,
    starts: memoryview,
    i: int,
    names: list[str],
    source_of: bytes | None,
    ts: array | None,
    first_position: int,
) -> RawRecord:
    """Line ``i`` of a batch as a record, as a line-by-line reader would have produced it."""
    text = data[starts[i] : starts[i + 1] - 1].decode("utf-8", "replace").rstrip("\r")
    t = ts[i] if ts is not None else None
    source = names[source_of[i] if source_of is not None else 0]
    return RawRecord(text, source, None if t is None or t != t else t, first_position + i)


def _line_of(
    fields: tuple, names: list[str], source_of: bytes | None, ts: array | None, first_position: int, i: int
) -> LogLine:
    """Line ``i`` of a batch from ``_kernel.line_fields``, as ``LineParser`` would have made it."""
    text, message, run_id, suffix, client, operation, level, line_ts = fields
    t = ts[i] if ts is not None else None
    envelope = None if t is None or t != t else t
    return LogLine(
        text,
        message,
        names[source_of[i] if source_of is not None else 0],
        first_position + i,
        line_ts if envelope is None else envelope,
        run_id,
        suffix,
        client,
        operation,
        LEVEL_ALIASES.get(level, level) if level else None,
    )


def build_patterns(config: Config) -> PatternSet:
    """Load the default pack and the user's packs as configured, and compile them."""
    specs: list[PatternSpec] = []
    if config.patterns.use_default_pack:
        specs.extend(load_pack(default_pack_path()))
    for path in config.patterns.files:
        user = load_pack(path)
        # A user pattern with a built-in id replaces it, so packs can tune the defaults.
        ids = {s.id for s in user}
        specs = [s for s in specs if s.id not in ids] + user
    disabled = set(config.patterns.disabled)
    specs = [s for s in specs if s.id not in disabled]
    return PatternSet(
        specs,
        settings={"slow_request_ms": config.patterns.slow_request_ms},
        timeout_s=config.patterns.match_timeout_ms / 1000,
    )


class Triage:
    """Turns log records into deduplicated issues per run. Not thread-safe; one per event loop."""

    def __init__(self, config: Config, patterns: PatternSet | None = None) -> None:
        self.config = config
        r, f = config.route, config.flush
        self.patterns = patterns if patterns is not None else build_patterns(config)
        self._parse = LineParser(config.parse.line_regex)
        self._fast = FastPath.build(config, self.patterns)
        self._redact = Redactor(config.redact.extra_patterns)
        self._markers = [regex.compile(m) for m in config.flush.completion_markers]
        self._run_types = [(rule.name, regex.compile(rule.regex)) for rule in config.run_metadata.run_types]
        self._stream = regex.compile(config.run_metadata.stream_regex)
        self._before = r.context_before
        self._after = r.context_after
        self._chars = r.context_line_chars
        self._max_runs = r.max_open_runs
        self._max_issues = r.max_issues_per_run
        self._max_stack = r.max_stack_lines
        self._grace = f.grace_after_marker_s
        self._idle = f.idle_timeout_s
        self._periodic = f.system_flush_interval_s
        self._min_timeout = min(self._grace, self._idle)
        self.runs: dict[str, RunBuffer] = {}
        self._order = RunOrder()  # the open runs by last activity, oldest first
        self.systems: dict[str, RunBuffer] = {}
        self._kernel = (
            self._fast.kernel(self.runs, self._order, self.systems, self._chars, _METADATA_LINES, self._max_stack)
            if self._fast is not None
            else None
        )
        # Runs closed after their marker, so a line arriving after the grace window reopens the run as
        # completed (flushed as late) instead of as a new run that never completes. Bounded like runs.
        self._completed: OrderedDict[str, None] = OrderedDict()
        self._sources: dict[str, _SourceState] = {}
        self.now = 0.0
        self._last_tick = 0.0
        self._masked: dict[tuple[str, str | None, str | None], str] = {}
        self._fingerprints: dict[tuple[str, str | None, str | None], str] = {}
        self.lines_processed = 0
        self.lines_matched = 0
        # (severity, pattern id) → lines matched; read by the service for its metrics.
        self.match_counts: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ input
    def process(self, record: RawRecord, now: float | None = None) -> list[RunFlush]:
        """Feed one record. ``now`` is the current time (defaults to the line's own timestamp)."""
        line = self._parse(record)
        return self.process_line(line, now)

    def process_many(self, records: Iterable[RawRecord], now: float | None = None) -> list[RunFlush]:
        """Feed several records (in chunks, through the fast path when it applies); returns the flushes."""
        out: list[RunFlush] = []
        it = iter(records)
        while chunk := list(islice(it, _CHUNK)):
            flushes = self.process_chunk(chunk, now)
            if flushes:
                out.extend(flushes)
        return out

    def process_batch(self, batch: LineBatch, now: float | None = None) -> list[RunFlush]:
        """Feed a ``LineBatch``. Equivalent to feeding its records one by one, much faster."""
        if self._kernel is None:
            records = batch.records()
            batch.lines = len(records)
            return self._slow(records, now)
        starts = index_lines(batch.data)
        batch.lines = len(starts) - 1  # the file reader's next position needs it: no second count
        return self._scan(batch.data, starts, batch.sources, batch.source_of, batch.ts, batch.first_position, None, now)

    def process_chunk(self, records: list[RawRecord], now: float | None = None) -> list[RunFlush]:
        """Feed a chunk of records. Equivalent to feeding them one by one, much faster."""
        if self._kernel is None or len(records) < 8:
            return self._slow(records, now)
        try:
            data = "\n".join([r.text for r in records]).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: only the exact path can take them
            return self._slow(records, now)
        names = [r.source for r in records]
        source_of = None
        if names.count(names[0]) != len(names):
            order = list(dict.fromkeys(names))
            if len(order) > 255:
                return self._slow(records, now)
            number = {name: i for i, name in enumerate(order)}
            source_of = bytes([number[name] for name in names])
            names = order
        else:
            names = names[:1]
        times = [r.ts for r in records]
        ts = None if times.count(None) == len(times) else array("d", [_NAN if t is None else t for t in times])
        return self._scan(data, index_lines(data), names, source_of, ts, 0, records, now)

    def _scan(
        self,
        data: bytes,
        starts: memoryview,
        names: list[str],
        source_of: bytes | None,
        ts: array | None,
        first_position: int,
        records: list[RawRecord] | None,
        now: float | None,
    ) -> list[RunFlush]:
        """Run the C loop over a batch (``starts``: its ``index_lines``); Python takes each line it stops at.

        One Hyperscan pass flags the lines any pattern, level or completion marker could concern. The
        kernel takes the rest — ordinary lines of open runs whose type and stream are known, and plain
        untagged lines, usually 97 % or more — updating their run's ring, counters and times.
        """
        fast, kernel = self._fast, self._kernel
        assert fast is not None and kernel is not None
        count = len(starts) - 1
        if records is not None and count != len(records):  # a record with an embedded newline
            return self._slow(records, now)
        flags, candidates, matched, scanned, heads = fast.classify(data, starts)
        sources = [self._source(name) for name in names]
        kernel.load(data, starts, flags, sources, names, source_of, ts, _NAN if now is None else now, heads)
        flushes: list[RunFlush] = []
        parse, match, process_line = self._parse, self.patterns.match, self.process_line
        pos = 0
        try:
            while True:
                pos, reason, self.now, taken = kernel.scan(pos, self.now, self._last_tick, _TICK_EVERY_S)
                self.lines_processed += taken
                if reason == _STOP_END:
                    break
                if reason == _STOP_TICK:
                    self._maybe_tick(flushes)
                    continue
                if reason == _STOP_EVENT:
                    # The line would be taken, but its source's last event must be finished first.
                    src = sources[source_of[pos] if source_of is not None else 0]
                    ev, src.event = src.event, None
                    if ev is not None and not ev.done:
                        flushes.extend(self._finish(ev))
                    continue
                fields = line_fields(data, starts, heads, pos) if records is None else None
                if fields is not None:
                    # A plain run-tagged line: its head was parsed in C already (as LineParser would).
                    line = _line_of(fields, names, source_of, ts, first_position, pos)
                else:
                    if records is not None:
                        record = records[pos]
                    else:
                        record = _record_at(data, starts, pos, names, source_of, ts, first_position)
                    line = parse(record)
                known = sure = marker = None
                found: Match | _Unknown | None = _UNKNOWN
                if scanned[pos] and line.message.isascii():
                    # The batch scan found every pattern that can match this message.
                    sure = matched.get(pos)
                    maybe = candidates.get(pos)
                    if maybe is None:
                        known = sorted(sure) if sure else []
                    else:
                        known = sorted(maybe.union(sure) if sure else maybe)
                    # Confirm just the candidates: most turn out not to match ("0 failed" summaries).
                    if flags[pos] == FLAG_CAND:
                        found = match(line.message, line.level, known, sure)
                        if found is None:
                            flags[pos] = 0
                            continue
                    marker = bool(flags[pos] & FLAG_MARKER)
                out = process_line(line, now, known, sure, marker, found)
                if out:
                    flushes.extend(out)
                pos += 1
        finally:
            kernel.release()
        return self._maybe_tick(flushes)

    def _source(self, name: str) -> _SourceState:
        src = self._sources.get(name)
        if src is None:
            src = self._sources[name] = _SourceState()
        return src

    def _slow(self, records: list[RawRecord], now: float | None) -> list[RunFlush]:
        out: list[RunFlush] = []
        parse = self._parse
        for record in records:
            flushes = self.process_line(parse(record), now)
            if flushes:
                out.extend(flushes)
        return out

    def process_line(
        self,
        line: LogLine,
        now: float | None = None,
        candidates: list[int] | None = None,
        matched: set[int] | None = None,
        marker: bool | None = None,
        found: Match | _Unknown | None = _UNKNOWN,
    ) -> list[RunFlush]:
        """Feed one parsed line. ``candidates``: the only patterns that can match its message, when a
        scan of its batch already found them; ``matched``: those of them known to match; ``marker``:
        whether that scan found a completion marker may be in it (``None``: not known); ``found``: the
        line's match when the caller already confirmed it."""
        self.lines_processed += 1
        t = now if now is not None else line.ts
        if t is not None and t > self.now:
            self.now = t
        now_ = self.now
        flushes: list[RunFlush] = []
        src = self._sources.get(line.source) or self._source(line.source)
        text = line.text if len(line.text) <= self._chars else line.text[: self._chars] + "…"

        if line.run_id is None and line.level is None:
            run = src.run
            if run is not None and is_continuation(line.text, src.in_traceback):
                run.lines += 1
                self._touch(run, line.ts, now_)
                run.add_line(text)
                ev = src.event
                if ev is not None and ev.match is not None and not ev.done and len(ev.trace) < self._max_stack:
                    ev.trace.append(line.text)
                if not src.in_traceback and starts_traceback(line.text):
                    src.in_traceback = True
                return self._maybe_tick(flushes)

        # A head line: the previous event of this source is complete.
        if src.event is not None and not src.event.done:
            flushes.extend(self._finish(src.event))
        run = self._run_for(line, now_, flushes)
        run.lines += 1
        self._touch(run, line.ts, now_)
        if not run.is_system:
            run.note_client(line.run_suffix or line.client)
            if run.checked_lines < _METADATA_LINES:
                self._observe_metadata(run, line)
        if isinstance(found, _Unknown):
            match = self.patterns.match(line.message, line.level, candidates, matched)
        else:
            match = found
        collector = None
        if match is not None:
            self.lines_matched += 1
            key = (match.severity.value, match.pattern_id)
            self.match_counts[key] = self.match_counts.get(key, 0) + 1
            collector = ContextCollector.pending(run, self._after)
        run.add_line(text)
        if collector is not None:
            run.collectors = (*run.collectors, collector)
        # A line without a match opens no event: nothing it could gather (frames) would be reported.
        src.event = Event(run=run, line=line, match=match, collector=collector) if match is not None else None
        src.run = run
        src.in_traceback = starts_traceback(line.text)
        if not run.is_system and line.run_id is not None and marker is not False and self._is_marker(line.message):
            # Every source's open event of this run is complete now (several instances, or syslog
            # and the drain, can log one run), not just this source's.
            flushes.extend(self._finish_events_of(run))
            run.marker_seen = True
            flushes.append(self._flush(run, EndReason.MARKER, final=False))
        return self._maybe_tick(flushes)

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> list[RunFlush]:
        """Advance the clock; flush runs whose grace window or idle timeout has passed."""
        if now > self.now:
            self.now = now
        now = self.now
        self._last_tick = now
        out: list[RunFlush] = []
        due: list[tuple[RunBuffer, EndReason]] = []
        # Oldest activity first: stop at the first run too recent to time out (no copy of every run).
        for run in self._order:
            quiet = now - run.last_activity
            if quiet < self._min_timeout:
                break
            if run.marker_seen:
                if quiet >= self._grace:
                    due.append((run, EndReason.LATE))
            elif quiet >= self._idle:
                due.append((run, EndReason.IDLE))
        for run, reason in due:
            out.append(self._close(run, reason))
        for run in self.systems.values():
            if run.issues and now - run.flushed_at >= self._periodic:
                out.append(self._flush(run, EndReason.PERIODIC, final=False))
        return out

    def flush_all(self, reason: EndReason) -> list[RunFlush]:
        """Flush every open run (end of input or shutdown). Runs idle past the timeout flush as idle."""
        out = self.tick(self.now)
        for run in list(self._order):
            out.append(self._close(run, reason))
        for run in list(self.systems.values()):
            out.extend(self._finish_events_of(run))
            if run.issues:
                out.append(self._flush(run, reason, final=False))
        return out

    @property
    def fast_path_off(self) -> str | None:
        """Why every line takes the full path (``None``: the compiled fast path is on)."""
        return unavailable_reason(self.config, self._fast)

    def runs_by_activity(self) -> list[RunBuffer]:
        """The open runs, least recently active first."""
        return list(self._order)

    @property
    def open_runs(self) -> int:
        """Number of runs currently open."""
        return len(self.runs)

    def _maybe_tick(self, flushes: list[RunFlush]) -> list[RunFlush]:
        if self.now - self._last_tick >= _TICK_EVERY_S:
            flushes.extend(self.tick(self.now))
        return flushes

    # ------------------------------------------------------------------ routing
    def _run_for(self, line: LogLine, now: float, flushes: list[RunFlush]) -> RunBuffer:
        run_id = line.run_id
        if run_id is None:
            run = self.systems.get(line.source)
            if run is None:
                run = self.systems[line.source] = RunBuffer(
                    f"system:{line.source}", None, line.source, self._before, now, self._after
                )
            return run
        run = self.runs.get(run_id)
        if run is None:
            if len(self.runs) >= self._max_runs:
                oldest = self._order.oldest()
                flushes.append(self._close(oldest, EndReason.EVICTED))
            run = self.runs[run_id] = RunBuffer(run_id, run_id, line.source, self._before, now, self._after)
            if run_id in self._completed:
                run.marker_seen = True
        return run

    def _touch(self, run: RunBuffer, ts: float | None, now: float) -> None:
        run.last_activity = now
        if ts is not None:
            if run.first_ts is None:
                run.first_ts = ts
            run.last_ts = ts
        if not run.is_system:
            self._order.touch(run)

    def _observe_metadata(self, run: RunBuffer, line: LogLine) -> None:
        run.checked_lines += 1
        if run.run_type_rank > 0:
            hay = f"{line.operation or ''} {line.message}"
            for rank, (name, rx) in enumerate(self._run_types[: run.run_type_rank]):
                if rx.search(hay):
                    run.run_type, run.run_type_rank = name, rank
                    break
        if run.stream is None:
            m = self._stream.search(line.message)
            if m is not None:
                with contextlib.suppress(IndexError, TypeError, ValueError):
                    run.stream = int(m.group(1))
        # Settled: no later line can change them, so the kernel may take this run's lines.
        run.meta_settled = run.run_type_rank == 0 and run.stream is not None

    def _is_marker(self, message: str) -> bool:
        return any(m.search(message) for m in self._markers)

    # ------------------------------------------------------------------ issues
    def _finish(self, ev: Event) -> list[RunFlush]:
        """Close an event: if it matched, fingerprint it and count it in its run."""
        ev.done = True
        if ev.match is None:
            return []
        run, line = ev.run, ev.line
        # Most events have no continuation lines: no trace, no frame.
        service = top_app_frame(trace_lines(ev.trace)) if ev.trace else None
        message = self._redact(line.message.strip())
        key = (message, line.client, line.run_suffix)
        masked = self._masked.get(key)
        if masked is None:
            # Repeated errors repeat their message: masking (a dozen regexes) is worth remembering.
            client, suffix = line.client, line.run_suffix
            # A client run's suffix usually is its client tag too: masked once.
            masked = mask_message(message, [n for n in (client, suffix if suffix != client else None) if n])
            if len(self._masked) >= _MASK_CACHE:
                self._masked.clear()
            self._masked[key] = masked
        fp_key = (masked, line.operation, service)
        fp = self._fingerprints.get(fp_key)
        if fp is None:
            # Occurrences of one issue share it: a dict lookup instead of a SHA-1 each.
            fp = fingerprint(masked, line.operation, service)
            if len(self._fingerprints) >= _MASK_CACHE:
                self._fingerprints.clear()
            self._fingerprints[fp_key] = fp
        ts = line.ts if line.ts is not None else (self.now or None)
        acc = run.issues.get(fp)
        if acc is not None:
            acc.occurrences += 1
            acc.last_seen = ts if ts is not None else acc.last_seen
            if len(acc.positions) < MAX_POSITIONS_PER_ISSUE:
                acc.positions.append(line.position)
            for pid in ev.match.pattern_ids:
                if pid not in acc.pattern_ids:
                    acc.pattern_ids.append(pid)
            if ev.match.severity is not acc.severity and ev.match.severity.rank > acc.severity.rank:
                acc.severity, acc.match = ev.match.severity, ev.match
            self._drop_collector(run, ev.collector)
            return []
        out: list[RunFlush] = []
        if len(run.issues) >= self._max_issues:
            out.append(self._flush(run, EndReason.PARTIAL, final=False))
        run.issues[fp] = IssueAccumulator(
            fingerprint=fp,
            match=ev.match,
            line=line,
            masked=masked,
            service=service or line.operation,
            trace=ev.trace,
            collector=ev.collector,
            first_seen=ts,
            last_seen=ts,
            positions=[line.position],
            pattern_ids=list(ev.match.pattern_ids),
            severity=ev.match.severity,
        )
        return out

    @staticmethod
    def _drop_collector(run: RunBuffer, collector: ContextCollector | None) -> None:
        if collector is not None and run.collectors:
            run.collectors = tuple(c for c in run.collectors if c is not collector)

    def _finish_events_of(self, run: RunBuffer) -> list[RunFlush]:
        out: list[RunFlush] = []
        for src in self._sources.values():
            ev = src.event
            if ev is not None and ev.run is run and not ev.done:
                out.extend(self._finish(ev))
        return out

    def _close(self, run: RunBuffer, reason: EndReason) -> RunFlush:
        """Final flush of a run; it leaves the open set."""
        pre = self._finish_events_of(run)
        if reason is EndReason.IDLE:
            self._add_incomplete(run)
        flush = self._flush(run, reason, final=True)
        self.runs.pop(run.key, None)
        self._order.remove(run)
        if self._kernel is not None:
            self._kernel.forget(run.key)
        if run.marker_seen:
            self._completed[run.key] = None
            self._completed.move_to_end(run.key)
            if len(self._completed) > self._max_runs:
                self._completed.popitem(last=False)
        for src in self._sources.values():
            if src.event is not None and src.event.run is run:
                src.event = None
            if src.run is run:
                src.run = None
        if pre:
            # Early partial flushes of the same run travel together with the final one.
            flush.issues = [i for f in pre for i in f.issues] + flush.issues
        return flush

    def _add_incomplete(self, run: RunBuffer) -> None:
        last = run.ring[-1] if run.ring else ""
        message = f"Run {run.run_id} stopped logging without its completion marker (silent for {self._idle:.0f} s)"
        match = Match(RUN_INCOMPLETE, Severity.CRITICAL, (RUN_INCOMPLETE,))
        fp = fingerprint(RUN_INCOMPLETE, run.run_type or "other", None)
        line = LogLine(text=message, message=message, source=run.source, position=0, ts=run.last_ts)
        collector = ContextCollector.of_lines(list(run.ring)[:-1], last) if last else None
        run.issues[fp] = IssueAccumulator(
            fingerprint=fp,
            match=match,
            line=line,
            masked=RUN_INCOMPLETE,
            service=run.run_type,
            trace=[],
            collector=collector,
            first_seen=run.last_ts,
            last_seen=run.last_ts,
            positions=[],
            pattern_ids=[RUN_INCOMPLETE],
            severity=Severity.CRITICAL,
        )

    def _flush(self, run: RunBuffer, reason: EndReason, final: bool) -> RunFlush:
        redact = self._redact
        issues: list[Issue] = []
        accs = list(run.issues.values())
        # Every issue's context, redacted in one pass.
        contexts = [acc.collector.render() if acc.collector is not None else [] for acc in accs]
        redacted = redact.many([c for context in contexts for c in context])
        start = 0
        for acc, context in zip(accs, contexts, strict=True):
            line = acc.line
            trace = trace_lines(acc.trace)
            issues.append(
                Issue(
                    fingerprint=acc.fingerprint,
                    severity=acc.severity,
                    pattern_id=acc.match.pattern_id,
                    message=redact(line.message.strip()),
                    masked_message=acc.masked,
                    run_id=run.run_id,
                    source=run.source,
                    client_id=line.run_suffix
                    or line.client
                    or (run.client_ids[0] if len(run.client_ids) == 1 else None),
                    operation=line.operation,
                    service=acc.service,
                    stack_trace=redact("\n".join(trace)),
                    context=redacted[start : start + len(context)],
                    first_seen=acc.first_seen,
                    last_seen=acc.last_seen,
                    occurrences=acc.occurrences,
                    pattern_ids=acc.pattern_ids,
                    positions=acc.positions,
                    run_type=None if run.is_system else (run.run_type or "other"),
                    stream=run.stream,
                )
            )
            start += len(context)
            run.counts[acc.severity.value] = run.counts.get(acc.severity.value, 0) + 1
            self._drop_collector(run, acc.collector)
        run.issues = {}
        run.flushed_at = self.now
        ended: EndReason | None = None
        if final:
            ended = EndReason.MARKER if run.marker_seen else reason
        elif reason is EndReason.MARKER:
            ended = EndReason.MARKER
        summary = RunSummary(
            run_id=run.run_id,
            source=run.source,
            first_ts=run.first_ts,
            last_ts=run.last_ts,
            lines=run.lines,
            run_type=run.run_type or "other",
            stream=run.stream,
            client_ids=list(run.client_ids),
            ended=ended,
            marker_seen=run.marker_seen or reason is EndReason.MARKER,
            final=final,
            issues_by_severity=dict(run.counts),
        )
        return RunFlush(run=summary, issues=issues, reason=reason)
