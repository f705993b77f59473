"""The service's own logs: plain or JSON lines on stderr, with secrets redacted before they print."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

import orjson

from stream_triage.pipeline.redact import Redactor

log = logging.getLogger("stream_triage")


class _RedactingFilter(logging.Filter):
    """Redacts known secret values and secret-looking text from every record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._redact = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self._secrets:
            message = message.replace(secret, "[REDACTED]")
        record.msg = self._redact(message)
        record.args = None
        if record.exc_info:
            # Tracebacks can carry request URLs and headers: render now, redact, drop the raw info.
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                text = text.replace(secret, "[REDACTED]")
            record.exc_text = self._redact(text)
            record.exc_info = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key.startswith("st_"):
                doc[key[3:]] = value
        if record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


def setup_logging(level: str = "INFO", json: bool = False, secrets: Iterable[str] = ()) -> None:
    """Configure logging once for the process: ``stream_triage`` at ``level``, libraries at WARNING.

    The handler sits on the root logger so that library records (aiohttp's "Error handling request"
    tracebacks quote the offending request bytes, headers included) are redacted and formatted too.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter(secrets))
    handler.setFormatter(
        _JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.handlers[:] = []
    log.setLevel(level.upper())
    log.propagate = True
