"""The Airtable client layer against the local Airtable fake, through the real pyairtable client."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from stream_triage.errors import ConfigError, PermanentSinkError, RetryableSinkError
from stream_triage.records import Severity, Status, StoredIssue
from stream_triage.sinks.airtable_client import (
    FIELD_SPECS,
    AirtableClient,
    AirtableFieldMap,
    AirtablePermanentError,
    AirtableRetryableError,
    RateLimiter,
    UpsertItem,
    doctor,
    format_time,
    to_fields,
    truncate_text,
    utf16_len,
)
from tests.fakes.airtable import AirtableFake, ManualClock

KEY = "patK3y0nlyF0rT3sts.5f2c9d8e7a6b5c4d3e2f1a0b9c8d7e6f"
BASE = "appQ7wErTyUiOp123"
TABLE = "Production Issues"
T0 = 1762157722.429  # 2025-11-03T08:15:22.429Z


def full_schema(**overrides: Any) -> dict[str, Any]:
    """The Production Issues table as the field map expects it; ``None`` drops a field."""
    fields: dict[str, Any] = {
        m.name: {"type": m.spec.type, "options": m.spec.options} for m in AirtableFieldMap().mapped()
    }
    for name, spec in overrides.items():
        if spec is None:
            fields.pop(name)
        else:
            fields[name] = spec
    return fields


def make_issue(fingerprint: str = "9c1f4e2ab7d03e55", **changes: Any) -> StoredIssue:
    issue = StoredIssue(
        fingerprint=fingerprint,
        timestamp=T0,
        severity=Severity.ERROR,
        pattern="lead_scoring_timeout",
        error_message="Scoring request timed out after 30000ms for lead 4821",
        masked_message="Scoring request timed out after <n>ms for lead <n>",
        context=(
            "[251103-081522] [Ann-Lee] [lead_scoring] [INFO] scoring batch 3/7 stream=2\n"
            "[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] "
            "Scoring request timed out after 30000ms for lead 4821"
        ),
        stack_trace=(
            "Error: Scoring request timed out\n"
            "    at scoreLead (/opt/render/project/src/services/scoring.js:212:17)\n"
            "    at async Promise.all (index 3)"
        ),
        run_id="251103-081522",
        run_type="batch-score",
        stream=2,
        client_id="Ann-Lee",
        service="lead_scoring",
        status=Status.NEW,
        occurrences=1,
        first_seen=T0,
        last_seen=T0 + 4.5,
        runs_affected=1,
    )
    return replace(issue, **changes)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def start_fake(clock: ManualClock, tables: dict[str, Any] | None = None, **kwargs: Any) -> AirtableFake:
    return AirtableFake(
        token=KEY, bases={BASE: {TABLE: full_schema()} if tables is None else tables}, clock=clock, **kwargs
    )


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[AirtableFake]:
    with start_fake(clock) as server:
        yield server


def client_for(fake: AirtableFake, clock: ManualClock, **kwargs: Any) -> AirtableClient:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    kwargs.setdefault("rate_limiter", limiter)
    kwargs.setdefault("api_key", KEY)
    return AirtableClient(
        base_id=kwargs.pop("base_id", BASE), table=TABLE, endpoint_url=fake.url, timeout_s=5, **kwargs
    )


@pytest.fixture
def client(fake: AirtableFake, clock: ManualClock) -> Iterator[AirtableClient]:
    c = client_for(fake, clock)
    yield c
    c.close()


def fields_of(fake: AirtableFake, fingerprint: str) -> dict[str, Any]:
    rows = [r["fields"] for r in fake.records(TABLE) if r["fields"].get("Fingerprint") == fingerprint]
    assert len(rows) == 1
    return rows[0]


def writes(fake: AirtableFake) -> list[Any]:
    return [r for r in fake.requests if r.method in ("PATCH", "POST", "PUT") and "/meta/" not in r.path]


# --- mapping ----------------------------------------------------------------------------------


def test_new_fingerprint_creates_record_with_status_new(fake: AirtableFake, client: AirtableClient) -> None:
    """A fingerprint Airtable has never seen becomes a record with every mapped field and Status NEW."""
    ids = client.upsert([(make_issue(), False)])
    assert list(ids) == ["9c1f4e2ab7d03e55"] and ids["9c1f4e2ab7d03e55"].startswith("rec")
    assert fields_of(fake, "9c1f4e2ab7d03e55") == {
        "Pattern Matched": "lead_scoring_timeout",
        "Timestamp": "2025-11-03T08:15:22.429Z",
        "Severity": "ERROR",
        "Error Message": "Scoring request timed out after 30000ms for lead 4821",
        "Context": make_issue().context,
        "Status": "NEW",
        "Stack Trace": make_issue().stack_trace,
        "Run ID": "251103-081522",
        "Run Type": "batch-score",
        "Stream": 2,
        "Client ID": "Ann-Lee",
        "Service/Function": "lead_scoring",
        "Occurrences": 1,
        "First Seen": "2025-11-03T08:15:22.429Z",
        "Last Seen": "2025-11-03T08:15:26.929Z",
        "Fingerprint": "9c1f4e2ab7d03e55",
        "Runs Affected": 1,
    }


@pytest.mark.parametrize("restarted", [False, True], ids=["same-client", "after-restart"])
def test_second_upsert_updates_counts_and_keeps_human_fields(
    fake: AirtableFake, clock: ManualClock, client: AirtableClient, restarted: bool
) -> None:
    """Re-upserting a fingerprint updates Occurrences/Last Seen and leaves a human's Status and Fix Notes."""
    rid = client.upsert([(make_issue(), False)])["9c1f4e2ab7d03e55"]
    fake.edit(
        TABLE, rid, {"Status": "INVESTIGATING", "Fix Notes": "Scoring API slow since deploy 412; paging Bo"}
    )
    second = client_for(fake, clock) if restarted else client
    fake.clear_requests()
    again = make_issue(
        occurrences=7, last_seen=T0 + 3600, runs_affected=2, fix_notes="stale copy in the store"
    )
    assert second.upsert([(again, False)]) == {"9c1f4e2ab7d03e55": rid}
    row = fields_of(fake, "9c1f4e2ab7d03e55")
    assert (row["Occurrences"], row["Last Seen"], row["Runs Affected"]) == (7, "2025-11-03T09:15:22.429Z", 2)
    assert row["Status"] == "INVESTIGATING"
    assert row["Fix Notes"] == "Scoring API slow since deploy 412; paging Bo"
    sent = writes(fake)[-1].body["records"][0]["fields"]
    assert not {"Status", "Fix Notes", "Fix Commit", "Fixed Time"} & set(sent)


