"""Match stage: which pattern (if any) a line triggers.

``PatternSet`` compiles the packs once. When Hyperscan is installed it scans each message against all
patterns in one pass (prefilter mode) and only the few candidates are confirmed with ``regex``, which
also enforces a per-match time limit so a pathological user regex cannot hang the pipeline.
Without Hyperscan every pattern is tried in turn: correct, slower.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import regex

from stream_triage.patterns import PatternSpec
from stream_triage.records import Match

try:  # optional accelerator: a wheel exists for the common platforms
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised on platforms without a wheel
    _hs = None


_ASCII = regex.compile(r"[\x00-\x7f]+")
_NON_ASCII = regex.compile(r"[^\x00-\x7f]")
_WORD_OR_SPACE = regex.compile(r"[\w\s]")
# For FastPath: is this one character a word or space character to the patterns?
word_or_space = _WORD_OR_SPACE.match
_NAMES_CHARACTERS = regex.compile(r"[^\x00-\x7f]|\\[xuUNpPc0-7]")


def names_characters(rx: str) -> bool:
    """Whether a regex names non-ASCII or control characters (literally or by escape): its verdict on
    a message may change when such characters are scanned as stand-ins."""
    return _NAMES_CHARACTERS.search(rx) is not None
_MATCH_CACHE = 4096


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
        # Patterns that name non-ASCII or control characters (literally or by escape).
        self._unicode_always = sorted(
            set(self._always) | {i for i in self._text if names_characters(self._compiled[i].spec.regex or "")}
        )
        self._hits: list[int] = []
        self._matches: dict[tuple[int, ...], Match] = {}  # pattern indexes found → their Match
        # pattern id → searches cut off by the time limit (a pathological pattern on a hostile line).
        self.timeouts: dict[str, int] = {}

    def min_value(self, index: int) -> int | None:
        """The resolved ``min_value`` of pattern ``index`` (settings looked up), if it has one."""
        return self._compiled[index].min_value

    @property
    def symbols_scan_as_ascii(self) -> bool:
        """Whether a message's symbols (non-ASCII characters that are neither word nor space) may
        be scanned as ``\\x01``: no pattern names such characters, so no verdict changes."""
        return not self._unicode_always

    @property
    def accelerated(self) -> bool:
        """Whether the Hyperscan prefilter is in use."""
        return self._db is not None

    def candidates(self, message: str) -> list[int]:
        """Indexes of text patterns that may match ``message`` (a superset of the real matches)."""
        if self._db is None:
            return self._text
        always = self._always
        if not message.isascii():
            # Hyperscan runs with ASCII \w/\b/\s. Symbols and punctuation (emoji) are neither word
            # characters nor spaces in either world: as "\x01" they leave every pattern's verdict the
            # same, except where a pattern names such characters itself (those are always tried).
            # Any other non-ASCII character: every pattern is tried.
            if _WORD_OR_SPACE.search(_ASCII.sub("", message)) is not None:
                return self._text
            message = _NON_ASCII.sub("\x01", message)
            always = self._unicode_always
        hits = self._hits
        hits.clear()
        self._db.scan(message.encode("ascii"), match_event_handler=self._on_hit)
        if always:
            return sorted(set(hits).union(always))
        return sorted(set(hits)) if len(hits) > 1 else list(hits)

    def _on_hit(self, pid: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        self._hits.append(pid)

    def match(
        self,
        message: str,
        level: str | None = None,
        candidates: Iterable[int] | None = None,
        matched: Collection[int] | None = None,
    ) -> Match | None:
        """Confirm candidates and return the worst matching pattern, or ``None``.

        ``candidates`` (pattern indexes, in pack order) replaces the per-message prefilter when the
        caller already scanned a whole chunk; those in ``matched`` are known to match the text (an
        exact scan found them and not their ``unless``): only their level conditions are checked.
        """
        compiled = self._compiled
        found: list[int] = []
        for i in self.candidates(message) if candidates is None else candidates:
            c = compiled[i]
            if matched is not None and i in matched:
                if _level_ok(c.spec, level):
                    found.append(i)
            elif self._confirm(c, message, level):
                found.append(i)
        if level is not None:
            for i in self._by_level.get(level, ()):
                if level not in compiled[i].spec.not_levels:
                    found.append(i)
        if not found:
            return None
        # Lines that match repeat the same few pattern combinations: a Match (immutable) per combination.
        key = tuple(found)
        result = self._matches.get(key)
        if result is None:
            best = compiled[found[0]]
            for i in found[1:]:
                if compiled[i].rank > best.rank:
                    best = compiled[i]
            result = Match(best.spec.id, best.spec.severity, tuple(compiled[i].spec.id for i in found))
            if len(self._matches) >= _MATCH_CACHE:
                self._matches.clear()
            self._matches[key] = result
        return result

    def _confirm(self, c: _Compiled, message: str, level: str | None) -> bool:
        spec = c.spec
        if not _level_ok(spec, level):
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


def _level_ok(spec: PatternSpec, level: str | None) -> bool:
    """Whether a line at ``level`` meets the pattern's level conditions (its text aside)."""
    if level is None:
        return spec.levels is None
    return (spec.levels is None or level in spec.levels) and level not in spec.not_levels


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
    return compile_taking(entries)


