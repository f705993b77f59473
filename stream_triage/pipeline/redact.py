"""Secret redaction: applied to every message, context line and stack trace before it is stored,
printed or sent — and before fingerprinting, so an issue's fingerprint never depends on a secret.

Only text that leaves the pipeline is redacted (issue messages and context), never every line, so the
cost is paid per issue, not per log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# (pattern, replacement). Replacements keep the key so the context stays readable.
_RULES: list[tuple[str, str]] = [
    # PEM private keys, possibly flattened onto one line.
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", REDACTED),
    # Authorization-style headers, also as JSON/JS object keys in dumped request configs.
    (
        r"(?i)(\b(?:proxy-)?authori[sz]ation\b[\"']?\s*[:=]\s*[\"']?)(?:(?:Bearer|Basic|Token|Bot)\s+)?[^\s\"',;}]+",
        r"\1" + REDACTED,
    ),
    (
        r"(?i)(\b(?:x-api-key|x-webhook-secret|x-auth-token|x-access-token|api[-_]?key|apikey|access[-_]?token|"
        r"refresh[-_]?token|client[-_]?secret|secret[-_]?key|auth[-_]?token|token|secret|password|passwd|pwd)"
        r"\b[\"']?\s*[:=]\s*[\"']?)(?![\"',\s}]|\[REDACTED)[^\s\"',;&}]+",
        r"\1" + REDACTED,
    ),
    (r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", r"\1 " + REDACTED),
    # Airtable personal access tokens: pat + 14 chars + . + 64 hex.
    (r"\bpat[A-Za-z0-9]{14}\.[A-Za-z0-9]{16,}\b", REDACTED),
    (r"\bkey[A-Za-z0-9]{14}\b", REDACTED),  # legacy Airtable API keys
    (r"\bAIza[0-9A-Za-z_-]{35}\b", REDACTED),  # Google API keys
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", REDACTED),  # AWS access key ids
    (r"(?i)(aws_secret_access_key\s*[:=]\s*)[A-Za-z0-9/+=]{40}", r"\1" + REDACTED),
    (r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b", REDACTED),  # JWTs
    (r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b", REDACTED),  # Stripe-style keys
    (r"\bsk-[A-Za-z0-9_-]{20,}\b", REDACTED),  # OpenAI-style keys
    (r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", REDACTED),  # GitHub tokens
    (r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", REDACTED),  # Slack tokens
    (r"\brnd_[A-Za-z0-9]{20,}\b", REDACTED),  # Render API keys
    # Passwords in URLs: scheme://user:password@host
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", r"\1" + REDACTED + "@"),
]


class Redactor:
    """Replaces secrets in text. Compiled once; ``extra`` patterns replace their whole match."""

    __slots__ = ("_quick", "_rules")

    def __init__(self, extra: Iterable[str] = ()) -> None:
        rules = [(re.compile(p, re.DOTALL if "PRIVATE KEY" in p else 0), r) for p, r in _RULES]
        rules.extend((re.compile(p), REDACTED) for p in extra)
        self._rules = rules
        # Cheap screen: most lines hold none of these substrings, and then no rule can match.
        words = [
            "key",
            "auth",
            "token",
            "secret",
            "pass",
            "pwd",
            "bearer",
            "basic",
            "pat",
            "aiza",
            "akia",
            "asia",
            "eyj",
            "sk_",
            "rk_",
            "pk_",
            "sk-",
            "gh",
            "xox",
            "rnd_",
            "://",
            "-----begin",
        ]
        self._quick = None if extra else re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret replaced by ``[REDACTED]``."""
        if not text or (self._quick is not None and self._quick.search(text) is None):
            return text
        for pattern, replacement in self._rules:
            text = pattern.sub(replacement, text)
        return text
