"""Configuration: one TOML file plus environment variables for secrets, validated once at start-up.

Every section is a dataclass; unknown keys and wrong types are reported together, each with its key
path and what to do, so a user fixes a config file in one round trip. Secrets never live in the
file: they come from the environment (``AIRTABLE_API_KEY``, ``RENDER_API_KEY``,
``STREAM_TRIAGE_DRAIN_TOKEN``, ``STREAM_TRIAGE_SYSLOG_TOKEN``, ``STREAM_TRIAGE_METRICS_TOKEN``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from stream_triage.errors import ConfigError

DEFAULT_LINE_REGEX = (
    r"^\[(?:(?P<run>\d{6}-\d{6})(?:-(?P<suffix>[^\]]+))?|(?P<tag>[^\]\s]+))\]\s*"
    r"\[(?P<client>[^\]]*)\]\s*\[(?P<operation>[^\]]*)\]\s*\[(?P<level>[A-Za-z]+)\]\s?(?P<message>.*)$"
)

DEFAULT_COMPLETION_MARKERS = [
    r"SMART RESUME PROCESSING COMPLETED",
    r"ALL CLIENTS UP TO DATE",
    r"(?i:\b(?:job|run)\b).*\b(?:status(?: updated)?(?: to)?|marked(?: as)?)\s*:?\s*COMPLETED\b",
]


@dataclass(slots=True)
class RunTypeRule:
    """A run is of type ``name`` when any of its tagged lines' operation or message matches ``regex``."""

    name: str
    regex: str


DEFAULT_RUN_TYPES = [
    RunTypeRule("smart-resume", r"(?i)smart[-_ ]?resume"),
    RunTypeRule("batch-score", r"(?i)batch[-_ ]?scor|lead_scoring|post_scoring"),
    RunTypeRule("apify-webhook", r"(?i)apify"),
    RunTypeRule("scheduled-job", r"(?i)\bcron\b|scheduled[-_ ]?job|scheduler"),
    RunTypeRule("api-endpoint", r"(?i)api[-_ ]?endpoint|\b(?:GET|POST|PUT|PATCH|DELETE) /"),
]


@dataclass(slots=True)
class ParseConfig:
    """How lines are split into run id, client, operation, level and message."""

    line_regex: str = DEFAULT_LINE_REGEX


@dataclass(slots=True)
class RouteConfig:
    """Per-run grouping and its bounds."""

    max_open_runs: int = 20_000
    context_before: int = 25
    context_after: int = 25
    context_line_chars: int = 500
    max_issues_per_run: int = 1_000
    max_stack_lines: int = 60


@dataclass(slots=True)
class FlushConfig:
    """When a run's issues are handed to the sinks."""

    completion_markers: list[str] = field(default_factory=lambda: list(DEFAULT_COMPLETION_MARKERS))
    grace_after_marker_s: float = 600.0
    idle_timeout_s: float = 1800.0
    system_flush_interval_s: float = 60.0


@dataclass(slots=True)
class RunMetadataConfig:
    """Rules that derive Run Type and Stream from a run's lines."""

    run_types: list[RunTypeRule] = field(default_factory=lambda: list(DEFAULT_RUN_TYPES))
    stream_regex: str = r"(?i)\bstream\s*(?:[=:#]|\s)\s*(\d{1,3})\b"


@dataclass(slots=True)
class PatternsConfig:
    """The pattern pack: the shipped default plus the user's own files."""

    files: list[str] = field(default_factory=list)
    use_default_pack: bool = True
    disabled: list[str] = field(default_factory=list)
    slow_request_ms: int = 5000
    match_timeout_ms: int = 50


@dataclass(slots=True)
class StoreConfig:
    """The embedded SQLite store."""

    path: str = "stream-triage.db"


@dataclass(slots=True)
class RedactConfig:
    """Secret redaction applied to everything stored, printed or sent."""

    extra_patterns: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ServerConfig:
    """The HTTP server (drain, health, metrics) and the service's lifecycle."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    shutdown_deadline_s: float = 30.0
    queue_max_batches: int = 256
    tick_interval_s: float = 1.0


@dataclass(slots=True)
class SyslogSourceConfig:
    """RFC 5424/3164 syslog over TCP or TLS (Render Log Streams). Token: $STREAM_TRIAGE_SYSLOG_TOKEN."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5514
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_frame_bytes: int = 65_536
    max_connections: int = 256
    idle_timeout_s: float = 600.0


@dataclass(slots=True)
class HttpDrainSourceConfig:
    """``POST /drain``: logplex, NDJSON or text/plain. Token: $STREAM_TRIAGE_DRAIN_TOKEN."""

    enabled: bool = True
    path: str = "/drain"
    max_body_bytes: int = 8 * 1024 * 1024
    dedupe_frame_ids: int = 10_000


