"""The pipeline: routing per run, continuation lines, context, stack traces, dedup and flushing."""

from __future__ import annotations

import pytest

from stream_triage.config import Config, RunTypeRule
from stream_triage.pipeline.triage import RUN_INCOMPLETE
from stream_triage.records import EndReason, RawRecord, Severity
from tests.helpers import T0, feed, issues_of, make_triage, replay

RUN = "251103-081522"
RUN2 = "251103-090000"
DONE = f"[{RUN}] [SYSTEM] [smart_resume] [INFO] SMART RESUME PROCESSING COMPLETED"


def info(text: str, run: str = RUN, client: str = "Ann-Lee", op: str = "smart_resume") -> str:
    return f"[{run}] [{client}] [{op}] [INFO] {text}"


def error(text: str, run: str = RUN, client: str = "Ann-Lee", op: str = "smart_resume") -> str:
    return f"[{run}] [{client}] [{op}] [ERROR] {text}"


NODE_TRACE = [
    "    at Object.get (/opt/render/project/src/node_modules/airtable/lib/record.js:48:11)",
    "    at async updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)",
    "    at async processClient (/opt/render/project/src/routes/smartResume.js:88:9)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
]


# ------------------------------------------------------------------------------------------ routing
def test_client_suffixed_run_ids_are_one_run() -> None:
    """`[RUN]` and `[RUN-Client]` lines are one run keyed by the base id."""
    flushes = replay(
        [
            info("Starting smart resume"),
            f"[{RUN}-Ann-Lee] [Ann-Lee] [smart_resume] [ERROR] Failed to fetch leads page 2",
            f"[{RUN}-Bo-Chen] [Bo-Chen] [smart_resume] [INFO] 12 leads processed",
            DONE,
        ]
    )
    assert [f.run.run_id for f in flushes] == [RUN, RUN]  # marker, then the final flush at EOF
    marker = flushes[0]
    assert marker.reason is EndReason.MARKER
    assert marker.run.lines == 4
    assert marker.run.client_ids == ["Ann-Lee", "Bo-Chen"]
    [issue] = marker.issues
    assert issue.run_id == RUN
    assert issue.client_id == "Ann-Lee"
    assert issue.positions == [2]


def test_eviction_flushes_the_least_recently_active_run() -> None:
    """With max_open_runs reached, a new run evicts the oldest one, issues intact."""
    config = Config()
    config.route.max_open_runs = 2
    triage = make_triage(config)
    flushes = feed(
        triage,
        [
            error("Failed to fetch leads", run="251103-080000"),
            info("working", run="251103-080100"),
            info("still working", run="251103-080000"),  # 080000 is now the most recent
            info("starting", run="251103-080200"),  # evicts 080100
        ],
    )
    assert [(f.run.run_id, f.reason) for f in flushes] == [("251103-080100", EndReason.EVICTED)]
    assert flushes[0].run.ended is EndReason.EVICTED
    assert triage.open_runs == 2
    rest = triage.flush_all(EndReason.EOF)
    [issue] = issues_of(rest)
    assert issue.run_id == "251103-080000"


def test_ring_keeps_only_context_before_lines() -> None:
    """The per-run ring is bounded by context_before."""
    config = Config()
    config.route.context_before = 3
    config.route.context_after = 0
    lines = [info(f"page {n} fetched") for n in range(1, 11)] + [error("Failed to fetch page 11")]
    [issue] = issues_of(replay(lines, config))
    assert issue.context == [
        f"   [{RUN}] [Ann-Lee] [smart_resume] [INFO] page 8 fetched",
        f"   [{RUN}] [Ann-Lee] [smart_resume] [INFO] page 9 fetched",
        f"   [{RUN}] [Ann-Lee] [smart_resume] [INFO] page 10 fetched",
        f">> [{RUN}] [Ann-Lee] [smart_resume] [ERROR] Failed to fetch page 11",
    ]


