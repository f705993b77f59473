"""Command line: ``stream-triage replay | issues | patterns | serve | …``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from stream_triage import __version__
from stream_triage.config import Config, load_config
from stream_triage.errors import ConfigError, InputError, PatternError, SourceError, StoreError
from stream_triage.pipeline.fingerprint import fingerprint, mask_message
from stream_triage.pipeline.parse import LineParser
from stream_triage.pipeline.redact import Redactor
from stream_triage.pipeline.stacktrace import top_app_frame
from stream_triage.pipeline.triage import build_patterns
from stream_triage.records import EndReason, RawRecord, Severity, Status
from stream_triage.report import iso, issue_detail, issue_json, run_json, sort_issues, summary_text
from stream_triage.session import TriageSession
from stream_triage.sinks.sqlite import IssueStore
from stream_triage.sources.files import Position, read_inputs


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="stream-triage", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stream-triage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = sub.add_parser("replay", help="triage log files (plain, Render API dump or NDJSON) offline")
    replay.add_argument("files", nargs="+", metavar="FILE", help="input files; - for standard input")
    _common(replay)
    replay.add_argument("--no-store", action="store_true", help="do not write to the issue store")
    replay.add_argument("--json", action="store_true", help="print runs and aggregated issues as JSON")
    replay.set_defaults(func=cmd_replay)

    issues = sub.add_parser("issues", help="list, show and triage stored issues")
    isub = issues.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = isub.add_parser("list", help="list stored issues")
    _common(lst)
    lst.add_argument("--status", action="append", choices=[s.value for s in Status], help="filter (repeatable)")
    lst.add_argument("--severity", action="append", choices=[s.value for s in Severity], help="filter (repeatable)")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_issues_list)
    show = isub.add_parser("show", help="show one issue with its context and stack trace")
    _common(show)
    show.add_argument("fingerprint", help="fingerprint or a unique prefix of it")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_issues_show)
    st = isub.add_parser("set-status", help="set an issue's status (FIXED takes --notes and --commit)")
    _common(st)
    st.add_argument("fingerprint")
    st.add_argument("status", choices=[s.value for s in Status])
    st.add_argument("--notes", help="fix notes")
    st.add_argument("--commit", help="fix commit")
    st.set_defaults(func=cmd_issues_set_status)

    patterns = sub.add_parser("patterns", help="inspect the pattern pack")
    psub = patterns.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = psub.add_parser("test", help="show how one line is parsed, matched, masked and fingerprinted")
    test.add_argument("--config", help="TOML config file")
    test.add_argument("line", help="a log line")
    test.add_argument("--json", action="store_true")
    test.set_defaults(func=cmd_patterns_test)
    plist = psub.add_parser("list", help="list the active patterns")
    plist.add_argument("--config", help="TOML config file")
    plist.set_defaults(func=cmd_patterns_list)
    from stream_triage.patterns.lint import add_parser as add_patterns_lint

    add_patterns_lint(psub)

    doctor = sub.add_parser("doctor", help="check external sinks (airtable) and show parked changes")
    from stream_triage.sinks import airtable_cli

    airtable_cli.add_parser(doctor.add_subparsers(dest="target", required=True, metavar="TARGET"))

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list:
    """Subcommands that live next to the feature they drive."""
    from stream_triage.app import add_parser as add_serve
    from stream_triage.backfill import add_parser as add_backfill
    from stream_triage.eval import add_parser as add_eval

    return [add_serve, add_backfill, add_eval]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--db", help="SQLite store path (default: store.path, or $STREAM_TRIAGE_DB)")


def _store(config: Config) -> IssueStore:
    """The store, queueing changes for Airtable when it is configured (a later `serve` delivers them)."""
    return IssueStore(config.store.path, outbox_sinks=("airtable",) if config.airtable_enabled else ())


def _config(args: argparse.Namespace) -> Config:
    config = load_config(getattr(args, "config", None))
    if getattr(args, "db", None):
        config.store.path = args.db
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stream-triage`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, PatternError, StoreError, SourceError) as exc:
        print(f"stream-triage: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `stream-triage replay ... | head`
        return 0


# ---------------------------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace) -> int:
    """Replay files through the pipeline; print a summary or JSON; store issues unless --no-store."""
    config = _config(args)
    store = None if args.no_store else _store(config)
    session = TriageSession(config, store)

    def report(problem: InputError) -> None:
        print(f"stream-triage: {problem}", file=sys.stderr)

    try:
        bad = session.feed_all(read_inputs(args.files, Position(), batches=True), report)
        session.finish(EndReason.EOF)
    finally:
        if store is not None:
            store.close()
    print_report(session, args.json, len(args.files), store_path=None if store is None else config.store.path)
    if bad:
        print(f"stream-triage: {bad} bad input record(s) skipped (see above)", file=sys.stderr)
    return 1 if bad else 0


def print_report(session: TriageSession, as_json: bool, inputs: int, store_path: str | None) -> None:
    """Print a session's runs and aggregated issues: JSON, or the readable summary."""
    issues = sort_issues(session.memory.issues.values())
    if as_json:
        doc = {"runs": [run_json(r) for r in session.memory.runs.values()], "issues": [issue_json(i) for i in issues]}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
        return
    print(summary_text(session.lines, inputs, session.memory.runs.values(), issues))
    if store_path is not None:
        print(f"\nStored in {store_path}")


