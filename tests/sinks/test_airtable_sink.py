"""The Airtable sink: pipeline flushes → store outbox → real pyairtable client → local Airtable fake."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_triage import cli
from stream_triage.records import Status
from stream_triage.sinks.airtable_client import SAFE_TEXT_UNITS, AirtableFieldMap, format_time, utf16_len
from tests.fakes.airtable import AirtableFake, ManualClock, select
from tests.sinks.airtable_rig import (
    BASE,
    KEY,
    SYSTEM_ERROR,
    T0,
    TABLE,
    Rig,
    bodies_text,
    default_config,
    full_schema,
    iter_windows,
    outbox_rows,
    scoring_run,
    upserted_fingerprints,
    upserts,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=T0 + 3600)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[AirtableFake]:
    with AirtableFake(token=KEY, bases={BASE: {TABLE: full_schema()}}, clock=clock) as server:
        yield server


@pytest.fixture
def rig(fake: AirtableFake, clock: ManualClock, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(fake, tmp_path / "issues.db", clock)
    yield r
    r.close()


def by_message(records: dict[str, dict[str, Any]], needle: str) -> dict[str, Any]:
    [fields] = [f for f in records.values() if needle in f.get("Error Message", "")]
    return fields


# --- 1. a run's issues appear once, fully mapped ---------------------------------------------------


def test_first_run_creates_one_new_record_per_fingerprint_with_every_field(rig: Rig) -> None:
    """Each issue of a run becomes exactly one record, Status NEW, every mapped field filled."""
    fps = rig.apply([*scoring_run("251103-081522"), SYSTEM_ERROR], T0)
    asyncio.run(rig.deliver_all())
    records = rig.records()
    assert sorted(records) == sorted(set(fps)) and len(records) == 3
    stored = rig.store.get(by_message(records, "TypeError")["Fingerprint"])
    assert stored is not None
    assert by_message(records, "TypeError") == {
        "Timestamp": format_time(stored.first_seen),
        "Severity": "ERROR",
        "Pattern Matched": "js-type-error",
        "Error Message": (
            "Scoring failed for lead 4821: TypeError: Cannot read properties of undefined (reading 'score')"
        ),
        "Context": stored.context,
        "Status": "NEW",
        "Stack Trace": (
            "    at scoreLead (/opt/render/project/src/services/scoring.js:212:17)\n    at async Promise.all (index 3)"
        ),
        "Run ID": "251103-081522",
        "Run Type": "batch-score",
        "Stream": 2,
        "Client ID": "Ann-Lee",
        "Service/Function": "scoreLead (services/scoring.js)",
        "Occurrences": 1,
        "First Seen": "2025-11-03T08:15:29.750Z",
        "Last Seen": "2025-11-03T08:15:29.750Z",
        "Fingerprint": stored.fingerprint,
        "Runs Affected": 1,
    }
    context = stored.context.split("\n")
    marked = [i for i, line in enumerate(context) if line.startswith(">> ")]
    assert marked == [25] and len(context) == 51  # 25 lines before, the error, 25 after
    system = by_message(records, "ECONNREFUSED")
    assert system["Status"] == "NEW" and "Stream" not in system and "Run ID" not in system
    assert rig.sink.outbox.backlog() == 0
    assert rig.metric("stream_triage_sink_deliveries_total", sink="airtable") == 3


# --- 2. a repeat run updates counts; human fields are never overwritten ----------------------------


def test_repeat_run_updates_counts_and_keeps_human_fields(rig: Rig, fake: AirtableFake) -> None:
    """A second run updates Occurrences, Last Seen, Run ID, Runs Affected and Context, never duplicating,
    and leaves Status, Fix Notes, Fix Commit and Fixed Time as a person set them."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    human = {
        "Status": "INVESTIGATING",
        "Fix Notes": "Lead 4821 has no enrichment; guard in scoreLead",
        "Fix Commit": "a1b2c3d",
        "Fixed Time": "2025-11-03T09:00:00.000Z",
    }
    fake.edit(TABLE, rig.record_id(fp), human)
    second = scoring_run("251103-101500", client="Bo-Chen", stream=3, before=10)
    rig.apply(second, T0 + 7200)
    asyncio.run(rig.deliver_all())
    records = rig.records()
    assert len(records) == 2
    fields = records[fp]
    assert {k: fields[k] for k in human} == human
    assert fields["Occurrences"] == 2 and fields["Runs Affected"] == 2
    assert fields["Run ID"] == "251103-101500" and fields["Client ID"] == "Bo-Chen" and fields["Stream"] == 3
    assert fields["Last Seen"] == format_time(T0 + 7200 + 11 * 0.25)
    assert fields["First Seen"] == "2025-11-03T08:15:29.750Z"
    assert "[251103-101500] [Bo-Chen]" in fields["Context"] and "251103-081522" not in fields["Context"]
    sent = [rec["fields"] for r in upserts(fake.requests) for rec in r.body["records"]]
    assert all(not set(human) & set(s) for s in sent[2:])  # updates never carry human fields
    # What the person set in Airtable is mirrored into the local store.
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.INVESTIGATING and local.fix_commit == "a1b2c3d"


