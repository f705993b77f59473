"""The synchronous Airtable client layer of the Airtable sink: field mapping, rate limiting, delivery.

No store and no asyncio here: the outbox worker calls these methods from a worker thread
(``asyncio.to_thread``) and owns retries. Everything that crosses the network goes through
:class:`AirtableClient`, which translates foreign exceptions at the edge::

    requests / pyairtable exception
    ├── network error, timeout, 429, 5xx, garbled response → AirtableRetryableError (RetryableSinkError)
    │       .retry_after_s: how long to wait (the 30 s penalty after a 429)
    └── 401, 403, 404, 422 (UNKNOWN_FIELD_NAME, INVALID_VALUE_FOR_COLUMN,
        INVALID_MULTIPLE_CHOICE_OPTIONS, ...)           → AirtablePermanentError (PermanentSinkError)
            .status, .error_type, .airtable_message, .field

Airtable facts this module is built on (https://airtable.com/developers/web/api):
5 requests per second per base, then 429 and 30 s of refusals; at most 10 records per write;
``performUpsert.fieldsToMergeOn`` upserts; ``typecast`` converts strings and adds select options;
a long text cell holds at most 100,000 characters. Humans own Status, Fix Notes, Fix Commit and
Fixed Time: this module never writes them, except Status on creation (NEW) and on regression
(REGRESSED), and :meth:`AirtableClient.set_status` when a person asks for it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyairtable
import requests
from pyairtable.formulas import field_name as formula_field
from pyairtable.formulas import quoted

from stream_triage.errors import ConfigError, PermanentSinkError, RetryableSinkError, SinkError
from stream_triage.records import Status, StoredIssue

log = logging.getLogger(__name__)

T = TypeVar("T")

LONG_TEXT_LIMIT = 100_000
"""Airtable's documented maximum for a long text cell."""
SAFE_TEXT_UNITS = 99_000
"""What we send at most, in UTF-16 code units (how JavaScript counts), leaving headroom."""
MAX_RECORDS_PER_REQUEST = 10
DEFAULT_PENALTY_S = 30.0
DEFAULT_TABLE = "Production Issues"
STATUS_LOOKUP_CHUNK = 50  # fingerprints per filterByFormula; keeps the GET URL far below 16k

RUN_TYPES = ("smart-resume", "batch-score", "apify-webhook", "api-endpoint", "scheduled-job", "other")


# --- the field map -----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class FieldSpec:
    """What a mapped field must be in Airtable: its type, create-field options and how a human adds it."""

    type: str
    options: Mapping[str, Any] | None = None
    human_owned: bool = False
    required: bool = False

    @property
    def ui_label(self) -> str:
        """The field type as the Airtable UI names it, for instructions."""
        label = _UI_LABELS.get(self.type, self.type)
        if self.type == "singleSelect" and self.options:
            label += " with options " + ", ".join(c["name"] for c in self.options["choices"])
        return label


def _choices(*names: str) -> dict[str, Any]:
    return {"choices": [{"name": n} for n in names]}


_UI_LABELS = {
    "singleLineText": "Single line text",
    "multilineText": "Long text",
    "number": "Number (integer)",
    "dateTime": "Date with 'Include time' on (GMT/UTC)",
    "singleSelect": "Single select",
    "url": "URL",
}
_DATETIME_OPTIONS = {"timeZone": "utc", "dateFormat": {"name": "iso"}, "timeFormat": {"name": "24hour"}}

FIELD_SPECS: dict[str, FieldSpec] = {
    "timestamp": FieldSpec("dateTime", _DATETIME_OPTIONS),
    "severity": FieldSpec("singleSelect", _choices("CRITICAL", "ERROR", "WARNING")),
    "pattern": FieldSpec("singleLineText"),
    "error_message": FieldSpec("multilineText"),
    "context": FieldSpec("multilineText"),
    "status": FieldSpec("singleSelect", _choices(*(s.value for s in Status)), human_owned=True, required=True),
    "stack_trace": FieldSpec("multilineText"),
    "run_id": FieldSpec("singleLineText"),
    "run_type": FieldSpec("singleSelect", _choices(*RUN_TYPES)),
    "stream": FieldSpec("number", {"precision": 0}),
    "client_id": FieldSpec("singleLineText"),
    "service": FieldSpec("singleLineText"),
    "occurrences": FieldSpec("number", {"precision": 0}),
    "first_seen": FieldSpec("dateTime", _DATETIME_OPTIONS),
    "last_seen": FieldSpec("dateTime", _DATETIME_OPTIONS),
    "fixed_time": FieldSpec("dateTime", _DATETIME_OPTIONS, human_owned=True),
    "fix_notes": FieldSpec("multilineText", human_owned=True),
    "fix_commit": FieldSpec("singleLineText", human_owned=True),
    "render_log_url": FieldSpec("url"),
    "fingerprint": FieldSpec("singleLineText", required=True),
    "runs_affected": FieldSpec("number", {"precision": 0}),
}
"""Expected Airtable type of every mapped field, keyed by :class:`AirtableFieldMap` attribute."""

