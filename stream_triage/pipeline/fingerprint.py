"""Fingerprint stage: mask the variable parts of a message and hash what is left.

One defect logged with different ids, clients, numbers or timestamps masks to the same text; two
defects differ in their fixed words or in the top in-app frame. The matching pattern is deliberately
not part of the fingerprint, so a defect caught by two patterns is still one issue.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_MASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<ts>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b\d{6}-\d{6}(?:-[A-Za-z][\w-]*)?"), "<run>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>)\]]+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<uuid>"),
    (re.compile(r"\b(?:rec|app|tbl|fld|viw|usr|wsp|sel|ent|att)[A-Za-z0-9]{14}\b"), "<id>"),
    (re.compile(r"\b(?:srv|dpl|evt|crn|usr|tea|own)-[a-z0-9]{16,}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b", re.IGNORECASE), "<hex>"),
    # Long mixed tokens (keys, hashes, base64) are ids, not words; so are shorter letter+digit
    # runs without separators (Apify / Mongo-style ids such as 48CsGING0Rb6ulgRh).
    (re.compile(r"\b(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{20,}\b"), "<tok>"),
    (re.compile(r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{10,}\b"), "<tok>"),
    # The client a message names ("failed for client Tom-Baker") on lines that carry no client tag.
    (re.compile(r"\b([Cc]lient[ :=]+[\"']?)[A-Z][A-Za-z]*(?:-[A-Z][A-Za-z]*)*\b"), r"\1<client>"),
]
# What each mask cannot match without, in the same order: a substring, or a screen regex that finds
# something every match has (``_DIGIT_COLON``, ``_LONG_TOKEN``: cheaper than the masks' own search).
# The screens reason about ASCII classes, so on non-ASCII text they are skipped (the mask runs).
_DIGIT_COLON = re.compile(r"\d:\d")  # "<ts>" and "<time>" hold \d\d:\d\d
# A run of 10+ characters of [A-Za-z0-9_-] that holds a digit: every "<hex>" (12+ hex digits) and
# "<tok>" match lies in one (their digit lookahead only crosses such characters).
_LONG_TOKEN = re.compile(r"(?=[A-Za-z0-9_-]{10})[A-Za-z_-]*[0-9]")
_NEEDS: list[str | re.Pattern[str] | None] = [
    _DIGIT_COLON,
    _DIGIT_COLON,
    "-",
    "://",
    "@",
    "-",
    None,
    "-",
    "0x",  # case-insensitive: "0X" is checked too (see mask_message)
    _LONG_TOKEN,
    _LONG_TOKEN,
    _LONG_TOKEN,
    "lient",
]
_GUARDED = [(p, r, n) for (p, r), n in zip(_MASKS, _NEEDS, strict=True)]

# A path with a query string: the values are request data, the path and parameter names the route.
_QUERY = re.compile(r"(/[\w.~%/-]*\?)([^\s\"'#]+)")
_QUERY_VALUE = re.compile(r"=[^&;]*")
# Quoted strings, paired left to right (a quote glued to a word is an apostrophe, not a quote).
_QUOTED = re.compile(r"(?<![\w\\])([\"'`])([^\"'`\n]{0,200})\1(?!\w)")
# A quoted identifier, dotted/dashed name or module specifier ('config', "Stream", 'lodash.merge',
# '@google-cloud/vertexai', './db') names code or schema and tells two defects apart, so it stays;
# anything else quoted (with digits, spaces, punctuation, or empty) is variable data.
_KEEP_QUOTED = re.compile(
    r"[A-Za-z_$][A-Za-z_$]*(?:[.-][A-Za-z_$][A-Za-z_$]*)*|(?:@[A-Za-z_.-]+/|\.{1,2}/)[A-Za-z_./-]+"
)
# Status codes next to a status word survive (a 404 and a 503 are different defects); every other
# number is masked.
_NUMBER_OR_STATUS = re.compile(
    r"(?i)\b(status(?: ?code)?|HTTP(?:/\d(?:\.\d)?)?|returned|responded with|code)(\s*[:=]?\s*)([1-5]\d\d)\b"
    r"|\d+(?:[.,]\d+)*"
)
# The words the status alternative of ``_NUMBER_OR_STATUS`` starts with (lower case; on ASCII text
# its case-insensitive match needs one of them in the lower-cased text).
_STATUS_WORDS = ("code", "status", "http", "returned", "responded with")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def mask_message(message: str, names: Iterable[str] = ()) -> str:
    """The message with variable parts replaced by placeholders.

    ``names`` are client names known for the line (its tag, its run id suffix): they are masked too,
    also in their spaced form ("Ann-Lee" and "Ann Lee").
    """
    text = message
    for name in names:
        if name and len(name) > 2:
            text = text.replace(name, "<client>")
            if "-" in name:
                text = text.replace(name.replace("-", " "), "<client>")
    ascii = text.isascii()
    screened: re.Pattern[str] | None = None  # the last screen that found nothing in ``text``
    for pattern, placeholder, needs in _GUARDED:
        # A mask whose required text is absent cannot match: skip the regex.
        if needs is None:
            pass
        elif isinstance(needs, str):
            if needs not in text and not (needs == "0x" and "0X" in text):
                continue
        elif ascii and (needs is screened or needs.search(text) is None):
            screened = needs
            continue
        new = pattern.sub(placeholder, text)
        if new != text:
            text = new
            screened = None
    if "?" in text:
        text = _QUERY.sub(_query, text)
    if "'" in text or '"' in text or "`" in text:
        text = _QUOTED.sub(_quoted, text)
    lower = text.lower() if text.isascii() else None
    if lower is not None and not any(word in lower for word in _STATUS_WORDS):
        # No status word: every number is masked (the status alternative cannot match).
        text = _NUMBER.sub("<n>", text)
    else:
        text = _NUMBER_OR_STATUS.sub(_number_or_status, text)
    # Runs of whitespace (str.isspace, as \s in a str pattern) become one space, ends trimmed.
    return " ".join(text.split())


def fingerprint(masked_message: str, operation: str | None, top_frame: str | None) -> str:
    """Stable 16-hex-digit fingerprint of a defect."""
    key = f"{operation or ''}\x1f{masked_message}\x1f{top_frame or ''}"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[:16]


def _number_or_status(m: re.Match[str]) -> str:
    return m.group(0) if m.group(3) else "<n>"


def _quoted(m: re.Match[str]) -> str:
    body = m.group(2)
    if len(body) <= 32 and _KEEP_QUOTED.fullmatch(body):
        return m.group(0)
    return "<q>"


def _query(m: re.Match[str]) -> str:
    return m.group(1) + _QUERY_VALUE.sub("=<v>", m.group(2))