def test_continuation_lines_follow_the_preceding_line_of_the_same_source() -> None:
    """Interleaved sources: each source's frames join its own event, not the other source's."""
    flushes = replay(
        [
            ("web-1", error("TypeError: Cannot read properties of undefined (reading 'fields')")),
            ("web-2", error("ReferenceError: scoreLead is not defined", run=RUN2, client="Bo-Chen", op="scoring")),
            ("web-1", NODE_TRACE[0]),
            ("web-2", "    at runBatch (/opt/render/project/src/services/batchScorer.js:51:3)"),
            ("web-1", NODE_TRACE[1]),
            ("web-2", "    at async main (/opt/render/project/src/jobs/score.js:10:1)"),
            ("web-1", NODE_TRACE[2]),
        ]
    )
    by_run = {i.run_id: i for i in issues_of(flushes)}
    assert set(by_run) == {RUN, RUN2}
    a, b = by_run[RUN], by_run[RUN2]
    assert a.stack_trace.splitlines() == NODE_TRACE[:3]
    assert a.service == "updateClientRun (services/clientRunService.js)"
    assert b.stack_trace.splitlines() == [
        "    at runBatch (/opt/render/project/src/services/batchScorer.js:51:3)",
        "    at async main (/opt/render/project/src/jobs/score.js:10:1)",
    ]
    assert b.service == "runBatch (services/batchScorer.js)"
    # continuation lines are lines of their run, not occurrences and not system lines
    assert a.positions == [1] and b.positions == [2]
    assert all(i.run_id is not None for i in issues_of(flushes))


def test_python_traceback_is_one_event() -> None:
    """Traceback, File lines and the final exception line belong to the preceding tagged line."""
    lines = [
        error("Scoring worker crashed", op="post_scoring"),
        "Traceback (most recent call last):",
        '  File "/app/worker/main.py", line 41, in run',
        "    score_batch(batch)",
        '  File "/app/worker/scoring.py", line 118, in score_batch',
        "    raise ValueError(f'bad score {s}')",
        "ValueError: bad score 11",
    ]
    flushes = replay(lines)
    [issue] = issues_of(flushes)
    assert issue.run_id == RUN
    assert issue.service == "score_batch (worker/scoring.py)"
    assert issue.stack_trace.splitlines()[0] == "Traceback (most recent call last):"
    assert issue.stack_trace.splitlines()[-1] == "ValueError: bad score 11"
    assert flushes[-1].run.lines == 7


def test_python_traceback_keeps_its_source_lines() -> None:
    """The extracted Python trace is whole: each File line keeps the source line under it."""
    lines = [
        error("Scoring worker crashed", op="post_scoring"),
        "Traceback (most recent call last):",
        '  File "/app/worker/scoring.py", line 118, in score_batch',
        "    raise ValueError(f'bad score {s}')",
        "ValueError: bad score 11",
    ]
    [issue] = issues_of(replay(lines))
    assert issue.stack_trace.splitlines() == lines[1:]


def test_java_trace_with_cause_is_one_event() -> None:
    """Tab-indented `at` frames and `Caused by:` continue the tagged line."""
    trace = [
        "\tat java.base/java.util.HashMap.get(HashMap.java:556)",
        "\tat com.acme.leads.ScoreService.score(ScoreService.java:77)",
        "Caused by: java.io.IOException: stream closed",
        "\t... 12 more",
    ]
    [issue] = issues_of(replay([error("java.lang.IllegalStateException: scorer failed", op="scorer"), *trace]))
    assert issue.stack_trace.splitlines() == trace
    assert issue.service == "com.acme.leads.ScoreService.score (ScoreService.java)"


def test_indented_json_continues_and_is_context_not_trace() -> None:
    """A JSON body dumped over several lines joins its event; it is context, not stack trace."""
    body = ["{", '  "error": "INVALID_VALUE_FOR_COLUMN",', '  "message": "Field Score cannot accept 12.5"', "}"]
    flushes = replay([error("Airtable rejected update:") + " " + body[0], *body[1:]])
    [issue] = issues_of(flushes)
    assert issue.stack_trace == ""
    assert [c[3:] for c in issue.context[1:]] == body[1:]
    assert flushes[-1].run.lines == 4


def test_untagged_fatal_line_is_a_critical_system_issue() -> None:
    """An untagged non-continuation line goes to the source's system bucket and is analysed."""
    flushes = replay(
        [
            info("Scoring 50 leads"),
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            " 1: 0xb7a940 node::Abort() [node]",
        ]
    )
    [issue] = [i for i in issues_of(flushes) if i.severity is Severity.CRITICAL]
    assert issue.run_id is None
    assert issue.pattern_id == "node-fatal-error"
    assert set(issue.pattern_ids) == {"node-fatal-error", "out-of-memory"}
    assert issue.run_type is None
    assert issue.positions == [2]
    # the system bucket keeps the FATAL line's own context, not the run's
    assert issue.context[0] == ">> FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"


