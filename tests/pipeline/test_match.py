"""Match stage: the default pack fires on real defects, never on noise; with and without Hyperscan."""

from __future__ import annotations

import functools

import pytest

from stream_triage.config import DEFAULT_LINE_REGEX
from stream_triage.patterns import PatternSpec, default_pack_path, load_pack
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.parse import LineParser
from stream_triage.records import RawRecord, Severity

SPECS = load_pack(default_pack_path())
SETTINGS = {"slow_request_ms": 5000}
_parse = LineParser(DEFAULT_LINE_REGEX)


@functools.cache
def compiled(use_hyperscan: bool) -> PatternSet:
    """The default pack, compiled once per code path (Hyperscan compilation takes seconds)."""
    ps = PatternSet(SPECS, settings=SETTINGS, use_hyperscan=use_hyperscan)
    assert ps.accelerated is use_hyperscan
    return ps


@pytest.fixture(params=[True, False], ids=["hyperscan", "regex-only"])
def patterns(request: pytest.FixtureRequest) -> PatternSet:
    """The default pack, compiled with and without the Hyperscan prefilter."""
    return compiled(request.param)


def match(ps: PatternSet, text: str):
    line = _parse(RawRecord(text, "app", None, 1))
    return ps.match(line.message, line.level)


# (line as logged, expected pattern id). Tagged INFO lines prove the text alone fires, not the level.
POSITIVE = [
    # runs the app itself marks as crashed, other runtimes' level words, npm deprecations
    ("[251103-081522] [SYSTEM] [job-tracking] [INFO] Run 251103-081522 marked as CRASHED", "run-crashed"),
    ("CRITICAL:root:worker pool exhausted", "untagged-level-critical"),
    ("2025-11-03 08:15:22,431 ERROR [main] c.a.Scorer - scoring pipeline stopped", "untagged-level-error"),
    ("WARNING:urllib3.connectionpool:Connection pool is full, discarding connection", "untagged-level-warn"),
    ("npm warn deprecated inflight@1.0.6: This module is not supported, and leaks memory.", "npm-deprecated"),
    # Node crashes
    ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory", "node-fatal-error"),
    ("[251103-081522] [Ann-Lee] [worker] [INFO] <--- Last few GCs ---> heap out of memory", "out-of-memory"),
    ("==> Out of memory (used over 512Mi) OOMKilled", "out-of-memory"),
    ("Segmentation fault (core dumped)", "segfault"),
    ("[SYSTEM] [SYSTEM] [process] [INFO] uncaughtException: boom", "uncaught-exception"),
    ("Uncaught TypeError: x.map is not a function", "uncaught-exception"),
    ("[SYSTEM] [SYSTEM] [process] [INFO] Unhandled promise rejection: Error: socket closed", "unhandled-rejection"),
    # connection failures / service unavailable
    ("[251103-081522] [Ann-Lee] [db] [INFO] connect ECONNREFUSED 127.0.0.1:5432", "connection-refused"),
    ("[251103-081522] [Ann-Lee] [db] [INFO] Could not connect to database after 3 attempts", "database-unreachable"),
    ("[251103-081522] [Ann-Lee] [api] [INFO] upstream answered: Service Unavailable", "service-unavailable"),
    # Airtable errors
    ('[251103-081522] [Ann-Lee] [airtable] [INFO] Unknown field name: "Stream"', "airtable-unknown-field"),
    ("[251103-081522] [Ann-Lee] [airtable] [INFO] AirtableError: INVALID_REQUEST_BODY",
     "airtable-invalid-request-body"),
    ("[251103-081522] [Ann-Lee] [airtable] [INFO] INVALID_VALUE_FOR_COLUMN Score", "airtable-invalid-value"),
    ("[251103-081522] [Ann-Lee] [airtable] [INFO] INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", "airtable-invalid-request"),
    ("[251103-081522] [Ann-Lee] [runs] [INFO] Client run record not found for recAbc", "record-not-found"),
    # failed create / update / fetch / delete
    ("[251103-081522] [Ann-Lee] [leads] [INFO] Failed to create lead record", "failed-operation"),
    ("[251103-081522] [Ann-Lee] [leads] [INFO] Failed to update record recAbCdEfGhIjKlMn", "failed-operation"),
    ("[251103-081522] [Ann-Lee] [leads] [INFO] Unable to fetch client config", "failed-operation"),
    ("[251103-081522] [Ann-Lee] [leads] [INFO] Could not delete stale posts", "failed-operation"),
    # scoring / batch failures
    ("[251103-081522] [Ann-Lee] [lead_scoring] [INFO] Scoring failed for lead 18", "scoring-failed"),
    ("[251103-081522] [Ann-Lee] [batch] [INFO] Batch 3 failed: 12 of 50 leads", "batch-failed"),
    ("[251103-081522] [Ann-Lee] [batch] [INFO] Batch complete: 48 successful, 2 failed", "batch-failed"),
    # HTTP 4xx / 5xx
    ("[251103-081522] [Ann-Lee] [http] [INFO] Request failed with status code 404", "http-error-status"),
    ("[251103-081522] [Ann-Lee] [http] [INFO] Apify returned 503 for actor run", "http-error-status"),
    ("[251103-081522] [Ann-Lee] [http] [INFO] upstream responded with 500", "http-error-status"),
    # timeouts incl. axios and Gemini / Vertex
    ("[251103-081522] [Ann-Lee] [gemini] [INFO] timeout of 30000ms exceeded", "timeout"),
    ("[251103-081522] [Ann-Lee] [gemini] [INFO] Vertex AI call: 504 Deadline Exceeded", "timeout"),
    ("[251103-081522] [Ann-Lee] [gemini] [INFO] GoogleGenerativeAI: DEADLINE_EXCEEDED", "timeout"),
    ("[251103-081522] [Ann-Lee] [http] [INFO] connect ETIMEDOUT 104.18.2.3:443", "timeout"),
    # network
    ("[251103-081522] [Ann-Lee] [http] [INFO] read ECONNRESET", "network-error"),
    # auth
    ("[251103-081522] [Ann-Lee] [http] [INFO] 401 Unauthorized from Airtable", "auth-failure"),
    ("[251103-081522] [Ann-Lee] [http] [INFO] Authentication failed for webhook", "auth-failure"),
    # deprecation
    ("(node:42) [DEP0040] DeprecationWarning: The `punycode` module is deprecated.", "deprecation"),
    # slow operations
    ("[251103-081522] [Ann-Lee] [db] [INFO] slow query on leads table", "slow-operation"),
    ("[251103-081522] [Ann-Lee] [db] [INFO] operation took 12000 ms", "slow-operation"),
    # retries (not at INFO)
    ("[251103-081522] [Ann-Lee] [http] [WARN] Retrying request in 2000ms (attempt 2)", "retrying"),
    ("Gemini request failed, retry attempt 3 of 5", "retrying"),
    # rate limits
    ("[251103-081522] [Ann-Lee] [http] [INFO] Request failed with status code 429", "rate-limited"),
    ("[251103-081522] [Ann-Lee] [http] [INFO] Airtable rate limit hit, backing off", "rate-limited"),
    ("[251103-081522] [Ann-Lee] [gemini] [INFO] 429 Too Many Requests: RESOURCE_EXHAUSTED", "rate-limited"),
    # validation
    ("[251103-081522] [Ann-Lee] [input] [INFO] Validation warning: linkedinUrl looks odd", "validation-warning"),
    ("[251103-081522] [Ann-Lee] [input] [INFO] Validation failed for lead payload", "validation-failed"),
    ("[251103-081522] [Ann-Lee] [input] [INFO] Missing optional field: company", "missing-optional-field"),
    # resources
    ("[SYSTEM] [SYSTEM] [monitor] [INFO] High memory usage: 91% of 512MB", "high-memory"),
    ("[SYSTEM] [SYSTEM] [monitor] [INFO] CPU usage above 95% for 60s", "high-cpu"),
    # JS runtime errors
    ("[251103-081522] [Ann-Lee] [run] [INFO] TypeError: Cannot read properties of undefined", "js-type-error"),
    ("[251103-081522] [Ann-Lee] [run] [INFO] ReferenceError: Cannot access 'config' before initialization",
     "js-reference-error"),
    ("[251103-081522] [Ann-Lee] [run] [INFO] SyntaxError: Unexpected end of JSON input", "js-syntax-error"),
    ("[251103-081522] [Ann-Lee] [run] [INFO] RangeError: Maximum call stack size exceeded", "js-range-error"),
    # the line's own level
    ("[251103-081522] [Ann-Lee] [run] [ERROR] Something odd happened", "level-error"),
    ("[251103-081522] [Ann-Lee] [run] [FATAL] Giving up", "level-critical"),
    ("[251103-081522] [Ann-Lee] [run] [CRITICAL] Giving up", "level-critical"),
    ("[251103-081522] [Ann-Lee] [run] [WARNING] Lead has no email", "level-warn"),
    # exceptions printed on their own line
    ('Exception in thread "main" java.lang.IllegalStateException: Pool exhausted', "exception-line"),
    ("ValueError: invalid literal for int() with base 10: 'abc'", "exception-line"),
    # Render build failures
    ("==> Build failed 😞", "render-build-failed"),
    ("npm ERR! code ERESOLVE", "render-build-failed"),
    ("==> Exited with status 1 while running your code.", "render-build-failed"),
    # slow access lines
    ('clientIP="203.0.113.7" requestID="9b1c" responseTimeMS=8123 responseBytes=583 userAgent="curl/8.5.0"',
     "slow-request"),
]  # fmt: skip

