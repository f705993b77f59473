"""Planted secrets of every kind go through `replay --json --db` and survive nowhere: store, JSON, output."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stream_triage import cli
from stream_triage.pipeline.redact import REDACTED, Redactor

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjbGllbnQtNDIiLCJpYXQiOjE3MzA2MjQ5MjJ9"
    ".Qm9ndXNTaWduYXR1cmVGb3JUZXN0czEyMw"
)
SECRETS = {
    "bearer-jwt": JWT,
    "bearer-opaque": "opaqueT0kenValue1234567890",
    "bearer-in-config-dump": "dumpT0ken-77aa88bb99cc",
    "x-api-key": "xk-9f8e7d6c5b4a3210",
    "x-webhook-secret": "whsec-Zm9vYmFyYmF6cXV4",
    "airtable-pat": "patAbCdEfGh123456." + "0123456789abcdef" * 4,
    "google-api-key": "AIzaSyD3xAmPlE-k3yF0rT3st1ngPurp0s3s12",
    "aws-access-key": "AKIAIOSFODNN7EXAMPLE",
    "aws-secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "private-key-body": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "url-password": "pg-Sup3rS3cret",
    "redis-password": "r3dis-hunter2",
    "token-param": "tok8c1b2e7f4a",
    "secret-param": "shh-9999-abc",
    "api-key-field": "apk-1234abcd5678",
    "password-field": "correct horse battery staple",
    "python-api-key": "pyk-5551212-zz",
    "context-token": "ctx-tok-31337",
    "extra-pattern": "acct-123456",
}
S = SECRETS
A = "[251103-081522-Ann-Lee] [Ann-Lee]"
G = "[251103-091500-Guy-Wilson] [Guy-Wilson]"

LOG = [
    f"{A} [airtable-sync] [INFO] Calling Airtable with token={S['context-token']} for 40 leads",
    f"{A} [airtable-sync] [ERROR] Request failed with status code 401: Authorization: Bearer {S['bearer-jwt']}",
    f"{G} [airtable-sync] [ERROR] Request failed with status code 401: Authorization: Bearer {S['bearer-opaque']}",
    f"{A} [apify_webhook] [ERROR] Apify API call failed, request config: {{",
    '  "url": "https://api.apify.com/v2/acts/scraper/runs",',
    '  "headers": {',
    f'    "Authorization": "Bearer {S["bearer-in-config-dump"]}",',
    f'    "x-api-key": "{S["x-api-key"]}",',
    f'    "x-webhook-secret": "{S["x-webhook-secret"]}"',
    "  },",
    f'  "params": {{ "token": "{S["token-param"]}" }}',
    "}",
    f'{A} [airtable-sync] [ERROR] Airtable call failed: {{"headers":{{"Authorization":"Bearer {S["airtable-pat"]}"}},'
    f'"apiKey":"{S["api-key-field"]}"}}',
    f"{A} [lead_scoring] [ERROR] Gemini call rejected: API key not valid (key {S['google-api-key']})",
    f"{A} [export] [ERROR] S3 upload failed for {S['aws-access-key']} aws_secret_access_key={S['aws-secret']}",
    f"{A} [db] [ERROR] Failed to connect to the database at postgres://scorer:{S['url-password']}@db.internal:5432/x",
    f"{A} [auth] [ERROR] Login to the CRM failed with password: \"{S['password-field']}\""
    f" and secret={S['secret-param']}",
    f"{A} [billing] [ERROR] Invoice sync failed for account {S['extra-pattern']}",
    "-----BEGIN PRIVATE KEY-----",
    S["private-key-body"],
    "-----END PRIVATE KEY-----",
    f"Error: Failed to load signing key from redis://:{S['redis-password']}@cache:6379",
    "    at loadKey (/opt/render/project/src/services/signing.js:21:11)",
    "ERROR:enrichment.worker:Enrichment call failed",
    "Traceback (most recent call last):",
    '  File "/app/worker.py", line 88, in run',
    f'    requests.get(url, headers={{"x-api-key": "{S["python-api-key"]}"}})',
    f"requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://x.example/v1?api_key={S['python-api-key']}",
]


def _write_log(path: Path, lines: list[str]) -> Path:
    stamped = [f"[2025-11-03T08:{15 + i // 60:02d}:{i % 60:02d}.000Z] {line}" for i, line in enumerate(lines)]
    path.write_text("\n".join(stamped) + "\n", encoding="utf-8")
    return path


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[redact]\nextra_patterns = ["acct-[0-9]{6}"]\n', encoding="utf-8")
    return cfg


def _replay(tmp_path: Path, name: str, lines: list[str], capsys: pytest.CaptureFixture[str], *extra: str):
    log = _write_log(tmp_path / f"{name}.log", lines)
    db = tmp_path / f"{name}.db"
    status = cli.main(["replay", str(log), "--db", str(db), "--config", str(_config(tmp_path)), *extra])
    out = capsys.readouterr()
    return status, out.out, out.err, db


def _store_text(db: Path) -> str:
    """Every text value of every table of the SQLite file, concatenated."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        parts = []
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):  # table names come from sqlite_master
                parts.extend(v for v in row if isinstance(v, str))
        return "\n".join(parts)
    finally:
        con.close()