def test_system_tagged_lines_go_to_the_system_bucket() -> None:
    """`[SYSTEM] [SYSTEM]` lines are analysed without a run."""
    [issue] = issues_of(replay(["[SYSTEM] [SYSTEM] [client-service] [ERROR] Failed to load clients from Airtable"]))
    assert issue.run_id is None
    assert issue.operation == "client-service"
    assert issue.pattern_id == "failed-operation"


@pytest.mark.parametrize(
    ("line", "run_type"),
    [
        (info("Starting SMART RESUME for 3 clients"), "smart-resume"),
        (info("Batch scoring 50 leads", op="lead_scoring"), "batch-score"),
        (info("Received Apify webhook for actor run", op="webhook"), "apify-webhook"),
        (info("POST /api/score-lead received", op="http"), "api-endpoint"),
        (info("Scheduled job nightly-sync started", op="scheduler"), "scheduled-job"),
        (info("Doing something else", op="misc"), "other"),
    ],
)
def test_run_type_from_rules(line: str, run_type: str) -> None:
    """Run Type comes from the configured rules; no rule → other."""
    flushes = replay([line, error("Failed to fetch leads", op="misc")])
    assert flushes[-1].run.run_type == run_type
    assert issues_of(flushes)[0].run_type == run_type


@pytest.mark.parametrize(
    "text", ["Starting smart resume stream 2", "config stream=2 clients=3", "GET /smart-resume?stream=2&limit=50"]
)
def test_stream_from_rules(text: str) -> None:
    """`stream 2`, `stream=2` and `?stream=2` all give Stream 2."""
    flushes = replay([info(text), error("Failed to fetch leads")])
    assert flushes[-1].run.stream == 2
    assert issues_of(flushes)[0].stream == 2


def test_run_metadata_rules_are_configurable() -> None:
    """Custom run type rules and stream regex replace the defaults."""
    config = Config()
    config.run_metadata.run_types = [RunTypeRule("enrichment", r"(?i)enrich")]
    config.run_metadata.stream_regex = r"lane#(\d+)"
    flushes = replay([info("Enriching profiles on lane#7"), error("Failed to fetch leads")], config)
    assert (flushes[-1].run.run_type, flushes[-1].run.stream) == ("enrichment", 7)


def test_custom_line_regex_drives_routing() -> None:
    """A custom parse.line_regex groups lines into runs and feeds the level patterns."""
    config = Config()
    config.parse.line_regex = (
        r"^(?P<level>[A-Z]+) run=(?P<run>\d{6}-\d{6})(?:-(?P<suffix>\S+))? op=(?P<operation>\S+) (?P<message>.*)$"
    )
    flushes = replay(
        [f"INFO run={RUN} op=sync Starting", f"ERROR run={RUN}-Bo-Chen op=sync Lead sync broke", "INFO x"], config
    )
    [issue] = issues_of(flushes)
    assert (issue.run_id, issue.client_id, issue.pattern_id) == (RUN, "Bo-Chen", "level-error")


# ------------------------------------------------------------------------------------------ context
def test_default_context_is_25_before_and_25_after() -> None:
    """By default an issue carries 25 lines before, the line marked `>> `, and 25 after."""
    lines = [info(f"before {n}") for n in range(40)] + [error("Failed to fetch leads")]
    lines += [info(f"after {n}") for n in range(40)]
    [issue] = issues_of(replay(lines))
    assert len(issue.context) == 51
    assert issue.context[0] == f"   {info('before 15')}"
    assert issue.context[25] == f">> {error('Failed to fetch leads')}"
    assert issue.context[-1] == f"   {info('after 24')}"
    assert sum(c.startswith(">> ") for c in issue.context) == 1


def test_context_size_and_line_length_are_configurable() -> None:
    """context_before/after and context_line_chars bound the context."""
    config = Config()
    config.route.context_before = 1
    config.route.context_after = 2
    config.route.context_line_chars = 40
    long = "x" * 100
    lines = [info("one"), info("two"), error(f"Failed to fetch {long}"), info("three"), info("four"), info("five")]
    [issue] = issues_of(replay(lines, config))
    assert [c[:3] for c in issue.context] == ["   ", ">> ", "   ", "   "]
    assert issue.context[1] == ">> " + error(f"Failed to fetch {long}")[:40] + "…"
    assert issue.context[2] == "   " + info("three")[:40] + ("…" if len(info("three")) > 40 else "")
    assert issue.message.endswith(long)  # the message itself is not truncated