def test_regression_sets_regressed_and_keeps_fix_notes(fake: AirtableFake, client: AirtableClient) -> None:
    """A regression sets Status REGRESSED and nothing else a human owns."""
    rid = client.upsert([(make_issue(), False)])["9c1f4e2ab7d03e55"]
    fake.edit(
        TABLE,
        rid,
        {
            "Status": "FIXED",
            "Fix Notes": "raised timeout",
            "Fix Commit": "a1b2c3d",
            "Fixed Time": "2025-11-04T10:00:00.000Z",
        },
    )
    client.upsert([UpsertItem(make_issue(occurrences=2), regression=True)])
    row = fields_of(fake, "9c1f4e2ab7d03e55")
    assert row["Status"] == "REGRESSED"
    assert (row["Fix Notes"], row["Fix Commit"], row["Fixed Time"]) == (
        "raised timeout",
        "a1b2c3d",
        "2025-11-04T10:00:00.000Z",
    )


def test_to_fields_sends_status_only_on_create_or_regression() -> None:
    """Human-owned fields never appear in an update; Status only as NEW on create or REGRESSED."""
    issue = make_issue(fix_notes="x", fix_commit="abc", fixed_time=T0, status=Status.FIXED)
    fm = AirtableFieldMap()
    update = to_fields(issue, fm, create=False, render_log_url="https://dashboard.render.com/web/srv-1/logs")
    assert not {"Status", "Fix Notes", "Fix Commit", "Fixed Time"} & set(update)
    assert update["Render Log URL"] == "https://dashboard.render.com/web/srv-1/logs"
    assert to_fields(issue, fm, create=True)["Status"] == "NEW"
    assert to_fields(issue, fm, create=False, regression=True)["Status"] == "REGRESSED"
    blank = to_fields(
        make_issue(stream=None, client_id=None, stack_trace="", run_type=None), fm, create=False
    )
    assert {"Stream", "Client ID", "Stack Trace"}.isdisjoint(blank) and blank["Run Type"] == "other"
    assert format_time(T0) == "2025-11-03T08:15:22.429Z"