# --- 4. outage, recovery, restart: everything, in order ------------------------------------------


def test_outage_then_recovery_delivers_everything_in_order_across_a_restart(
    rig: Rig, fake: AirtableFake, clock: ManualClock
) -> None:
    """503s and dropped connections for simulated minutes, a sink restart in between: after recovery
    every change is delivered once, in outbox order, and the outbox is empty."""

    async def scenario() -> list[str]:
        rig.apply([*scoring_run("251103-081522"), SYSTEM_ERROR], T0)
        fake.outage(503)
        await rig.sink.start()
        start = clock()
        while clock() < start + 120:  # the worker retries with backoff in simulated time
            await asyncio.sleep(0.001)
        rig.apply(
            scoring_run("251103-101500", client="Bo-Chen", extra_errors=["Airtable base appX not found"]), T0 + 7200
        )
        fake.outage(503, drop_connection=True)
        while clock() < start + 600:
            await asyncio.sleep(0.001)
        await rig.sink.stop(5)
        return [fp for _, fp, _, _ in outbox_rows(rig.store)]

    pending = asyncio.run(scenario())
    assert not upsert_ok(fake) and len(pending) == 6
    failures = [r for r in fake.requests if r.status == 503]
    assert failures and len(fake.requests) < 60  # backoff, not a hot loop
    assert rig.metric("stream_triage_sink_errors_total", sink="airtable", kind="retryable") >= 2
    expected_order = list(dict.fromkeys(pending))
    rig.close()
    rig.open()  # a new process: new store connection, new sink, same SQLite file

    async def recover() -> None:
        await rig.sink.start()
        fake.recover()
        rig.sink.notify([])
        for _ in range(2000):
            if rig.sink.outbox.backlog() == 0:
                break
            await asyncio.sleep(0.001)
        await rig.sink.stop(5)

    asyncio.run(recover())
    assert rig.sink.outbox.backlog() == 0 and outbox_rows(rig.store) == []
    assert list(dict.fromkeys(upserted_fingerprints(fake.requests))) == expected_order
    records = rig.records()
    assert sorted(records) == sorted(set(pending))
    assert by_message(records, "TypeError")["Occurrences"] == 2


def upsert_ok(fake: AirtableFake) -> bool:
    return bool(upserts(fake.requests))


# --- 5. a 429 storm ------------------------------------------------------------------------------


def many_errors(n: int) -> list[str]:
    words = [f"{a}{b}" for a in "bcdfghjklmnpqrstvwxz" for b in ("ab", "ex", "ol", "um", "ir")]
    return [f"Sync of table {w.capitalize()}Leads failed: column {w}_score missing" for w in words[:n]]


def test_limiter_keeps_under_five_requests_per_second_and_waits_out_a_429_penalty(
    fake: AirtableFake, clock: ManualClock, tmp_path: Path
) -> None:
    """At the configured 5 req/s no one-second window holds more than 5 requests; when another
    client of the base triggers a 429, the sink sends nothing for the 30 s penalty, then delivers all."""
    rig = Rig(
        fake, tmp_path / "issues.db", clock, requests_per_second=default_config().sinks.airtable.requests_per_second
    )
    try:
        fps = rig.apply(scoring_run("251103-081522", extra_errors=many_errors(60)), T0)
        asyncio.run(rig.deliver_all())
        ours = [r.at for r in fake.requests]
        assert max(iter_windows(ours)) <= 5 and all(r.status == 200 for r in fake.requests)
        assert len(rig.records()) == len(set(fps)) == 62

        # A noisy neighbour on the same base uses up the window: Airtable answers 429 for 30 s.
        rig.apply(scoring_run("251103-101500", extra_errors=many_errors(60)), T0 + 7200)
        for _ in range(6):
            fake_neighbour_request(fake)
        fake.clear_requests()
        asyncio.run(rig.deliver_all())
        log = fake.requests
        first_429 = next(r for r in log if r.status == 429)
        after = [r for r in log if r.at > first_429.at]
        assert after and min(r.at for r in after) >= first_429.at + 30
        assert [r for r in log if r.status == 429] == [first_429]
        assert max(iter_windows([r.at for r in log])) <= 5
        records = rig.records()
        assert len(records) == 62 and all(f["Occurrences"] == 2 for f in records.values())
        assert rig.sink.outbox.backlog() == 0
    finally:
        rig.close()


