"""``stream-triage patterns lint``: check the active patterns against known-good lines and hostile input.

Two checks, each pattern on its own:

* **false positives**: every pattern runs against built-in negative lines — lines from healthy Node /
  Render services that must never be reported (timestamps whose digits look like 429 or 500, "0 failed"
  summaries, build success output, access lines, retries logged at INFO, config dumps, …). The lines
  are parsed like live input, so level rules (``levels``, ``not_levels``) apply as in production;
* **slow patterns**: every text pattern (and its ``unless``) is timed on adversarial long lines (10-100
  KB of repeated characters, words and punctuation). A search slower than ``--slow-ms``, or cut off by
  the time limit, flags the pattern: in production it would either stall the pipeline or silently stop
  matching (``patterns.match_timeout_ms``).

Exit status 1 when any problem is found (or the pack does not load), else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import regex

from stream_triage.config import DEFAULT_LINE_REGEX, Config, load_config
from stream_triage.errors import ConfigError, PatternError
from stream_triage.patterns import PatternSpec
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.parse import LineParser
from stream_triage.records import RawRecord

# Linear patterns scan 100 KB in a few ms to a few tens of ms; super-linear ones take far longer.
DEFAULT_SLOW_MS = 100.0
# Once a pattern is flagged slow, its remaining adversarial lines are skipped: one hostile pattern
# must not make the lint itself slow.
_CUT_OFF_FACTOR = 4

_A = "[251103-081522-Ann-Lee] [Ann-Lee]"
_S = "[SYSTEM] [SYSTEM]"

# Lines that are not problems. Each is here because a naive pattern gets it wrong.
NEGATIVE_LINES: tuple[str, ...] = (
    # Timestamps and ids whose digits look like HTTP statuses.
    f"[2025-11-03T08:15:22.429113507Z] {_A} [lead_scoring] [INFO] Fetched 40 leads pending scoring",
    f"[2025-11-03T08:14:02.500503113Z] {_S} [client-service] [INFO] Retrieved 12 clients",
    "[2025-11-03T08:14:02.017503113Z] ==> Build successful 🎉",
    f"{_A} [lead_scoring] [INFO] Processed 429 leads in 503 ms",
    f"{_A} [lead_scoring] [INFO] Fetched 500 leads from view Leads",
    f"{_S} [scheduler] [INFO] Next run at 2025-11-03 05:00:00, job id 4290-5003",
    "2025-11-03 06:38:18.429 INFO 1 --- [nio-8080-exec-6] c.a.scoring.web.ScoreController : Scored lead in 500 ms",
    "INFO:enrichment.worker:Enrichment job 5003 done for client Tom-Baker (429 profiles)",
    # Access lines: fast, with byte counts and request ids full of digits.
    '[GET]200 pb-webhook-server.onrender.com/health clientIP="203.0.113.7" '
    'requestID="4e1c2d8a-5b7f-4a61-9c3e-0d2f6b8a1e77" responseTimeMS=12 responseBytes=503 userAgent="Render/1.0"',
    '[POST]202 pb-webhook-server.onrender.com/smart-resume-client-by-client?stream=2 clientIP="192.0.2.15" '
    'requestID="0a0b0c0d-1111-4222-8333-444455556666" responseTimeMS=4900 responseBytes=429 userAgent="curl/8.5.0"',
    '[GET]200 pb-webhook-server.onrender.com/api/error-report?client=Ann-Lee clientIP="198.51.100.4" '
    'requestID="5003429a-0000-4000-8000-000000000500" responseTimeMS=60 responseBytes=2048 userAgent="curl/8.5.0"',
    # Success summaries that mention failures, errors or batches.
    f"{_A} [lead_scoring] [INFO] ✅ Batch 4 complete: 40 successful, 0 failed",
    f"{_A} [lead_scoring] [INFO] 📊 Summary: scored: 71, failed: 0, batch size: 40",
    f"{_S} [api] [INFO] GET /api/error-report?client=Ann-Lee 200 (60ms), errors: 0",
    f"{_S} [monitor] [INFO] Health check passed: errorCount=0, failed: 0, warnings: 0",
    f"{_A} [lead_scoring] [INFO] ❌ 0 leads rejected, no failures",
    f"{_A} [smart_resume] [INFO] ⚠️ Skipping client Dean-Hobin: no new posts",
    f"{_A} [smart_resume] [INFO] ⏭️ Client Ann-Lee up to date, skipping",
    # "error", "timeout" and "retry" as names, settings and URLs.
    f'{_A} [airtable-sync] [INFO] Updated field "Error Message" on record recA1b2C3d4E5f6G7',
    f'{_S} [config] [DEBUG] Loaded config: {{"errorReporting": true, "timeout": 30000, "retries": 3}}',
    '    "timeout": 30000,',
    '    "maxRetries": 3,',
    f"{_S} [config] [INFO] Rate limit configured: 5 requests per second",
    # Expected retries and back-off logged at INFO or DEBUG.
    f"{_A} [lead_scoring] [INFO] Retrying in 2s (attempt 1/3) as planned for cold start",
    f"{_A} [lead_scoring] [DEBUG] Will retry the Gemini call after 1000 ms back-off",
    # Render build and deploy output that succeeded.
    "==> Cloning from https://github.com/acme-growth/pb-webhook-server",
    "==> Running build command 'npm ci'...",
    "added 413 packages, and audited 414 packages in 19s",
    "found 0 vulnerabilities",
    "npm notice New major version of npm available! 10.9.2 -> 11.6.2",
    "==> Uploading build...",
    "==> Build successful 🎉",
    "==> Deploying...",
    "==> Your service is live 🎉",
    f"{_S} [server] [INFO] Server listening on port 10000",
    # Crash-adjacent lines Node prints that are not the error itself.
    "Node.js v22.16.0",
    "  throw err;",
    "  ^",
    # Ordinary progress.
    f"{_A} [lead_scoring] [INFO] Lead recQ9w8E7r6T5y4U3 scored 87 (model gemini-2.5-flash)",
    f"{_S} [monitor] [INFO] Memory usage: 869MB of 2048MB (42%), CPU 12%",
    f"{_A} [run-record] [INFO] Client run record updated: Status=Completed, 132 leads scored",
    f"{_A} [smart_resume] [INFO] 🎉 SMART RESUME PROCESSING COMPLETED ✅",
)


def adversarial_lines() -> list[tuple[str, str]]:
    """(name, text) pairs of hostile long lines, 10-100 KB: runs of one character, word or token."""
    return [
        ("a×50k+!", "a" * 50_000 + "!"),
        ("a×100k", "a" * 100_000),
        ("space×20k+x", " " * 20_000 + "x"),
        ("digits×30k", "4" * 30_000),
        ("'error '×10k", "error " * 10_000),
        ("'failed to '×5k", "failed to " * 5_000),
        ("'batch '×10k", "batch " * 10_000),
        ("'status 5'×10k", "status 5" * 10_000),
        ("'at x.js:1 '×8k", "at x.js:1 " * 8_000),
        ("'[x] '×20k", "[x] " * 20_000),
        ("'a.'×30k", "a." * 30_000),
        ("'\"a\":'×15k", '"a":' * 15_000),
        ("'=-'×25k", "=-" * 25_000),
        ("'x '×30k+ERROR", "x " * 30_000 + "ERROR"),
        ("words×12k", " ".join(("lead", "scored", "timeout", "retry", "client", "failed")) * 2_000),
    ]


@dataclass(slots=True, frozen=True)
class FalsePositive:
    """A pattern that matched a known-good line."""

    pattern: str
    origin: str
    line: str


@dataclass(slots=True, frozen=True)
class SlowPattern:
    """A pattern whose search on an adversarial line took longer than the threshold."""

    pattern: str
    origin: str
    worst_ms: float
    input: str
    timed_out: bool


@dataclass(slots=True)
class LintReport:
    """What ``lint`` found. ``timings`` is the worst search time per text pattern, in ms."""

    patterns: int
    slow_ms: float
    false_positives: list[FalsePositive] = field(default_factory=list)
    slow: list[SlowPattern] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.false_positives and not self.slow


def lint(
    specs: Sequence[PatternSpec],
    settings: dict[str, int] | None = None,
    *,
    line_regex: str = DEFAULT_LINE_REGEX,
    negatives: Iterable[str] = NEGATIVE_LINES,
    adversarial: Sequence[tuple[str, str]] | None = None,
    slow_ms: float = DEFAULT_SLOW_MS,
    match_timeout_s: float = 0.05,
) -> LintReport:
    """Run every pattern against ``negatives`` and time it on ``adversarial`` lines."""
    parse = LineParser(line_regex)
    parsed = [parse(RawRecord(text, "lint", None, i)) for i, text in enumerate(negatives, 1)]
    hostile = adversarial_lines() if adversarial is None else list(adversarial)
    report = LintReport(patterns=len(specs), slow_ms=slow_ms)
    for spec in specs:
        single = PatternSet([spec], settings=settings, timeout_s=match_timeout_s, use_hyperscan=False)
        for line in parsed:
            if single.match(line.message, line.level) is not None:
                report.false_positives.append(FalsePositive(spec.id, spec.origin, line.text))
        if spec.regex:
            worst, slow = _time_pattern(spec, hostile, slow_ms)
            report.timings[spec.id] = round(worst, 3)
            if slow is not None:
                report.slow.append(slow)
    return report


def _time_pattern(
    spec: PatternSpec, hostile: Sequence[tuple[str, str]], slow_ms: float
) -> tuple[float, SlowPattern | None]:
    flags = regex.V0 if spec.case_sensitive else regex.V0 | regex.IGNORECASE
    compiled = [regex.compile(r, flags) for r in (spec.regex, spec.unless) if r]
    cap_s = slow_ms * _CUT_OFF_FACTOR / 1000
    worst = 0.0
    for name, text in hostile:
        for rx in compiled:
            timed_out = False
            start = time.perf_counter()
            try:
                rx.search(text, timeout=cap_s)
            except TimeoutError:
                timed_out = True
            elapsed_ms = (time.perf_counter() - start) * 1000
            worst = max(worst, elapsed_ms)
            if timed_out or elapsed_ms > slow_ms:
                return worst, SlowPattern(spec.id, spec.origin, round(elapsed_ms, 3), name, timed_out)
    return worst, None


def lint_config(config: Config, slow_ms: float = DEFAULT_SLOW_MS) -> LintReport:
    """Lint the patterns ``config`` makes active (default pack, user packs, minus disabled ones)."""
    from stream_triage.pipeline.triage import build_patterns  # the pipeline imports this package

    patterns = build_patterns(config)
    return lint(
        patterns.specs,
        {"slow_request_ms": config.patterns.slow_request_ms},
        line_regex=config.parse.line_regex,
        slow_ms=slow_ms,
        match_timeout_s=config.patterns.match_timeout_ms / 1000,
    )


def report_json(report: LintReport) -> dict[str, object]:
    """The ``patterns lint --json`` document."""
    return {
        "ok": report.ok,
        "patterns": report.patterns,
        "slow_ms": report.slow_ms,
        "false_positives": [{"pattern": f.pattern, "origin": f.origin, "line": f.line} for f in report.false_positives],
        "slow": [
            {"pattern": s.pattern, "origin": s.origin, "ms": s.worst_ms, "input": s.input, "timed_out": s.timed_out}
            for s in report.slow
        ],
        "timings_ms": report.timings,
    }


def report_text(report: LintReport) -> str:
    """Human-readable lint result."""
    out = [
        f"{report.patterns} patterns checked against {len(NEGATIVE_LINES)} known-good lines "
        f"and {len(adversarial_lines())} adversarial long lines (slow: > {report.slow_ms:g} ms)"
    ]
    if report.false_positives:
        n = len(report.false_positives)
        out += ["", f"False positives ({n}): these patterns match lines that are not problems"]
        out += [f"  {f.pattern}  ({f.origin})\n      {f.line[:160]}" for f in report.false_positives]
    if report.slow:
        out += ["", f"Slow patterns ({len(report.slow)}): a long line could stall matching or hit the time limit"]
        for s in report.slow:
            what = "timed out" if s.timed_out else f"{s.worst_ms:.1f} ms"
            out.append(f"  {s.pattern}  ({s.origin})  {what} on {s.input}")
    if report.timings:
        top = sorted(report.timings.items(), key=lambda kv: -kv[1])[:5]
        out += ["", "Slowest patterns (worst search, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in top)]
    out += ["", "OK" if report.ok else "Problems found"]
    return "\n".join(out)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``lint`` on the ``patterns`` subcommand's subparsers."""
    p = subparsers.add_parser("lint", help="check the active patterns for false positives and slow regexes")
    p.add_argument("--config", help="TOML config file (its pattern packs are linted with the default pack)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--slow-ms", type=float, default=DEFAULT_SLOW_MS, help="flag searches slower than this")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``patterns lint``: 0 when clean, 1 when a pattern is wrong, slow, or the pack does not load."""
    try:
        report = lint_config(load_config(args.config), slow_ms=args.slow_ms)
    except (ConfigError, PatternError, ValueError) as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(report_text(report))
    return 0 if report.ok else 1