def test_context_holds_only_lines_of_the_same_run() -> None:
    """Lines of another run interleaved in time never show up in an issue's context."""
    lines = []
    for n in range(5):
        lines.append(info(f"A {n}"))
        lines.append(info(f"B {n}", run=RUN2, client="Bo-Chen"))
    lines.append(error("Failed to fetch leads"))
    lines += [info("B after", run=RUN2, client="Bo-Chen"), info("A after")]
    [issue] = issues_of(replay(lines))
    assert all("] [Ann-Lee] [" in c for c in issue.context)
    assert issue.context[-1] == "   " + info("A after")


def test_repeated_defect_keeps_first_context_and_counts() -> None:
    """The same defect three times in a run: one issue, 3 occurrences, every position."""
    lines = [error(f"Failed to update record rec{n:014d}") if n % 2 else info(f"lead {n}") for n in range(1, 7)]
    [issue] = issues_of(replay(lines))
    assert issue.occurrences == 3
    assert issue.positions == [1, 3, 5]
    assert issue.message == "Failed to update record rec00000000000001"


# ------------------------------------------------------------------------------------------ dedup
def test_same_defect_with_different_ids_and_clients_in_two_runs_has_one_fingerprint() -> None:
    """Ids, client names and run ids do not split a defect across runs."""
    flushes = replay(
        [
            error(f"Failed to update client run {RUN}-Ann-Lee: record recAbCdEfGhIjKlMn not found for Ann Lee"),
            error(
                f"Failed to update client run {RUN2}-Bo-Chen: record recZyXwVuTsRqPoNm not found for Bo Chen",
                run=RUN2,
                client="Bo-Chen",
            ),
        ]
    )
    issues = issues_of(flushes)
    assert {i.run_id for i in issues} == {RUN, RUN2}
    assert len({i.fingerprint for i in issues}) == 1


def test_defect_caught_by_two_patterns_is_one_issue() -> None:
    """The same defect logged at WARN and at ERROR matches different patterns yet is one issue; worst wins."""
    flushes = replay(
        [
            f"[{RUN}] [Ann-Lee] [airtable] [WARN] Airtable rate limit hit for base appQwErTyUiOpAsDf",
            f"[{RUN}] [Ann-Lee] [airtable] [ERROR] Airtable rate limit hit for base appZyXwVuTsRqPoNm",
        ]
    )
    [issue] = issues_of(flushes)
    assert issue.occurrences == 2
    assert issue.positions == [1, 2]
    assert issue.severity is Severity.ERROR
    assert issue.pattern_id == "level-error"
    assert issue.pattern_ids == ["rate-limited", "level-warn", "level-error"]


def test_same_message_at_different_top_frames_is_two_issues() -> None:
    """The top in-app frame separates two defects with the same text."""
    message = "TypeError: Cannot read properties of undefined (reading 'fields')"
    flushes = replay(
        [
            error(message),
            "    at scoreLead (/opt/render/project/src/services/scoring.js:10:5)",
            error(message),
            "    at syncLead (/opt/render/project/src/services/sync.js:99:5)",
        ]
    )
    assert sorted(i.service for i in issues_of(flushes)) == [
        "scoreLead (services/scoring.js)",
        "syncLead (services/sync.js)",
    ]


def test_secrets_are_redacted_in_message_context_and_trace() -> None:
    """What leaves the pipeline carries no secret."""
    secret = "patAbCdEfGhIjKlMn.0123456789abcdef0123456789abcdef"
    [issue] = issues_of(replay([error(f"Failed to fetch base with Authorization: Bearer {secret}")]))
    assert secret not in issue.message
    assert all(secret not in c for c in issue.context)


