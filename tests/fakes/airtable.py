"""A local Airtable Web API server for tests, faithful to the documented behaviour we rely on.

Run it as a context manager; it serves on 127.0.0.1 (random port) from a background thread with its
own event loop, so the synchronous pyairtable client can call it from the test's thread::

    with AirtableFake(token="patTEST", bases={"appTEST": {"Production Issues": {...}}}) as fake:
        api = pyairtable.Api("patTEST", endpoint_url=fake.url, retry_strategy=None)

References (Airtable Web API docs, https://airtable.com/developers/web/api/...):

- ``introduction`` / ``rate-limits``: 5 requests per second per base (and 50 per second per token);
  over that the API answers 429 and the caller "will need to wait 30 seconds before subsequent
  requests will succeed". Modelled as a sliding one-second window plus a penalty window.
- ``errors``: error bodies are ``{"error": {"type": ..., "message": ...}}``; 401
  ``AUTHENTICATION_REQUIRED``, 403 ``INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND``, 404 ``NOT_FOUND``, 422
  ``UNKNOWN_FIELD_NAME`` / ``INVALID_VALUE_FOR_COLUMN`` / ``INVALID_MULTIPLE_CHOICE_OPTIONS`` /
  ``INVALID_FILTER_BY_FORMULA``; 429 is ``{"errors": [{"error": "RATE_LIMIT_REACHED", ...}]}``.
- ``list-records``: ``GET /v0/{base}/{table}`` with ``pageSize`` (≤ 100), ``offset``, ``fields[]``,
  ``filterByFormula``, ``maxRecords``, ``sort[i][field|direction]``, ``returnFieldsByFieldId``; and the
  same as a JSON body on ``POST /v0/{base}/{table}/listRecords``. Empty cells are omitted.
- ``get-record``, ``create-records`` (``fields`` for one or ``records`` for at most 10),
  ``update-record`` / ``update-multiple-records`` (PATCH merges, PUT replaces; at most 10;
  ``performUpsert.fieldsToMergeOn`` creates on 0 matches, updates on 1, fails on more; the response
  lists ``createdRecords`` and ``updatedRecords``), ``delete-record`` / ``delete-multiple-records``.
- ``typecast``: strings are converted to numbers/dates and missing select options are created;
  without it a wrong type is ``INVALID_VALUE_FOR_COLUMN`` and a new option is
  ``INVALID_MULTIPLE_CHOICE_OPTIONS``. Each request is atomic: a failing record fails it whole.
- ``field-model``: long text holds at most 100,000 characters (counted like JavaScript does, in
  UTF-16 code units).
- ``get-base-schema``, ``create-table``, ``create-field``, ``list-bases``, ``get-user-id-scopes``.

Where the docs do not name an exact error type (more than 10 records, an ambiguous upsert, a
malformed body) the fake answers 422 with the closest documented type and says so in its message.

Fault injection for tests: :meth:`AirtableFake.outage`, :meth:`AirtableFake.recover`,
:meth:`AirtableFake.fail_next`; inspection: :attr:`AirtableFake.requests`,
:meth:`AirtableFake.records`, :meth:`AirtableFake.schema`; human edits: :meth:`AirtableFake.edit`,
:meth:`AirtableFake.add`, :meth:`AirtableFake.delete`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

MAX_RECORDS_PER_REQUEST = 10
MAX_PAGE_SIZE = 100
LONG_TEXT_LIMIT = 100_000
DEFAULT_PENALTY_S = 30.0

FieldSpec = str | Mapping[str, Any]
"""A field in a table spec: a type name (``"number"``) or Airtable's field model
(``{"type": "singleSelect", "options": {"choices": [{"name": "NEW"}]}}``)."""

_TEXT_TYPES = {"singleLineText", "multilineText", "url", "email", "phoneNumber", "richText"}
_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """An Airtable-style object id: a 3-letter prefix plus 14 alphanumerics (``recAbC...``)."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(14))


def select(*choices: str) -> dict[str, Any]:
    """Spec helper: a singleSelect field with the given option names."""
    return {"type": "singleSelect", "options": {"choices": [{"name": c} for c in choices]}}


def utf16_len(text: str) -> int:
    """Length as Airtable (JavaScript) counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(slots=True, frozen=True)
class LoggedRequest:
    """One request the fake received, as tests assert on it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int
    at: float
    base: str | None