_REJECTED_ID = regex.compile(r"\(id:(\d+)\)\s*$")


def compile_taking(entries: list[tuple[bytes, int, int]]) -> tuple[object | None, list[int]]:
    """One Hyperscan database of the ``(expression, id, flags)`` entries it takes, and the ids of those
    it rejects (syntax it lacks). Hyperscan names the first rejected expression in its error, so
    this costs one compile per rejected expression, not one per expression."""
    entries = list(entries)
    rejected: list[int] = []
    while entries:
        db, index = _compile_or_reject(entries)
        if index is None:
            return db, rejected
        rejected.append(entries.pop(index)[1])
    return None, rejected


def _compile_or_reject(entries: list[tuple[bytes, int, int]]) -> tuple[object | None, int | None]:
    """A database of all ``entries``, or the position in ``entries`` of one that Hyperscan rejects."""
    assert _hs is not None
    db = _hs.Database()
    try:
        db.compile(expressions=[e[0] for e in entries], ids=[e[1] for e in entries], flags=[e[2] for e in entries])
    except Exception as exc:  # hyperscan.error "<message> (id:<index>)"
        m = _REJECTED_ID.search(str(exc))
        index = int(m.group(1)) if m is not None and int(m.group(1)) < len(entries) else None
        if index is None:
            index = next((i for i, e in enumerate(entries) if _try_compile([e]) is None), 0)
        return None, index
    return db, None


def _try_compile(entries: list[tuple[bytes, int, int]]) -> object | None:
    assert _hs is not None
    db = _hs.Database()
    try:
        db.compile(expressions=[e[0] for e in entries], ids=[e[1] for e in entries], flags=[e[2] for e in entries])
    except Exception:  # hyperscan.error: syntax it does not support
        return None
    return db


class ChunkScanner:
    """Finds, in one Hyperscan pass over a whole batch of messages, where some regexes match.

    Used by the pipeline's fast path: a line nothing can match needs no parse and no regex at all.
    The batch is scanned as ``_kernel.messages`` makes it — each line's message without its head
    (time, run tag, client, operation, level), one per line — in multi-line mode, so ``^`` and ``$``
    anchor at each message's start and end as they do on ``LogLine.message``. Each expression has a mode:

    - ``"superset"``: prefilter mode: every real match is reported, and maybe more.
    - ``"exact"``: rewritten so it cannot match a newline (messages hold none, so nothing within a
      message changes) and matched exactly where Hyperscan can (``exact[i]`` tells); else as
      ``"superset"``. Every exact hit is a real match within one message.
    - ``"subset"``: like ``"exact"``, but never reported where it cannot be exact. For ``unless``.

    Construction raises ``ValueError`` when Hyperscan is missing or rejects a superset expression.
    """

    def __init__(self, expressions: list[tuple[str, bool, str]]) -> None:
        if _hs is None:
            raise ValueError("hyperscan is not installed")
        # One database: each expression in its exact form where it has one (plain flags), else as a
        # superset (per-expression prefilter flag); a subset without an exact form is left out. One
        # pass over the batch instead of one per kind of expression.
        entries: list[tuple[bytes, int, int]] = []
        supersets: dict[int, tuple[bytes, int, int]] = {}
        exact = [False] * len(expressions)
        for i, (rx, caseless, mode) in enumerate(expressions):
            base = _hs.HS_FLAG_MULTILINE | (_hs.HS_FLAG_CASELESS if caseless else 0)
            superset = (rx.encode("utf-8"), i, base | _hs.HS_FLAG_PREFILTER)
            single = single_line(rx) if mode != "superset" else None
            if single is not None:
                exact[i] = True
                entries.append((single.encode("utf-8"), i, base))
                if mode != "subset":
                    supersets[i] = superset
            elif mode != "subset":
                entries.append(superset)
        # An exact form Hyperscan rejects falls back to its superset (a subset is dropped); a rejected
        # superset makes the fast path impossible. Each rejection costs one more compile.
        db = None
        while entries:
            db, index = _compile_or_reject(entries)
            if index is None:
                break
            i = entries[index][1]
            if not exact[i]:
                raise ValueError(f"hyperscan rejected an expression: {expressions[i][0]!r}")
            exact[i] = False
            if i in supersets:
                entries[index] = supersets[i]
            else:
                del entries[index]
        self._db = db
        self.exact = exact

    def scan(self, data: bytes, on_hit: object) -> None:
        """Call ``on_hit(expression id, start, end, flags, context)`` for every hit in ``data``."""
        if self._db is not None:
            self._db.scan(data, match_event_handler=on_hit)