# The primary field comes first when we create the table; a text field, so Airtable accepts it.
_CREATE_ORDER = ("pattern", *(k for k in FIELD_SPECS if k != "pattern"))


@dataclass(slots=True, frozen=True)
class MappedField:
    """One field of the map: attribute, the user's Airtable field name and the expected spec."""

    attr: str
    name: str
    spec: FieldSpec


@dataclass(slots=True, frozen=True)
class AirtableFieldMap:
    """Names of the Production Issues fields in the user's table; an empty name leaves a field out.

    Fingerprint (the upsert merge key) and Status (two-way triage) cannot be left out. The expected
    type of each field is in :data:`FIELD_SPECS`.
    """

    timestamp: str = "Timestamp"
    severity: str = "Severity"
    pattern: str = "Pattern Matched"
    error_message: str = "Error Message"
    context: str = "Context"
    status: str = "Status"
    stack_trace: str = "Stack Trace"
    run_id: str = "Run ID"
    run_type: str = "Run Type"
    stream: str = "Stream"
    client_id: str = "Client ID"
    service: str = "Service/Function"
    occurrences: str = "Occurrences"
    first_seen: str = "First Seen"
    last_seen: str = "Last Seen"
    fixed_time: str = "Fixed Time"
    fix_notes: str = "Fix Notes"
    fix_commit: str = "Fix Commit"
    render_log_url: str = "Render Log URL"
    fingerprint: str = "Fingerprint"
    runs_affected: str = "Runs Affected"

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, str], where: str = "airtable.fields") -> AirtableFieldMap:
        """Build from ``{attribute: field name}`` (a config table); ``ConfigError`` lists every problem."""
        problems = []
        names = {f.name for f in dataclasses.fields(cls)}
        for key in sorted(set(overrides) - names):
            problems.append(f"{where}.{key}: unknown field key; valid keys are: {', '.join(sorted(names))}")
        for key, value in overrides.items():
            if key in names and not isinstance(value, str):
                problems.append(f"{where}.{key}: expected the Airtable field name as a string, got {value!r}")
        built = cls(**{k: v for k, v in overrides.items() if k in names and isinstance(v, str)})
        problems.extend(f"{where}.{p}" for p in built.problems())
        if problems:
            raise ConfigError(problems)
        return built

    def problems(self) -> list[str]:
        """Required fields left out and names used twice."""
        out = []
        for attr, spec in FIELD_SPECS.items():
            if spec.required and not getattr(self, attr).strip():
                out.append(f"{attr}: cannot be empty; stream-triage needs this field")
        seen: dict[str, str] = {}
        for mapped in self.mapped():
            if mapped.name in seen:
                out.append(f"{mapped.attr}: field name {mapped.name!r} is also used for {seen[mapped.name]}")
            seen[mapped.name] = mapped.attr
        return out

    def mapped(self) -> list[MappedField]:
        """Every field that is in use, with its expected spec, in table-creation order."""
        return [
            MappedField(attr, getattr(self, attr), FIELD_SPECS[attr]) for attr in _CREATE_ORDER if getattr(self, attr)
        ]


# --- pure conversions --------------------------------------------------------------------------


def format_time(ts: float | None) -> str | None:
    """Epoch seconds → Airtable's ISO 8601 UTC with milliseconds (``2025-11-03T08:15:22.000Z``)."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(math.floor(ts * 1000) / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value: Any) -> float | None:
    """Airtable's ISO 8601 timestamp → epoch seconds; ``None`` for blank or unparseable cells."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: how JavaScript, and so Airtable, counts characters."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def truncate_text(text: str, max_units: int = SAFE_TEXT_UNITS) -> str:
    """Cut ``text`` to at most ``max_units`` UTF-16 units, ending with ``\\n… [truncated N chars]``.

    Cuts between code points (never inside a surrogate pair) and, when a line break is near, at the
    line break, so the kept part stays readable. ``N`` counts the code points removed.
    """
    if len(text) * 2 <= max_units or utf16_len(text) <= max_units:
        return text
    budget = max_units - utf16_len(f"\n… [truncated {len(text)} chars]")
    keep = text[:budget]
    # Removing k code points removes at least k units, so one pass brings the excess to zero or below.
    while (excess := utf16_len(keep) - budget) > 0:
        keep = keep[: len(keep) - excess]
    line_end = keep.rfind("\n", max(0, len(keep) - 2000))
    if line_end > 0:
        keep = keep[:line_end]
    if keep and "\ud800" <= keep[-1] <= "\udbff":  # a lone high surrogate (surrogateescape input)
        keep = keep[:-1]
    return f"{keep}\n… [truncated {len(text) - len(keep)} chars]"


