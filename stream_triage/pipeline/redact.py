"""Secret redaction: applied to every message, context line and stack trace before it is stored,
printed or sent — and before fingerprinting, so an issue's fingerprint never depends on a secret.

Only text that leaves the pipeline is redacted (issue messages and context), never every line, so the
cost is paid per issue, not per log line.

What is caught:

* credentials under a key — headers (``Authorization``, ``x-api-key``, ``x-webhook-secret``, …) and
  fields (``token=``, ``secret=``, ``apiKey:``, ``password:``, …), bare, quoted, in JSON and JS object
  dumps (also with escaped quotes, ``{\\"Authorization\\":\\"Bearer …\\"}``);
* recognisable secrets wherever they appear: bearer tokens, JWTs, Airtable personal access tokens,
  Google API keys, AWS access keys, Stripe / OpenAI / GitHub / Slack / Render keys, PEM private keys
  (also a PEM body line on its own), passwords in URLs;
* ``redact.extra_patterns`` from the config: each match is replaced whole.

Context lines are cut to ``route.context_line_chars`` before they get here, so the rules for
fixed-length secrets also take a cut-off prefix of one.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate

REDACTED = "[REDACTED]"

_KEY_NAMES = (
    r"(?:proxy-)?authori[sz]ation|x-api-key|x-webhook-secret|x-auth-token|x-access-token|x-api-token|"
    r"api[-_]?key|api[-_]?token|access[-_]?token|refresh[-_]?token|id[-_]?token|client[-_]?secret|"
    r"secret[-_]?key|private[-_]?key|auth[-_]?token|webhook[-_]?secret|token|secret|password|passwd|pwd|"
    r"passphrase"
)
# The key, its closing quote (maybe escaped inside a JSON string), the separator. Group 1.
_KEY = rf"(?i)(\b(?:{_KEY_NAMES})\\?[\"']?\s*[:=]\s*)"
_SCHEME = r"(?:(?:Bearer|Basic|Token|Bot|Digest)\s+)?"

# (pattern, replacement). Replacements keep the key so the context stays readable.
_RULES: list[tuple[str, str]] = [
    # PEM private keys, possibly flattened onto one line (or with literal \n escapes in a JSON dump).
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", REDACTED),
    # A quoted value under a secret key: everything up to the closing quote, spaces included.
    (_KEY + r"(\\?\")(?!\[REDACTED)(?:(?!\\?\")[^\n])+\2", r"\1\2" + REDACTED + r"\2"),
    (_KEY + r"(\\?')(?!\[REDACTED)(?:(?!\\?')[^\n])+\2", r"\1\2" + REDACTED + r"\2"),
    # An unquoted value: up to whitespace or a delimiter; an auth scheme word is part of the value.
    (_KEY + r"(?![\"'\s}\\]|\[REDACTED)" + _SCHEME + r"[^\s\"',;&}\\]+", r"\1" + REDACTED),
    (r"(?i)\b(Bearer)\s+(?!\[REDACTED)[A-Za-z0-9._~+/=-]{8,}", r"\1 " + REDACTED),
    # "Basic" is also an English word: only a base64-looking credential after it.
    (r"\b(Basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}", r"\1 " + REDACTED),
    # Airtable personal access tokens: pat + 14 chars + . + 64 hex (or a cut-off prefix of them).
    (r"\bpat[A-Za-z0-9]{14}\.[A-Za-z0-9]{8,}", REDACTED),
    (r"\bkey(?=[A-Za-z]*[0-9])[A-Za-z0-9]{14}\b", REDACTED),  # legacy Airtable API keys
    (r"\bAIza[0-9A-Za-z_-]{20,}", REDACTED),  # Google API keys (39 chars whole)
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}", REDACTED),  # AWS access key ids (20 chars whole)
    (r"(?i)(aws_secret_access_key\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{16,}", r"\1" + REDACTED),
    (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?", REDACTED),  # JWTs (also cut off)
    (r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}", REDACTED),  # Stripe-style keys
    (r"\bsk-[A-Za-z0-9_-]{20,}", REDACTED),  # OpenAI-style keys
    (r"\bgh[pousr]_[A-Za-z0-9]{30,}", REDACTED),  # GitHub tokens
    (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", REDACTED),  # Slack tokens
    (r"\brnd_[A-Za-z0-9]{20,}", REDACTED),  # Render API keys
    # Passwords in URLs: scheme://user:password@host (the user may be empty: redis://:pw@host).
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)(?!\[REDACTED)[^\s@/]+@", r"\1" + REDACTED + "@"),
    # A line that is only a long base64 run: the body of a PEM key printed over several lines.
    (r"^(\s*)[A-Za-z0-9+/]{40,}={0,2}\s*$", r"\1" + REDACTED),
]
# Without these substrings (or a base64-only line) no rule can match.
_SCREEN = (
    r"key|auth|token|secret|pass|pwd|bearer|basic|pat|aiza|akia|asia|eyj|sk_|rk_|pk_|sk-|gh|xox|rnd_|://|"
    r"-----begin|^\s*[A-Za-z0-9+/]{40,}={0,2}\s*$"
)


_CACHE_SIZE = 8192
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# \x1c-\x1f are spaces to re's \s (str.isspace) but not to Hyperscan's: the screen sees them as " ".
_RE_SPACES = {c: " " for c in range(0x1C, 0x20)}
_RE_SPACE_CONTROLS = re.compile("[\x1c-\x1f]")


def _screened(text: str) -> bytes:
    """ASCII ``text`` as the Hyperscan screen reads it (translated only when it holds \\x1c-\\x1f)."""
    if _RE_SPACE_CONTROLS.search(text) is not None:
        text = text.translate(_RE_SPACES)
    return text.encode("ascii")


def _is_symbol(c: str) -> bool:
    """Neither a word nor a space character to ``re`` (which the rules use): emoji, arrows, dashes."""
    return not (c.isalnum() or c.isspace())


def _screen_database(patterns: list[str], every_hit: bool = False) -> object | None:
    """A Hyperscan prefilter database of the rules (id = rule index), or ``None`` without Hyperscan.

    By default each rule reports once per scan; ``every_hit`` reports every end offset (for scans of
    many lines at once, where each line needs its own answer).
    """
    try:
        import hyperscan as hs
    except ImportError:  # pragma: no cover - platforms without a wheel
        return None
    flags = hs.HS_FLAG_PREFILTER | hs.HS_FLAG_MULTILINE | hs.HS_FLAG_DOTALL
    if not every_hit:
        flags |= hs.HS_FLAG_SINGLEMATCH
    db = hs.Database()
    try:
        db.compile(expressions=[p.encode("utf-8") for p in patterns], ids=list(range(len(patterns))),
                   flags=[flags] * len(patterns))  # fmt: skip
    except Exception:  # hyperscan.error: a rule it cannot take; the substring screen decides instead
        return None
    return db


class Redactor:
    """Replaces secrets in text. Compiled once; ``extra`` patterns replace their whole match."""

    __slots__ = ("_cache", "_extra", "_hits", "_hs", "_hs_lines", "_line_hits", "_quick", "_rules")

    def __init__(self, extra: Iterable[str] = ()) -> None:
        rules: list[tuple[re.Pattern[str], str]] = []
        for pattern, replacement in _RULES:
            # Case matters for the fixed prefixes (AKIA, AIza, pat…); key names carry their own (?i).
            flags = re.DOTALL if "PRIVATE KEY" in pattern else re.MULTILINE
            rules.append((re.compile(pattern, flags), replacement))
        self._extra = [(re.compile(p), REDACTED) for p in extra]
        self._rules = rules
        # One Hyperscan pass tells which built-in rules can match an ASCII text at all (prefilter:
        # a superset); only those run. Without Hyperscan, the substring screen below decides.
        self._hs = _screen_database([p for p, _ in _RULES])
        self._hits: set[int] = set()
        # The same screen reporting every hit, for many lines joined into one scan (``many``).
        self._hs_lines = _screen_database([p for p, _ in _RULES], every_hit=True)
        self._line_hits: list[tuple[int, int]] = []
        # Cheap screen: most lines hold none of these substrings, and then no built-in rule can match.
        self._quick = re.compile(_SCREEN, re.IGNORECASE | re.MULTILINE)
        # Context windows of neighbouring issues overlap: a run's flush redacts the same lines many
        # times over. Bounded; cleared when full.
        self._cache: dict[str, str] = {}

    def _on_hit(self, rule: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
        self._hits.add(rule)

    def _on_line_hit(self, rule: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
        self._line_hits.append((rule, to))

    def many(self, texts: list[str]) -> list[str]:
        """``[self(t) for t in texts]`` for one-line texts, screened in one Hyperscan pass (a flush
        redacts thousands of context lines; a scan each would dominate its cost)."""
        blob = "\n".join(texts)
        if self._hs_lines is None or blob.count("\n") != len(texts) - 1:
            return [self(t) for t in texts]
        if not blob.isascii():
            # The batch screen reasons in ASCII: lines with other characters (emoji in a context,
            # say) take the exact path one by one, the rest are still screened together.
            ascii = [i for i, t in enumerate(texts) if t.isascii()]
            out = [t if t.isascii() else self(t) for t in texts]
            if ascii:
                for i, done in zip(ascii, self.many([texts[i] for i in ascii]), strict=True):
                    out[i] = done
            return out
        self._line_hits = []
        self._hs_lines.scan(_screened(blob), match_event_handler=self._on_line_hit)
        out = list(texts)
        if self._line_hits:
            starts = [0, *accumulate(len(t) + 1 for t in texts)]
            rules: dict[int, set[int]] = {}
            for rule, end in self._line_hits:
                rules.setdefault(bisect_right(starts, end - 1) - 1, set()).add(rule)
            for i, found in rules.items():
                out[i] = self._apply(texts[i], sorted(found))
        if self._extra:
            out = [self._apply(text, ()) for text in out]
        return out

    def _apply(self, text: str, rules: Iterable[int]) -> str:
        """``text`` with the given built-in rules (in order), then the extra patterns, applied."""
        for rule in rules:
            pattern, replacement = self._rules[rule]
            text = pattern.sub(replacement, text)
        for pattern, replacement in self._extra:
            text = pattern.sub(replacement, text)
        return text

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret replaced by ``[REDACTED]``."""
        if not text:
            return text
        cache = self._cache
        done = cache.get(text)
        if done is not None:
            return done
        scan = None
        if self._hs is not None:
            if text.isascii():
                scan = text
            elif all(_is_symbol(c) for c in set(_NON_ASCII.findall(text))):
                # Emoji, arrows, dashes: neither word nor space to ``re``, so each as "\x01" leaves
                # every rule's verdict as it is (no rule names such characters); the screen is ASCII.
                scan = _NON_ASCII.sub("\x01", text)
        if scan is not None:
            hits = self._hits
            hits.clear()
            self._hs.scan(_screened(scan), match_event_handler=self._on_hit)
            done = self._apply(text, sorted(hits))
        else:
            done = self._apply(text, range(len(self._rules)) if self._quick.search(text) is not None else ())
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[text] = done
        return done