def fake_neighbour_request(fake: AirtableFake) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{fake.url}/v0/{BASE}/{TABLE.replace(' ', '%20')}?maxRecords=1", headers={"Authorization": f"Bearer {KEY}"}
    )
    try:
        urllib.request.urlopen(req, timeout=5).close()
    except urllib.error.HTTPError as exc:
        exc.close()


# --- 6. an unknown field parks only the affected change; doctor explains ---------------------------


def test_unknown_field_parks_only_that_issue_and_doctor_explains_then_delivers(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table without "Stream" refuses issues that have a stream: only those are parked (metrics
    count them); doctor shows the parked change and how to add the field; --create then
    --retry-parked delivers it."""
    with AirtableFake(token=KEY, bases={BASE: {TABLE: full_schema(Stream=None)}}, clock=clock) as fake:
        rig = Rig(fake, tmp_path / "issues.db", clock)
        try:
            rig.apply(scoring_run("251103-081522", stream=None), T0)  # no stream: deliverable
            rig.apply([SYSTEM_ERROR], T0 + 100)
            asyncio.run(rig.deliver_all())
            apify = "[251103-101500] [Bo-Chen] [apify_webhook]"
            rig.apply(
                [
                    f"{apify} [INFO] Apify webhook received stream=4",
                    f"{apify} [ERROR] Lead import aborted: 3 rows rejected",
                    f"{apify} [INFO] Job 251103-101500 status updated to COMPLETED",
                ],
                T0 + 7200,
            )
            rig.apply(scoring_run("251103-121500", stream=None), T0 + 9000)  # updates keep flowing
            asyncio.run(rig.deliver_all())
            records = rig.records()
            parked = rig.sink.outbox.parked()
            [entry] = parked
            assert entry.fingerprint not in records and len(records) == 3
            assert 'UNKNOWN_FIELD_NAME: Unknown field name: "Stream"' in entry.error
            assert rig.metric("stream_triage_sink_errors_total", sink="airtable", kind="permanent") == 1
            assert rig.metric("stream_triage_outbox_parked", sink="airtable") == 1

            monkeypatch.setenv("AIRTABLE_API_KEY", KEY)
            monkeypatch.setenv("AIRTABLE_BASE_ID", BASE)
            monkeypatch.delenv("AIRTABLE_ENDPOINT_URL", raising=False)
            doctor = ["doctor", "airtable", "--db", str(rig.db), "--endpoint-url", fake.url]
            fake.recover()
            assert cli.main(doctor) == 1
            out = capsys.readouterr().out
            assert f"parked {entry.fingerprint} (" in out and 'Unknown field name: "Stream"' in out
            assert 'missing field "Stream" (number): add it in Airtable' in out and "--retry-parked" in out
            assert KEY not in out

            fake.recover()
            assert cli.main([*doctor, "--create"]) == 1  # the field is created; the change is still parked
            assert 'created  field "Stream" (number)' in capsys.readouterr().out
            fake.recover()
            assert cli.main([*doctor, "--retry-parked"]) == 0
            assert "1 parked change(s) put back in line" in capsys.readouterr().out
            fake.recover()
            asyncio.run(rig.deliver_all())
            assert rig.records()[entry.fingerprint]["Stream"] == 4
            assert rig.sink.outbox.parked() == [] and rig.sink.outbox.backlog() == 0
            assert rig.metric("stream_triage_outbox_parked", sink="airtable") == 0
        finally:
            rig.close()


def test_field_map_naming_a_missing_field_parks_only_issues_using_it(clock: ManualClock, tmp_path: Path) -> None:
    """A field map that names a field the table lacks parks issues with that value; others flow."""
    with AirtableFake(token=KEY, bases={BASE: {TABLE: full_schema()}}, clock=clock) as fake:
        rig = Rig(fake, tmp_path / "issues.db", clock, field_map=AirtableFieldMap(client_id="Client Name"))
        try:
            rig.apply(scoring_run("251103-081522"), T0)
            rig.apply([SYSTEM_ERROR], T0 + 100)
            asyncio.run(rig.deliver_all())
            assert [f["Error Message"][:30] for f in rig.records().values()] == ["Failed to refresh client list:"]
            parked = rig.sink.outbox.parked()
            assert len(parked) == 2 and all('Unknown field name: "Client Name"' in p.error for p in parked)
        finally:
            rig.close()


# --- 7. two-way status ---------------------------------------------------------------------------


def test_fixed_in_airtable_then_recurring_becomes_regressed_in_both(
    rig: Rig, fake: AirtableFake, clock: ManualClock
) -> None:
    """FIXED in Airtable (Fixed Time before the recurrence), mirrored by the status sync; the error
    recurs: Airtable and the store both say REGRESSED, with the person's fix notes kept."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    fake.edit(
        TABLE,
        rig.record_id(fp),
        {"Status": "FIXED", "Fixed Time": format_time(T0 + 3600), "Fix Notes": "guard added", "Fix Commit": "9f8e7d6"},
    )
    assert asyncio.run(rig.sink.sync_status()) >= 1
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.FIXED and local.fixed_time == pytest.approx(T0 + 3600)
    rig.apply(scoring_run("251103-101500"), T0 + 7200)
    asyncio.run(rig.deliver_all())
    fields = rig.records()[fp]
    assert fields["Status"] == "REGRESSED" and fields["Fix Notes"] == "guard added"
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.REGRESSED and local.fix_commit == "9f8e7d6"


