"""Per-run state: the context ring, open context collectors, issue accumulators and run metadata.

Everything here is bounded: the ring by ``context_before + 1 + context_after``, issues
by ``max_issues_per_run`` (the caller flushes early when it is reached), client names and positions
by fixed caps.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from stream_triage.records import LogLine, Match, Severity

MAX_CLIENTS_PER_RUN = 32
MAX_POSITIONS_PER_ISSUE = 100_000


@dataclass(slots=True)
class ContextCollector:
    """Context of one issue occurrence: lines before (from the ring), the line itself, lines after.

    Made with ``pending``, it holds only the line's serial number in its run: the run's ring keeps
    enough lines for the whole context, and the lines are copied out once (``freeze``) — when the
    ring would start losing them, or when the context is rendered — instead of appended one by one.
    Most collectors are dropped unread (repeats of an issue the run already has) and copy nothing.
    Frozen, the lines stay packed as the ring held them (``RunState.context``): one bytes object,
    not a str each, until they are rendered.
    """

    blob: bytes = b""  # the lines' bytes end to end (UTF-8, surrogatepass)
    lens: bytes = b""  # their lengths (uint32)
    index: int = 0  # which of them is the matched line
    wanted: int = 25
    run: RunState | None = None  # set while the lines are still only in the run's ring
    at: int = 0  # the matched line's serial number in ``run``
    due: int = 0  # the serial number of the line that would push this context's first line out

    @classmethod
    def pending(cls, run: RunState, wanted: int) -> ContextCollector:
        """A collector for the line ``run`` is about to add, reading its context from the ring."""
        at = run.serial
        return cls(b"", b"", 0, wanted, run, at, at + wanted + 1)

    @classmethod
    def of_lines(cls, before: list[str], line: str) -> ContextCollector:
        """A collector holding the given lines (no after-context)."""
        blob, lens = pack_lines([*before, line])
        return cls(blob, lens, len(before), 0)

    def freeze(self) -> None:
        """Copy the lines out of the ring (no-op once done)."""
        run = self.run
        if run is not None:
            self.blob, self.lens, self.index = run.context(self.at, self.wanted)
            self.run = None

    def lines(self) -> list[str]:
        """Every line: before, the matched one, after."""
        self.freeze()
        return unpack_lines(self.blob, self.lens)

    @property
    def before(self) -> list[str]:
        """The lines before the matched one."""
        return self.lines()[: self.index]

    @property
    def line(self) -> str:
        """The matched line."""
        return self.lines()[self.index]

    @property
    def after(self) -> list[str]:
        """The lines after the matched one."""
        return self.lines()[self.index + 1 :]

    def render(self) -> list[str]:
        """Context lines with the matching line marked ``>> `` and the others indented alike."""
        self.freeze()
        if _render_context is not None:
            return _render_context(self.blob, self.lens, self.index)
        lines = unpack_lines(self.blob, self.lens)
        return [(">> " if i == self.index else "   ") + s for i, s in enumerate(lines)]


def pack_lines(lines: list[str]) -> tuple[bytes, bytes]:
    """Lines as ``RunState.context`` packs them: their UTF-8 bytes end to end, and their lengths."""
    encoded = [s.encode("utf-8", "surrogatepass") for s in lines]
    return b"".join(encoded), array("I", [len(e) for e in encoded]).tobytes()


def unpack_lines(blob: bytes, lens: bytes) -> list[str]:
    """The lines ``pack_lines`` (or ``RunState.context``) packed."""
    out, pos = [], 0
    for n in memoryview(lens).cast("I"):
        out.append(blob[pos : pos + n].decode("utf-8", "surrogatepass"))
        pos += n
    return out


@dataclass(slots=True)
class Event:
    """A head line and its continuation lines (stack frames, dumped JSON) from one source."""

    run: RunBuffer
    line: LogLine
    match: Match | None
    collector: ContextCollector | None
    trace: list[str] = field(default_factory=list)
    done: bool = False


@dataclass(slots=True)
class IssueAccumulator:
    """One fingerprint within one run since the run's previous flush."""

    fingerprint: str
    match: Match
    line: LogLine
    masked: str
    service: str | None
    trace: list[str]
    collector: ContextCollector | None
    first_seen: float | None
    last_seen: float | None
    occurrences: int = 1
    positions: list[int] = field(default_factory=list)
    pattern_ids: list[str] = field(default_factory=list)
    severity: Severity = Severity.WARNING