# The same categories, on lines that must not fire.
NEGATIVE = [
    "[251103-081522] [Ann-Lee] [worker] [INFO] heap used 120MB of 512MB",
    "[251103-081522] [Ann-Lee] [db] [INFO] Connected to database in 120 ms",
    "[251103-081522] [Ann-Lee] [api] [INFO] service available again",
    '[251103-081522] [Ann-Lee] [airtable] [INFO] Field name "Stream" set to 2',
    "[251103-081522] [Ann-Lee] [leads] [INFO] Created 12 lead records",
    "[251103-081522] [Ann-Lee] [leads] [INFO] Updated record recAbCdEfGhIjKlMn",
    "[251103-081522] [Ann-Lee] [lead_scoring] [INFO] Scoring complete: 48 leads scored",
    "[251103-081522] [Ann-Lee] [batch] [INFO] Batch complete: 50 successful, 0 failed",
    "[251103-081522] [Ann-Lee] [batch] [INFO] Batch 3 summary: 1 successful, 0 failed",
    "[251103-081522] [Ann-Lee] [batch] [INFO] Batch finished with no failures",
    "[251103-081522] [Ann-Lee] [batch] [INFO] batch stats: errors: 0, failed: 0",
    "[251103-081522] [Ann-Lee] [http] [INFO] Request completed with status code 200",
    "[251103-081522] [Ann-Lee] [http] [INFO] GET /api/leads 201 in 503ms",
    "[251103-081522] [Ann-Lee] [gemini] [INFO] Gemini call took 30000ms, within the deadline",
    '[251103-081522] [Ann-Lee] [http] [DEBUG] axios config {"timeout": 30000, "maxRedirects": 5}',
    "[251103-081522] [Ann-Lee] [http] [INFO] Authorized webhook from Apify",
    "[251103-081522] [Ann-Lee] [db] [INFO] query finished in 420 ms",
    "[251103-081522] [Ann-Lee] [http] [INFO] Retrying request in 2000ms (attempt 2)",
    "[251103-081522] [Ann-Lee] [http] [INFO] will retry failed leads on the next run",
    "[251103-081522] [Ann-Lee] [http] [DEBUG] rateLimit: 5 req/s",
    '[251103-081522] [Ann-Lee] [http] [INFO] config {"rateLimit": 5, "maxRetries": 3}',
    "[251103-081522] [Ann-Lee] [input] [INFO] Validation passed for 50 leads",
    "[SYSTEM] [SYSTEM] [monitor] [INFO] memory usage 41% of 512MB",
    "[SYSTEM] [SYSTEM] [monitor] [INFO] CPU 12%",
    "[251103-081522] [Ann-Lee] [run] [INFO] typed errors are handled by the retry layer",
    "==> Build successful 🎉",
    "==> Deploying...",
    "==> Your service is live 🎉",
    "added 312 packages, and audited 313 packages in 9s",
    "found 0 vulnerabilities",
    'clientIP="203.0.113.7" requestID="9b1c" responseTimeMS=412 responseBytes=503 userAgent="curl/8.5.0"',
    'clientIP="203.0.113.7" requestID="9b1c" responseTimeMS=4999 responseBytes=429 userAgent="curl/8.5.0"',
    # digits 429 / 500 / 503 inside timestamps, ids and durations
    "[251103-081522] [Ann-Lee] [run] [INFO] Processed lead rec429AbCdEfGhIj in 503ms",
    "[251103-050042] [Ann-Lee] [run] [INFO] Run started at 2025-11-03T05:00:42.500Z",
    "[251103-081522] [Ann-Lee] [run] [INFO] Sleeping 500 ms before next page (page 429)",
    "[251103-081522] [Ann-Lee] [run] [INFO] Summary: errors: 0, warnings: 0",
    "[251103-081522] [Ann-Lee] [run] [INFO] 0 errors, 500 leads",
    "[SYSTEM] [SYSTEM] [client-service] [INFO] Loaded 14 active clients",
]