def test_field_map_is_configurable_and_validated(fake: AirtableFake, clock: ManualClock) -> None:
    """Field names come from the map; unknown keys and a blank merge key are reported together."""
    fm = AirtableFieldMap.from_mapping({"stream": "Stream #", "render_log_url": ""})
    assert "Stream #" in to_fields(make_issue(), fm, create=True)
    with pytest.raises(ConfigError) as err:
        AirtableFieldMap.from_mapping({"fingerprint": "", "strem": "Stream"})
    assert err.value.problems == [
        "airtable.fields.strem: unknown field key; valid keys are: " + ", ".join(sorted(FIELD_SPECS)),
        "airtable.fields.fingerprint: cannot be empty; stream-triage needs this field",
    ]


def test_long_text_is_truncated_with_marker() -> None:
    """Long text stays under 100,000 UTF-16 units, keeps whole code points and says how much was cut."""
    lines = "\n".join(f"    at frame{i} (/opt/render/project/src/services/x.js:{i}:17)" for i in range(4000))
    cut = truncate_text(lines)
    assert len(cut) < 100_000 and cut.startswith("    at frame0 ")
    kept, marker = cut.rsplit("\n… [truncated ", 1)
    assert marker == f"{len(lines) - len(kept)} chars]"
    assert lines.startswith(kept + "\n")  # cut at a line break
    emoji = "😀" * 80_000  # 160,000 UTF-16 units
    cut = truncate_text(emoji)
    assert utf16_len(cut) <= 99_000
    cut.encode("utf-16")  # raises on a split surrogate pair
    assert truncate_text("short") == "short"


def test_oversized_text_is_delivered_truncated(fake: AirtableFake, client: AirtableClient) -> None:
    """A 250,000-character context is accepted by Airtable once truncated."""
    client.upsert([(make_issue(context="x" * 250_000), False)])
    context = fields_of(fake, "9c1f4e2ab7d03e55")["Context"]
    assert len(context) <= 99_000 and context.endswith(" chars]")


# --- batching and rate limits -------------------------------------------------------------------


def test_25_issues_go_in_3_upsert_requests(
    fake: AirtableFake, clock: ManualClock, client: AirtableClient
) -> None:
    """25 issues take 3 upsert requests (10+10+5); unknown fingerprints cost one lookup request first."""
    issues = [make_issue(f"fp-{i:02d}") for i in range(25)]
    client.upsert([(i, False) for i in issues])
    upserts = [r for r in fake.requests if r.method == "PATCH"]
    assert [len(r.body["records"]) for r in upserts] == [10, 10, 5]
    assert [r.method for r in fake.requests] == ["GET", "PATCH", "PATCH", "PATCH"]
    assert all(
        r.body["performUpsert"] == {"fieldsToMergeOn": ["Fingerprint"]} and r.body["typecast"]
        for r in upserts
    )
    fake.clear_requests()
    client.upsert([(replace(i, occurrences=2), False) for i in issues])
    assert [r.method for r in fake.requests] == ["PATCH", "PATCH", "PATCH"]
    assert len(fake.records(TABLE)) == 25
    trusting = client_for(fake, clock, lookup_unknown=False)
    fake.clear_requests()
    trusting.upsert([(make_issue(f"new-{i:02d}"), False) for i in range(25)])
    assert [r.method for r in fake.requests] == ["PATCH", "PATCH", "PATCH"]