# ------------------------------------------------------------------------------------------ flushing
@pytest.mark.parametrize(
    "marker",
    [
        info("SMART RESUME PROCESSING COMPLETED"),
        info("✅ ALL CLIENTS UP TO DATE"),
        info("Job status updated to COMPLETED", op="job-tracking"),
    ],
)
def test_completion_marker_flushes_the_run(marker: str) -> None:
    """Each default completion marker flushes the run with reason marker."""
    triage = make_triage()
    flushes = feed(triage, [info("start"), error("Failed to fetch leads"), marker])
    [flush] = flushes
    assert flush.reason is EndReason.MARKER
    assert flush.run.ended is EndReason.MARKER
    assert flush.run.marker_seen
    assert [i.pattern_id for i in flush.issues] == ["failed-operation"]
    assert flush.run.issues_by_severity == {"ERROR": 1}


def test_late_lines_after_the_marker_are_flushed_after_the_grace_window() -> None:
    """Lines after the marker stay with the run and flush as `late` once 10 min are quiet."""
    triage = make_triage()
    first = feed(triage, [info("start"), error("Failed to fetch leads"), DONE, error("Failed to update run record")])
    assert [f.reason for f in first] == [EndReason.MARKER]
    assert triage.tick(T0 + 3 + 599) == []  # 599 s after the late line: still within the grace window
    late = triage.tick(T0 + 3 + 600)
    [flush] = late
    assert flush.reason is EndReason.LATE
    assert flush.run.final
    assert flush.run.ended is EndReason.MARKER
    assert [i.message for i in flush.issues] == ["Failed to update run record"]
    assert flush.issues[0].positions == [4]
    assert triage.open_runs == 0
    assert triage.flush_all(EndReason.EOF) == []


def test_silent_run_without_marker_becomes_run_incomplete() -> None:
    """30 min of silence without a marker: a CRITICAL run-incomplete issue, run ended idle."""
    triage = make_triage()
    feed(triage, [info("Starting smart resume stream 1"), info("Processing client Ann-Lee")])
    assert triage.tick(T0 + 1 + 1799) == []
    [flush] = triage.tick(T0 + 1 + 1800)
    assert flush.reason is EndReason.IDLE
    assert flush.run.ended is EndReason.IDLE
    [issue] = flush.issues
    assert issue.pattern_id == RUN_INCOMPLETE
    assert issue.severity is Severity.CRITICAL
    assert issue.run_id == RUN
    assert issue.run_type == "smart-resume"
    assert issue.stream == 1
    assert RUN in issue.message
    assert issue.context[-1] == ">> " + info("Processing client Ann-Lee")
    assert flush.run.issues_by_severity == {"CRITICAL": 1}


def test_run_incomplete_has_one_fingerprint_per_run_type() -> None:
    """Two crashed runs of the same type are one run-incomplete issue."""
    triage = make_triage()
    feed(triage, [info("smart resume A"), info("smart resume B", run=RUN2)])
    issues = issues_of(triage.tick(T0 + 4000))
    assert [i.pattern_id for i in issues] == [RUN_INCOMPLETE, RUN_INCOMPLETE]
    assert len({i.fingerprint for i in issues}) == 1


def test_eof_flushes_open_runs_without_run_incomplete() -> None:
    """At EOF an unfinished run flushes as eof; it did not have time to be idle."""
    flushes = replay([info("start"), error("Failed to fetch leads")])
    [flush] = flushes
    assert flush.reason is EndReason.EOF
    assert flush.run.ended is EndReason.EOF
    assert [i.pattern_id for i in flush.issues] == ["failed-operation"]


def test_eof_after_idle_in_log_time_reports_run_incomplete() -> None:
    """A run silent for 30 min of log time before the input ended is idle, with run-incomplete."""
    triage = make_triage()
    flushes = feed(triage, [info("smart resume start")])
    flushes += feed(triage, [info("another run", run=RUN2)], start=T0 + 2000)
    flushes += triage.flush_all(EndReason.EOF)
    ended = {f.run.run_id: f.run.ended for f in flushes}
    assert ended == {RUN: EndReason.IDLE, RUN2: EndReason.EOF}
    assert [i.run_id for i in issues_of(flushes) if i.pattern_id == RUN_INCOMPLETE] == [RUN]


def test_flush_all_shutdown_flushes_everything() -> None:
    """Shutdown flushes open runs, late runs and system buckets, including unfinished events."""
    triage = make_triage()
    feed(
        triage,
        [
            error("Failed to fetch leads"),
            DONE,
            error("Late failure to update run", op="job-tracking"),
            error("Failed to score", run=RUN2),
            ("other", "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"),
        ],
    )
    flushes = triage.flush_all(EndReason.SHUTDOWN)
    assert {(f.run.run_id, f.reason) for f in flushes} == {
        (RUN, EndReason.SHUTDOWN),
        (RUN2, EndReason.SHUTDOWN),
        (None, EndReason.SHUTDOWN),
    }
    assert {i.run_id for i in issues_of(flushes)} == {RUN, RUN2, None}
    assert triage.open_runs == 0