def test_positive_and_negative_lists_cover_every_default_pattern() -> None:
    """Every pattern of the default pack has at least one positive line here."""
    assert {pid for _, pid in POSITIVE} == {s.id for s in SPECS}


@pytest.mark.parametrize(("line", "expected"), POSITIVE, ids=[f"{p}:{i}" for i, (_, p) in enumerate(POSITIVE)])
def test_default_pack_fires(patterns: PatternSet, line: str, expected: str) -> None:
    """Each category's real defect line is caught by its pattern."""
    m = match(patterns, line)
    assert m is not None, line
    assert expected in m.pattern_ids, (line, m)


@pytest.mark.parametrize("line", NEGATIVE)
def test_noise_never_fires(patterns: PatternSet, line: str) -> None:
    """Healthy lines, summaries with zero failures and digits in ids/durations do not fire."""
    assert match(patterns, line) is None


def test_info_retries_do_not_fire_but_warn_retries_do(patterns: PatternSet) -> None:
    """Expected retries logged at INFO are not issues; the same text at WARN is."""
    text = "Retrying Airtable request (attempt 2 of 5)"
    assert match(patterns, f"[251103-081522] [Ann-Lee] [airtable] [INFO] {text}") is None
    m = match(patterns, f"[251103-081522] [Ann-Lee] [airtable] [WARN] {text}")
    assert m is not None and m.pattern_id == "retrying" and m.severity is Severity.WARNING