def test_fixed_in_airtable_unseen_by_the_store_regresses_on_recurrence(rig: Rig, fake: AirtableFake) -> None:
    """Without a status sync in between, the read-back before the update still turns FIXED into REGRESSED."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    fake.edit(TABLE, rig.record_id(fp), {"Status": "FIXED", "Fixed Time": format_time(T0 + 3600)})
    rig.apply(scoring_run("251103-101500"), T0 + 7200)
    asyncio.run(rig.deliver_all())
    assert rig.records()[fp]["Status"] == "REGRESSED"
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.REGRESSED


def test_late_delivery_of_an_old_occurrence_does_not_regress_a_later_fix(rig: Rig, fake: AirtableFake) -> None:
    """An occurrence from before the Fixed Time (delivered late) keeps the record FIXED."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    fake.edit(TABLE, rig.record_id(fp), {"Status": "FIXED", "Fixed Time": format_time(T0 + 86400)})
    rig.apply(scoring_run("251103-101500"), T0 + 7200)
    asyncio.run(rig.deliver_all())
    assert rig.records()[fp]["Status"] == "FIXED"
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.FIXED


def test_ignored_in_airtable_stays_ignored_and_keeps_counting(rig: Rig, fake: AirtableFake) -> None:
    """IGNORED set in Airtable survives recurrences; Occurrences keep counting."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    fake.edit(TABLE, rig.record_id(fp), {"Status": "IGNORED"})
    for i, run_id in enumerate(["251103-101500", "251103-121500"]):
        rig.apply(scoring_run(run_id), T0 + 7200 * (i + 1))
        asyncio.run(rig.deliver_all())
    fields = rig.records()[fp]
    assert fields["Status"] == "IGNORED" and fields["Occurrences"] == 3 and fields["Runs Affected"] == 3
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.IGNORED and local.occurrences == 3


def test_status_sync_mirrors_investigating_and_fix_notes(rig: Rig, fake: AirtableFake) -> None:
    """The periodic sync copies Status and Fix Notes / Fix Commit set in Airtable into the store."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    fake.edit(TABLE, rig.record_id(fp), {"Status": "INVESTIGATING", "Fix Notes": "looking at enrichment"})
    assert asyncio.run(rig.sink.sync_status()) == 1
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.INVESTIGATING and local.fix_notes == "looking at enrichment"
    fake.edit(TABLE, rig.record_id(fp), {"Fix Commit": "c0ffee1"})
    assert asyncio.run(rig.sink.sync_status()) == 1
    local = rig.store.get(fp)
    assert local is not None and local.fix_commit == "c0ffee1"
    assert asyncio.run(rig.sink.sync_status()) == 0