def test_429_becomes_retryable_and_the_penalty_is_waited_out(
    fake: AirtableFake, clock: ManualClock, client: AirtableClient
) -> None:
    """A 429 raises RetryableSinkError with the 30 s penalty; nothing is sent until it has passed."""
    client.remember({"9c1f4e2ab7d03e55": "recAAAAAAAAAAAAAA"})
    fake.fail_next(1, 429)
    with pytest.raises(RetryableSinkError) as err:
        client.upsert([(make_issue(), False)])
    assert isinstance(err.value, AirtableRetryableError)
    assert (err.value.status, err.value.retry_after_s) == (429, 30.0)
    assert "429 RATE_LIMIT_REACHED" in str(err.value) and "30 s" in str(err.value)
    sent = len(fake.requests)
    with pytest.raises(AirtableRetryableError) as blocked:
        client.upsert([(make_issue(), False)])
    assert len(fake.requests) == sent  # refused locally, not sent
    assert blocked.value.retry_after_s == pytest.approx(30.0)
    clock.advance(30)
    assert client.upsert([(make_issue(), False)])["9c1f4e2ab7d03e55"].startswith("rec")


def test_limiter_keeps_a_burst_of_20_upserts_under_5_per_second(clock: ManualClock) -> None:
    """20 upserts in a row never trip Airtable's 5 req/s per base: no 429, at most 5 in any second."""
    with start_fake(clock, rate_limit_per_s=5) as fake:
        client = client_for(fake, clock)
        for i in range(20):
            client.upsert([(make_issue(f"burst-{i:02d}"), False)])
        times = [r.at for r in fake.requests]
        assert len(times) == 40  # a lookup and an upsert each
        assert all(r.status == 200 for r in fake.requests)
        assert max(sum(1 for t in times if end - 1.0 < t <= end) for end in times) <= 5
        assert clock.sleeps and max(clock.sleeps) <= 0.25 + 1e-9
        client.close()


def test_rate_limiter_hands_concurrent_callers_distinct_slots() -> None:
    """Threads acquiring at once each get their own slot, spaced by 1/rate, without losing any."""
    clock = ManualClock()
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            waits.append(round(seconds, 6))

    limiter = RateLimiter(rate_per_s=4, burst=1, clock=clock, sleep=record)
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(waits) == [round(0.25 * k, 6) for k in range(1, 40)]  # the first went at once
    assert limiter.acquire(max_wait_s=1.0) is False


# --- errors -------------------------------------------------------------------------------------


def test_unknown_field_is_permanent_and_names_the_field(clock: ManualClock) -> None:
    """A table without the Stream field gives PermanentSinkError naming "Stream" and the failed chunk."""
    with start_fake(clock, {TABLE: full_schema(Stream=None)}) as fake:
        client = client_for(fake, clock, lookup_unknown=False)
        with pytest.raises(PermanentSinkError) as err:
            client.upsert([(make_issue("a"), False), (make_issue("b"), False)])
        exc = err.value
        assert isinstance(exc, AirtablePermanentError)
        assert (exc.status, exc.error_type, exc.field) == (422, "UNKNOWN_FIELD_NAME", "Stream")
        assert 'Unknown field name: "Stream"' in str(exc) and "doctor airtable" in str(exc)
        assert [i.issue.fingerprint for i in exc.failed] == ["a", "b"] and exc.delivered == {}
        client.close()


def test_one_bad_record_is_isolated_by_upsert_one(fake: AirtableFake, client: AirtableClient) -> None:
    """A chunk failing on one record is retried one by one so only that record is refused."""
    client.upsert([(make_issue("dup"), False)])
    # A person duplicated the record in Airtable: upsert can no longer tell which one to update.
    fake.add(TABLE, {"Fingerprint": "dup", "Occurrences": 1})
    batch = [
        (make_issue("ok-1"), False),
        (make_issue("dup", occurrences=3), False),
        (make_issue("ok-2"), False),
    ]
    with pytest.raises(AirtablePermanentError) as err:
        client.upsert(batch)
    assert [i.issue.fingerprint for i in err.value.failed] == ["ok-1", "dup", "ok-2"]
    outcomes = {}
    for item in err.value.failed:
        try:
            outcomes[item.issue.fingerprint] = client.upsert_one(item)[:3]
        except AirtablePermanentError as exc:
            outcomes[item.issue.fingerprint] = exc.error_type
    assert outcomes == {"ok-1": "rec", "dup": "INVALID_REQUEST_UNKNOWN", "ok-2": "rec"}
    assert sorted(r["fields"]["Fingerprint"] for r in fake.records(TABLE)) == ["dup", "dup", "ok-1", "ok-2"]