@dataclass(slots=True)
class _Field:
    id: str
    name: str
    type: str
    options: dict[str, Any] | None = None
    description: str | None = None

    def model(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.options is not None:
            out["options"] = copy.deepcopy(self.options)
        if self.description:
            out["description"] = self.description
        return out


@dataclass(slots=True)
class _Record:
    id: str
    created_time: str
    values: dict[str, Any]  # keyed by field id, so a renamed field keeps its data


@dataclass(slots=True)
class _Table:
    id: str
    name: str
    fields: list[_Field]
    records: dict[str, _Record] = field(default_factory=dict)
    view_id: str = field(default_factory=lambda: new_id("viw"))
    description: str | None = None

    def field(self, name_or_id: str) -> _Field | None:
        for f in self.fields:
            if f.id == name_or_id or f.name == name_or_id:
                return f
        return None

    def model(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "primaryFieldId": self.fields[0].id,
            "fields": [f.model() for f in self.fields],
            "views": [{"id": self.view_id, "name": "Grid view", "type": "grid"}],
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(slots=True)
class _Base:
    id: str
    name: str
    tables: list[_Table]

    def table(self, name_or_id: str) -> _Table | None:
        for t in self.tables:
            if t.id == name_or_id or t.name == name_or_id:
                return t
        return None


class _ApiError(Exception):
    """An Airtable error response; raised inside handlers, rendered by the dispatcher."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body: Any = {"error": {"type": error_type, "message": message}}


def _rate_limited() -> _ApiError:
    err = _ApiError(429, "RATE_LIMIT_REACHED", "Rate limit exceeded. Please try again later")
    # The documented 429 body differs from every other error: a list under "errors".
    err.body = {
        "errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]
    }
    return err


def _invalid_request(message: str) -> _ApiError:
    return _ApiError(422, "INVALID_REQUEST_UNKNOWN", message)


def _unknown_field(name: str) -> _ApiError:
    return _ApiError(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')


def _not_found() -> _ApiError:
    return _ApiError(404, "NOT_FOUND", "Could not find what you are looking for")


def _model_not_found() -> _ApiError:
    return _ApiError(
        403,
        "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
        "Invalid permissions, or the requested model was not found. Check that both your user and your "
        "token have the required permissions, and that the model names and/or ids are correct.",
    )


_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "number": {"precision": 0},
    "dateTime": {
        "timeZone": "utc",
        "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
        "timeFormat": {"name": "24hour", "format": "HH:mm"},
    },
    "checkbox": {"color": "greenBright", "icon": "check"},
    "singleSelect": {"choices": []},
}
_DATE_FORMATS = {
    "local": "l",
    "friendly": "LL",
    "us": "M/D/YYYY",
    "european": "D/M/YYYY",
    "iso": "YYYY-MM-DD",
}
_TIME_FORMATS = {"12hour": "h:mma", "24hour": "HH:mm"}
# Field types whose create-field request must carry options (create-field / field-model docs).
_REQUIRED_OPTIONS = {
    "number": ("precision",),
    "dateTime": ("dateFormat", "timeFormat", "timeZone"),
    "singleSelect": ("choices",),
}


def _normalise_choices(choices: list[Any]) -> list[dict[str, Any]]:
    out = []
    for c in choices:
        name = c if isinstance(c, str) else c.get("name")
        if not isinstance(name, str) or not name:
            raise _ApiError(422, "INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE", "Each choice needs a name")
        color = None if isinstance(c, str) else c.get("color")
        out.append({"id": new_id("sel"), "name": name, "color": color or "blueLight2"})
    return out


def _make_field(name: str, spec: FieldSpec, *, strict: bool) -> _Field:
    """Build a field from a spec; ``strict`` applies the create-field API's option requirements."""
    if isinstance(spec, str):
        spec = {"type": spec}
    ftype = spec.get("type")
    if not isinstance(ftype, str) or not ftype:
        raise _invalid_request(f'Field "{name}" needs a type')
    if not name or not isinstance(name, str):
        raise _ApiError(422, "INVALID_FIELD_NAME", "Field names must be non-empty strings")
    given = dict(spec.get("options") or {})
    if strict:
        missing = [k for k in _REQUIRED_OPTIONS.get(ftype, ()) if k not in given]
        if missing:
            raise _ApiError(
                422,
                "INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE",
                f'Field "{name}" of type {ftype} needs options: {", ".join(missing)}',
            )
    options: dict[str, Any] | None = None
    if ftype in _DEFAULT_OPTIONS:
        options = {**copy.deepcopy(_DEFAULT_OPTIONS[ftype]), **given}
        if ftype == "singleSelect":
            options["choices"] = _normalise_choices(list(options.get("choices") or []))
        if ftype == "dateTime":
            df = dict(options["dateFormat"])
            tf = dict(options["timeFormat"])
            df.setdefault("format", _DATE_FORMATS.get(df.get("name", "iso"), "YYYY-MM-DD"))
            tf.setdefault("format", _TIME_FORMATS.get(tf.get("name", "24hour"), "HH:mm"))
            options["dateFormat"], options["timeFormat"] = df, tf
    elif given:
        options = given
    return _Field(new_id("fld"), name, ftype, options, spec.get("description"))


def _make_table(
    name: str, fields: Mapping[str, FieldSpec] | list[Mapping[str, Any]], *, strict: bool
) -> _Table:
    if isinstance(fields, Mapping):
        built = [_make_field(n, s, strict=strict) for n, s in fields.items()]
    else:
        built = [_make_field(str(f.get("name", "")), f, strict=strict) for f in fields]
    if not built:
        raise _invalid_request(f'Table "{name}" needs at least one field')
    names = [f.name for f in built]
    if len(set(names)) != len(names):
        raise _ApiError(422, "DUPLICATE_OR_EMPTY_FIELD_NAME", "Field names must be unique")
    return _Table(new_id("tbl"), name, built)


def _iso_ms(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# --- filterByFormula: the documented formula language, restricted to the subset we use ----------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<field>\{(?:\\.|[^\\}])*\})
      | (?P<string>'(?:\\.|[^\\'])*'|"(?:\\.|[^\\"])*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<func>[A-Za-z_]+)\s*\(
      | (?P<punct>[(),=])
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


class _FormulaError(Exception):
    pass


def _tokens(formula: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(formula):
        if formula[pos:].strip() == "":
            break
        m = _TOKEN.match(formula, pos)
        if not m:
            raise _FormulaError(f"unexpected text at position {pos}: {formula[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parse_formula(formula: str) -> Any:
    """Parse ``{F}='v'``, ``{F}=3``, ``OR(...)``, ``AND(...)``, ``NOT(...)`` into a small tree."""
    toks = _tokens(formula)
    i = 0

    def peek() -> tuple[str, str] | None:
        return toks[i] if i < len(toks) else None

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise _FormulaError("unexpected end of formula")
        i += 1
        return toks[i - 1]

    def expr() -> Any:
        kind, text = take()
        if kind == "func":
            name = text.rstrip("(").strip().upper()
            if name not in ("OR", "AND", "NOT"):
                raise _FormulaError(f"function {name}() is not supported by the fake")
            args = [expr()]
            while peek() == ("punct", ","):
                take()
                args.append(expr())
            if take() != ("punct", ")"):
                raise _FormulaError("expected )")
            if name == "NOT" and len(args) != 1:
                raise _FormulaError("NOT() takes one argument")
            return (name, args)
        if kind == "field":
            if take() != ("punct", "="):
                raise _FormulaError("only {Field}=value comparisons are supported by the fake")
            lkind, literal = take()
            if lkind == "string":
                value: Any = _ESCAPE.sub(r"\1", literal[1:-1])
            elif lkind == "number":
                value = float(literal)
            else:
                raise _FormulaError("expected a string or number after =")
            return ("EQ", _ESCAPE.sub(r"\1", text[1:-1]), value)
        raise _FormulaError(f"unexpected {text!r}")

    tree = expr()
    if i != len(toks):
        raise _FormulaError("unexpected text after the end of the formula")
    return tree


def _formula_fields(tree: Any) -> set[str]:
    if tree[0] == "EQ":
        return {tree[1]}
    return set().union(*(_formula_fields(a) for a in tree[1]))


def _evaluate(tree: Any, table: _Table, record: _Record) -> bool:
    op = tree[0]
    if op == "OR":
        return any(_evaluate(a, table, record) for a in tree[1])
    if op == "AND":
        return all(_evaluate(a, table, record) for a in tree[1])
    if op == "NOT":
        return not _evaluate(tree[1][0], table, record)
    f = table.field(tree[1])
    assert f is not None  # unknown names are rejected before evaluation
    current = record.values.get(f.id)
    if isinstance(tree[2], float):
        return isinstance(current, int | float) and float(current) == tree[2]
    # Airtable compares a blank cell equal to the empty string.
    return ("" if current is None else str(current)) == tree[2]


# --- the server --------------------------------------------------------------------------------


class AirtableFake:
    """An in-memory Airtable served over HTTP on 127.0.0.1; see the module docstring for the spec.

    ``bases`` maps base id → table name → field name → :data:`FieldSpec`; the first field of a table
    is its primary field. ``clock`` (monotonic seconds) drives the rate limiter, so a test can share a
    manual clock with the client's limiter and never sleep. ``rate_limit_per_s=None`` turns the
    per-base limit off; ``penalty_s`` is how long a base refuses requests after a 429.
    """

    def __init__(
        self,
        token: str = "patTEST",
        bases: Mapping[str, Mapping[str, Mapping[str, FieldSpec]]] | None = None,
        *,
        rate_limit_per_s: int | None = 5,
        token_rate_limit_per_s: int | None = 50,
        penalty_s: float = DEFAULT_PENALTY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.rate_limit_per_s = rate_limit_per_s
        self.token_rate_limit_per_s = token_rate_limit_per_s
        self.penalty_s = penalty_s
        self.clock = clock
        self._bases: dict[str, _Base] = {}
        for base_id, tables in (bases or {}).items():
            built = [_make_table(name, spec, strict=False) for name, spec in tables.items()]
            self._bases[base_id] = _Base(base_id, base_id, built)
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._windows: dict[str, deque[float]] = {}
        self._penalty_until: dict[str, float] = {}
        self._outage: tuple[int, bool] | None = None
        self._fail_next: deque[tuple[int, str, str]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --

    @property
    def url(self) -> str:
        """The ``endpoint_url`` to give pyairtable (no ``/v0``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AirtableFake:
        """Start serving in a background thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=serve, name="airtable-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Airtable fake did not start within 10 s")
        if failure:
            raise failure[0]
        return self

    async def _start_site(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        """Stop the server and join its thread."""
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> AirtableFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault injection and inspection (called from the test thread) --

    def outage(self, status: int = 503, *, drop_connection: bool = False) -> None:
        """Every request fails from now on: with ``status`` or by closing the connection unanswered."""
        with self._lock:
            self._outage = (status, drop_connection)

    def recover(self) -> None:
        """End an outage, pending ``fail_next`` failures and every rate-limit penalty."""
        with self._lock:
            self._outage = None
            self._fail_next.clear()
            self._penalty_until.clear()
            self._windows.clear()

    def fail_next(self, n: int = 1, status: int = 500, error_type: str = "SERVER_ERROR") -> None:
        """The next ``n`` requests fail with ``status`` and an Airtable-shaped body of ``error_type``."""
        with self._lock:
            for _ in range(n):
                self._fail_next.append((status, error_type, f"Injected failure ({error_type})"))

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Forget the request log (state and rate-limit windows stay)."""
        with self._lock:
            self._log.clear()

    def records(self, table: str, base: str | None = None) -> list[dict[str, Any]]:
        """The table's records as the API returns them (``id``, ``createdTime``, ``fields`` by name)."""
        with self._lock:
            t = self._table(base, table)
            return [self._render(t, r, None, by_id=False) for r in t.records.values()]

    def schema(self, table: str, base: str | None = None) -> dict[str, dict[str, Any]]:
        """Field name → field model (``type``, ``options``) of one table."""
        with self._lock:
            return {f.name: f.model() for f in self._table(base, table).fields}

    def edit(self, table: str, record_id: str, fields: Mapping[str, Any], base: str | None = None) -> None:
        """Change cells as a human would in the Airtable UI (no request logged, no rate limit)."""
        with self._lock:
            t = self._table(base, table)
            self._apply_fields(t, t.records[record_id], dict(fields), typecast=True, replace=False)

    def add(self, table: str, fields: Mapping[str, Any], base: str | None = None) -> str:
        """Create a record as a human would in the Airtable UI (no request logged); returns its id."""
        with self._lock:
            t = self._table(base, table)
            rec = self._new_record(t)
            self._apply_fields(t, rec, dict(fields), typecast=True, replace=False)
            return rec.id

    def delete(self, table: str, record_id: str, base: str | None = None) -> None:
        """Delete a record as a human would in the Airtable UI (no request logged)."""
        with self._lock:
            del self._table(base, table).records[record_id]

    def _table(self, base: str | None, table: str) -> _Table:
        b = self._bases[base] if base else next(iter(self._bases.values()))
        t = b.table(table)
        if t is None:
            raise KeyError(table)
        return t

    # -- HTTP handling --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        query = {k: request.rel_url.query.getall(k) for k in request.rel_url.query}
        body: Any = None
        body_error = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, body_error = raw.decode("utf-8", "replace"), True
        segments = [unquote(s) for s in request.rel_url.raw_path.split("/")[1:]]
        with self._lock:
            now = self.clock()
            base_id = self._base_of(segments)
            drop = False
            try:
                if self._outage is not None:
                    status, drop = self._outage
                    raise _ApiError(status, "SERVICE_UNAVAILABLE", "Injected outage")
                if self._fail_next:
                    status, etype, message = self._fail_next.popleft()
                    raise _rate_limited() if status == 429 else _ApiError(status, etype, message)
                self._authenticate(request.headers.get("Authorization", ""))
                self._rate_check(base_id, now)
                if body_error:
                    raise _ApiError(422, "INVALID_REQUEST_BODY", "Could not parse the request body as JSON")
                status, payload = 200, self._route(request.method, segments, query, body)
            except _ApiError as err:
                status, payload = err.status, err.body
            path = request.rel_url.path
            self._log.append(LoggedRequest(request.method, path, query, body, status, now, base_id))
        if drop and request.transport is not None:
            # An unanswered, closed connection: what a client sees when a proxy or the network fails.
            request.transport.close()
            return web.Response(status=status)
        return web.json_response(payload, status=status)

    @staticmethod
    def _base_of(segments: list[str]) -> str | None:
        if len(segments) >= 2 and segments[0] == "v0":
            if segments[1] == "meta":
                return segments[3] if len(segments) >= 4 and segments[2] == "bases" else None
            return segments[1]
        return None

    def _authenticate(self, header: str) -> None:
        """``introduction`` / ``authentication``: a Bearer personal access token on every request."""
        if not header.startswith("Bearer ") or not header[7:]:
            raise _ApiError(401, "AUTHENTICATION_REQUIRED", "Authentication required")
        if header[7:] != self.token:
            raise _ApiError(401, "AUTHENTICATION_REQUIRED", "Invalid authentication token")

    def _rate_check(self, base_id: str | None, now: float) -> None:
        """``rate-limits``: 5 req/s per base, 50 req/s per token; a 429 starts a penalty window."""
        checks = [(f"token:{self.token}", self.token_rate_limit_per_s)]
        if base_id is not None:
            checks.append((f"base:{base_id}", self.rate_limit_per_s))
        for key, limit in checks:
            if limit is None:
                continue
            if now < self._penalty_until.get(key, -math.inf):
                raise _rate_limited()
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                self._penalty_until[key] = now + self.penalty_s
                raise _rate_limited()
        for key, limit in checks:
            if limit is not None:
                self._windows[key].append(now)

    def _route(self, method: str, seg: list[str], query: dict[str, list[str]], body: Any) -> Any:
        if len(seg) < 2 or seg[0] != "v0":
            raise _not_found()
        if seg[1] == "meta":
            return self._route_meta(method, seg[2:], body)
        base = self._bases.get(seg[1])
        if base is None or len(seg) < 3:
            raise _model_not_found()
        table = base.table(seg[2])
        if table is None:
            raise _model_not_found()
        rest = seg[3:]
        if not rest:
            if method == "GET":
                return self._list(table, self._list_options_from_query(query))
            if method == "POST":
                return self._create(base, table, self._body(body))
            if method in ("PATCH", "PUT"):
                return self._update_many(base, table, self._body(body), replace=method == "PUT")
            if method == "DELETE":
                return self._delete_many(table, query.get("records[]", []))
        elif rest == ["listRecords"] and method == "POST":
            return self._list(table, self._list_options_from_body(self._body(body)))
        elif len(rest) == 1 and rest[0].startswith("rec"):
            record = table.records.get(rest[0])
            if record is None:
                raise _not_found()
            if method == "GET":
                return self._render(table, record, None, by_id=_truthy(query.get("returnFieldsByFieldId")))
            if method in ("PATCH", "PUT"):
                return self._update_one(base, table, record.id, self._body(body), replace=method == "PUT")
            if method == "DELETE":
                del table.records[record.id]
                return {"id": record.id, "deleted": True}
        raise _not_found()

    @staticmethod
    def _body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid_request("Invalid request: the body must be a JSON object")
        return body

    # -- meta API --

    def _route_meta(self, method: str, seg: list[str], body: Any) -> Any:
        if seg == ["whoami"] and method == "GET":
            return {
                "id": "usrFAKEFAKEFAKE01",
                "scopes": [
                    "data.records:read",
                    "data.records:write",
                    "schema.bases:read",
                    "schema.bases:write",
                ],
            }
        if seg == ["bases"] and method == "GET":
            return {
                "bases": [
                    {"id": b.id, "name": b.name, "permissionLevel": "create"} for b in self._bases.values()
                ]
            }
        if len(seg) < 3 or seg[0] != "bases" or seg[2] != "tables":
            raise _not_found()
        base = self._bases.get(seg[1])
        if base is None:
            raise _model_not_found()
        if len(seg) == 3 and method == "GET":
            return {"tables": [t.model() for t in base.tables]}
        if len(seg) == 3 and method == "POST":
            body = self._body(body)
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise _invalid_request("Invalid request: a table needs a name")
            if base.table(name) is not None:
                raise _ApiError(422, "DUPLICATE_TABLE_NAME", f'A table named "{name}" already exists')
            fields = body.get("fields")
            if not isinstance(fields, list):
                raise _invalid_request("Invalid request: fields must be a list of field models")
            table = _make_table(name, fields, strict=True)
            table.description = body.get("description")
            base.tables.append(table)
            return table.model()
        if len(seg) == 5 and seg[4] == "fields" and method == "POST":
            table = base.table(seg[3])
            if table is None:
                raise _model_not_found()
            body = self._body(body)
            name = body.get("name")
            if not isinstance(name, str) or not name or table.field(name) is not None:
                raise _ApiError(
                    422, "DUPLICATE_OR_EMPTY_FIELD_NAME", f"Field name {name!r} is empty or taken"
                )
            new = _make_field(name, body, strict=True)
            table.fields.append(new)
            return new.model()
        raise _not_found()

    # -- records --

    def _render(
        self, table: _Table, record: _Record, only: list[_Field] | None, *, by_id: bool
    ) -> dict[str, Any]:
        fields = {}
        for f in table.fields if only is None else only:
            value = record.values.get(f.id)
            if value is not None:
                fields[f.id if by_id else f.name] = copy.deepcopy(value)
        return {"id": record.id, "createdTime": record.created_time, "fields": fields}

    @staticmethod
    def _list_options_from_query(query: dict[str, list[str]]) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        for key, values in query.items():
            if key == "fields[]":
                opts["fields"] = values
            elif key in (
                "pageSize",
                "maxRecords",
                "offset",
                "filterByFormula",
                "view",
                "cellFormat",
                "timeZone",
                "userLocale",
                "returnFieldsByFieldId",
            ):
                opts[key] = values[-1]
            elif m := re.fullmatch(r"sort\[(\d+)\]\[(field|direction)\]", key):
                sorts = opts.setdefault("sort", {})
                sorts.setdefault(int(m.group(1)), {})[m.group(2)] = values[-1]
            elif key == "recordMetadata[]":
                continue
            else:
                raise _invalid_request(
                    f"Invalid request: parameter validation failed (unknown parameter {key})"
                )
        if "sort" in opts:
            opts["sort"] = [opts["sort"][i] for i in sorted(opts["sort"])]
        return opts

    @staticmethod
    def _list_options_from_body(body: dict[str, Any]) -> dict[str, Any]:
        allowed = {
            "fields",
            "pageSize",
            "maxRecords",
            "offset",
            "filterByFormula",
            "view",
            "cellFormat",
            "sort",
            "returnFieldsByFieldId",
            "recordMetadata",
            "timeZone",
            "userLocale",
        }
        unknown = set(body) - allowed
        if unknown:
            raise _invalid_request(f"Invalid request: parameter validation failed ({sorted(unknown)})")
        return dict(body)

    def _list(self, table: _Table, opts: dict[str, Any]) -> dict[str, Any]:
        """``list-records``: filter, sort, page (``pageSize`` ≤ 100, opaque ``offset``)."""
        try:
            page_size = int(opts.get("pageSize", MAX_PAGE_SIZE))
            max_records = int(opts["maxRecords"]) if "maxRecords" in opts else None
        except (TypeError, ValueError):
            raise _invalid_request("Invalid request: pageSize and maxRecords must be integers") from None
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise _invalid_request(f"Invalid request: pageSize must be between 1 and {MAX_PAGE_SIZE}")
        only = None
        if "fields" in opts:
            only = []
            for name in opts["fields"]:
                f = table.field(name)
                if f is None:
                    raise _unknown_field(name)
                only.append(f)
        records = list(table.records.values())
        if formula := opts.get("filterByFormula"):
            try:
                tree = _parse_formula(formula)
            except _FormulaError as exc:
                raise _ApiError(
                    422,
                    "INVALID_FILTER_BY_FORMULA",
                    f"The formula for filtering records is invalid: {exc}",
                ) from None
            unknown = sorted(n for n in _formula_fields(tree) if table.field(n) is None)
            if unknown:
                raise _ApiError(
                    422, "INVALID_FILTER_BY_FORMULA", f"Unknown field names: {', '.join(unknown)}"
                )
            records = [r for r in records if _evaluate(tree, table, r)]
        for spec in reversed(opts.get("sort") or []):
            f = table.field(spec.get("field", ""))
            if f is None:
                raise _unknown_field(spec.get("field", ""))
            present = [r for r in records if r.values.get(f.id) is not None]
            blank = [r for r in records if r.values.get(f.id) is None]
            present.sort(key=lambda r, f=f: r.values[f.id], reverse=spec.get("direction") == "desc")
            records = present + blank
        if max_records is not None:
            records = records[:max_records]
        start = 0
        if offset := opts.get("offset"):
            m = re.fullmatch(r"itr[A-Za-z0-9]{14}/(\d+)", str(offset))
            if not m:
                raise _ApiError(
                    422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "The offset is invalid or expired"
                )
            start = int(m.group(1))
        by_id = _truthy([str(opts.get("returnFieldsByFieldId", ""))])
        page = records[start : start + page_size]
        out: dict[str, Any] = {"records": [self._render(table, r, only, by_id=by_id) for r in page]}
        if start + page_size < len(records):
            out["offset"] = f"{new_id('itr')}/{start + page_size}"
        return out

    @staticmethod
    def _check_keys(body: dict[str, Any], allowed: set[str]) -> None:
        unknown = set(body) - allowed
        if unknown:
            raise _invalid_request(
                f"Invalid request: parameter validation failed (unknown {sorted(unknown)})"
            )

    @staticmethod
    def _records_param(body: dict[str, Any]) -> list[dict[str, Any]]:
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise _invalid_request("Invalid request: records must be a non-empty list")
        if len(records) > MAX_RECORDS_PER_REQUEST:
            # The docs: "You can create/update up to 10 records per request."
            raise _ApiError(
                422,
                "INVALID_RECORDS",
                f"You can send at most {MAX_RECORDS_PER_REQUEST} records per request; got {len(records)}",
            )
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("fields"), dict):
                raise _invalid_request("Invalid request: every record needs a fields object")
        return records

    def _new_record(self, table: _Table) -> _Record:
        rec = _Record(new_id("rec"), _iso_ms(datetime.now(UTC)), {})
        table.records[rec.id] = rec
        return rec

    def _create(self, base: _Base, table: _Table, body: dict[str, Any]) -> dict[str, Any]:
        """``create-records``: one record via ``fields`` or up to 10 via ``records``; atomic."""
        self._check_keys(body, {"fields", "records", "typecast", "returnFieldsByFieldId"})
        typecast = bool(body.get("typecast"))
        by_id = bool(body.get("returnFieldsByFieldId"))
        work = copy.deepcopy(table)
        if "records" in body:
            created = []
            for r in self._records_param(body):
                rec = self._new_record(work)
                self._apply_fields(work, rec, r["fields"], typecast=typecast, replace=False)
                created.append(rec)
            self._commit(base, table, work)
            return {"records": [self._render(work, r, None, by_id=by_id) for r in created]}
        if not isinstance(body.get("fields"), dict):
            raise _invalid_request("Invalid request: send fields or records")
        rec = self._new_record(work)
        self._apply_fields(work, rec, body["fields"], typecast=typecast, replace=False)
        self._commit(base, table, work)
        return self._render(work, rec, None, by_id=by_id)

    def _update_one(
        self, base: _Base, table: _Table, record_id: str, body: dict[str, Any], *, replace: bool
    ) -> dict[str, Any]:
        """``update-record``: PATCH merges the given cells, PUT clears the others."""
        self._check_keys(body, {"fields", "typecast", "returnFieldsByFieldId"})
        if not isinstance(body.get("fields"), dict):
            raise _invalid_request("Invalid request: fields must be an object")
        work = copy.deepcopy(table)
        rec = work.records[record_id]
        self._apply_fields(work, rec, body["fields"], typecast=bool(body.get("typecast")), replace=replace)
        self._commit(base, table, work)
        return self._render(work, rec, None, by_id=bool(body.get("returnFieldsByFieldId")))

    def _update_many(
        self, base: _Base, table: _Table, body: dict[str, Any], *, replace: bool
    ) -> dict[str, Any]:
        """``update-multiple-records``, with ``performUpsert`` when given; at most 10; atomic."""
        self._check_keys(body, {"records", "typecast", "returnFieldsByFieldId", "performUpsert"})
        records = self._records_param(body)
        typecast = bool(body.get("typecast"))
        by_id = bool(body.get("returnFieldsByFieldId"))
        upsert = body.get("performUpsert")
        merge_fields: list[_Field] = []
        if upsert is not None:
            names = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
            if not isinstance(names, list) or not 1 <= len(names) <= 3:
                raise _invalid_request("Invalid request: performUpsert.fieldsToMergeOn needs 1 to 3 fields")
            for name in names:
                f = table.field(name)
                if f is None:
                    raise _unknown_field(name)
                merge_fields.append(f)
        work = copy.deepcopy(table)
        touched: list[_Record] = []
        created: list[str] = []
        updated: list[str] = []
        for r in records:
            if "id" in r:
                rec = work.records.get(r["id"])
                if rec is None:
                    raise _ApiError(
                        422, "ROW_DOES_NOT_EXIST", f"Record ID {r['id']} does not exist in this table"
                    )
                updated.append(rec.id)
            elif upsert is not None:
                key = []
                for f in merge_fields:
                    raw = next((v for k, v in r["fields"].items() if k in (f.name, f.id)), None)
                    if raw is None or raw == "":
                        raise _invalid_request(
                            f"Invalid request: performUpsert needs a value for merge field "
                            f'"{f.name}" in every record'
                        )
                    key.append((f.id, self._convert(f, raw, typecast)))
                matches = [m for m in work.records.values() if all(m.values.get(fid) == v for fid, v in key)]
                if len(matches) > 1:
                    # Documented: upsert fails when more than one record matches the merge fields.
                    raise _invalid_request(
                        f"Invalid request: performUpsert found {len(matches)} existing records matching "
                        "fieldsToMergeOn; it needs at most one"
                    )
                if matches:
                    rec = matches[0]
                    if rec.id not in created:
                        updated.append(rec.id)
                else:
                    rec = self._new_record(work)
                    created.append(rec.id)
            else:
                raise _invalid_request("Invalid request: every record needs an id (or send performUpsert)")
            self._apply_fields(work, rec, r["fields"], typecast=typecast, replace=replace)
            touched.append(rec)
        self._commit(base, table, work)
        out: dict[str, Any] = {"records": [self._render(work, r, None, by_id=by_id) for r in touched]}
        if upsert is not None:
            out["createdRecords"] = created
            out["updatedRecords"] = updated
        return out

    def _delete_many(self, table: _Table, ids: list[str]) -> dict[str, Any]:
        """``delete-multiple-records``: ``records[]`` query params, at most 10."""
        if not ids or len(ids) > MAX_RECORDS_PER_REQUEST:
            raise _invalid_request(
                f"Invalid request: send 1 to {MAX_RECORDS_PER_REQUEST} records[] to delete"
            )
        missing = [i for i in ids if i not in table.records]
        if missing:
            raise _not_found()
        for i in ids:
            del table.records[i]
        return {"records": [{"id": i, "deleted": True} for i in ids]}

    @staticmethod
    def _commit(base: _Base, old: _Table, new: _Table) -> None:
        base.tables[base.tables.index(old)] = new

    def _apply_fields(
        self, table: _Table, rec: _Record, fields: dict[str, Any], *, typecast: bool, replace: bool
    ) -> None:
        converted: dict[str, Any] = {}
        for name, value in fields.items():
            f = table.field(name)
            if f is None:
                raise _unknown_field(name)
            converted[f.id] = self._convert(f, value, typecast)
        if replace:
            rec.values.clear()
        for fid, value in converted.items():
            if value is None:
                rec.values.pop(fid, None)
            else:
                rec.values[fid] = value

    @staticmethod
    def _convert(f: _Field, value: Any, typecast: bool) -> Any:
        """Cell value by field type; ``None`` clears. Typecast rules follow the ``typecast`` docs."""

        def bad() -> _ApiError:
            return _ApiError(
                422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f.name}" cannot accept the provided value'
            )

        if value is None:
            return None
        if f.type in _TEXT_TYPES:
            if not isinstance(value, str):
                if not typecast or isinstance(value, dict | list):
                    raise bad()
                value = str(value)
            if utf16_len(value) > LONG_TEXT_LIMIT:
                raise _ApiError(
                    422,
                    "INVALID_VALUE_FOR_COLUMN",
                    f'Field "{f.name}" cannot accept a value longer than {LONG_TEXT_LIMIT} characters',
                )
            if f.type == "singleLineText":
                value = value.replace("\r", " ").replace("\n", " ")
            return value or None
        if f.type == "number":
            if isinstance(value, bool):
                raise bad()
            if isinstance(value, int | float):
                return value
            if isinstance(value, str) and typecast:
                try:
                    number = float(value.replace(",", "").strip())
                except ValueError:
                    raise bad() from None
                return int(number) if number.is_integer() else number
            raise bad()
        if f.type == "checkbox":
            if isinstance(value, bool):
                return value or None
            if typecast and isinstance(value, str | int):
                return (str(value).strip().lower() in ("true", "1", "yes", "checked")) or None
            raise bad()
        if f.type in ("dateTime", "date"):
            if not isinstance(value, str):
                raise bad()
            try:
                dt = datetime.fromisoformat(value.strip())
            except ValueError:
                raise bad() from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return _iso_ms(dt) if f.type == "dateTime" else dt.date().isoformat()
        if f.type == "singleSelect":
            if not isinstance(value, str):
                if not typecast or isinstance(value, dict | list | bool):
                    raise bad()
                value = str(value)
            if value == "":
                return None
            choices = f.options.setdefault("choices", []) if f.options is not None else []
            if not any(c["name"] == value for c in choices):
                if not typecast:
                    raise _ApiError(
                        422,
                        "INVALID_MULTIPLE_CHOICE_OPTIONS",
                        f'Insufficient permissions to create new select option ""{value}""',
                    )
                choices.append({"id": new_id("sel"), "name": value, "color": "grayLight2"})
            return value
        return value


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and str(values[-1]).lower() in ("1", "true")


@dataclass(slots=True)
class ManualClock:
    """A clock tests advance by hand; ``sleep`` advances it instead of waiting. Thread-safe."""

    now: float = 1_000.0
    sleeps: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` and record the sleep."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        with self._lock:
            self.now += seconds