def test_status_sync_does_not_undo_a_local_status_change_waiting_for_delivery(rig: Rig, fake: AirtableFake) -> None:
    """A status set locally and not yet delivered wins over the older value still in Airtable."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    rig.store.set_status(fp, Status.IGNORED, notes="known flaky lead", now=T0 + 5000)
    asyncio.run(rig.sink.sync_status())
    rig.apply(scoring_run("251103-101500"), T0 + 7200)  # an update queued behind the status change
    asyncio.run(rig.deliver_all())
    local = rig.store.get(fp)
    assert local is not None and local.status is Status.IGNORED
    fields = rig.records()[fp]
    assert fields["Status"] == "IGNORED" and fields["Fix Notes"] == "known flaky lead" and fields["Occurrences"] == 2


def test_local_set_status_fixed_is_delivered_with_notes_and_commit(rig: Rig) -> None:
    """``IssueStore.set_status`` (what ``issues set-status`` calls) reaches Airtable as a status change."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    rig.store.set_status(fp, Status.FIXED, notes="guard in scoreLead", commit="4f3e2d1", now=T0 + 3600)
    assert [c for _, _, c, _ in outbox_rows(rig.store)] == ["status"]
    asyncio.run(rig.deliver_all())
    fields = rig.records()[fp]
    assert fields["Status"] == "FIXED" and fields["Fixed Time"] == format_time(T0 + 3600)
    assert fields["Fix Notes"] == "guard in scoreLead" and fields["Fix Commit"] == "4f3e2d1"
    assert fields["Occurrences"] == 1
    # …and a recurrence after that fix regresses it.
    rig.apply(scoring_run("251103-101500"), T0 + 7200)
    asyncio.run(rig.deliver_all())
    assert rig.records()[fp]["Status"] == "REGRESSED"