@dataclass(slots=True)
class RenderTailSourceConfig:
    """Live tail of Render's logs API over WebSocket, with gap backfill. Key: $RENDER_API_KEY."""

    enabled: bool = False
    api_base_url: str = "https://api.render.com"
    owner_id: str = ""
    resources: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SourcesConfig:
    """Every live source."""

    syslog: SyslogSourceConfig = field(default_factory=SyslogSourceConfig)
    http_drain: HttpDrainSourceConfig = field(default_factory=HttpDrainSourceConfig)
    render_tail: RenderTailSourceConfig = field(default_factory=RenderTailSourceConfig)


@dataclass(slots=True)
class AirtableSinkConfig:
    """Production Issues in Airtable. Enabled when $AIRTABLE_API_KEY and a base id are set."""

    enabled: bool = True
    base_id: str = ""
    table: str = "Production Issues"
    endpoint_url: str = ""
    requests_per_second: float = 5.0
    rate_limit_penalty_s: float = 30.0
    timeout_s: float = 30.0
    status_sync_interval_s: float = 300.0
    retry_max_backoff_s: float = 300.0
    render_log_url: str = ""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SinksConfig:
    """External sinks (the SQLite store is always on)."""

    airtable: AirtableSinkConfig = field(default_factory=AirtableSinkConfig)


@dataclass(slots=True)
class MetricsConfig:
    """``GET /metrics``. With require_token, scrapes need ``Authorization: Bearer $STREAM_TRIAGE_METRICS_TOKEN``."""

    enabled: bool = True
    require_token: bool = False


@dataclass(slots=True)
class LoggingConfig:
    """The service's own logs (stderr)."""

    level: str = "INFO"
    json: bool = False


