"""Match stage: which pattern (if any) a line triggers.

``PatternSet`` compiles the packs once. When Hyperscan is installed it scans each message against all
patterns in one pass (prefilter mode) and only the few candidates are confirmed with ``regex``, which
also enforces a per-match time limit so a pathological user regex cannot hang the pipeline.
Without Hyperscan every pattern is tried in turn: correct, slower.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import regex

from stream_triage.patterns import PatternSpec
from stream_triage.records import Match

try:  # optional accelerator: a wheel exists for the common platforms
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised on platforms without a wheel
    _hs = None


@dataclass(slots=True)
class _Compiled:
    spec: PatternSpec
    search: regex.Pattern | None
    unless: regex.Pattern | None
    min_value: int | None
    rank: int


class PatternSet:
    """All active patterns, compiled. ``match(message, level)`` returns the worst match or ``None``."""

    def __init__(
        self,
        specs: Iterable[PatternSpec],
        settings: Mapping[str, int] | None = None,
        timeout_s: float = 0.05,
        use_hyperscan: bool = True,
    ) -> None:
        settings = settings or {}
        self.timeout_s = timeout_s
        self.specs = list(specs)
        self._compiled: list[_Compiled] = []
        for spec in self.specs:
            flags = regex.V0 if spec.case_sensitive else regex.V0 | regex.IGNORECASE
            mv = spec.min_value
            if isinstance(mv, str):
                if mv not in settings:
                    raise ValueError(f"{spec.origin}: min_value names unknown setting {mv!r}")
                mv = int(settings[mv])
            self._compiled.append(
                _Compiled(
                    spec=spec,
                    search=regex.compile(spec.regex, flags) if spec.regex else None,
                    unless=regex.compile(spec.unless, flags) if spec.unless else None,
                    min_value=mv,
                    rank=spec.severity.rank,
                )
            )
        # Level-only patterns need no text scan; they are checked by a dict lookup.
        self._by_level: dict[str, list[int]] = {}
        self._text: list[int] = []
        for i, c in enumerate(self._compiled):
            if c.search is None:
                for level in c.spec.levels or ():
                    self._by_level.setdefault(level, []).append(i)
            else:
                self._text.append(i)
        self._db = None
        self._always: list[int] = list(self._text)
        if use_hyperscan and _hs is not None and self._text:
            self._db, self._always = _build_hyperscan(self._compiled, self._text)
        self._hits: list[int] = []
        # pattern id → searches cut off by the time limit (a pathological pattern on a hostile line).
        self.timeouts: dict[str, int] = {}

    @property
    def accelerated(self) -> bool:
        """Whether the Hyperscan prefilter is in use."""
        return self._db is not None

    def candidates(self, message: str) -> list[int]:
        """Indexes of text patterns that may match ``message`` (a superset of the real matches)."""
        if self._db is None or not message.isascii():
            # Hyperscan runs with ASCII \w/\b; on non-ASCII text it could miss what ``regex`` finds.
            return self._text
        hits = self._hits
        hits.clear()
        self._db.scan(message.encode("ascii"), match_event_handler=self._on_hit)
        if self._always:
            return sorted(set(hits).union(self._always))
        return sorted(set(hits)) if len(hits) > 1 else list(hits)

    def _on_hit(self, pid: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        self._hits.append(pid)

    def match(self, message: str, level: str | None = None, candidates: Iterable[int] | None = None) -> Match | None:
        """Confirm candidates and return the worst matching pattern, or ``None``.

        ``candidates`` (pattern indexes, in pack order) replaces the per-message prefilter when the
        caller already scanned a whole chunk.
        """
        found: list[_Compiled] = []
        for i in self.candidates(message) if candidates is None else candidates:
            c = self._compiled[i]
            if self._confirm(c, message, level):
                found.append(c)
        if level is not None:
            for i in self._by_level.get(level, ()):
                c = self._compiled[i]
                if level not in c.spec.not_levels:
                    found.append(c)
        if not found:
            return None
        best = found[0]
        for c in found[1:]:
            if c.rank > best.rank:
                best = c
        return Match(best.spec.id, best.spec.severity, tuple(c.spec.id for c in found))

    def _confirm(self, c: _Compiled, message: str, level: str | None) -> bool:
        spec = c.spec
        if level is not None:
            if spec.levels is not None and level not in spec.levels:
                return False
            if level in spec.not_levels:
                return False
        elif spec.levels is not None:
            return False
        assert c.search is not None
        try:
            m = c.search.search(message, timeout=self.timeout_s)
            if m is None:
                return False
            if c.min_value is not None:
                try:
                    if int(m.group(1)) < c.min_value:
                        return False
                except (TypeError, ValueError):
                    return False
            return not (c.unless is not None and c.unless.search(message, timeout=self.timeout_s))
        except TimeoutError:
            # A pathological pattern on a pathological line: treat as no match rather than stall.
            self.timeouts[spec.id] = self.timeouts.get(spec.id, 0) + 1
            return False


def _build_hyperscan(compiled: list[_Compiled], text: list[int]) -> tuple[object | None, list[int]]:
    """Compile text patterns into one Hyperscan database; patterns it cannot take are always tried."""
    assert _hs is not None
    # ASCII semantics (no UTF8/UCP): compiling Unicode classes costs seconds at start-up, and the
    # prefilter is only used for ASCII messages, where both agree (see ``candidates``).
    base = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_SINGLEMATCH
    entries = []
    for i in text:
        c = compiled[i]
        f = base if c.spec.case_sensitive else base | _hs.HS_FLAG_CASELESS
        entries.append((c.spec.regex.encode("utf-8"), i, f))
    db = _try_compile(entries)
    if db is not None:
        return db, []
    # Some pattern uses syntax Hyperscan lacks: find which (one compile each), try the rest with regex.
    good = [e for e in entries if _try_compile([e]) is not None]
    always = [e[1] for e in entries if e not in good]
    return (_try_compile(good) if good else None), always


def _try_compile(entries: list[tuple[bytes, int, int]]) -> object | None:
    assert _hs is not None
    db = _hs.Database()
    try:
        db.compile(expressions=[e[0] for e in entries], ids=[e[1] for e in entries], flags=[e[2] for e in entries])
    except Exception:  # hyperscan.error: syntax it does not support
        return None
    return db


class ChunkScanner:
    """Finds, in one Hyperscan pass over a whole chunk of lines, where any of some regexes may match.

    Used by the pipeline's fast path: a line nothing can match needs no parse and no regex at all.
    Expressions are compiled in prefilter, multi-line mode with their ``^`` anchors removed (they are
    written against the message, which starts after the run tag), so the result is a superset.
    Construction raises ``ValueError`` when Hyperscan is missing or rejects an expression.
    """

    def __init__(self, expressions: list[tuple[str, bool]], group_of: list[int] | None = None) -> None:
        if _hs is None:
            raise ValueError("hyperscan is not installed")
        self.group_of = group_of or [0] * len(expressions)
        # No SINGLEMATCH here: every line that matches must be reported, not just the first.
        base = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_MULTILINE
        self._db = _hs.Database()
        try:
            self._db.compile(
                expressions=[_unanchor(rx).encode("utf-8") for rx, _ in expressions],
                ids=list(range(len(expressions))),
                flags=[base | _hs.HS_FLAG_CASELESS if caseless else base for _, caseless in expressions],
            )
        except Exception as exc:  # hyperscan.error: unsupported syntax
            raise ValueError(f"hyperscan rejected an expression: {exc}") from None
        self._hits: list[tuple[int, int]] = []

    def scan(self, data: bytes) -> list[tuple[int, int]]:
        """(expression id, end offset just past the match) of every hit in ``data``."""
        hits = self._hits = []
        self._db.scan(data, match_event_handler=self._on_hit)
        return hits

    def _on_hit(self, pid: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
        self._hits.append((pid, to))


def _unanchor(rx: str) -> str:
    """Drop ``^`` anchors outside character classes: a superset, for matching inside whole lines."""
    out: list[str] = []
    i, n, in_class = 0, len(rx), False
    while i < n:
        c = rx[i]
        if c == "\\" and i + 1 < n:
            out.append(rx[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            if i + 1 < n and rx[i + 1] == "^":
                out.append("^")
                i += 1
            if i + 1 < n and rx[i + 1] == "]":
                out.append("]")
                i += 1
            i += 1
            continue
        elif c == "^":
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)