def test_worst_severity_wins(patterns: PatternSet) -> None:
    """A WARN line naming an out-of-memory crash is CRITICAL; all matching ids are listed."""
    m = match(patterns, "[251103-081522] [Ann-Lee] [worker] [WARN] Retrying after heap out of memory")
    assert m is not None
    assert m.severity is Severity.CRITICAL
    assert m.pattern_id == "out-of-memory"
    assert set(m.pattern_ids) == {"out-of-memory", "retrying", "level-warn"}


def test_error_level_on_a_warning_pattern_is_error(patterns: PatternSet) -> None:
    """A rate limit logged at ERROR is an ERROR issue (the level pattern is worse)."""
    m = match(patterns, "[251103-081522] [Ann-Lee] [http] [ERROR] Airtable rate limit hit")
    assert m is not None and m.severity is Severity.ERROR and m.pattern_id == "level-error"
    assert "rate-limited" in m.pattern_ids


def test_first_pattern_in_pack_wins_within_a_severity(patterns: PatternSet) -> None:
    """Two ERROR patterns on one line: the one earlier in the pack is reported."""
    m = match(patterns, "[251103-081522] [Ann-Lee] [leads] [ERROR] Failed to update record: Unknown field name")
    assert m is not None
    assert m.pattern_id == "airtable-unknown-field"
    assert m.pattern_ids[0] == "airtable-unknown-field"


def test_slow_request_threshold_is_configurable() -> None:
    """`slow_request_ms` decides which access lines are slow."""
    line = 'clientIP="203.0.113.7" requestID="1" responseTimeMS=1200 responseBytes=583 userAgent="curl/8.5.0"'
    strict = PatternSet(SPECS, settings={"slow_request_ms": 1000}, use_hyperscan=False)
    lax = PatternSet(SPECS, settings={"slow_request_ms": 5000}, use_hyperscan=False)
    assert strict.match(line) is not None and strict.match(line).pattern_id == "slow-request"
    assert lax.match(line) is None


def test_hyperscan_and_regex_only_agree_on_a_realistic_line_set() -> None:
    """Both code paths give identical results for every positive and negative line."""
    fast, slow = compiled(True), compiled(False)
    lines = [line for line, _ in POSITIVE] + NEGATIVE
    assert [match(fast, line) for line in lines] == [match(slow, line) for line in lines]


def test_pattern_hyperscan_cannot_compile_is_still_tried() -> None:
    """A regex-module-only pattern Hyperscan rejects is always tried; the others stay prefiltered."""
    specs = [
        PatternSpec(id="reverse-only", severity=Severity.WARNING, regex=r"(?r)quota \d+ reached"),
        PatternSpec(id="timeout", severity=Severity.ERROR, regex=r"\btimed out\b"),
    ]
    ps = PatternSet(specs, use_hyperscan=True)
    assert ps.accelerated
    assert ps.match("daily quota 500 reached").pattern_id == "reverse-only"
    assert ps.match("gemini call timed out").pattern_id == "timeout"
    assert ps.match("all good") is None