@dataclass(slots=True)
class Config:
    """The whole configuration."""

    parse: ParseConfig = field(default_factory=ParseConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    flush: FlushConfig = field(default_factory=FlushConfig)
    run_metadata: RunMetadataConfig = field(default_factory=RunMetadataConfig)
    patterns: PatternsConfig = field(default_factory=PatternsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def airtable_enabled(self) -> bool:
        """Whether the Airtable sink runs: enabled in config, with a key and a base id."""
        a = self.sinks.airtable
        return a.enabled and bool(self.secrets.get("AIRTABLE_API_KEY")) and bool(a.base_id)


SECRET_ENV = (
    "AIRTABLE_API_KEY",
    "RENDER_API_KEY",
    "STREAM_TRIAGE_DRAIN_TOKEN",
    "STREAM_TRIAGE_SYSLOG_TOKEN",
    "STREAM_TRIAGE_METRICS_TOKEN",
)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate configuration from a TOML file (optional) and the environment.

    Raises ``ConfigError`` listing every problem found, each naming the key and what to do.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{p}: no such config file; pass an existing file to --config"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{p}: not valid TOML ({exc}); fix the syntax at that position"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{p}: cannot read config file ({exc})"]) from None
    config = typing.cast(Config, build_section(Config, data, "", problems, skip={"secrets"}))
    if db := env.get("STREAM_TRIAGE_DB"):
        config.store.path = db
    if base := env.get("AIRTABLE_BASE_ID"):
        config.sinks.airtable.base_id = base
    if endpoint := env.get("AIRTABLE_ENDPOINT_URL"):
        config.sinks.airtable.endpoint_url = endpoint
    if render_base := env.get("RENDER_API_BASE_URL"):
        config.sources.render_tail.api_base_url = render_base
    if port := env.get("PORT"):
        # Render (and most PaaS) tell a web service its port this way.
        if port.isdigit():
            config.server.http_port = int(port)
        else:
            problems.append(f"PORT: must be a port number, got {port!r}")
    config.secrets = {k: env[k] for k in SECRET_ENV if env.get(k)}
    problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


def validate(config: Config) -> list[str]:
    """Semantic checks beyond types: regexes compile, numbers are in range."""
    problems: list[str] = []

    def check_regex(key: str, pattern: str, groups: set[str] | None = None) -> None:
        try:
            compiled = regex.compile(pattern)
        except regex.error as exc:
            problems.append(f"{key}: invalid regular expression {pattern!r}: {exc}")
            return
        if groups and not groups <= set(compiled.groupindex):
            missing = ", ".join(sorted(groups - set(compiled.groupindex)))
            problems.append(f"{key}: the regex must define the named group(s) {missing}")

    check_regex("parse.line_regex", config.parse.line_regex, {"message"})
    try:  # the parser compiles it with `re`, which lacks some of `regex`'s syntax
        re.compile(config.parse.line_regex)
    except re.error as exc:
        problems.append(f"parse.line_regex: use Python `re` syntax ({exc})")
    for i, marker in enumerate(config.flush.completion_markers):
        check_regex(f"flush.completion_markers[{i}]", marker)
    for i, rule in enumerate(config.run_metadata.run_types):
        check_regex(f"run_metadata.run_types[{i}].regex", rule.regex)
    check_regex("run_metadata.stream_regex", config.run_metadata.stream_regex)
    for i, pat in enumerate(config.redact.extra_patterns):
        check_regex(f"redact.extra_patterns[{i}]", pat)
    if config.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        problems.append(f"logging.level: must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {config.logging.level!r}")
    syslog = config.sources.syslog
    if bool(syslog.tls_cert_file) != bool(syslog.tls_key_file):
        problems.append("sources.syslog: set both tls_cert_file and tls_key_file for TLS, or neither for plain TCP")
    for key, path in (
        ("sources.syslog.tls_cert_file", syslog.tls_cert_file),
        ("sources.syslog.tls_key_file", syslog.tls_key_file),
    ):
        if path and not Path(path).is_file():
            problems.append(f"{key}: no such file {path!r}")
    tail = config.sources.render_tail
    if tail.enabled:
        if not config.secrets.get("RENDER_API_KEY"):
            problems.append("sources.render_tail: enabled but RENDER_API_KEY is not set in the environment")
        if not tail.owner_id:
            problems.append("sources.render_tail.owner_id: required (your Render workspace id, tea-… or usr-…)")
        if not tail.resources:
            problems.append("sources.render_tail.resources: list at least one service id (srv-…)")
    if config.metrics.require_token and not config.secrets.get("STREAM_TRIAGE_METRICS_TOKEN"):
        problems.append("metrics.require_token: set STREAM_TRIAGE_METRICS_TOKEN in the environment")
    if not config.sources.http_drain.path.startswith("/"):
        problems.append(f"sources.http_drain.path: must start with '/', got {config.sources.http_drain.path!r}")
    for key, port in (("server.http_port", config.server.http_port), ("sources.syslog.port", syslog.port)):
        if not 0 <= port <= 65535:
            problems.append(f"{key}: must be a port number 0-65535, got {port}")
    for key, value, low in (
        ("server.queue_max_batches", config.server.queue_max_batches, 1),
        ("server.shutdown_deadline_s", config.server.shutdown_deadline_s, 0),
        ("sources.syslog.max_frame_bytes", syslog.max_frame_bytes, 256),
        ("sources.syslog.max_connections", syslog.max_connections, 1),
        ("sources.http_drain.max_body_bytes", config.sources.http_drain.max_body_bytes, 1024),
        ("sinks.airtable.requests_per_second", config.sinks.airtable.requests_per_second, 0.1),
        ("route.max_open_runs", config.route.max_open_runs, 1),
        ("route.context_before", config.route.context_before, 0),
        ("route.context_after", config.route.context_after, 0),
        ("route.context_line_chars", config.route.context_line_chars, 20),
        ("route.max_issues_per_run", config.route.max_issues_per_run, 1),
        ("route.max_stack_lines", config.route.max_stack_lines, 1),
        ("flush.grace_after_marker_s", config.flush.grace_after_marker_s, 0),
        ("flush.idle_timeout_s", config.flush.idle_timeout_s, 1),
        ("flush.system_flush_interval_s", config.flush.system_flush_interval_s, 1),
        ("patterns.slow_request_ms", config.patterns.slow_request_ms, 1),
        ("patterns.match_timeout_ms", config.patterns.match_timeout_ms, 1),
    ):
        if value < low:
            problems.append(f"{key}: must be at least {low}, got {value}")
    return problems


def build_section(cls: type, data: Any, key: str, problems: list[str], skip: set[str] = frozenset()) -> Any:
    """Build dataclass ``cls`` from a TOML table, collecting problems instead of raising."""
    where = key or "top level"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a table, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in skip}
    for unknown in sorted(set(data) - names):
        choices = ", ".join(sorted(names))
        problems.append(f"{_join(key, unknown)}: unknown key; valid keys here are: {choices}")
    kwargs: dict[str, Any] = {}
    for name in names & set(data):
        value = _coerce(hints[name], data[name], _join(key, name), problems)
        if value is not _INVALID:
            kwargs[name] = value
    return cls(**kwargs)


_INVALID = object()


def _coerce(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, problems)
    if dataclasses.is_dataclass(hint):
        return build_section(typing.cast(type, hint), value, key, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {type(value).__name__}")
            return _INVALID
        out = [_coerce(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return [v for v in out if v is not _INVALID]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a table, got {type(value).__name__}")
            return _INVALID
        return {str(k): _coerce(args[1], v, f"{key}.{k}", problems) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        problems.append(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return _INVALID
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
