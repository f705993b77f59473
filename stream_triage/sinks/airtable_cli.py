"""``stream-triage doctor airtable [--create]``: check the Airtable base, table and fields.

The lead wires it in under the ``doctor`` command: ``airtable_cli.add_parser(doctor_subparsers)``; the
parser sets ``func=run``. The API key comes from ``AIRTABLE_API_KEY`` only, never from arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from stream_triage.config import load_config
from stream_triage.errors import ConfigError
from stream_triage.sinks.outbox import Outbox
from stream_triage.sinks.sqlite import IssueStore

DEFAULT_TABLE = "Production Issues"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``airtable`` sub-command to an argparse sub-parsers object."""
    parser = subparsers.add_parser(
        "airtable",
        help="check the Airtable base, table and fields (--create adds what is missing)",
        description="Check credentials, base, table and every mapped field's type via Airtable's meta API.",
    )
    parser.add_argument("--base", default=None, help="base id (appXXXXXXXXXXXXXX); default $AIRTABLE_BASE_ID")
    parser.add_argument("--table", default=None, help=f"table name or id (default {DEFAULT_TABLE!r})")
    parser.add_argument("--endpoint-url", default=None, help="API endpoint (default https://api.airtable.com)")
    parser.add_argument("--create", action="store_true", help="create the table or the missing fields")
    parser.add_argument("--config", help="TOML config file ([sinks.airtable] base_id, table, fields)")
    parser.add_argument("--db", help="SQLite store whose parked Airtable changes to show")
    parser.add_argument(
        "--retry-parked", action="store_true", help="put parked changes back in the outbox (after fixing the cause)"
    )
    parser.set_defaults(func=run)
    return parser


def run(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    field_map: Any = None,
    out: TextIO | None = None,
) -> int:
    """Run doctor and print its report; exit status 0 when ready, 1 with problems, 2 when misconfigured."""
    # Imported here: pyairtable takes about a second to import, which every other command would pay.
    from stream_triage.sinks.airtable_client import AirtableClient, AirtableFieldMap, doctor

    env = os.environ if env is None else env
    out = out or sys.stdout
    try:
        config = load_config(getattr(args, "config", None), env)
    except ConfigError as exc:
        print(f"airtable: {exc}", file=out)
        return 2
    settings = config.sinks.airtable
    if field_map is None and settings.fields:
        try:
            field_map = AirtableFieldMap.from_mapping(settings.fields)
        except ConfigError as exc:
            print(f"airtable: {exc}", file=out)
            return 2
    parked_status = _show_parked(getattr(args, "db", None) or config.store.path, args, out)
    base = args.base or settings.base_id
    if not base:
        print("airtable: no base id; pass --base appXXXXXXXXXXXXXX or set AIRTABLE_BASE_ID", file=out)
        return 2
    try:
        # A doctor run may wait out a 429 penalty instead of failing.
        client = AirtableClient(
            env.get("AIRTABLE_API_KEY", ""),
            base,
            args.table or settings.table or DEFAULT_TABLE,
            endpoint_url=args.endpoint_url or settings.endpoint_url or None,
            field_map=field_map,
            max_wait_s=35.0,
        )
    except ConfigError as exc:
        print(f"airtable: {exc}", file=out)
        return 2
    try:
        report = doctor(client, create=args.create)
    finally:
        client.close()
    print(report.render(), file=out)
    return 0 if report.ok and parked_status == 0 else 1


def _show_parked(db: str, args: argparse.Namespace, out: TextIO) -> int:
    """Print the Airtable changes parked in the store with their errors; 1 if there are any."""
    if not db or not Path(db).exists():
        return 0
    store = IssueStore(db)
    try:
        outbox = Outbox(store, "airtable")
        if getattr(args, "retry_parked", False):
            print(f"outbox: {outbox.unpark()} parked change(s) put back in line", file=out)
        parked = outbox.parked()
        print(f"outbox: {outbox.backlog()} change(s) waiting, {len(parked)} parked", file=out)
        for entry in parked:
            print(
                f"  parked {entry.fingerprint} ({entry.change}, {entry.attempts} attempt(s)): {entry.error}", file=out
            )
        if parked:
            print("  fix the cause (often a missing field: see below), then run with --retry-parked", file=out)
        return 1 if parked else 0
    finally:
        store.close()
