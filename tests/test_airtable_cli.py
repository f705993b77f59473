"""``doctor airtable`` prints the report and exits 0 when ready, 1 with problems, 2 when misconfigured."""

from __future__ import annotations

import argparse
import io

from stream_triage.sinks import airtable_cli
from tests.fakes.airtable import AirtableFake
from tests.test_airtable_client import BASE, KEY, TABLE, full_schema


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stream-triage doctor")
    airtable_cli.add_parser(parser.add_subparsers(dest="target"))
    return parser.parse_args(["airtable", *argv])


def test_doctor_command_reports_then_creates_a_missing_field() -> None:
    """Without --create a missing field is exit 1; with --create it is added and the exit is 0."""
    with AirtableFake(
        token=KEY, bases={BASE: {TABLE: full_schema(Stream=None)}}, rate_limit_per_s=None
    ) as fake:
        env = {"AIRTABLE_API_KEY": KEY, "AIRTABLE_BASE_ID": BASE}
        out = io.StringIO()
        assert airtable_cli.run(parse("--endpoint-url", fake.url), env=env, out=out) == 1
        assert 'missing field "Stream" (number)' in out.getvalue()
        out = io.StringIO()
        args = parse("--endpoint-url", fake.url, "--create")
        assert args.func(args, env=env, out=out) == 0
        assert 'created  field "Stream" (number)' in out.getvalue()
        assert KEY not in out.getvalue()


def test_doctor_command_without_key_or_base_is_a_usage_error() -> None:
    """A missing API key or base id is reported without any request."""
    out = io.StringIO()
    assert airtable_cli.run(parse(), env={"AIRTABLE_API_KEY": KEY}, out=out) == 2
    assert "AIRTABLE_BASE_ID" in out.getvalue()
    out = io.StringIO()
    assert airtable_cli.run(parse("--base", BASE), env={}, out=out) == 2
    assert "AIRTABLE_API_KEY" in out.getvalue()