def test_cli_set_status_is_queued_for_airtable(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stream-triage issues set-status FP FIXED --notes --commit`` queues a status change for Airtable."""
    rig.apply(scoring_run("251103-081522"), T0)
    asyncio.run(rig.deliver_all())
    fp = by_message(rig.records(), "TypeError")["Fingerprint"]
    monkeypatch.setenv("AIRTABLE_API_KEY", KEY)
    monkeypatch.setenv("AIRTABLE_BASE_ID", BASE)
    argv = ["issues", "set-status", fp[:10], "FIXED", "--notes", "guard", "--commit", "4f3e2d1", "--db", str(rig.db)]
    assert cli.main(argv) == 0
    assert [c for _, _, c, _ in outbox_rows(rig.store)] == ["status"]


# --- 8. field limits, typecast, times ------------------------------------------------------------


def test_long_text_is_cut_below_the_limit_and_new_select_options_are_added(clock: ManualClock, tmp_path: Path) -> None:
    """A 200k-character context and a 120k stack trace arrive cut under 100,000 characters with a
    marker; a Run Type option missing from the table is added by typecast; times are ISO 8601 UTC."""
    schema = full_schema(**{"Run Type": select("smart-resume", "batch-score")})
    with AirtableFake(token=KEY, bases={BASE: {TABLE: schema}}, clock=clock) as fake:
        rig = Rig(fake, tmp_path / "issues.db", clock)
        try:
            config = default_config()
            config.route.context_line_chars = 5000
            frame = "    at Object.handler (/opt/render/project/src/services/apify/" + "n" * 1950 + ".js:12:7)"
            lines = [
                "[251103-081522] [Ann-Lee] [apify_webhook] [INFO] Apify webhook received stream=1 " + "p" * 4000,
                *[f"[251103-081522] [Ann-Lee] [apify_webhook] [INFO] item {i} " + "q" * 4000 for i in range(30)],
                "[251103-081522] [Ann-Lee] [apify_webhook] [ERROR] Uncaught TypeError: items.map is not a function",
                *[frame] * 60,
                *[f"[251103-081522] [Ann-Lee] [apify_webhook] [INFO] item {i} " + "r" * 4000 for i in range(30)],
            ]
            rig.apply(lines, T0, config)
            asyncio.run(rig.deliver_all())
            [fields] = [f for f in rig.records().values() if "items.map" in f["Error Message"]]
            stored = rig.store.get(fields["Fingerprint"])
            assert stored is not None and len(stored.context) > 150_000 and len(stored.stack_trace) > 100_000
            for name in ("Context", "Stack Trace"):
                assert SAFE_TEXT_UNITS - 2000 < utf16_len(fields[name]) <= SAFE_TEXT_UNITS < 100_000
                assert fields[name].rsplit("\n", 1)[1].startswith("… [truncated ")
            assert fields["Run Type"] == "apify-webhook"
            assert "apify-webhook" in [c["name"] for c in fake.schema(TABLE)["Run Type"]["options"]["choices"]]
            for name in ("First Seen", "Last Seen", "Timestamp"):
                assert fields[name].endswith("Z") and fields[name].startswith("2025-11-03T08:15:")
            assert rig.sink.outbox.parked() == []
        finally:
            rig.close()


# --- 9. secrets ------------------------------------------------------------------------------------

LEAKED_BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4tbGVlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
LEAKED_PAT = "patAbCdEfGhIjKlMn.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def test_secrets_never_reach_airtable_or_the_logs(
    rig: Rig, fake: AirtableFake, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens in log lines are redacted before delivery; the API key is in no log line or error text."""
    caplog.set_level(logging.DEBUG)
    lines = scoring_run(
        "251103-081522",
        extra_errors=[
            f"Airtable request failed: Authorization: Bearer {LEAKED_BEARER} -> 401",
            f"Airtable client init failed with key {LEAKED_PAT}: 403 INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
            f"Base sync retried with the shared key {KEY} and gave up",  # our own key, in no known format
        ],
    )
    lines.insert(
        5, f"[251103-081522] [Ann-Lee] [lead_scoring] [DEBUG] headers {{ authorization: 'Bearer {LEAKED_BEARER}' }}"
    )
    rig.apply(lines, T0)
    fake.fail_next(1, 503)
    fake.fail_next(1, 429)
    asyncio.run(rig.deliver_all())
    fake.outage(503, drop_connection=True)
    rig.apply(scoring_run("251103-101500"), T0 + 7200)
    asyncio.run(rig.sink.deliver_once())
    fake.recover()
    asyncio.run(rig.deliver_all())
    sent = bodies_text(fake.requests)
    assert "[REDACTED]" in sent and "Authorization" in sent
    for secret in (LEAKED_BEARER, LEAKED_PAT, LEAKED_PAT[:20], KEY):
        assert secret not in sent
    messages = [r.getMessage() for r in caplog.records]
    tracebacks = [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    assert any("airtable:" in m for m in messages)
    assert not any(KEY in t for t in messages + tracebacks) and KEY not in caplog.text
    assert not any(KEY in p.error for p in rig.sink.outbox.parked())


def test_wrong_api_key_is_reported_without_the_key(
    fake: AirtableFake, clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected key defers delivery (nothing parked, no hot loop) and no message shows the key."""
    caplog.set_level(logging.DEBUG)
    fake.token = "patSomeOtherToken.ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    rig = Rig(fake, tmp_path / "issues.db", clock)
    try:
        rig.apply(scoring_run("251103-081522"), T0)
        for _ in range(5):
            asyncio.run(rig.sink.deliver_once())
        assert len(fake.requests) <= 3
        assert rig.sink.outbox.parked() == [] and rig.sink.outbox.backlog() == 2
        with rig.store.lock:
            errors = [r[0] for r in rig.store.connection.execute("SELECT last_error FROM outbox")]
        assert all("AUTHENTICATION_REQUIRED" in e and KEY not in e for e in errors)
        assert KEY not in caplog.text
        fake.token = KEY
        asyncio.run(rig.deliver_all())
        assert len(rig.records()) == 2
    finally:
        rig.close()


def test_doctor_output_buffer_never_holds_the_key(fake: AirtableFake, tmp_path: Path) -> None:
    """``doctor airtable`` against the fake prints no part of the API key."""
    import argparse

    from stream_triage.sinks import airtable_cli

    parser = argparse.ArgumentParser()
    airtable_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["airtable", "--endpoint-url", fake.url, "--db", str(tmp_path / "none.db")])
    out = io.StringIO()
    assert airtable_cli.run(args, env={"AIRTABLE_API_KEY": KEY, "AIRTABLE_BASE_ID": BASE}, out=out) == 0
    assert KEY not in out.getvalue() and KEY[:12] not in out.getvalue()
