"""The pipeline's fast path: which lines of a batch need Python, and the C loop for the rest.

One Hyperscan pass over a whole batch (``FastPath.classify``) flags every line that a pattern, a
level-only pattern, a completion marker or an ANSI escape could concern. The compiled kernel
(``_kernel.c``) takes every other line of an open run whose metadata is settled, and untagged lines
that continue a source's last line or belong to its system bucket; it stops at anything else and
Python processes that line in full. ``FastPath.build`` returns ``None`` whenever the configuration
makes this unsafe (a custom line format, no Hyperscan or no compiled kernel, an expression Hyperscan
cannot take); the pipeline then processes every line in full.
"""

from __future__ import annotations

import re
from array import array

from stream_triage.config import DEFAULT_LINE_REGEX, Config
from stream_triage.pipeline.match import ChunkScanner, PatternSet, at_least, names_characters, word_or_space
from stream_triage.pipeline.parse import LEVEL_ALIASES

try:
    from stream_triage.pipeline import _kernel
except ImportError:  # pragma: no cover - exercised only where the extension could not be built
    _kernel = None  # type: ignore[assignment]

FLAG_FULL = 1  # the line takes the full path
FLAG_CAND = 2  # some patterns may match: confirm them first
FLAG_MARKER = 4  # a completion marker may be in the message (with FLAG_FULL)


def unavailable_reason(config: Config, fast: FastPath | None) -> str | None:
    """Why the pipeline runs without its fast path (``fast`` is what ``FastPath.build`` returned)."""
    if fast is not None:
        return None
    if config.parse.line_regex != DEFAULT_LINE_REGEX:
        return "a custom parse.line_regex"
    if _kernel is None:
        return "the compiled kernel is not installed (no C compiler when the package was installed)"
    return "Hyperscan is not installed or rejected a pattern"


def native_available() -> bool:
    """Whether the compiled kernel is importable (it is built at install time when a compiler exists)."""
    return _kernel is not None


_FULL, _PATTERN, _UNLESS = 0, 1, 2  # what a scanner expression stands for
# How far an exact hit goes (as _kernel.classify reads them): not exact; the pattern fires; the text
# matches but the pattern's level conditions are still to be checked.
_EXACT_NO, _EXACT_SETTLES, _EXACT_TEXT = 0, 1, 2
_NUMBER_GROUP = re.compile(r"\((?:\\d|\[0-9\])\+\)\Z")