def test_pathological_regex_times_out_as_no_match() -> None:
    """A catastrophic user regex is cut off by the per-match timeout instead of hanging."""
    spec = PatternSpec(id="evil", severity=Severity.ERROR, regex=r"^(a+)+$")
    ps = PatternSet([spec], timeout_s=0.01, use_hyperscan=False)
    assert ps.match("a" * 40 + "!") is None


def test_emoji_in_a_message_change_no_verdict() -> None:
    """Messages with emoji are screened by Hyperscan too: the verdict equals trying every pattern."""
    fast, slow = compiled(True), compiled(False)
    decorations = ["🎉 ", " ✅", "💥", " — ", "«", "»"]
    checked = 0
    for i, line in enumerate([line for line, _ in POSITIVE] + NEGATIVE):
        parsed = _parse(RawRecord(line))
        for j, emoji in enumerate(decorations):
            cut = (i + j * 7) % (len(parsed.message) + 1)
            message = parsed.message[:cut] + emoji + parsed.message[cut:]
            assert not message.isascii()
            assert fast.match(message, parsed.level) == slow.match(message, parsed.level), message
            checked += 1
    assert checked > 500
    # A word character or space outside ASCII still means every pattern is tried.
    assert fast.candidates("Zoë failed") == fast._text
    assert fast.candidates("a\u00a0failed") == fast._text


@pytest.mark.parametrize("minimum", [0, 5, 9, 10, 99, 909, 1000, 1234, 5000])
def test_at_least_is_exactly_the_numbers_from_the_minimum(minimum: int) -> None:
    import re

    from stream_triage.pipeline.match import at_least

    rx = re.compile(r"\A" + (at_least(r"(\d+)", minimum) or "") + r"\Z")
    assert all(bool(rx.match(str(v))) is (v >= minimum) for v in range(0, 12_000))
    assert all(bool(rx.match(f"00{v}")) is (v >= minimum) for v in range(0, 2_000))
    assert at_least(r"(\d{2})", 5) is None


def test_single_line_rewrites_keep_every_match_within_a_line() -> None:
    import regex

    from stream_triage.pipeline.match import single_line

    lines = ["Batch 3 complete: 12 successful, 0 failed", "x 10 failed", "0\tfailed", "a]b c", "retry in 5 s"]
    for rx in [r"(?:^|[^\d.])0\s+(?:\w+\s+)?fail(?:ed|ures?)\b", r"[^\]]+\]", r"\W\D\Aa", r"\bretry in \d+\s*s\Z"]:
        rewritten = single_line(rx)
        assert rewritten is not None and "\\s" not in rewritten
        for line in lines:
            assert bool(regex.search(rx, line)) is bool(regex.search(rewritten, line, regex.M)), (rx, line)
        joined = "\n".join(lines) + "\n0\n failed\n\n]"
        assert all("\n" not in m.group(0) for m in regex.finditer(rewritten, joined, regex.M))
    for unsafe in [r"a\nb", r"(?s)a.b", r"[[:space:]]", r"\x0a", r"\p{Zs}"]:
        assert single_line(unsafe) is None


def test_a_pattern_hyperscan_rejects_is_still_matched_and_the_rest_stay_accelerated() -> None:
    """``(?|…)`` (branch reset) is syntax Hyperscan lacks: that pattern is tried by ``regex`` on every
    message and the others keep their prefilter. The batch scan cannot cover it, so the pipeline's
    fast path is off (it could not be exact) and says why."""
    from stream_triage.config import load_config
    from stream_triage.pipeline.fastpath import FastPath, unavailable_reason

    odd = PatternSpec(id="branch-reset", severity=Severity.ERROR, regex=r"\b(?|quota|budget) blown\b")
    ps = PatternSet([*SPECS, odd], settings=SETTINGS)
    index = len(SPECS)
    assert ps.accelerated and ps._always == [index]
    assert ps.candidates("processed lead 7") == [index]
    assert ps.match("monthly budget blown for client X", "INFO").pattern_id == "branch-reset"  # type: ignore[union-attr]
    assert ps.match("connect ECONNREFUSED 10.0.0.1:5432", "INFO").pattern_id == "connection-refused"  # type: ignore[union-attr]
    config = load_config(None, {})
    assert FastPath.build(config, ps) is None
    assert "Hyperscan" in (unavailable_reason(config, None) or "")