# ---------------------------------------------------------------------------------------- issues
def cmd_issues_list(args: argparse.Namespace) -> int:
    """List stored issues."""
    store = _store(_config(args))
    try:
        issues = store.list_issues(
            status=[Status(s) for s in args.status or []],
            severity=[Severity(s) for s in args.severity or []],
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([issue_json(i) for i in issues], option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not issues:
        print("no issues")
        return 0
    print(f"{'FINGERPRINT':<16} {'SEVERITY':<8} {'STATUS':<13} {'OCC':>5} {'RUNS':>4} {'LAST SEEN':<24} MESSAGE")
    for i in issues:
        msg = i.error_message if len(i.error_message) <= 80 else i.error_message[:79] + "…"
        print(
            f"{i.fingerprint:<16} {i.severity.value:<8} {i.status.value:<13} {i.occurrences:>5} "
            f"{i.runs_affected:>4} {iso(i.last_seen) or '-':<24} {msg}"
        )
    return 0


def cmd_issues_show(args: argparse.Namespace) -> int:
    """Show one stored issue."""
    store = _store(_config(args))
    try:
        issue = store.get(args.fingerprint)
    finally:
        store.close()
    if issue is None:
        print(f"stream-triage: no issue with fingerprint {args.fingerprint!r}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(issue_json(issue), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(issue_detail(issue))
    return 0


def cmd_issues_set_status(args: argparse.Namespace) -> int:
    """Set the status of a stored issue."""
    store = _store(_config(args))
    try:
        issue = store.set_status(args.fingerprint, Status(args.status), notes=args.notes, commit=args.commit)
    except KeyError:
        print(
            f"stream-triage: no issue with fingerprint {args.fingerprint!r} (or the prefix is ambiguous)",
            file=sys.stderr,
        )
        return 1
    finally:
        store.close()
    print(f"{issue.fingerprint} → {issue.status.value}")
    return 0


# ---------------------------------------------------------------------------------------- patterns
def cmd_patterns_test(args: argparse.Namespace) -> int:
    """Show the parse, match, masked message and fingerprint of one line."""
    config = load_config(args.config)
    patterns = build_patterns(config)
    line = LineParser(config.parse.line_regex)(RawRecord(args.line, "cli", None, 1))
    match = patterns.match(line.message, line.level)
    names = [n for n in (line.client, line.run_suffix) if n]
    # The pipeline fingerprints the redacted message; so must this, or the printed fingerprint differs
    # from the stored one for any line carrying a secret (and the secret would be printed masked).
    masked = mask_message(Redactor(config.redact.extra_patterns)(line.message.strip()), names)
    fp = fingerprint(masked, line.operation, top_app_frame([]))
    doc = {
        "run_id": line.run_id,
        "run_suffix": line.run_suffix,
        "client": line.client,
        "operation": line.operation,
        "level": line.level,
        "message": line.message,
        "match": None
        if match is None
        else {"pattern": match.pattern_id, "severity": match.severity.value, "all": list(match.pattern_ids)},
        "masked": masked,
        "fingerprint": fp if match else None,
    }
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        return 0 if match else 1
    for key, value in doc.items():
        if key == "match":
            value = (
                "no match"
                if match is None
                else f"{match.pattern_id} ({match.severity.value}); all: {', '.join(match.pattern_ids)}"
            )
        print(f"{key + ':':<13} {'' if value is None else value}")
    return 0 if match else 1


def cmd_patterns_list(args: argparse.Namespace) -> int:
    """List active patterns."""
    patterns = build_patterns(load_config(args.config))
    for spec in patterns.specs:
        print(f"{spec.severity.value:<8} {spec.id:<30} {spec.description}")
    print(f"\n{len(patterns.specs)} patterns; Hyperscan prefilter {'on' if patterns.accelerated else 'off'}")
    return 0