class FastPath:
    """Batch classification for the default line format."""

    def __init__(
        self,
        scanner: ChunkScanner,
        roles: list[tuple[int, int]],
        levels: tuple[bytes, ...],
        levelled: set[int] | None = None,
        symbols: bool = False,
    ) -> None:
        if len(roles) > 65535:
            raise ValueError("too many expressions for the fast path")
        self._scanner = scanner
        # Expression id → role (a pattern's own expression, its ``unless``, or an expression —
        # levels, markers, escapes — whose lines always take the full path), pattern index, and
        # how far Hyperscan's hit can be trusted (``_EXACT_*``); packed for the C classifier.
        self._roles = bytes(role for role, _ in roles)
        self._patterns = array("H", [max(p, 0) for _, p in roles]).tobytes()
        # A pattern's exact hit settles a line only if its ``unless`` is scanned exactly too; an
        # ``unless`` Hyperscan cannot take exactly is left out of the scan, and then the pattern's
        # hits are only candidates that Python confirms (``unless`` included).
        inexact_unless = {p for (role, p), ok in zip(roles, scanner.exact, strict=True) if role == _UNLESS and not ok}
        levelled = levelled or set()
        self._exact = bytes(
            _EXACT_NO
            if not ok or (role == _PATTERN and p in inexact_unless)
            else _EXACT_TEXT
            if role == _PATTERN and p in levelled
            else _EXACT_SETTLES
            for (role, p), ok in zip(roles, scanner.exact, strict=True)
        )
        self._sink = _kernel.HitSink()
        # Levels (upper case, with aliases) a level-only pattern fires on: the kernel leaves such lines.
        self._levels = levels
        # With ``symbols``, messages whose only non-ASCII characters are symbols (emoji, arrows) are
        # scanned with each as "\x01", as PatternSet.candidates does, and the kernel may take them.
        self._word_or_space = word_or_space if symbols else None

    @classmethod
    def build(cls, config: Config, patterns: PatternSet) -> FastPath | None:
        """The fast path for this configuration, or ``None`` when it cannot be exact."""
        if config.parse.line_regex != DEFAULT_LINE_REGEX or _kernel is None:
            return None
        expressions: list[tuple[str, bool, str]] = []  # (regex, caseless, scanner mode)
        roles: list[tuple[int, int]] = []
        levels: set[str] = set()
        levelled: set[int] = set()  # patterns with level conditions
        for index, spec in enumerate(patterns.specs):
            if not spec.regex:
                levels.update(spec.levels or ())
                continue
            caseless = not spec.case_sensitive
            rx: str | None = spec.regex
            # An exact hit settles a line without Python for patterns that need nothing but the text;
            # with level conditions it still spares Python the regex (the level is checked there). A
            # min_value is matched exactly only on a trailing (\d+).
            minimum = patterns.min_value(index)
            if minimum is not None:
                group = _NUMBER_GROUP.search(spec.regex)
                number = at_least(group.group(0), minimum) if group and spec.regex.count("(") == 1 else None
                rx = spec.regex[: group.start()] + number if group and number else None
            if rx is not None:
                expressions.append((rx, caseless, "exact"))
                roles.append((_PATTERN, index))
                if spec.levels is not None or spec.not_levels:
                    levelled.add(index)
                if spec.unless:
                    expressions.append((spec.unless, caseless, "subset"))
                    roles.append((_UNLESS, index))
            else:
                expressions.append((spec.regex, caseless, "superset"))
                roles.append((_PATTERN, index))
        expressions.extend((m, False, "superset") for m in config.flush.completion_markers)
        roles += [(_FULL, -1)] * (len(expressions) - len(roles))
        names = set(levels) | {alias for alias, target in LEVEL_ALIASES.items() if target in levels}
        try:
            symbols = patterns.symbols_scan_as_ascii and not any(map(names_characters, config.flush.completion_markers))
            return cls(
                ChunkScanner(expressions), roles, tuple(sorted(n.upper().encode() for n in names)), levelled, symbols
            )
        except ValueError:
            return None

    def kernel(
        self, runs: dict, order: object, systems: dict, chars: int, meta_lines: int, max_stack: int
    ) -> _kernel.Kernel:
        """The C loop bound to one pipeline's runs, their activity order and its system buckets."""
        assert _kernel is not None
        return _kernel.Kernel(runs, order, systems, chars, meta_lines, self._levels, max_stack)

    def classify(
        self, data: bytes, starts: memoryview
    ) -> tuple[bytearray, dict[int, set[int]], dict[int, set[int]], bytes, bytes]:
        """Flags per line (``FLAG_FULL``/``FLAG_CAND``), the patterns that may match each line's message
        and those that do, per line whether its message was scanned (only then are those all the
        patterns that can match), and the lines' parsed heads for ``Kernel.load``.

        ``starts`` holds each line's byte offset (and one past the end). The lines' messages are
        scanned one per line (see ``ChunkScanner``): a pattern matched exactly flags its line
        ``FLAG_FULL``, unless the pattern's ``unless`` matched there too; an inexact hit makes the line
        a candidate. Non-ASCII lines need no flag: the kernel never takes them (the scanner works with
        ASCII semantics, ``regex`` with Unicode ones).
        """
        sink = self._sink
        sink.clear()
        messages, index, scanned, heads = _kernel.messages(data, starts, self._word_or_space)
        self._scanner.scan(messages, sink)
        flags, maybe, sure = _kernel.classify(sink, index, self._roles, self._patterns, self._exact)
        sink.clear()
        candidates: dict[int, set[int]] = {}
        for line, pattern in maybe:
            candidates.setdefault(line, set()).add(pattern)
        matched: dict[int, set[int]] = {}
        for line, pattern in sure:
            matched.setdefault(line, set()).add(pattern)
        return flags, candidates, matched, scanned, heads


def line_fields(data: bytes, starts: memoryview, heads: bytes, i: int) -> tuple | None:
    """Line ``i`` as ``LineParser`` parses it, from the head ``classify`` already parsed; ``None`` when
    the line is not a plain run-tagged one (then ``LineParser`` must parse it)."""
    assert _kernel is not None
    return _kernel.line_fields(data, starts, heads, i)


def index_lines(data: bytes) -> memoryview:
    """Byte offset of each line of ``data`` and one past the end (as ``Py_ssize_t``)."""
    assert _kernel is not None
    return memoryview(_kernel.index_lines(data)).cast("n")
