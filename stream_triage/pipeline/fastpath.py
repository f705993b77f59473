"""The pipeline's fast path: which lines of a chunk need the full treatment, found in C.

For the default line format, one regex pass (``tags``) yields every line's ISO prefix and run id, and
one Hyperscan pass (``flagged``) yields every line that a pattern, a level-only pattern, a completion
marker, an ANSI escape or non-ASCII text could concern. Everything else is an ordinary line of an open
run whose metadata (run type, stream) is settled. ``FastPath.build`` returns ``None`` whenever the
configuration makes this unsafe (a custom line format, no Hyperscan, an expression Hyperscan cannot
take); the pipeline then processes every line in full.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

from stream_triage.config import DEFAULT_LINE_REGEX, Config
from stream_triage.pipeline.match import ChunkScanner, PatternSet
from stream_triage.pipeline.parse import LEVEL_ALIASES, parse_iso_time

# A line whose first token (after an optional ISO time prefix, as parse.LineParser strips it) is a
# run tag belongs to that run: (prefix, run id, client suffix, client tag). Anything else goes through
# the full parse.
_TAG = re.compile(
    r"(\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?\] )?"
    r"\[(\d{6}-\d{6})(?:-([^\]]+))?\]\s*(?:\[([^\]]*)\])?"
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_PLUS_ONE = (1).__add__  # line length plus its newline, mapped in C
_PREFIX_TIME = re.compile(r"\[?([^\]\s]+)")


class FastPath:
    """Chunk classification for the default line format."""

    def __init__(self, scanner: ChunkScanner, pattern_of: list[int]) -> None:
        self._scanner = scanner
        # Expression id → index of the pattern it stands for in the PatternSet, or -1 for expressions
        # (levels, markers, escapes) whose lines always take the full path.
        self._pattern_of = pattern_of

    @classmethod
    def build(cls, config: Config, patterns: PatternSet) -> FastPath | None:
        """The fast path for this configuration, or ``None`` when it cannot be exact."""
        if config.parse.line_regex != DEFAULT_LINE_REGEX:
            return None
        hot: list[tuple[str, bool]] = []  # (expression, caseless)
        pattern_of: list[int] = []
        levels: set[str] = set()
        for index, spec in enumerate(patterns.specs):
            if spec.regex:
                hot.append((spec.regex, not spec.case_sensitive))
                pattern_of.append(index)
            else:
                levels.update(spec.levels or ())
        if levels:
            names = set(levels) | {alias for alias, target in LEVEL_ALIASES.items() if target in levels}
            hot.append((r"\[(?:" + "|".join(sorted(map(re.escape, names))) + r")\]", True))
        hot.extend((m, False) for m in config.flush.completion_markers)
        hot.append((r"\x1b", False))
        # Run-type and stream rules: such a line must take the full path while its run is unclassified.
        meta = [(rule.regex, False) for rule in config.run_metadata.run_types]
        meta.append((config.run_metadata.stream_regex, False))
        pattern_of += [-1] * (len(hot) - len(pattern_of))
        try:
            return cls(ChunkScanner(hot + meta, [0] * len(hot) + [1] * len(meta)), pattern_of)
        except ValueError:
            return None

    @staticmethod
    def tag(text: str) -> re.Match[str] | None:
        """The line's (ISO prefix, run id) match, or ``None`` for a line that is not run-tagged."""
        return _TAG.match(text)

    def flagged(self, blob: str, texts: list[str]) -> tuple[set[int], dict[int, set[int]], set[int]]:
        """Classify the lines of a chunk: (full, candidates, meta).

        ``full``: lines that must take the full path — non-ASCII ones (the scanner works with ASCII
        semantics, ``regex`` with Unicode ones), and those a level, completion marker or escape may
        concern. ``candidates``: other lines some patterns may match, with those patterns' indexes, to
        be confirmed. ``meta``: lines a run-type or stream rule may match. Non-ASCII text is found with
        one regex pass and replaced by ``?`` for the scan, so byte offsets are character offsets.
        """
        starts = [0, *accumulate(map(_PLUS_ONE, map(len, texts)))]
        full: set[int] = set()
        candidates: dict[int, set[int]] = {}
        meta: set[int] = set()
        if not blob.isascii():
            for m in _NON_ASCII.finditer(blob):
                full.add(bisect_right(starts, m.start()) - 1)
        group_of, pattern_of = self._scanner.group_of, self._pattern_of
        for pid, end in self._scanner.scan(blob.encode("ascii", "replace")):
            line = bisect_right(starts, end - 1) - 1
            if group_of[pid]:
                meta.add(line)
            elif (pattern := pattern_of[pid]) < 0:
                full.add(line)
            else:
                candidates.setdefault(line, set()).add(pattern)
        return full, candidates, meta

    @staticmethod
    def time_of(prefix: str) -> float | None:
        """Epoch seconds of an ISO prefix as ``tags`` returns it."""
        if not prefix:
            return None
        m = _PREFIX_TIME.match(prefix)
        return parse_iso_time(m.group(1)) if m else None
