"""The Airtable fake behaves like the documented API when driven by the real pyairtable client."""

from __future__ import annotations

from collections.abc import Iterator

import pyairtable
import pytest
import requests
from pyairtable.api.retrying import retry_strategy

from tests.fakes.airtable import AirtableFake, ManualClock, select

TOKEN = "patFAKE.0123456789abcdef"
BASE = "appTEST0000000001"
TABLE = "Production Issues"

SCHEMA = {
    BASE: {
        TABLE: {
            "Pattern Matched": "singleLineText",
            "Fingerprint": "singleLineText",
            "Severity": select("CRITICAL", "ERROR", "WARNING"),
            "Occurrences": "number",
            "Last Seen": "dateTime",
            "Context": "multilineText",
            "Render Log URL": "url",
            "Muted": "checkbox",
        }
    }
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[AirtableFake]:
    with AirtableFake(token=TOKEN, bases=SCHEMA, clock=clock, penalty_s=30.0) as server:
        yield server


def api_for(fake: AirtableFake, **kwargs: object) -> pyairtable.Api:
    kwargs.setdefault("retry_strategy", None)
    return pyairtable.Api(TOKEN, endpoint_url=fake.url, timeout=(5, 5), **kwargs)  # type: ignore[arg-type]


def raw(fake: AirtableFake, method: str, path: str, **kwargs: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(method, f"{fake.url}{path}", headers=headers, timeout=5, **kwargs)  # type: ignore[arg-type]


def test_create_get_and_list_with_pagination(fake: AirtableFake, clock: ManualClock) -> None:
    """Records created through pyairtable come back from get() and from paged all()."""
    table = api_for(fake).table(BASE, TABLE)
    first = table.create({"Fingerprint": "fp-0", "Occurrences": 1, "Severity": "ERROR"})
    assert first["id"].startswith("rec") and len(first["id"]) == 17
    assert first["createdTime"].endswith("Z")
    clock.advance(1)
    table.batch_create([{"Fingerprint": f"fp-{i}"} for i in range(1, 8)])
    clock.advance(2)  # batch_create sent one request; keep clear of the rate limit
    assert table.get(first["id"])["fields"] == {"Fingerprint": "fp-0", "Occurrences": 1, "Severity": "ERROR"}
    pages = list(table.iterate(page_size=3))
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [r["fields"]["Fingerprint"] for p in pages for r in p] == [f"fp-{i}" for i in range(8)]
    only = table.all(fields=["Severity"], max_records=1)
    assert only == [{"id": first["id"], "createdTime": first["createdTime"], "fields": {"Severity": "ERROR"}}]


def test_batch_upsert_creates_then_updates_and_typecast_adds_option(fake: AirtableFake) -> None:
    """performUpsert creates on no match, updates on one match; typecast adds a new select option."""
    table = api_for(fake).table(BASE, TABLE)
    created = table.batch_upsert(
        [{"fields": {"Fingerprint": "a", "Occurrences": 1}}, {"fields": {"Fingerprint": "b"}}],
        key_fields=["Fingerprint"],
    )
    assert len(created["createdRecords"]) == 2 and created["updatedRecords"] == []
    again = table.batch_upsert(
        [{"fields": {"Fingerprint": "a", "Occurrences": "7", "Severity": "FATAL"}}],
        key_fields=["Fingerprint"],
        typecast=True,
    )
    assert again["createdRecords"] == [] and again["updatedRecords"] == [created["records"][0]["id"]]
    rows = {r["fields"]["Fingerprint"]: r["fields"] for r in fake.records(TABLE)}
    assert rows["a"] == {"Fingerprint": "a", "Occurrences": 7, "Severity": "FATAL"}
    choices = [c["name"] for c in fake.schema(TABLE)["Severity"]["options"]["choices"]]
    assert choices == ["CRITICAL", "ERROR", "WARNING", "FATAL"]


def test_update_patch_merges_and_put_replaces(fake: AirtableFake, clock: ManualClock) -> None:
    """PATCH keeps the cells it was not given; PUT clears them."""
    table = api_for(fake).table(BASE, TABLE)
    rec = table.create({"Fingerprint": "x", "Occurrences": 2, "Context": "line 1\nline 2"})
    table.update(rec["id"], {"Occurrences": 3})
    assert table.get(rec["id"])["fields"] == {
        "Fingerprint": "x",
        "Occurrences": 3,
        "Context": "line 1\nline 2",
    }
    clock.advance(1)
    table.update(rec["id"], {"Fingerprint": "x"}, replace=True)
    assert table.get(rec["id"])["fields"] == {"Fingerprint": "x"}


def test_eleven_records_in_one_request_are_rejected(fake: AirtableFake) -> None:
    """More than 10 records per create request is a 422 and nothing is written."""
    body = {"records": [{"fields": {"Fingerprint": f"fp-{i}"}} for i in range(11)]}
    resp = raw(fake, "POST", f"/v0/{BASE}/{TABLE}", json=body)
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "INVALID_RECORDS"
    assert fake.records(TABLE) == []


def test_sixth_request_in_a_second_is_429_and_the_penalty_holds(
    fake: AirtableFake, clock: ManualClock
) -> None:
    """Five requests a second per base pass; the sixth is a 429 and the base refuses until the penalty."""
    statuses = [raw(fake, "GET", f"/v0/{BASE}/{TABLE}").status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]
    limited = raw(fake, "GET", f"/v0/{BASE}/{TABLE}")
    assert limited.json() == {
        "errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]
    }
    clock.advance(5)  # the window has long passed, but the 30 s penalty has not
    assert raw(fake, "GET", f"/v0/{BASE}/{TABLE}").status_code == 429
    clock.advance(26)
    assert raw(fake, "GET", f"/v0/{BASE}/{TABLE}").status_code == 200


def test_pyairtable_retrying_on_429_ends_in_retry_error(fake: AirtableFake) -> None:
    """pyairtable's urllib3 retry on 429 gives up with requests' RetryError while the penalty lasts."""
    fake.fail_next(1, 429)
    with pytest.raises(requests.exceptions.HTTPError) as plain:
        api_for(fake).table(BASE, TABLE).all()
    assert plain.value.response.status_code == 429
    fake.fail_next(10, 429)
    api = api_for(fake, retry_strategy=retry_strategy(backoff_factor=0, total=2))
    with pytest.raises(requests.exceptions.RetryError):
        api.table(BASE, TABLE).all()


def test_unknown_field_raises_http_error_with_airtable_body(fake: AirtableFake) -> None:
    """An unknown field name is 422 UNKNOWN_FIELD_NAME; pyairtable raises HTTPError carrying the body."""
    table = api_for(fake).table(BASE, TABLE)
    with pytest.raises(requests.exceptions.HTTPError) as err:
        table.create({"Fingerprint": "x", "Stream": 3})
    assert err.value.response.status_code == 422
    assert err.value.response.json() == {
        "error": {"type": "UNKNOWN_FIELD_NAME", "message": 'Unknown field name: "Stream"'}
    }
    assert "UNKNOWN_FIELD_NAME" in str(err.value.args)


def test_typecast_rules_for_numbers_selects_and_long_text(fake: AirtableFake, clock: ManualClock) -> None:
    """Without typecast a string number or a new option is refused; long text over 100,000 chars is too."""
    table = api_for(fake).table(BASE, TABLE)
    cases = [
        ({"Occurrences": "12"}, "INVALID_VALUE_FOR_COLUMN"),
        ({"Severity": "FATAL"}, "INVALID_MULTIPLE_CHOICE_OPTIONS"),
        ({"Context": "x" * 100_001}, "INVALID_VALUE_FOR_COLUMN"),
        ({"Context": "😀" * 50_001}, "INVALID_VALUE_FOR_COLUMN"),  # 100,002 UTF-16 units
        ({"Last Seen": "yesterday"}, "INVALID_VALUE_FOR_COLUMN"),
    ]
    for fields, expected in cases:
        clock.advance(1)
        with pytest.raises(requests.exceptions.HTTPError) as err:
            table.create(fields)
        assert err.value.response.json()["error"]["type"] == expected, fields
    clock.advance(1)
    rec = table.create(
        {"Occurrences": "12", "Last Seen": "2025-11-03T08:15:22Z", "Context": "x" * 100_000}, typecast=True
    )
    assert rec["fields"]["Occurrences"] == 12
    assert rec["fields"]["Last Seen"] == "2025-11-03T08:15:22.000Z"
    assert fake.records(TABLE) == [rec]


def test_filter_by_formula_subset(fake: AirtableFake, clock: ManualClock) -> None:
    """OR/AND of {Field}='value' comparisons filter, escaped quotes included; other formulas are 422."""
    table = api_for(fake).table(BASE, TABLE)
    table.batch_create(
        [
            {"Fingerprint": "it's", "Severity": "ERROR"},
            {"Fingerprint": 'say "hi"', "Severity": "WARNING"},
            {"Fingerprint": "plain", "Severity": "ERROR"},
        ]
    )
    formula = 'OR({Fingerprint}=\'it\\\'s\',{Fingerprint}="say \\"hi\\"")'
    assert sorted(r["fields"]["Fingerprint"] for r in table.all(formula=formula)) == ["it's", 'say "hi"']
    both = table.all(formula="AND({Severity}='ERROR', OR({Fingerprint}='plain', {Fingerprint}='nope'))")
    assert [r["fields"]["Fingerprint"] for r in both] == ["plain"]
    clock.advance(1)
    for bad, message in (("SEARCH('x', {Fingerprint})", "not supported"), ("{Nope}='x'", "Unknown field")):
        with pytest.raises(requests.exceptions.HTTPError) as err:
            table.all(formula=bad)
        body = err.value.response.json()["error"]
        assert body["type"] == "INVALID_FILTER_BY_FORMULA" and message in body["message"]


def test_upsert_with_two_matching_records_is_rejected(fake: AirtableFake) -> None:
    """An upsert whose merge value matches more than one record fails and changes nothing."""
    table = api_for(fake).table(BASE, TABLE)
    table.batch_create([{"Fingerprint": "dup", "Occurrences": 1}, {"Fingerprint": "dup", "Occurrences": 2}])
    with pytest.raises(requests.exceptions.HTTPError) as err:
        table.batch_upsert([{"fields": {"Fingerprint": "dup", "Occurrences": 9}}], key_fields=["Fingerprint"])
    assert err.value.response.status_code == 422
    assert sorted(r["fields"]["Occurrences"] for r in fake.records(TABLE)) == [1, 2]


def test_meta_schema_lists_fields_and_creates_tables_and_fields(
    fake: AirtableFake, clock: ManualClock
) -> None:
    """The meta API lists fields with types and options, and creates tables and fields."""
    api = api_for(fake)
    schema = api.base(BASE).schema()
    table = schema.table(TABLE)
    assert [f.name for f in table.fields][:2] == ["Pattern Matched", "Fingerprint"]
    assert table.field("Occurrences").type == "number"
    assert [c.name for c in table.field("Severity").options.choices] == ["CRITICAL", "ERROR", "WARNING"]
    clock.advance(1)
    created = api.table(BASE, TABLE).create_field("Stream", "number", options={"precision": 0})
    assert created.type == "number" and fake.schema(TABLE)["Stream"]["options"] == {"precision": 0}
    missing_options = raw(
        fake,
        "POST",
        f"/v0/meta/bases/{BASE}/tables/{TABLE}/fields",
        json={"name": "Seen", "type": "dateTime"},
    )
    assert missing_options.status_code == 422
    new = raw(
        fake,
        "POST",
        f"/v0/meta/bases/{BASE}/tables",
        json={"name": "Other", "fields": [{"name": "Name", "type": "singleLineText"}]},
    )
    assert new.status_code == 200 and new.json()["primaryFieldId"] == new.json()["fields"][0]["id"]
    clock.advance(1)
    assert [t.name for t in api.base(BASE).schema(force=True).tables] == [TABLE, "Other"]


def test_auth_and_missing_models(fake: AirtableFake) -> None:
    """A wrong token is 401; an unknown base or table is 403; an unknown record is 404."""
    resp = requests.get(f"{fake.url}/v0/{BASE}/{TABLE}", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "AUTHENTICATION_REQUIRED"
    assert (
        raw(fake, "GET", "/v0/appNOPE/Issues").json()["error"]["type"]
        == "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND"
    )
    assert raw(fake, "GET", f"/v0/{BASE}/Nope").status_code == 403
    assert raw(fake, "GET", f"/v0/{BASE}/{TABLE}/recAAAAAAAAAAAAAA").status_code == 404


def test_outage_fail_next_and_recover(fake: AirtableFake, clock: ManualClock) -> None:
    """Injected outages and failures answer as asked; recover() restores service; the log sees it all."""
    table = api_for(fake).table(BASE, TABLE)
    fake.outage(status=503)
    with pytest.raises(requests.exceptions.HTTPError) as err:
        table.all()
    assert err.value.response.status_code == 503
    fake.outage(drop_connection=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        table.all()
    fake.recover()
    fake.fail_next(1, 500, "SERVER_ERROR")
    with pytest.raises(requests.exceptions.HTTPError) as err:
        table.create({"Fingerprint": "z"})
    assert err.value.response.json()["error"]["type"] == "SERVER_ERROR"
    clock.advance(1)
    table.create({"Fingerprint": "z"})
    log = fake.requests
    assert [(r.method, r.status) for r in log] == [("GET", 503), ("GET", 503), ("POST", 500), ("POST", 200)]
    assert log[-1].path == f"/v0/{BASE}/{TABLE}"
    assert log[-1].body == {"fields": {"Fingerprint": "z"}, "typecast": False, "returnFieldsByFieldId": False}