def test_network_errors_and_server_errors_are_retryable(fake: AirtableFake, client: AirtableClient) -> None:
    """A 503, a dropped connection and a 500 all become RetryableSinkError; recovery delivers."""
    client.remember({"9c1f4e2ab7d03e55": "recAAAAAAAAAAAAAA"})
    fake.outage(status=503)
    with pytest.raises(AirtableRetryableError) as err:
        client.upsert([(make_issue(), False)])
    assert err.value.status == 503 and "will retry" in str(err.value)
    fake.outage(drop_connection=True)
    with pytest.raises(RetryableSinkError) as err:
        client.upsert([(make_issue(), False)])
    assert "cannot reach Airtable" in str(err.value)
    fake.recover()
    fake.fail_next(1, 500)
    with pytest.raises(RetryableSinkError):
        client.upsert([(make_issue(), False)])
    assert client.upsert([(make_issue(), False)])["9c1f4e2ab7d03e55"].startswith("rec")


def test_wrong_base_and_wrong_key_are_permanent(fake: AirtableFake, clock: ManualClock) -> None:
    """An unknown base is 403 and a bad key 401: both permanent, with what to check."""
    wrong_base = client_for(fake, clock, base_id="appNoSuchBase0000", lookup_unknown=False)
    with pytest.raises(AirtablePermanentError) as err:
        wrong_base.upsert([(make_issue(), False)])
    assert err.value.status == 403 and "check the base id" in str(err.value)
    wrong_key = client_for(fake, clock, api_key="patWrongKey.000", lookup_unknown=False)
    with pytest.raises(AirtablePermanentError) as err:
        wrong_key.upsert([(make_issue(), False)])
    assert err.value.error_type == "AUTHENTICATION_REQUIRED" and "AIRTABLE_API_KEY" in str(err.value)