def _leaks(text: str) -> list[str]:
    return [kind for kind, secret in SECRETS.items() if secret in text]


def test_no_planted_secret_survives_in_store_json_or_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every secret kind is redacted from the stored issues, the JSON document and what is printed."""
    status, out, err, db = _replay(tmp_path, "json", LOG, capsys, "--json")
    assert status == 0, err
    doc = json.loads(out)
    stored = _store_text(db)
    # The secrets were really there to find: the issues carry the lines that held them.
    assert REDACTED in stored and stored.count(REDACTED) >= len(SECRETS)
    assert len(doc["issues"]) >= 10
    assert _leaks(stored) == []
    assert _leaks(out) == []
    assert _leaks(err) == []
    # Context and stack traces were checked too, not only messages.
    contexts = "\n".join(line for i in doc["issues"] for line in i["context"])
    traces = "\n".join(i["stack_trace"] for i in doc["issues"])
    assert '"x-api-key": "[REDACTED]"' in contexts and "token=[REDACTED]" in contexts
    assert "api_key=[REDACTED]" in traces


def test_text_summary_prints_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The human-readable replay summary is redacted as well."""
    status, out, err, _ = _replay(tmp_path, "text", LOG, capsys)
    assert status == 0, err
    assert "Request failed with status code 401" in out
    assert _leaks(out) == [] and _leaks(err) == []


def _fingerprints(doc: dict) -> dict[str, str]:
    return {i["masked_message"]: i["fingerprint"] for i in doc["issues"]}


def test_fingerprint_does_not_depend_on_the_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same error with a JWT, another token or none shares one fingerprint."""
    head = f"{A} [airtable-sync] [ERROR] Request failed with status code 401: Authorization: Bearer "
    fps = []
    for name, token in (("jwt", JWT), ("opaque", "zzOtherT0ken0987654321"), ("short", "abc")):
        _, out, _, _ = _replay(tmp_path, name, [head + token], capsys, "--json")
        (issue,) = json.loads(out)["issues"]
        fps.append(issue["fingerprint"])
        assert token not in out
    assert len(set(fps)) == 1
    # In one replay both lines (two runs, two tokens) are one issue seen twice.
    _, out, _, _ = _replay(tmp_path, "both", LOG[1:3], capsys, "--json")
    (issue,) = json.loads(out)["issues"]
    assert issue["occurrences"] == 2 and issue["fingerprint"] == fps[0]


@pytest.mark.parametrize(
    "text",
    [
        'Unknown field name: "Status"',
        "maxTokens: 1024, tokens used: 877",
        '"timeout": 30000, "retries": 3',
        "Invalid API key provided for actor run 48CsGING0Rb6ulgRh",
        "Basic authentication is disabled for this endpoint",
        "keyValueStoreName=leads-cache",
        "GET /api/error-report?client=Ann-Lee 200 (60ms), errors: 0",
        "    at scorePosts (/opt/render/project/src/services/postScoring.js:212:17)",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Key-like words without a credential after them, ids, frames and URLs stay as they are."""
    assert Redactor()(text) == text
