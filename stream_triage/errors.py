"""One error tree for stream-triage.

StreamTriageError
├── ConfigError          bad configuration; lists every problem at once
├── PatternError         a pattern pack that cannot be loaded (file, line, id)
├── InputError           a bad input record (file, line); the rest of the input goes on
├── StoreError           the embedded store cannot be opened or written
└── SinkError            delivery to an external sink failed
    ├── RetryableSinkError   try again later (network, 429, 5xx)
    └── PermanentSinkError   retrying will not help (unknown field, bad value, permission)
"""

from __future__ import annotations


class StreamTriageError(Exception):
    """Base of every error stream-triage raises on purpose."""


class ConfigError(StreamTriageError):
    """Configuration is invalid. ``problems`` holds one actionable message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


class PatternError(StreamTriageError):
    """A pattern pack could not be loaded; the message names file, line and pattern id."""


class InputError(StreamTriageError):
    """One input record is unusable; says where (file and line)."""

    def __init__(self, where: str, what: str) -> None:
        self.where = where
        self.what = what
        super().__init__(f"{where}: {what}")


class StoreError(StreamTriageError):
    """The embedded store failed."""


class SourceError(StreamTriageError):
    """A source could not deliver."""


class RetryableSourceError(SourceError):
    """A transient failure that outlasted the bounded retries (rate limit, server error, network)."""


class PermanentSourceError(SourceError):
    """A failure retrying cannot fix: a rejected API key, a bad request."""


class SinkError(StreamTriageError):
    """Delivery to a sink failed."""


class RetryableSinkError(SinkError):
    """A transient failure: network, rate limit, server error. The change stays queued."""


class PermanentSinkError(SinkError):
    """A failure retrying cannot fix. The change is parked with this message."""