def to_fields(
    issue: StoredIssue,
    field_map: AirtableFieldMap,
    *,
    create: bool,
    render_log_url: str | None = None,
    regression: bool = False,
) -> dict[str, Any]:
    """Map a stored issue to Airtable cells by field name.

    Blank values are left out rather than sent empty, so an update never clears a cell. The
    human-owned fields (Status, Fix Notes, Fix Commit, Fixed Time) are never included, except Status:
    NEW when ``create``, REGRESSED when ``regression``. Long text is cut under 100,000 characters.
    """
    values: dict[str, Any] = {
        "timestamp": format_time(issue.timestamp),
        "severity": issue.severity.value,
        "pattern": issue.pattern,
        "error_message": issue.error_message,
        "context": issue.context,
        "stack_trace": issue.stack_trace,
        "run_id": issue.run_id,
        "run_type": issue.run_type or "other",
        "stream": issue.stream,
        "client_id": issue.client_id,
        "service": issue.service,
        "occurrences": issue.occurrences,
        "first_seen": format_time(issue.first_seen),
        "last_seen": format_time(issue.last_seen),
        "render_log_url": render_log_url,
        "fingerprint": issue.fingerprint,
        "runs_affected": issue.runs_affected,
    }
    if regression:
        values["status"] = Status.REGRESSED.value
    elif create:
        values["status"] = Status.NEW.value
    out: dict[str, Any] = {}
    for attr, value in values.items():
        name = getattr(field_map, attr)
        if not name or value is None or value == "":
            continue
        if isinstance(value, str) and FIELD_SPECS[attr].type in ("singleLineText", "multilineText"):
            value = truncate_text(value)
        out[name] = value
    return out


# --- rate limiting -----------------------------------------------------------------------------


class RateLimiter:
    """A thread-safe token bucket that keeps requests to one base under Airtable's 5 per second.

    ``burst + rate_per_s`` bounds the requests in any one-second window; the defaults (1 + 4) stay
    under 5 with room for other clients of the same base. After a 429, :meth:`penalize` blocks the
    bucket for ``penalty_s`` (Airtable refuses everything for 30 s). ``clock``/``sleep`` are
    injectable so tests run without waiting.
    """

    def __init__(
        self,
        rate_per_s: float = 4.0,
        burst: int = 1,
        *,
        penalty_s: float = DEFAULT_PENALTY_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.penalty_s = penalty_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self._blocked_until = -math.inf

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    def _wait_locked(self, now: float) -> float:
        self._refill(now)
        token_wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_s
        return max(token_wait, self._blocked_until - now, 0.0)

    def delay(self) -> float:
        """Seconds until the next request could be sent (nothing is reserved)."""
        with self._lock:
            return self._wait_locked(self._clock())

    def acquire(self, max_wait_s: float = math.inf) -> bool:
        """Reserve the next slot and sleep until it; ``False`` (nothing reserved) past ``max_wait_s``.

        Reservations queue: concurrent callers each get their own later slot, and sleep outside the lock.
        """
        with self._lock:
            now = self._clock()
            wait = self._wait_locked(now)
            if wait > max_wait_s:
                return False
            if self._blocked_until > now:
                # The penalty ends at a known time; the bucket is empty until then.
                self._tokens = min(self._tokens, 1 - (self._blocked_until - now) * self.rate_per_s)
            self._tokens -= 1
        if wait > 0:
            self._sleep(wait)
        return True

    def penalize(self, seconds: float | None = None) -> float:
        """Block requests for ``seconds`` (default ``penalty_s``) after a 429; returns the wait."""
        wait = self.penalty_s if seconds is None else seconds
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + wait)
        return wait


# --- errors ------------------------------------------------------------------------------------


class _DeliveryContext:
    """Which part of a multi-chunk upsert went through when an error stopped it."""

    delivered: dict[str, str]
    failed: list[UpsertItem]
    pending: list[UpsertItem]

    def _init_context(self) -> None:
        self.delivered, self.failed, self.pending = {}, [], []


class AirtableRetryableError(RetryableSinkError, _DeliveryContext):
    """Try again after ``retry_after_s``: network trouble, a timeout, 429 or a 5xx.

    From :meth:`AirtableClient.upsert`: ``delivered`` (fingerprint → record id) went through,
    ``failed`` is the chunk that failed, ``pending`` were not attempted.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status
        self._init_context()


class AirtablePermanentError(PermanentSinkError, _DeliveryContext):
    """Airtable refused the change and will refuse it again; ``error_type`` and ``field`` say why.

    A failing upsert chunk fails whole: retry its ``failed`` items one by one with
    :meth:`AirtableClient.upsert_one` to find and park only the bad one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        airtable_message: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.airtable_message = airtable_message
        self.field = field
        self._init_context()