def test_timeouts_follow_passed_in_time_not_the_wall_clock() -> None:
    """Nothing flushes while time stands still, however long the test takes."""
    triage = make_triage()
    feed(triage, [info("start")], start=1000.0)
    assert triage.tick(1000.0) == []
    assert triage.tick(1000.0 + 1800)[0].reason is EndReason.IDLE


def test_max_issues_per_run_flushes_a_partial_batch() -> None:
    """Too many distinct issues in one run: a partial flush; the run stays open, nothing is lost."""
    config = Config()
    config.route.max_issues_per_run = 2
    triage = make_triage(config)
    lines = [error(f"Failed to fetch {word}") for word in ("leads", "posts", "clients", "runs")]
    partial = feed(triage, [*lines, info("next")])
    assert [f.reason for f in partial] == [EndReason.PARTIAL]
    assert not partial[0].run.final and partial[0].run.ended is None
    assert triage.open_runs == 1
    rest = triage.flush_all(EndReason.EOF)
    assert sorted(i.message for i in issues_of(partial + rest)) == sorted(lines_msg(lines))


def lines_msg(lines: list[str]) -> list[str]:
    return [line.split("] ", 4)[-1] for line in lines]


def test_system_bucket_flushes_periodically() -> None:
    """System issues are flushed on the configured interval, not held forever."""
    triage = make_triage()
    feed(
        triage, ["[SYSTEM] [SYSTEM] [client-service] [ERROR] Failed to load clients", "[SYSTEM] [SYSTEM] [x] [INFO] ok"]
    )
    [flush] = triage.tick(T0 + 61)
    assert flush.reason is EndReason.PERIODIC
    assert flush.run.run_id is None
    assert [i.pattern_id for i in flush.issues] == ["failed-operation"]


def test_process_uses_line_time_when_now_is_not_given() -> None:
    """Replay drives the clock from log time: a gap in the log closes idle runs."""
    triage = make_triage()
    out = triage.process(RawRecord(info("start"), "app", T0, 1))
    out += triage.process(RawRecord(info("other", run=RUN2), "app", T0 + 1801, 2))
    assert [(f.run.run_id, f.reason) for f in out] == [(RUN, EndReason.IDLE)]


def test_line_after_the_grace_window_is_late_not_a_new_incomplete_run() -> None:
    """A completed run's line arriving after its late flush reopens it as completed: late, no run-incomplete."""
    triage = make_triage()
    out = feed(triage, [error("Failed to fetch leads"), DONE])
    out += triage.tick(T0 + 1 + 700)
    out += feed(triage, [error("Failed to archive run record", op="job-tracking")], start=T0 + 800)
    out += triage.tick(T0 + 800 + 1800)
    assert [(f.reason, f.run.ended) for f in out] == [
        (EndReason.MARKER, EndReason.MARKER),
        (EndReason.LATE, EndReason.MARKER),
        (EndReason.LATE, EndReason.MARKER),
    ]
    assert [i.pattern_id for i in issues_of(out)] == ["failed-operation", "level-error"]
    assert RUN_INCOMPLETE not in {i.pattern_id for i in issues_of(out)}


def test_marker_from_one_source_flushes_the_run_s_open_events_from_others() -> None:
    """An error logged by one instance is flushed when another instance logs the run's marker."""
    triage = make_triage()
    t = 1_762_157_722.0
    out = triage.process(
        RawRecord(
            "[251103-081522] [Ann-Lee] [lead_scoring] [ERROR] Chunk processing error: leads.map is not a function",
            "srv-a/web/1",
            t,
            1,
        )
    )
    out += triage.process(
        RawRecord(
            "[251103-081522] [SYSTEM] [smart_resume] [INFO] SMART RESUME PROCESSING COMPLETED", "srv-a/web/2", t + 1, 2
        )
    )
    (flush,) = [f for f in out if f.run.run_id == "251103-081522"]
    assert flush.reason.value == "marker"
    assert [(i.pattern_id, i.positions) for i in flush.issues] == [("js-type-error", [1])]
