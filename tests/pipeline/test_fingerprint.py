"""Fingerprints: one defect with different variable parts is one fingerprint; two defects are two."""

from __future__ import annotations

import pytest

from stream_triage.pipeline.fingerprint import fingerprint, mask_message


def fp(message: str, operation: str | None = "lead_scoring", frame: str | None = None, names=()) -> str:
    return fingerprint(mask_message(message, names), operation, frame)


SAME_DEFECT = [
    # Airtable ids
    ("Failed to update record recAbCdEfGhIjKlMn in table tblZyXwVuTsRqPoNm of base appQwErTyUiOpAsDf",
     "Failed to update record rec0123456789abcd in table tbl9876543210ZYXW of base appAAAAAAAAAAAAAA"),
    # UUIDs
    ("Job 3f2b8c1e-9a4d-4e7b-8c2a-1d5e6f7a8b9c failed to start",
     "Job 00000000-1111-4222-8333-444455556666 failed to start"),
    # numbers and durations
    ("Batch 3 failed: 12 of 50 leads after 1234ms", "Batch 17 failed: 1 of 9 leads after 98ms"),
    # timestamps
    ("Run started 2025-11-03T08:15:22.429Z did not finish by 08:45:22",
     "Run started 2025-11-04T23:01:02Z did not finish by 23:31:02"),
    # emails and URLs
    ("Could not send digest to ann.lee@example.com via https://api.example.com/v1/send?id=42",
     "Could not send digest to bo+test@mail.acme.io via https://api.example.com/v2/send"),
    # quoted values with digits or spaces
    ("Cannot parse value for field Score: \"12.5 points\"", "Cannot parse value for field Score: \"n/a 7\""),
    ("Lead 'Ann Lee' has no email", "Lead 'Bo Chen' has no email"),
    # run ids, with and without client suffix
    ("Client run record not found for 251103-081522-Ann-Lee", "Client run record not found for 251104-120000-Bo-Chen"),
    # hex and long tokens
    ("Deploy 0x1f3a failed, token abcdEFGH1234ijklMNOP5678", "Deploy 0xff failed, token zzzzYYYY9999xxxxWWWW0000"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), SAME_DEFECT)
def test_variable_parts_do_not_change_the_fingerprint(a: str, b: str) -> None:
    """Ids, UUIDs, numbers, timestamps, emails, URLs, quoted values and run ids are masked."""
    assert mask_message(a) == mask_message(b)
    assert fp(a) == fp(b)


def test_client_names_are_masked_in_both_spellings() -> None:
    """The line's client name is masked, also written with a space instead of the dash."""
    a = fp("No leads to score for Ann-Lee (Ann Lee)", names=["Ann-Lee"])
    b = fp("No leads to score for Bo-Chen (Bo Chen)", names=["Bo-Chen"])
    assert a == b
    assert mask_message("Scoring Ann Lee", ["Ann-Lee"]) == "Scoring <client>"


DIFFERENT_DEFECTS = [
    ("ReferenceError: Cannot access 'config' before initialization",
     "ReferenceError: Cannot access 'runRecord' before initialization"),
    ('Unknown field name: "Stream"', 'Unknown field name: "Run Type"'),
    ("Request failed with status code 404", "Request failed with status code 503"),
    ("Apify returned 404", "Apify returned 500"),
    ("HTTP/1.1 502 from upstream", "HTTP/1.1 504 from upstream"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), DIFFERENT_DEFECTS)
def test_different_defects_have_different_fingerprints(a: str, b: str) -> None:
    """Short identifier quotes and status codes next to a status word tell defects apart."""
    assert fp(a) != fp(b)


def test_status_code_survives_masking() -> None:
    """A status code is kept, other numbers are masked."""
    assert mask_message("Request 42 failed with status code 404 after 3 tries") == (
        "Request <n> failed with status code 404 after <n> tries"
    )


def test_same_message_at_different_top_frames_differs() -> None:
    """The top in-app frame is part of the fingerprint."""
    message = "TypeError: Cannot read properties of undefined (reading 'fields')"
    assert fp(message, frame="updateClientRun (services/clientRunService.js)") != fp(
        message, frame="scoreLead (services/scoring.js)"
    )
    assert fp(message, frame="scoreLead (services/scoring.js)") == fp(message, frame="scoreLead (services/scoring.js)")


def test_operation_is_part_of_the_fingerprint() -> None:
    """The same text from two operations is two defects."""
    assert fp("Failed to fetch leads", operation="smart_resume") != fp("Failed to fetch leads", operation="apify")


def test_fingerprint_is_16_hex_digits_and_stable() -> None:
    """Fingerprints are 16 hex digits and stable across processes and releases (stored issues key on them)."""
    # sha1("apify\x1fFailed to fetch leads\x1f")[:16]; changing it splits every stored issue in two.
    assert fingerprint("Failed to fetch leads", "apify", None) == "027feb28d7037224"