_PERMANENT_HINTS = {
    "UNKNOWN_FIELD_NAME": "add the field to the table or map the name in [airtable.fields]; "
    "`stream-triage doctor airtable` lists what is missing",
    "INVALID_VALUE_FOR_COLUMN": "the field has a different type than stream-triage expects; "
    "`stream-triage doctor airtable` shows the expected types",
    "INVALID_MULTIPLE_CHOICE_OPTIONS": "the token may not add select options; add the option to the field "
    "in Airtable or give the token editor access",
    "AUTHENTICATION_REQUIRED": "check AIRTABLE_API_KEY: it must be a valid personal access token",
    "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND": "check the base id and table name, and that the token has "
    "access to the base with scopes data.records:read and data.records:write",
}


def _airtable_error(response: requests.Response | None) -> tuple[str | None, str | None]:
    """(type, message) from an Airtable error body in any of its documented shapes."""
    if response is None:
        return None, None
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        return _str_or_none(error.get("type")), _str_or_none(error.get("message"))
    if isinstance(error, str):
        return error, None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return _str_or_none(errors[0].get("error")), _str_or_none(errors[0].get("message"))
    return None, None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _field_in(message: str | None) -> str | None:
    """The field name Airtable quotes in messages like ``Unknown field name: "Stream"``."""
    if not message:
        return None
    start = message.find('"')
    end = message.find('"', start + 1)
    return message[start + 1 : end] or None if 0 <= start < end else None


# --- the client --------------------------------------------------------------------------------


@dataclass(slots=True)
class UpsertItem:
    """One issue to deliver. ``record_id`` is the Airtable record the caller already knows, if any."""

    issue: StoredIssue
    regression: bool = False
    record_id: str | None = None


@dataclass(slots=True, frozen=True)
class RemoteIssue:
    """What humans set on an issue's Airtable record; ``status`` is ``None`` when blank or unknown."""

    record_id: str
    status: Status | None
    fixed_time: float | None
    fix_notes: str
    fix_commit: str
    raw_status: str | None = None