class _PyRunState:
    """Pure-Python twin of ``_kernel.RunState``, for installs without the compiled kernel."""

    __slots__ = (
        "_collectors",
        "_keep",
        "_ring",
        "checked_lines",
        "client_ids",
        "due",
        "first_ts",
        "is_system",
        "key",
        "last_activity",
        "last_ts",
        "lines",
        "meta_settled",
        "serial",
    )

    def __init__(self, capacity: int, extra: int = 0) -> None:
        self._keep = capacity
        self._ring: deque[str] = deque(maxlen=capacity + extra)
        self.serial = 0
        self.due = 0
        self.lines = 0
        self.checked_lines = 0
        self.last_activity = 0.0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.key: str | None = None
        self.collectors: tuple[ContextCollector, ...] = ()
        self.client_ids: list[str] = []
        self.is_system = False
        self.meta_settled = False

    @property
    def ring(self) -> list[str]:
        """The context ring, oldest line first (a copy)."""
        return list(self._ring)[-self._keep :] if self._keep else []

    def context(self, at: int, wanted: int) -> tuple[bytes, bytes, int]:
        """Line ``at`` (a serial number), up to ``capacity`` lines before it and ``wanted`` after it,
        packed (``pack_lines``), and the index of line ``at`` among them."""
        first = self.serial - len(self._ring)
        if not first <= at < self.serial or wanted < 0:
            raise IndexError(f"line {at} is not in the ring (it holds {first} to {self.serial - 1})")
        lines = list(self._ring)
        i = at - first
        lo = max(0, i - self._keep)
        return (*pack_lines(lines[lo : i + 1 + wanted]), i - lo)

    def add_line(self, text: str) -> None:
        """Append a (truncated) line to the ring (collectors due first take their lines from it)."""
        if self.collectors and self.serial >= self.due:
            keep = []
            for c in self.collectors:
                if c.due > self.serial:
                    keep.append(c)
                else:
                    c.freeze()
            self.collectors = tuple(keep)
        self._ring.append(text)
        self.serial += 1

    @property
    def collectors(self) -> tuple[ContextCollector, ...]:
        """Pending after-context collectors (a tuple)."""
        return self._collectors

    @collectors.setter
    def collectors(self, value: tuple[ContextCollector, ...]) -> None:
        self._collectors = value
        self.due = min((c.due for c in value), default=0)  # as the C type does


class _PyRunOrder:
    """Pure-Python twin of ``_kernel.RunOrder``: open runs by last activity, oldest first."""

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: OrderedDict[int, _PyRunState] = OrderedDict()

    def touch(self, run: _PyRunState) -> None:
        """Move a run to the recent end (adding it if new)."""
        self._runs[id(run)] = run
        self._runs.move_to_end(id(run))

    def remove(self, run: _PyRunState) -> None:
        """Take a run out (no-op if it is not in)."""
        self._runs.pop(id(run), None)

    def oldest(self) -> _PyRunState | None:
        """The least recently active run, or None."""
        return next(iter(self._runs.values()), None)

    def __iter__(self) -> Iterator[_PyRunState]:
        return iter(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)


try:  # the compiled kernel's versions, which its per-line loop updates directly
    from stream_triage.pipeline._kernel import RunOrder, RunState
    from stream_triage.pipeline._kernel import render_context as _render_context
except ImportError:  # pragma: no cover - exercised only where the extension could not be built
    RunState = _PyRunState  # type: ignore[misc,assignment]
    RunOrder = _PyRunOrder  # type: ignore[misc,assignment]
    _render_context = None


class RunBuffer(RunState):  # type: ignore[misc,valid-type]
    """State of one open run (or of one source's system bucket).

    The ring, line counters, times and client names live in ``RunState`` (C when the kernel is
    built), where the pipeline's per-line loop updates them; the rest is only touched by Python.
    """

    __slots__ = (
        "counts",
        "flushed_at",
        "issues",
        "marker_seen",
        "run_id",
        "run_type",
        "run_type_rank",
        "source",
        "stream",
    )

    def __init__(
        self, key: str, run_id: str | None, source: str, context_before: int, now: float, context_after: int = 0
    ) -> None:
        # The ring keeps the after-context too (and the line itself): pending collectors read it.
        super().__init__(context_before, context_after + 1)
        self.key = key
        self.run_id = run_id
        self.source = source
        self.is_system = run_id is None
        self.issues: dict[str, IssueAccumulator] = {}
        self.last_activity = now
        self.flushed_at = now
        self.marker_seen = False
        self.run_type: str | None = None
        self.run_type_rank = 1 << 30
        self.stream: int | None = None
        self.counts: dict[str, int] = {}

    def note_client(self, name: str | None) -> None:
        """Remember a client name seen in the run (bounded)."""
        if name and name not in self.client_ids and len(self.client_ids) < MAX_CLIENTS_PER_RUN:
            self.client_ids.append(name)
