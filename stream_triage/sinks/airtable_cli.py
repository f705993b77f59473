"""``stream-triage doctor airtable [--create]``: check the Airtable base, table and fields.

The lead wires it in under the ``doctor`` command: ``airtable_cli.add_parser(doctor_subparsers)``; the
parser sets ``func=run``. The API key comes from ``AIRTABLE_API_KEY`` only, never from arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from stream_triage.errors import ConfigError
from stream_triage.sinks.airtable_client import DEFAULT_TABLE, AirtableClient, AirtableFieldMap, doctor


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
    parser.set_defaults(func=run)
    return parser


def run(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    field_map: AirtableFieldMap | None = None,
    out: TextIO | None = None,
) -> int:
    """Run doctor and print its report; exit status 0 when ready, 1 with problems, 2 when misconfigured."""
    env = os.environ if env is None else env
    out = out or sys.stdout
    base = args.base or env.get("AIRTABLE_BASE_ID", "")
    if not base:
        print("airtable: no base id; pass --base appXXXXXXXXXXXXXX or set AIRTABLE_BASE_ID", file=out)
        return 2
    try:
        # A doctor run may wait out a 429 penalty instead of failing.
        client = AirtableClient(
            env.get("AIRTABLE_API_KEY", ""),
            base,
            args.table or DEFAULT_TABLE,
            endpoint_url=args.endpoint_url,
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
    return 0 if report.ok else 1