class AirtableClient:
    """Delivers stored issues to one Airtable table and reads back what humans changed.

    Built on pyairtable with its retries off: every request goes through the :class:`RateLimiter`
    and every failure becomes an ``AirtableRetryableError`` or ``AirtablePermanentError`` whose
    message never contains the API key. A request whose rate-limit slot is more than ``max_wait_s``
    away (for instance during the 30 s penalty after a 429) is not sent: it raises a retryable error
    with ``retry_after_s``, so an async caller can wait without tying up a thread.

    Status NEW is sent only for records Airtable does not have yet. Fingerprints the client has not
    seen are looked up first (one request for up to 50) unless ``lookup_unknown=False``; record ids
    the caller passes in :class:`UpsertItem` or :meth:`remember` skip the lookup.
    """

    def __init__(
        self,
        api_key: str,
        base_id: str,
        table: str = DEFAULT_TABLE,
        *,
        endpoint_url: str | None = None,
        timeout_s: float = 30.0,
        rate_limiter: RateLimiter | None = None,
        field_map: AirtableFieldMap | None = None,
        max_wait_s: float = 2.0,
        render_log_url: Callable[[StoredIssue], str | None] | None = None,
        lookup_unknown: bool = True,
        max_known: int = 100_000,
    ) -> None:
        if not api_key:
            raise ConfigError(["AIRTABLE_API_KEY: not set; create a personal access token in Airtable"])
        self.base_id = base_id
        self.table_name = table
        self.endpoint_url = endpoint_url or "https://api.airtable.com"
        self.field_map = field_map or AirtableFieldMap()
        if problems := self.field_map.problems():
            raise ConfigError([f"airtable.fields.{p}" for p in problems])
        self.limiter = rate_limiter or RateLimiter()
        self.max_wait_s = max_wait_s
        self.lookup_unknown = lookup_unknown
        self._render_log_url = render_log_url
        self._secret = api_key
        self._api = pyairtable.Api(
            api_key,
            timeout=(timeout_s, timeout_s),  # type: ignore[arg-type]  # requests takes float timeouts
            retry_strategy=None,  # we retry ourselves, with the penalty in mind
            endpoint_url=self.endpoint_url,
        )
        self._table = self._api.table(base_id, table)
        self._known: dict[str, str] = {}  # fingerprint → record id of records that exist with a Status
        self._max_known = max_known
        self._known_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<AirtableClient base={self.base_id!r} table={self.table_name!r}>"

    def close(self) -> None:
        """Close the HTTP session."""
        self._api.session.close()

    # -- known records --

    def remember(self, records: Mapping[str, str]) -> None:
        """Record fingerprint → record id pairs known to exist in Airtable (e.g. from the outbox)."""
        with self._known_lock:
            for fp, rid in records.items():
                self._known.pop(fp, None)
                self._known[fp] = rid
            while len(self._known) > self._max_known:
                del self._known[next(iter(self._known))]

    def known_record(self, fingerprint: str) -> str | None:
        """The record id of ``fingerprint`` if this client knows it."""
        with self._known_lock:
            return self._known.get(fingerprint)

    # -- records --

    def upsert(self, items: Iterable[UpsertItem | tuple[StoredIssue, bool]]) -> dict[str, str]:
        """Create or update issues by Fingerprint, ≤ 10 per request; returns fingerprint → record id.

        Chunks go sequentially and each is atomic in Airtable. On failure the raised error carries
        ``delivered``, ``failed`` (the chunk) and ``pending`` (not attempted).
        """
        batch = _dedupe([_as_item(i) for i in items])
        delivered: dict[str, str] = {}
        if not batch:
            return delivered
        for item in batch:
            if item.record_id:
                self.remember({item.issue.fingerprint: item.record_id})
        unknown = [i.issue.fingerprint for i in batch if self.known_record(i.issue.fingerprint) is None]
        if unknown and self.lookup_unknown:
            try:
                self.read_status(unknown)
            except SinkError as exc:
                if isinstance(exc, _DeliveryContext):
                    exc.pending = list(batch)
                raise
        chunks = [batch[i : i + MAX_RECORDS_PER_REQUEST] for i in range(0, len(batch), MAX_RECORDS_PER_REQUEST)]
        for n, chunk in enumerate(chunks):
            try:
                delivered.update(self._upsert_chunk(chunk))
            except SinkError as exc:
                if isinstance(exc, _DeliveryContext):
                    exc.delivered = dict(delivered)
                    exc.failed = list(chunk)
                    exc.pending = [i for c in chunks[n + 1 :] for i in c]
                raise
        return delivered

    def upsert_one(self, item: UpsertItem | tuple[StoredIssue, bool]) -> str:
        """Upsert a single issue; returns its record id. Use it to isolate the bad record of a chunk."""
        return self.upsert([item])[_as_item(item).issue.fingerprint]

    def _upsert_chunk(self, chunk: Sequence[UpsertItem]) -> dict[str, str]:
        fm = self.field_map
        records = []
        sent_status: dict[str, bool] = {}
        for item in chunk:
            fp = item.issue.fingerprint
            create = self.known_record(fp) is None
            url = self._render_log_url(item.issue) if self._render_log_url else None
            fields = self._scrub_fields(
                to_fields(item.issue, fm, create=create, render_log_url=url, regression=item.regression)
            )
            sent_status[fp] = fm.status in fields
            records.append({"fields": fields})
        what = f"upserting {len(chunk)} issue(s)"
        result = self._call(what, lambda: self._table.batch_upsert(records, key_fields=[fm.fingerprint], typecast=True))
        try:
            ids = _ids_by_fingerprint(chunk, result["records"], fm.fingerprint)
            created = set(result["createdRecords"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AirtableRetryableError(f"unexpected response from Airtable while {what}: {exc}") from exc
        # A record we thought existed was created (a human deleted it): it still needs Status NEW.
        missing_status = [
            {"id": rid, "fields": {fm.status: Status.NEW.value}}
            for fp, rid in ids.items()
            if rid in created and not sent_status[fp]
        ]
        if missing_status:
            self._call("setting Status NEW", lambda: self._table.batch_update(missing_status, typecast=True))
        self.remember(ids)
        return ids

    def read_status(self, fingerprints: Iterable[str]) -> dict[str, RemoteIssue]:
        """What humans set on each fingerprint's record; fingerprints without a record are absent.

        Looks records up with ``filterByFormula`` ``OR({Fingerprint}='…', …)`` in chunks of 50 (values
        quoted and escaped), one request per page of 100.
        """
        fm = self.field_map
        wanted = list(dict.fromkeys(fp for fp in fingerprints if fp))
        names = [n for n in (fm.fingerprint, fm.status, fm.fixed_time, fm.fix_notes, fm.fix_commit) if n]
        out: dict[str, RemoteIssue] = {}
        for start in range(0, len(wanted), STATUS_LOOKUP_CHUNK):
            chunk = wanted[start : start + STATUS_LOOKUP_CHUNK]
            terms = ",".join(f"{formula_field(fm.fingerprint)}={quoted(fp)}" for fp in chunk)
            options: dict[str, Any] = {"formula": f"OR({terms})", "fields": names, "page_size": 100}
            # Duplicated fingerprints could make more than one page; bounded all the same.
            for _ in range(len(chunk) + 1):
                page = self._call(f"reading the status of {len(chunk)} issue(s)", lambda o=dict(options): self._list(o))
                for record in page.get("records", []):
                    remote = self._remote(record)
                    fp = record.get("fields", {}).get(fm.fingerprint)
                    if not isinstance(fp, str) or remote is None:
                        continue
                    if fp in out:
                        log.warning("airtable: fingerprint %s has more than one record; using the first", fp)
                        continue
                    out[fp] = remote
                if not page.get("offset"):
                    break
                options["offset"] = page["offset"]
        # A blank Status means nobody triaged it yet: the next upsert may set NEW. Any other value,
        # even an option we do not know, is a person's and must stay.
        self.remember({fp: r.record_id for fp, r in out.items() if r.raw_status})
        return out

    def set_status(
        self,
        fingerprint: str,
        status: Status,
        *,
        fixed_time: float | None = None,
        notes: str | None = None,
        commit: str | None = None,
        record_id: str | None = None,
    ) -> str | None:
        """Set Status (and Fixed Time, Fix Notes, Fix Commit when given) of a fingerprint's record as a
        person asked; returns the record id, ``None`` if Airtable has no record of it."""
        rid = record_id or self.known_record(fingerprint)
        if rid is None:
            remote = self.read_status([fingerprint]).get(fingerprint)
            if remote is None:
                return None
            rid = remote.record_id
        fm = self.field_map
        fields: dict[str, Any] = {fm.status: status.value}
        if fixed_time is not None and fm.fixed_time:
            fields[fm.fixed_time] = format_time(fixed_time)
        if notes and fm.fix_notes:
            fields[fm.fix_notes] = truncate_text(notes)
        if commit and fm.fix_commit:
            fields[fm.fix_commit] = truncate_text(commit)
        fields = self._scrub_fields(fields)
        self._call(f"setting Status {status.value}", lambda: self._table.update(rid, fields, typecast=True))
        self.remember({fingerprint: rid})
        return rid

    def _list(self, options: dict[str, Any]) -> dict[str, Any]:
        # One page per call (pyairtable's iterate() would fetch the next page outside our limiter).
        urls = self._table.urls
        page = self._api.request("GET", urls.records, fallback=("POST", urls.records_post), options=options)
        if not isinstance(page, dict):
            raise ValueError("list records did not return an object")
        return page

    def _remote(self, record: Mapping[str, Any]) -> RemoteIssue | None:
        fm = self.field_map
        fields = record.get("fields")
        rid = record.get("id")
        if not isinstance(fields, dict) or not isinstance(rid, str):
            return None
        raw = fields.get(fm.status)
        try:
            status = Status(raw) if isinstance(raw, str) else None
        except ValueError:
            status = None
        return RemoteIssue(
            record_id=rid,
            status=status,
            fixed_time=parse_time(fields.get(fm.fixed_time)) if fm.fixed_time else None,
            fix_notes=str(fields.get(fm.fix_notes) or "") if fm.fix_notes else "",
            fix_commit=str(fields.get(fm.fix_commit) or "") if fm.fix_commit else "",
            raw_status=raw if isinstance(raw, str) else None,
        )

    # -- schema (meta API) --

    def whoami(self) -> dict[str, Any]:
        """The token's user id and scopes (``GET /v0/meta/whoami``)."""
        return self._call("checking the API key", lambda: self._api.request("GET", self._api.urls.whoami))

    def schema_tables(self) -> list[dict[str, Any]]:
        """The base's tables with their fields (``GET /v0/meta/bases/{base}/tables``), as raw dicts."""
        url = self._api.base(self.base_id).urls.tables
        data = self._call("reading the base schema", lambda: self._api.request("GET", url))
        tables = data.get("tables") if isinstance(data, dict) else None
        if not isinstance(tables, list):
            raise AirtableRetryableError("unexpected response from Airtable while reading the base schema")
        return tables

    def create_table(self, fields: list[dict[str, Any]], description: str | None = None) -> dict[str, Any]:
        """Create this client's table with the given field models (``POST .../tables``)."""
        url = self._api.base(self.base_id).urls.tables
        body: dict[str, Any] = {"name": self.table_name, "fields": fields}
        if description:
            body["description"] = description
        return self._call(f"creating table {self.table_name!r}", lambda: self._api.request("POST", url, json=body))

    def create_field(self, model: dict[str, Any]) -> dict[str, Any]:
        """Add a field to this client's table (``POST .../tables/{table}/fields``)."""
        url = self._table.urls.fields
        return self._call(f"creating field {model.get('name')!r}", lambda: self._api.request("POST", url, json=model))

    # -- the edge --

    def _call(self, what: str, send: Callable[[], T]) -> T:
        """Send one request through the limiter and translate whatever goes wrong."""
        if not self.limiter.acquire(self.max_wait_s):
            wait = self.limiter.delay()
            raise AirtableRetryableError(
                f"Airtable rate limit: not {what} now; the next request to base {self.base_id} may go in {wait:.1f} s",
                retry_after_s=wait,
            )
        try:
            return send()
        except requests.exceptions.HTTPError as exc:
            raise self._translate_http(exc, what) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise AirtablePermanentError(
                self._scrub(f"invalid Airtable endpoint URL {self.endpoint_url!r} while {what}: {exc}")
            ) from exc
        except requests.exceptions.RequestException as exc:
            log.warning("airtable: %s failed: %s", what, self._scrub(type(exc).__name__))
            raise AirtableRetryableError(
                self._scrub(f"cannot reach Airtable at {self.endpoint_url} while {what}: {_short(exc)}"),
                retry_after_s=5.0,
            ) from exc
        except (ValueError, TypeError, KeyError) as exc:  # a garbled body (a proxy page, a cut response)
            raise AirtableRetryableError(
                self._scrub(f"unexpected response from Airtable while {what}: {_short(exc)}"),
                retry_after_s=5.0,
            ) from exc

    def _translate_http(self, exc: requests.exceptions.HTTPError, what: str) -> SinkError:
        response = exc.response
        status = response.status_code if response is not None else None
        error_type, message = _airtable_error(response)
        detail = f"{status} {error_type or ''}".strip() + (f": {message}" if message else "")
        if status == 429:
            wait = self.limiter.penalize()
            log.warning("airtable: rate limited (429) on base %s; pausing %.0f s", self.base_id, wait)
            return AirtableRetryableError(
                self._scrub(
                    f"Airtable rate limit reached ({detail}) while {what}; no requests to base "
                    f"{self.base_id} for {wait:.0f} s"
                ),
                retry_after_s=wait,
                status=status,
            )
        if status is None or status >= 500 or status == 408:
            log.warning("airtable: %s failed with %s", what, status)
            return AirtableRetryableError(
                self._scrub(f"Airtable server error ({detail}) while {what}; will retry"),
                retry_after_s=_retry_after(response, 5.0),
                status=status,
            )
        hint = _PERMANENT_HINTS.get(error_type or "", "")
        where = f'table "{self.table_name}" of base {self.base_id}'
        text = f"Airtable refused {what} in {where} ({detail})" + (f"; {hint}" if hint else "")
        return AirtablePermanentError(
            self._scrub(text),
            status=status,
            error_type=error_type,
            airtable_message=self._scrub(message) if message else None,
            field=_field_in(message) if error_type in _FIELD_ERRORS else None,
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def _scrub_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Our own API key never goes into a cell, even if the logged service printed it in a form the
        pipeline's redaction does not recognise."""
        if not self._secret:
            return fields
        return {k: v.replace(self._secret, "[REDACTED]") if isinstance(v, str) else v for k, v in fields.items()}


_FIELD_ERRORS = {"UNKNOWN_FIELD_NAME", "INVALID_VALUE_FOR_COLUMN", "INVALID_MULTIPLE_CHOICE_OPTIONS"}


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(response: requests.Response | None, default: float) -> float:
    try:
        return float(response.headers["Retry-After"]) if response is not None else default
    except (KeyError, ValueError):
        return default


def _as_item(item: UpsertItem | tuple[StoredIssue, bool]) -> UpsertItem:
    if isinstance(item, UpsertItem):
        return item
    issue, regression = item
    return UpsertItem(issue, bool(regression))


def _dedupe(items: list[UpsertItem]) -> list[UpsertItem]:
    """One item per fingerprint (the last state wins; a regression anywhere stays a regression)."""
    by_fp: dict[str, UpsertItem] = {}
    for item in items:
        fp = item.issue.fingerprint
        if not fp:
            raise ValueError("an issue without a fingerprint cannot be upserted")
        prev = by_fp.pop(fp, None)
        if prev is not None:
            item = UpsertItem(item.issue, item.regression or prev.regression, item.record_id or prev.record_id)
        by_fp[fp] = item
    return list(by_fp.values())


def _ids_by_fingerprint(chunk: Sequence[UpsertItem], records: list[Any], fp_field: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for record in records:
        fp = record["fields"].get(fp_field)
        if isinstance(fp, str):
            ids[fp] = record["id"]
    missing = [i.issue.fingerprint for i in chunk if i.issue.fingerprint not in ids]
    if missing:
        if len(records) != len(chunk):
            raise ValueError(f"upsert answered {len(records)} records for {len(chunk)} issues")
        # Airtable answers in request order; rely on it only when the fingerprint is not echoed.
        for item, record in zip(chunk, records, strict=True):
            ids.setdefault(item.issue.fingerprint, record["id"])
    return {i.issue.fingerprint: ids[i.issue.fingerprint] for i in chunk}


# --- doctor ------------------------------------------------------------------------------------

# Types that still work for an expected type (values are accepted), with what is lost.
_COMPATIBLE = {
    "singleLineText": {"multilineText": "", "richText": ""},
    "multilineText": {"richText": ""},
    "dateTime": {"date": "the time of day is dropped"},
    "singleSelect": {"singleLineText": "no colours or filtering by option", "multilineText": "plain text"},
    "url": {"singleLineText": "links are not clickable", "multilineText": "links are not clickable"},
}


@dataclass(slots=True)
class DoctorReport:
    """The outcome of :func:`doctor`: one line per check, and the problems that need a person."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when delivery can work as configured."""
        return not self.problems

    def render(self) -> str:
        """Human-readable report."""
        tail = "Airtable: ready." if self.ok else f"Airtable: {len(self.problems)} problem(s) to fix."
        return "\n".join([*self.lines, tail])

    def _ok(self, text: str) -> None:
        self.lines.append(f"ok       {text}")

    def _note(self, text: str) -> None:
        self.lines.append(f"note     {text}")

    def _problem(self, text: str) -> None:
        self.lines.append(f"PROBLEM  {text}")
        self.problems.append(text)

    def _created(self, text: str) -> None:
        self.lines.append(f"created  {text}")
        self.created.append(text)


def field_model(mapped: MappedField) -> dict[str, Any]:
    """The create-field body for a mapped field (Airtable's field model)."""
    model: dict[str, Any] = {"name": mapped.name, "type": mapped.spec.type}
    if mapped.spec.options:
        model["options"] = copy.deepcopy(dict(mapped.spec.options))
    return model


def doctor(client: AirtableClient, *, create: bool = False) -> DoctorReport:
    """Check credentials, base, table and every mapped field's presence and type via the meta API.

    With ``create`` the table (if missing) or the missing fields are created; a field of the wrong
    type is only reported, since changing a type can lose a person's data.
    """
    report = DoctorReport()
    table_label = f'table "{client.table_name}"'
    try:
        who = client.whoami()
    except SinkError as exc:
        report._problem(f"API key: {exc}")
        return report
    scopes = who.get("scopes") if isinstance(who, dict) else None
    report._ok("API key accepted" + (f" (scopes: {', '.join(scopes)})" if scopes else ""))
    if isinstance(scopes, list):
        needed = ["data.records:read", "data.records:write", "schema.bases:read"]
        if create:
            needed.append("schema.bases:write")
        if missing_scopes := [s for s in needed if s not in scopes]:
            report._problem(
                f"the token lacks scope(s) {', '.join(missing_scopes)}: edit the token at "
                "https://airtable.com/create/tokens and add them"
            )
    try:
        tables = client.schema_tables()
    except SinkError as exc:
        report._problem(
            f"base {client.base_id}: {exc}. Check the base id (it starts with 'app', from the base URL) "
            "and add the base to the token's access list"
        )
        return report
    report._ok(f"base {client.base_id} reachable ({len(tables)} table(s))")
    table = next((t for t in tables if client.table_name in (t.get("name"), t.get("id"))), None)
    mapped = client.field_map.mapped()
    if table is None:
        if not create:
            report._problem(
                f"{table_label} not found in base {client.base_id}: create it in Airtable, or run "
                "`stream-triage doctor airtable --create` to create it with every field"
            )
            return report
        try:
            client.create_table(
                [field_model(m) for m in mapped], description="Production issues found by stream-triage"
            )
        except SinkError as exc:
            report._problem(f"could not create {table_label}: {exc}")
            return report
        report._created(f"{table_label} with {len(mapped)} fields (primary field: {mapped[0].name})")
        return report
    report._ok(f"{table_label} found")
    existing = {f.get("name"): f for f in table.get("fields", []) if isinstance(f, dict)}
    for m in mapped:
        have = existing.get(m.name)
        label = f'field "{m.name}" ({m.spec.type})'
        if have is None:
            if create:
                try:
                    client.create_field(field_model(m))
                except SinkError as exc:
                    report._problem(f"could not create {label}: {exc}")
                    continue
                report._created(label)
            else:
                report._problem(
                    f"missing {label}: add it in Airtable → {client.table_name} → + → {m.spec.ui_label}, "
                    "or run `stream-triage doctor airtable --create`"
                )
            continue
        actual = have.get("type")
        if actual == m.spec.type:
            report._ok(label)
            if m.spec.type == "singleSelect":
                _check_choices(report, m, have)
        elif actual in _COMPATIBLE.get(m.spec.type, {}):
            loss = _COMPATIBLE[m.spec.type][actual]
            report._note(
                f'field "{m.name}" is {actual}, expected {m.spec.type}; it works' + (f" ({loss})" if loss else "")
            )
        else:
            report._problem(
                f'field "{m.name}" is {actual}, expected {m.spec.type}: in Airtable click the field header → '
                f"Edit field → {m.spec.ui_label} (or map another field in [airtable.fields].{m.attr})"
            )
    return report


def _check_choices(report: DoctorReport, m: MappedField, have: Mapping[str, Any]) -> None:
    options = have.get("options") or {}
    present = {c.get("name") for c in options.get("choices", []) if isinstance(c, dict)}
    wanted = [c["name"] for c in (m.spec.options or {}).get("choices", [])]
    if missing := [c for c in wanted if c not in present]:
        report._note(
            f'field "{m.name}" lacks option(s) {", ".join(missing)}; they are added on first use (typecast) '
            "if the token has editor access"
        )