# The \s of ``regex`` (which PatternSet uses) on ASCII text, without the newline.
_SPACE = "\\t\\x0b\\x0c\\r "
_NEWLINE_ESCAPES = frozenset("nvRNhHVpPG")


def single_line(rx: str) -> str | None:
    """``rx`` rewritten so it cannot match a newline, with ``\\A``/``\\Z`` as ``^``/``$``; ``None``
    when it uses something this cannot rewrite safely (``\\n``, inline flags, POSIX classes…).

    On text without newlines — a message — the rewrite matches exactly what ``rx`` matches.
    """
    if "\n" in rx or "(?" in rx.replace("(?:", "").replace("(?!", "").replace("(?=", "").replace("(?<", ""):
        return None  # a literal newline; inline flags ((?s) would let "." match a newline)
    out: list[str] = []
    i, n = 0, len(rx)
    in_class = negated = False
    while i < n:
        c = rx[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            e = rx[i + 1]
            if e in _NEWLINE_ESCAPES or e.isdigit() or e in "xcuUoN":
                return None  # may denote a newline (or is rare enough not to bother)
            if e == "s":
                out.append(_SPACE if in_class else f"[{_SPACE}]")
            elif e in "WD":
                if in_class:
                    return None
                out.append("[^0-9A-Za-z_\\n]" if e == "W" else "[^0-9\\n]")
            elif e == "A" and not in_class:
                out.append("^")
            elif e in "Zz" and not in_class:
                out.append("$")
            else:
                out.append(rx[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and i + 1 < n and rx[i + 1] in ":.=":
                return None  # POSIX classes
            if c == "]":
                if negated:
                    out.append("\\n")
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class, negated = True, i + 1 < n and rx[i + 1] == "^"
            j = i + 2 if negated else i + 1
            out.append(rx[i:j])
            if j < n and rx[j] == "]":  # a leading "]" is literal
                out.append("]")
                j += 1
            i = j
            continue
        out.append(c)
        i += 1
    return None if in_class else "".join(out)


def at_least(number_group: str, minimum: int) -> str | None:
    """A regex for the decimal numbers >= ``minimum`` (leading zeros allowed), to stand in for a
    ``(\\d+)`` capture group compared with a ``min_value``; ``None`` for other groups."""
    if number_group not in ("(\\d+)", "([0-9]+)") or minimum < 0:
        return None
    digits = str(minimum)
    k = len(digits)
    alternatives = [f"[1-9][0-9]{{{k},}}"]  # more digits
    for i, d in enumerate(digits):
        if d != "9":
            low = int(d) + 1 if i else max(int(d) + 1, 1)
            rest = f"[0-9]{{{k - i - 1}}}" if k - i - 1 else ""
            alternatives.append(f"{digits[:i]}[{low}-9]{rest}")
    alternatives.append(digits)
    return "0*(?:" + "|".join(alternatives) + ")"
