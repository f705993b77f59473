"""Secret redaction of messages, context and traces."""

from __future__ import annotations

import pytest

from stream_triage.pipeline.redact import _RULES, REDACTED, Redactor

redact = Redactor()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Airtable call with Authorization: Bearer patAbCdEfGhIjKlMn.0123456789abcdef0123", "patAbCdEfGhIjKlMn"),
        ('axios config {"headers": {"authorization": "Bearer sk-live-abcdefghijklmnop"}}', "sk-live-abcdef"),
        ("Using token patAbCdEfGhIjKlMn.0123456789abcdef0123456789abcdef for base", "0123456789abcdef0123"),
        ("GEMINI apiKey=AIzaSyA1234567890abcdefghijklmnopqrstuv failed", "AIzaSyA1234567890"),
        ("connect postgres://app:s3cr3tPass@db.internal:5432/leads failed", "s3cr3tPass"),
        ("password=hunter2 rejected", "hunter2"),
        ("Render key rnd_AbCdEfGhIjKlMnOpQrStUv used", "rnd_AbCdEf"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok",
         "eyJhbGciOiJIUzI1NiJ9"),
    ],
)  # fmt: skip
def test_secrets_are_replaced(text: str, secret: str) -> None:
    """Tokens, keys, passwords and JWTs are replaced by [REDACTED]."""
    out = redact(text)
    assert secret not in out
    assert REDACTED in out


def test_text_without_secrets_is_unchanged() -> None:
    """Ordinary log text passes untouched, including ids that look random."""
    text = 'Failed to update record recAbCdEfGhIjKlMn: Unknown field name: "Stream" (status code 422)'
    assert redact(text) == text


def test_key_names_are_kept_for_readability() -> None:
    """The key stays, only its value goes."""
    assert redact("x-api-key: abc123def456") == f"x-api-key: {REDACTED}"


def test_extra_patterns_replace_their_match() -> None:
    """Configured extra patterns redact their whole match."""
    r = Redactor([r"\bACME-[0-9]{6}\b"])
    assert r("licence ACME-123456 expired") == f"licence {REDACTED} expired"


def test_many_redacts_lines_with_emoji_among_ascii_ones_as_one_by_one() -> None:
    """Context windows mixing ASCII lines and lines with emoji or accents: each line redacted as
    ``Redactor()(line)`` would (the ASCII ones still screened together)."""
    lines = [
        "password=hunter2 rejected",
        "✅ Lead scored, token=sk-live-abcdefghijklmnop0123",
        "plain line without secrets",
        "résumé for postgres://app:s3cr3tPass@db.internal:5432/leads",
        "🎉 done",
        "Authorization: Bearer patAbCdEfGhIjKlMn.0123456789abcdef0123",
    ]
    expected = [Redactor()(t) for t in lines]
    assert Redactor().many(lines) == expected
    assert expected[1] != lines[1] and expected[3] != lines[3] and expected[4] == lines[4]
    assert Redactor([r"\bACME-[0-9]{6}\b"]).many(["🎉 ACME-123456", "ACME-654321"]) == [
        f"🎉 {REDACTED}",
        REDACTED,
    ]


def test_lines_with_emoji_are_redacted_as_every_rule_would() -> None:
    """A line whose only non-ASCII characters are symbols is screened in ASCII; against applying
    every rule, with secrets next to, around and inside emoji, and lines with letters or spaces
    that are not ASCII (those take the exact screen)."""
    r = Redactor()
    lines = [
        "✅ token=sk-live-abcdefghijklmnop0123 sent",
        "password=🔥hunter2🔥 rejected",
        "🎉 Authorization: Bearer patAbCdEfGhIjKlMn.0123456789abcdef0123 ➜ ok",
        "—postgres://app:s3cr3tPass@db.internal:5432/leads—",
        "✔️ GEMINI apiKey=AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "résumé password=hunter2",
        "non\u00a0breaking\u00a0password=hunter2",
        "🎉 nothing secret here ✅",
    ]
    for line in lines:
        assert r(line) == r._apply(line, range(len(r._rules))), line
    assert "hunter2" not in r(lines[1]) and r(lines[-1]) == lines[-1]


def test_control_characters_re_counts_as_spaces_do_not_hide_a_secret_from_the_screen() -> None:
    """\\x1c-\\x1f are whitespace to re (the rules) but not to Hyperscan (the screen)."""
    cases = [
        ("password\x1c=hunter2 rejected", "hunter2"),
        ("✅ password\x1f=hunter2", "hunter2"),
        ("api_key\x1d:\x1eabcdef0123456789abcdef", "abcdef0123456789"),
    ]
    for text, secret in cases:
        expected = Redactor()._apply(text, range(len(_RULES)))
        assert secret not in expected, text
        assert Redactor()(text) == expected
        assert Redactor().many([text, "plain"]) == [expected, "plain"]