def test_api_key_never_appears_in_errors_or_logs(
    fake: AirtableFake, clock: ManualClock, client: AirtableClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever fails, neither exception text, causes nor log records contain the API key."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = [repr(client)]
    scenarios = [
        lambda: fake.fail_next(1, 429),
        lambda: fake.outage(status=502),
        lambda: fake.outage(drop_connection=True),
        lambda: fake.fail_next(1, 422, "INVALID_VALUE_FOR_COLUMN"),
        lambda: fake.fail_next(1, 401, "AUTHENTICATION_REQUIRED"),
    ]
    for arrange in scenarios:
        fake.recover()
        clock.advance(60)
        arrange()
        with pytest.raises(Exception) as err:  # every failure kind is checked the same way
            client.upsert([(make_issue(), False)])
        exc: BaseException | None = err.value
        while exc is not None:
            texts += [str(exc), repr(exc), repr(getattr(exc, "args", ""))]
            exc = exc.__cause__ or exc.__context__
    texts.append(caplog.text)
    assert not [t for t in texts if KEY in t]


# --- two-way status ----------------------------------------------------------------------------


def test_read_status_and_set_status(fake: AirtableFake, client: AirtableClient) -> None:
    """read_status returns what humans set (quotes escaped); set_status writes Status and Fixed Time."""
    odd = 'it\'s a "quoted" \\ fingerprint'
    ids = client.upsert([(make_issue(odd), False), (make_issue("plain"), False)])
    fake.edit(
        TABLE,
        ids[odd],
        {
            "Status": "FIXED",
            "Fixed Time": "2025-11-04T10:00:00.000Z",
            "Fix Notes": "retry with backoff",
            "Fix Commit": "9f8e7d6",
        },
    )
    got = client.read_status([odd, "plain", "never-seen"])
    assert set(got) == {odd, "plain"}
    assert got[odd].record_id == ids[odd] and got[odd].status is Status.FIXED
    assert got[odd].fixed_time == pytest.approx(1762250400.0)
    assert (got[odd].fix_notes, got[odd].fix_commit) == ("retry with backoff", "9f8e7d6")
    assert got["plain"].status is Status.NEW and got["plain"].fixed_time is None
    assert client.set_status("plain", Status.IGNORED, fixed_time=T0) == ids["plain"]
    assert (fields_of(fake, "plain")["Status"], fields_of(fake, "plain")["Fixed Time"]) == (
        "IGNORED",
        "2025-11-03T08:15:22.429Z",
    )
    assert client.set_status("never-seen", Status.FIXED) is None


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_reports_a_missing_field_and_create_adds_it(clock: ManualClock) -> None:
    """doctor names a missing field with how to add it; doctor --create adds it; wrong types stay reported."""
    schema = full_schema(Stream=None, Occurrences="singleLineText", **{"Render Log URL": "singleLineText"})
    with start_fake(clock, {TABLE: schema}) as fake:
        client = client_for(fake, clock)
        report = doctor(client)
        assert not report.ok
        assert report.problems == [
            'missing field "Stream" (number): add it in Airtable → Production Issues → + → Number (integer), '
            "or run `stream-triage doctor airtable --create`",
            'field "Occurrences" is singleLineText, expected number: in Airtable click the field header → '
            "Edit field → Number (integer) (or map another field in [airtable.fields].occurrences)",
        ]
        assert (
            'note     field "Render Log URL" is singleLineText, expected url; '
            "it works (links are not clickable)" in report.lines
        )
        fixed = doctor(client, create=True)
        assert fixed.created == ['field "Stream" (number)']
        assert fake.schema(TABLE)["Stream"]["type"] == "number"
        assert [p.split(" is ")[0] for p in fixed.problems] == ['field "Occurrences"']
        client.close()


def test_doctor_creates_a_missing_table(clock: ManualClock) -> None:
    """With --create a missing table is created with every mapped field, after which doctor is clean."""
    with start_fake(clock, {"Other": {"Name": "singleLineText"}}) as fake:
        client = client_for(fake, clock)
        assert "not found in base" in doctor(client).problems[0]
        created = doctor(client, create=True)
        assert created.created == [f'table "{TABLE}" with 21 fields (primary field: Pattern Matched)']
        again = doctor(client)
        assert again.ok, again.render()
        assert set(fake.schema(TABLE)) == {m.name for m in AirtableFieldMap().mapped()}
        assert client.upsert([(make_issue(), False)])
        client.close()


def test_doctor_reports_a_rejected_key(fake: AirtableFake, clock: ManualClock) -> None:
    """A bad key stops doctor at the first check, with what to do."""
    report = doctor(client_for(fake, clock, api_key="patNope.123"))
    assert len(report.problems) == 1 and "AIRTABLE_API_KEY" in report.problems[0]
    assert report.render().endswith("Airtable: 1 problem(s) to fix.")


def test_a_status_option_humans_added_is_never_overwritten(fake: AirtableFake, clock: ManualClock) -> None:
    """After a restart, a record whose Status is a custom option keeps it; a blank Status gets NEW."""
    custom = fake.add(TABLE, {"Fingerprint": "custom", "Status": "WONTFIX", "Occurrences": 1})
    blank = fake.add(TABLE, {"Fingerprint": "blank", "Occurrences": 1})
    client = client_for(fake, clock)
    ids = client.upsert(
        [(make_issue("custom", occurrences=4), False), (make_issue("blank", occurrences=2), False)]
    )
    assert ids == {"custom": custom, "blank": blank}
    assert (fields_of(fake, "custom")["Status"], fields_of(fake, "custom")["Occurrences"]) == ("WONTFIX", 4)
    assert fields_of(fake, "blank")["Status"] == "NEW"
    client.close()


def test_a_record_deleted_by_a_person_is_recreated_with_status_new(
    fake: AirtableFake, client: AirtableClient
) -> None:
    """If a known record was deleted in Airtable, the upsert recreates it and then sets Status NEW."""
    client.upsert([(make_issue(), False)])
    rid = client.known_record("9c1f4e2ab7d03e55")
    assert rid is not None
    fake.delete(TABLE, rid)
    new_id = client.upsert([(make_issue(occurrences=2), False)])["9c1f4e2ab7d03e55"]
    assert new_id != rid
    assert fields_of(fake, "9c1f4e2ab7d03e55")["Status"] == "NEW"
