#!/usr/bin/env python3
"""Deterministic generator of the labelled evaluation corpus (``corpus.jsonl``).

Run from anywhere: ``python tests/data/corpus/generate.py [--out PATH]``. The output is one JSON
object per log line, in time order::

    {"line": "...", "timestamp": "2025-11-03T08:15:22.429Z", "severity": "ERROR"|...|null,
     "group": "slug"|null}

The labelling rules are in README.md next to this file; ``--table`` prints the README's group table.
Everything comes from one seeded ``random.Random``, so the output is byte-identical on every run.
Never iterate a set here: string hashing is randomised per process.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SEED = 20251103
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "corpus.jsonl"

NS = 1_000_000_000
MS = 1_000_000
T0 = int(datetime(2025, 11, 3, 6, 0, tzinfo=UTC).timestamp()) * NS
# Lines before this instant come from a Render API export, which prefixes each line with its ISO
# timestamp; later lines come from the syslog drain, where the time is only in the envelope.
PREFIX_UNTIL = T0 + 9 * 3600 * NS

HOST = "pb-webhook-server.onrender.com"
REPO = "https://github.com/acme-growth/pb-webhook-server"
CLIENTS = [
    "Ann-Lee",
    "Guy-Wilson",
    "Dean-Hobin",
    "Maria-Santos",
    "Tom-Baker",
    "Priya-Nair",
    "Lucas-Meyer",
    "Sofia-Rossi",
    "Omar-Haddad",
    "Emma-Clarke",
    "Kenji-Sato",
    "Lena-Fischer",
]
USER_AGENTS = [
    "curl/8.5.0",
    "Render/1.0",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Apify-Webhooks/2.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0",
    "cron-job.org/1.2",
]
# Placeholders filled in once final timestamps are known (Java and npm print their own times).
JTS = "\x00JTS\x00"
NPMTS = "\x00NPMTS\x00"

Label = tuple[str, str | None, str | None]  # (line, severity, group)


# --------------------------------------------------------------------------------------------
# Stack traces: one fixed set of frames per code location, so one defect always has the same frames.

NODE_RUNID = [
    "    at scorePostsForLead (/opt/render/project/src/services/postScoring.js:212:17)",
    "    at Array.map (<anonymous>)",
    "    at processPostBatch (/opt/render/project/src/services/postScoring.js:187:31)",
    "    at async runPostScoring (/opt/render/project/src/services/postScoring.js:96:5)",
    "    at async /opt/render/project/src/routes/apiRoutes.js:341:9",
]
NODE_LEADS_MAP = [
    "    at scoreLeadBatch (/opt/render/project/src/services/leadScoring.js:158:29)",
    "    at async processClient (/opt/render/project/src/batchScorer.js:244:24)",
    "    at async Promise.all (index 2)",
    "    at async runBatchScore (/opt/render/project/src/batchScorer.js:97:7)",
]
NODE_FIELDS = [
    "    at mapRecordToLead (/opt/render/project/src/services/airtableSync.js:73:34)",
    "    at Array.map (<anonymous>)",
    "    at syncLeads (/opt/render/project/src/services/airtableSync.js:121:28)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
    "    at async syncClient (/opt/render/project/src/services/airtableSync.js:52:5)",
]
NODE_NULL_SCORE = [
    "    at /opt/render/project/src/services/postScoring.js:264:41",
    "    at Array.sort (<anonymous>)",
    "    at rankPosts (/opt/render/project/src/services/postScoring.js:262:16)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
]
NODE_HANGUP = [
    "    at connResetException (node:internal/errors:787:14)",
    "    at TLSSocket.socketOnEnd (node:_http_client:519:23)",
    "    at TLSSocket.emit (node:events:530:35)",
    "    at endReadableNT (node:internal/streams/readable:1698:12)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:90:21)",
]
NODE_CONNECT = ["    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1607:16)"]
NODE_AXIOS = [
    "    at settle (/opt/render/project/src/node_modules/axios/dist/node/axios.cjs:2031:12)",
    "    at IncomingMessage.handleStreamEnd "
    "(/opt/render/project/src/node_modules/axios/dist/node/axios.cjs:3148:11)",
    "    at IncomingMessage.emit (node:events:530:35)",
    "    at endReadableNT (node:internal/streams/readable:1698:12)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:90:21)",
    "    at async Axios.request (/opt/render/project/src/node_modules/axios/dist/node/axios.cjs:4258:14)",
    "    at async fetchDatasetItems (/opt/render/project/src/services/apifyClient.js:88:22)",
]
NODE_TDZ_CONFIG = [
    "    at loadClients (/opt/render/project/src/services/clientService.js:14:22)",
    "    at refreshClientCache (/opt/render/project/src/services/clientService.js:201:11)",
    "    at Timeout._onTimeout (/opt/render/project/src/services/clientService.js:233:5)",
    "    at listOnTimeout (node:internal/timers:581:17)",
    "    at process.processTimers (node:internal/timers:519:7)",
]
NODE_TDZ_RUNRECORD = [
    "    at resumeClient (/opt/render/project/src/routes/smartResume.js:88:19)",
    "    at async runSmartResume (/opt/render/project/src/routes/smartResume.js:151:7)",
]
NODE_MISSING_MODULE = [
    "Require stack:",
    "- /opt/render/project/src/index.js",
    "    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)",
    "    at Module._load (node:internal/modules/cjs/loader:1051:27)",
    "    at Module.require (node:internal/modules/cjs/loader:1311:19)",
    "    at require (node:internal/modules/helpers:179:18)",
    "    at Object.<anonymous> (/opt/render/project/src/services/vertexClient.js:3:25)",
    "    at node:internal/main/run_main_module:28:49 {",
    "  code: 'MODULE_NOT_FOUND',",
    "  requireStack: [ '/opt/render/project/src/index.js' ]",
    "}",
]
NODE_OOM_NATIVE = [
    "----- Native stack trace -----",
    " 1: 0xb7a940 node::OOMErrorHandler(char const*, v8::OOMDetails const&) [node]",
    " 2: 0xf0bf10 v8::Utils::ReportOOMFailure(v8::internal::Isolate*, char const*, "
    "v8::OOMDetails const&) [node]",
    " 3: 0xf0c1f7 v8::internal::V8::FatalProcessOutOfMemory(v8::internal::Isolate*, char const*, "
    "v8::OOMDetails const&) [node]",
    " 4: 0x111d7c5  [node]",
    " 5: 0x1135648 v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace, "
    "v8::internal::GarbageCollectionReason, v8::GCCallbackFlags) [node]",
    " 6: 0x110b761 v8::internal::HeapAllocator::AllocateRawWithLightRetrySlowPath(int, "
    "v8::internal::AllocationType, v8::internal::AllocationOrigin, v8::internal::AllocationAlignment) [node]",
]
PY_VALUEERROR = [
    "Traceback (most recent call last):",
    '  File "/app/worker.py", line 88, in run',
    "    result = self.process(job)",
    "             ^^^^^^^^^^^^^^^^^",
    '  File "/app/worker.py", line 131, in process',
    '    employees = parse_headcount(profile["company_size"])',
    "                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    '  File "/app/enrich/normalize.py", line 42, in parse_headcount',
    '    return int(raw.replace(",", ""))',
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^",
]
PY_DB = [
    "Traceback (most recent call last):",
    '  File "/app/enrich/db.py", line 27, in connect',
    "    return psycopg2.connect(self.dsn, connect_timeout=10)",
    '  File "/usr/local/lib/python3.11/site-packages/psycopg2/__init__.py", line 122, in connect',
    "    conn = _connect(dsn, connection_factory=connection_factory, **kwasync)",
    'psycopg2.OperationalError: connection to server at "10.0.2.5", port 5432 failed: Connection refused',
    "\tIs the server running on that host and accepting TCP/IP connections?",
]
JAVA_NPE = [
    "\tat com.acme.scoring.LeadMapper.normalizeCompany(LeadMapper.java:57)",
    "\tat com.acme.scoring.LeadMapper.map(LeadMapper.java:31)",
    "\tat com.acme.scoring.ScoringWorker.lambda$run$0(ScoringWorker.java:88)",
    "\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1144)",
    "\tat java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:642)",
    "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
]
JAVA_MODEL = [
    "java.lang.IllegalStateException: Scoring model not loaded",
    "\tat com.acme.scoring.model.ModelRegistry.current(ModelRegistry.java:64)",
    "\tat com.acme.scoring.web.ScoreController.score(ScoreController.java:41)",
    "\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke("
    "DirectMethodHandleAccessor.java:103)",
    "Caused by: java.io.FileNotFoundException: /models/lead-v3.bin (No such file or directory)",
    "\tat java.base/java.io.FileInputStream.open0(Native Method)",
    "\tat java.base/java.io.FileInputStream.open(FileInputStream.java:213)",
    "\tat com.acme.scoring.model.ModelRegistry.load(ModelRegistry.java:38)",
    "\t... 12 more",
]
JAVA_OOM = [
    "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3541)",
    "\tat java.base/java.util.ArrayList.grow(ArrayList.java:237)",
    "\tat com.acme.scoring.batch.BatchLoader.loadAll(BatchLoader.java:73)",
    "\tat com.acme.scoring.batch.NightlyRescore.run(NightlyRescore.java:29)",
]
NPM_CI_ERROR = [
    "npm error",
    "npm error `npm ci` can only install packages when your package.json and package-lock.json or "
    "npm-shrinkwrap.json are in sync. Please update your lock file with `npm install` before continuing.",
    "npm error",
    "npm error Missing: @google-cloud/vertexai@1.10.0 from lock file",
    "npm error Missing: p-limit@6.2.0 from lock file",
    "npm error",
    "npm error Clean install a project",
    "npm error",
    "npm error Usage:",
    "npm error npm ci",
    "npm error A complete log of this run can be found in: /opt/render/.cache/_logs/"
    + NPMTS
    + "-debug-0.log",
]
DEPRECATION_HINT = "(Use `node --trace-deprecation ...` to show where the warning was created)"


# --------------------------------------------------------------------------------------------
# Random helpers


class Gen:
    """Seeded random values in the shapes the service logs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def rec(self) -> str:
        return "rec" + "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(14))

    def hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def uuid(self) -> str:
        variant = self.rng.choice("89ab")
        return f"{self.hex(8)}-{self.hex(4)}-4{self.hex(3)}-{variant}{self.hex(3)}-{self.hex(12)}"

    def request_id(self) -> str:
        # Some request ids carry 429/500/503 digit runs, as real ones do: hard negatives.
        if self.rng.random() < 0.2:
            a, b = self.rng.choice([("5003", "429"), ("4290", "503"), ("0500", "5034"), ("a429", "5000")])
            return f"{self.hex(8)}-{a}-4{b[-3:]}-{self.rng.choice('89ab')}{self.hex(3)}-{self.hex(12)}"
        return self.uuid()

    def ip(self) -> str:
        return f"{self.rng.choice(['203.0.113', '198.51.100', '192.0.2'])}.{self.rng.randrange(2, 254)}"

    def apify_id(self) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(17))

    def count(self, lo: int, hi: int) -> int:
        # Lead counts sometimes land on 429/500/503, which the old regexes mistook for statuses.
        if self.rng.random() < 0.12:
            return self.rng.choice([429, 500, 503, 404, 502])
        return self.rng.randint(lo, hi)

    def response_bytes(self) -> int:
        if self.rng.random() < 0.12:
            return self.rng.choice([429, 500, 503, 504, 404])
        return self.rng.randint(180, 24_000)

    def choice(self, seq):  # type: ignore[no-untyped-def]
        return self.rng.choice(seq)

    def randint(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def random(self) -> float:
        return self.rng.random()

    def sub_ms(self) -> int:
        return self.rng.randrange(MS)


@dataclass
class Ctx:
    """Where a line is logged: the bracketed run id and client, the run kind and stream."""

    run: str
    client: str
    kind: str
    stream: int | None = None


SYSTEM = Ctx("SYSTEM", "SYSTEM", "system")


def tag(ctx: Ctx, op: str, level: str, msg: str) -> str:
    return f"[{ctx.run}] [{ctx.client}] [{op}] [{level}] {msg}"


def access(g: Gen, method: str, status: int, path: str, ms: int, nbytes: int | None = None) -> str:
    nbytes = g.response_bytes() if nbytes is None else nbytes
    return (
        f'[{method}]{status} {HOST}{path} clientIP="{g.ip()}" requestID="{g.request_id()}" '
        f'responseTimeMS={ms} responseBytes={nbytes} userAgent="{g.choice(USER_AGENTS)}"'
    )


# --------------------------------------------------------------------------------------------
# Problems. Each occurrence renders a head line (gold severity) plus continuation lines.

Render = Callable[[Gen, Ctx], list[str]]


@dataclass
class Problem:
    """One distinct defect: a gold group."""

    slug: str
    severity: str
    place: str  # client | run | late | system | access | build | crash | startup
    count: int  # occurrences to place (ignored for build/crash/startup, which follow the schedule)
    title: str
    render: Render
    kinds: tuple[str, ...] = ("smart", "batch", "apify")


def _p(slug: str, severity: str, place: str, count: int, title: str, kinds: tuple[str, ...] | None = None):
    def deco(fn: Render) -> Render:
        PROBLEMS.append(
            Problem(slug, severity, place, count, title, fn, kinds or ("smart", "batch", "apify"))
        )
        return fn

    return deco


PROBLEMS: list[Problem] = []
SCORING = ("smart", "batch")
APIFY = ("apify",)

# --- CRITICAL ----------------------------------------------------------------------------------


@_p("node-heap-oom", "CRITICAL", "crash", 0, "Node FATAL ERROR: JavaScript heap out of memory (run crashes)")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
        *NODE_OOM_NATIVE,
    ]


@_p("node-segfault", "CRITICAL", "crash", 0, "Segmentation fault (run crashes)")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["Segmentation fault (core dumped)"]


@_p("run-marked-crashed", "CRITICAL", "crash-followup", 0, "[WARN] stale run marked as CRASHED")
def _(g: Gen, ctx: Ctx) -> list[str]:
    mins = g.randint(30, 45)
    return [
        tag(SYSTEM, "run-record", "WARN", f"Run {ctx.run} marked as CRASHED: no heartbeat for {mins} min")
    ]


@_p(
    "uncaught-null-score",
    "CRITICAL",
    "client",
    3,
    "uncaughtException: Cannot read properties of null (reading 'score')",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = "uncaughtException: TypeError: Cannot read properties of null (reading 'score')"
    return [tag(ctx, "post_scoring", "ERROR", msg), *NODE_NULL_SCORE]


@_p("unhandled-rejection-hangup", "CRITICAL", "system", 4, "unhandledRejection: Error: socket hang up")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(SYSTEM, "process", "ERROR", "unhandledRejection: Error: socket hang up"), *NODE_HANGUP]


@_p("airtable-econnrefused", "CRITICAL", "client", 5, "connect ECONNREFUSED to the Airtable proxy")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Airtable request error: connect ECONNREFUSED 10.0.4.{g.randint(10, 40)}:443"
    return [tag(ctx, "airtable-sync", "ERROR", msg), *NODE_CONNECT]


@_p("redis-connection-refused", "CRITICAL", "system", 4, "Redis connection refused")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            SYSTEM, "queue", "ERROR", "Redis connection to 10.0.3.9:6379 failed - connect: Connection refused"
        )
    ]


@_p("py-cannot-connect-database", "CRITICAL", "system", 3, "Python enrichment: Cannot connect to database")
def _(g: Gen, ctx: Ctx) -> list[str]:
    dsn = "postgres://enrich@10.0.2.5:5432/enrich"
    head = f"CRITICAL:enrichment.db:Cannot connect to database {dsn} (attempt {g.randint(3, 5)})"
    return [head, *PY_DB]


@_p(
    "service-unavailable-queue",
    "CRITICAL",
    "system",
    3,
    "Service unavailable: scoring queue not accepting jobs",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    depth = g.randint(4800, 6200)
    return [
        tag(
            SYSTEM,
            "health",
            "ERROR",
            f"Service unavailable: scoring queue is not accepting jobs (depth {depth})",
        )
    ]


@_p("all-workers-dead", "CRITICAL", "system", 2, "All workers dead in the worker pool")
def _(g: Gen, ctx: Ctx) -> list[str]:
    n = g.choice([4, 6, 8])
    return [tag(SYSTEM, "worker-pool", "ERROR", f"All workers dead ({n}/{n} exited), restarting pool")]


@_p("java-heap-oom", "CRITICAL", "system", 2, "Java scoring sidecar: OutOfMemoryError: Java heap space")
def _(g: Gen, ctx: Ctx) -> list[str]:
    head = (
        f'Exception in thread "scoring-worker-{g.randint(1, 8)}" java.lang.OutOfMemoryError: Java heap space'
    )
    return [head, *JAVA_OOM]


# --- ERROR: Airtable ------------------------------------------------------------------------------


@_p(
    "airtable-unknown-field-stream",
    "ERROR",
    "run",
    6,
    'Unknown field name: "Stream" on the run record',
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            ctx, "run-record", "ERROR", f'Failed to update run record {g.rec()}: Unknown field name: "Stream"'
        )
    ]


@_p(
    "airtable-unknown-field-run-type",
    "ERROR",
    "system",
    5,
    'Unknown field name: "Run Type" creating an issue record',
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = 'Could not log issue to Production Issues table: Unknown field name: "Run Type"'
    return [tag(SYSTEM, "error-logger", "ERROR", msg)]


@_p(
    "airtable-invalid-value-status",
    "ERROR",
    "client",
    6,
    'INVALID_VALUE_FOR_COLUMN on "Status" (JSON body follows)',
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    value = g.choice(["Scoring", "In Progress", "scoring"])
    return [
        tag(
            ctx,
            "airtable-sync",
            "ERROR",
            f"Airtable update failed for {g.rec()} (INVALID_VALUE_FOR_COLUMN), response body: {{",
        ),
        '  "error": {',
        '    "type": "INVALID_VALUE_FOR_COLUMN",',
        f'    "message": "Field \\"Status\\" cannot accept the provided value \\"{value}\\""',
        "  }",
        "}",
    ]


@_p("airtable-invalid-request-unknown", "ERROR", "client", 4, "INVALID_REQUEST_UNKNOWN from Airtable")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = (
        "Airtable error INVALID_REQUEST_UNKNOWN: Invalid request: parameter validation failed. "
        "Check your request data."
    )
    return [tag(ctx, "airtable-sync", "ERROR", msg)]


@_p("airtable-invalid-request-body", "ERROR", "client", 3, "INVALID_REQUEST_BODY on a bulk update", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    n = g.randint(11, 60)
    msg = f"Airtable bulk update of {n} leads rejected: INVALID_REQUEST_BODY: Could not parse request body"
    return [tag(ctx, "lead_scoring", "ERROR", msg)]


@_p("airtable-record-not-found", "ERROR", "client", 12, "Record not found in Leads")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(ctx, "airtable-sync", "ERROR", f'Record not found: {g.rec()} in table "Leads"')]


@_p(
    "client-run-record-not-found", "ERROR", "late", 7, "Client run record not found (update after completion)"
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            ctx,
            "run-record",
            "ERROR",
            f"Client run record not found for {ctx.run}, cannot update token usage",
        )
    ]


# --- ERROR: operations -------------------------------------------------------------------------------


@_p("failed-create-post-record", "ERROR", "client", 8, "Failed to create post record", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Failed to create post record for lead {g.rec()}: 422 Unprocessable Entity"
    return [tag(ctx, "post_scoring", "ERROR", msg)]


@_p(
    "failed-fetch-leads-view",
    "ERROR",
    "client",
    5,
    'Failed to fetch leads: view "To Be Scored" missing',
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f'Failed to fetch leads for {ctx.client}: Could not find view "To Be Scored" in table "Leads"'
    return [tag(ctx, "lead_scoring", "ERROR", msg)]


@_p("failed-delete-apify-webhook", "ERROR", "client", 3, "Failed to delete Apify webhook", APIFY)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(ctx, "apify_webhook", "ERROR", f"Failed to delete Apify webhook {g.apify_id()}: 404 Not Found")
    ]


@_p(
    "lead-scoring-failed-missing-score",
    "ERROR",
    "client",
    14,
    'Scoring failed: AI response missing "score"',
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            ctx,
            "lead_scoring",
            "ERROR",
            f'Scoring failed for lead {g.rec()}: AI response missing "score" field',
        )
    ]


@_p("batch-failed", "ERROR", "client", 6, "Batch N failed: M of K leads failed", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    k = g.choice([20, 25, 40, 50])
    return [
        tag(
            ctx,
            "lead_scoring",
            "ERROR",
            f"Batch {g.randint(1, 9)} failed: {g.randint(3, k)} of {k} leads failed",
        )
    ]


@_p(
    "apify-dataset-503",
    "ERROR",
    "client",
    6,
    "Apify dataset fetch: Request failed with status code 503",
    APIFY,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = "Apify dataset fetch error: AxiosError: Request failed with status code 503"
    return [tag(ctx, "apify_webhook", "ERROR", msg), *NODE_AXIOS]


@_p("gemini-500", "ERROR", "client", 7, "Gemini API returned 500", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Gemini API returned 500: Internal error encountered. (lead {g.rec()})"
    return [tag(ctx, "lead_scoring", "ERROR", msg)]


@_p("profile-lookup-404", "ERROR", "client", 4, "Profile lookup failed: HTTP 404", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    slug = g.choice(["jane-doe", "mark-o-brien", "li-wei", "sam-patel"]) + "-" + g.hex(6)
    return [
        tag(
            ctx,
            "lead_scoring",
            "ERROR",
            f"Profile lookup failed: HTTP 404 for https://www.linkedin.com/in/{slug}",
        )
    ]


@_p("airtable-etimedout", "ERROR", "client", 5, "connect ETIMEDOUT to Airtable")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Airtable request error: connect ETIMEDOUT 52.44.19.{g.randint(2, 250)}:443"
    return [tag(ctx, "airtable-sync", "ERROR", msg), *NODE_CONNECT]


@_p("apify-axios-timeout", "ERROR", "client", 4, "Apify API call: timeout of N ms exceeded", APIFY)
def _(g: Gen, ctx: Ctx) -> list[str]:
    ms = g.choice([30000, 45000])
    return [tag(ctx, "apify_webhook", "ERROR", f"Apify API call failed: timeout of {ms}ms exceeded")]


@_p("vertex-deadline-exceeded", "ERROR", "client", 8, "Vertex AI DEADLINE_EXCEEDED", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    after = f"{g.randint(59, 61)}.{g.randint(100, 999)}s"
    msg = f"Vertex AI request failed for lead {g.rec()}: 4 DEADLINE_EXCEEDED: Deadline exceeded after {after}"
    return [tag(ctx, "lead_scoring", "ERROR", msg)]


@_p("airtable-401-unauthorized", "ERROR", "system", 3, "Airtable 401 Unauthorized loading clients")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = "Airtable request failed: 401 Unauthorized (AUTHENTICATION_REQUIRED) while loading Clients base"
    return [tag(SYSTEM, "client-service", "ERROR", msg)]


@_p("apify-invalid-api-key", "ERROR", "client", 2, "Apify: Invalid API key", APIFY)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            ctx,
            "apify_webhook",
            "ERROR",
            f"Apify API error: Invalid API key provided for actor run {g.apify_id()}",
        )
    ]


@_p(
    "gemini-api-key-not-valid",
    "ERROR",
    "client",
    3,
    "Gemini: API key not valid (auth failure, unusual wording)",
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = (
        "Gemini call rejected: [400 Bad Request] API key not valid. Please pass a valid API key. "
        "[API_KEY_INVALID]"
    )
    return [tag(ctx, "lead_scoring", "ERROR", msg)]


# --- ERROR: JS runtime errors and other app-tagged errors -----------------------------------------


@_p(
    "ref-runid-not-defined",
    "ERROR",
    "client",
    9,
    "ReferenceError: runId is not defined (postScoring.js:212)",
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(ctx, "post_scoring", "ERROR", "ReferenceError: runId is not defined"), *NODE_RUNID]


@_p(
    "type-leads-map-not-function",
    "ERROR",
    "client",
    6,
    "TypeError: leads.map is not a function (untagged stack)",
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["TypeError: leads.map is not a function", *NODE_LEADS_MAP]


@_p("cannot-read-fields", "ERROR", "client", 10, "Cannot read properties of undefined (reading 'fields')")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Error syncing lead {g.rec()}: TypeError: Cannot read properties of undefined (reading 'fields')"
    return [tag(ctx, "airtable-sync", "ERROR", msg), *NODE_FIELDS]


@_p(
    "tdz-config",
    "ERROR",
    "system",
    4,
    "[WARN] Cannot access 'config' before initialization (clientService.js:14)",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = "Client cache refresh skipped: ReferenceError: Cannot access 'config' before initialization"
    return [tag(SYSTEM, "client-service", "WARN", msg), *NODE_TDZ_CONFIG]


@_p(
    "tdz-runrecord",
    "ERROR",
    "run",
    4,
    "Cannot access 'runRecord' before initialization (smartResume.js:88)",
    ("smart",),
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = "ReferenceError: Cannot access 'runRecord' before initialization"
    return [tag(ctx, "smart_resume", "ERROR", msg), *NODE_TDZ_RUNRECORD]


@_p("parse-ai-response", "ERROR", "client", 12, "[ERROR] Failed to parse AI response for lead", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(ctx, "lead_scoring", "ERROR", f"Failed to parse AI response for lead {g.rec()}")]


@_p("webhook-signature-mismatch", "ERROR", "client", 3, "[ERROR] Webhook signature mismatch", APIFY)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(
            ctx,
            "apify_webhook",
            "ERROR",
            f"Webhook signature mismatch for Apify run {g.apify_id()}; request rejected",
        )
    ]


@_p(
    "py-enrichment-valueerror",
    "ERROR",
    "system",
    5,
    "Python enrichment job failed: ValueError in parse_headcount",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    job, client = g.randint(8000, 9999), g.choice(CLIENTS)
    head = f"ERROR:enrichment.worker:Enrichment job {job} failed for client {client}"
    raw = g.choice(["N/A", "10-50", "unknown", "1,000+"])
    final = f"ValueError: invalid literal for int() with base 10: '{raw}'"
    return [head, *PY_VALUEERROR, final]


@_p("java-npe-lead-mapper", "ERROR", "system", 4, "Java: NullPointerException in LeadMapper.normalizeCompany")
def _(g: Gen, ctx: Ctx) -> list[str]:
    head = (
        f'Exception in thread "pool-2-thread-{g.randint(1, 8)}" java.lang.NullPointerException: '
        'Cannot invoke "String.trim()" because "company" is null'
    )
    return [head, *JAVA_NPE]


@_p("java-model-not-loaded", "ERROR", "system", 3, "Java: scoring request failed, model not loaded")
def _(g: Gen, ctx: Ctx) -> list[str]:
    head = (
        f"{JTS} ERROR 1 --- [nio-8080-exec-{g.randint(1, 9)}] c.a.scoring.web.ScoreController        "
        f" : Scoring request failed for lead {g.rec()}"
    )
    return [head, *JAVA_MODEL]


# --- ERROR: build and deploy ---------------------------------------------------------------------


@_p("npm-ci-lockfile-out-of-sync", "ERROR", "build", 0, "npm ci: package-lock.json out of sync")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["npm error code EUSAGE", *NPM_CI_ERROR]


@_p("render-build-failed", "ERROR", "build", 0, "==> Build failed 😞")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["==> Build failed 😞"]


@_p("deploy-missing-module", "ERROR", "build", 0, "Deploy: Cannot find module '@google-cloud/vertexai'")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["Error: Cannot find module '@google-cloud/vertexai'", *NODE_MISSING_MODULE]


@_p("render-exited-status-1", "ERROR", "build", 0, "==> Exited with status 1")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return ["==> Exited with status 1"]


# --- WARNING ----------------------------------------------------------------------------------------


@_p("deprecation-punycode", "WARNING", "startup", 0, "DeprecationWarning: punycode (at every process start)")
def _(g: Gen, ctx: Ctx) -> list[str]:
    pid = g.randint(50, 120)
    msg = (
        "DeprecationWarning: The `punycode` module is deprecated. Please use a userland alternative instead."
    )
    return [f"(node:{pid}) [DEP0040] {msg}", DEPRECATION_HINT]


@_p("deprecation-buffer", "WARNING", "system", 4, "DeprecationWarning: Buffer() constructor")
def _(g: Gen, ctx: Ctx) -> list[str]:
    pid = g.randint(50, 120)
    msg = (
        "DeprecationWarning: Buffer() is deprecated due to security and usability issues. "
        "Please use the Buffer.alloc(), Buffer.allocUnsafe(), or Buffer.from() methods instead."
    )
    return [f"(node:{pid}) [DEP0005] {msg}", DEPRECATION_HINT]


def _npm_warn(g: Gen, ctx: Ctx, text: str) -> str:
    if ctx.stream == 1:  # builds with colour forced on
        return f"\x1b[1mnpm\x1b[22m \x1b[33mwarn\x1b[39m \x1b[94mdeprecated\x1b[39m {text}"
    return f"npm warn deprecated {text}"


@_p("npm-deprecated-inflight", "WARNING", "build", 0, "npm warn deprecated inflight@1.0.6")
def _(g: Gen, ctx: Ctx) -> list[str]:
    text = (
        "inflight@1.0.6: This module is not supported, and leaks memory. Do not use it. "
        "Check out lru-cache if you want a good and tested way to coalesce async requests by a key value, "
        "which is much more comprehensive and powerful."
    )
    return [_npm_warn(g, ctx, text)]


@_p("npm-deprecated-glob", "WARNING", "build", 0, "npm warn deprecated glob@7.2.3")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [_npm_warn(g, ctx, "glob@7.2.3: Glob versions prior to v9 are no longer supported")]


@_p("slow-airtable-batch-update", "WARNING", "client", 7, "[WARN] Airtable batch update: operation took N ms")
def _(g: Gen, ctx: Ctx) -> list[str]:
    ms = g.randint(5200, 19000)
    return [
        tag(
            ctx,
            "airtable-sync",
            "WARN",
            f"Airtable batch update for {g.randint(10, 50)} records: operation took {ms} ms",
        )
    ]


@_p("slow-query-leads", "WARNING", "client", 5, "[INFO] Slow query on Leads (filterByFormula)", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [
        tag(ctx, "lead_scoring", "INFO", f"Slow query: Leads filterByFormula took {g.randint(3100, 9800)} ms")
    ]


@_p(
    "retry-airtable-econnreset",
    "WARNING",
    "client",
    8,
    "[WARN] Retry attempt N for Airtable update after ECONNRESET",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    n = g.randint(1, 3)
    return [tag(ctx, "airtable-sync", "WARN", f"Retry attempt {n}/3 for Airtable update after ECONNRESET")]


@_p("gemini-rate-limit", "WARNING", "client", 10, "[WARN] Gemini 429 Too Many Requests, backing off", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    ms = g.choice([1000, 2000, 4000, 8000])
    return [
        tag(ctx, "lead_scoring", "WARN", f"Gemini 429 Too Many Requests (rate limit), backing off {ms}ms")
    ]


@_p("airtable-rate-limit", "WARNING", "client", 5, "[INFO] Airtable rate limit reached, waiting")
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Airtable rate limit reached (RATE_LIMIT_REACHED), waiting {g.choice([30, 30, 60])}s"
    return [tag(ctx, "airtable-sync", "INFO", msg)]


@_p(
    "validation-warning-email",
    "WARNING",
    "client",
    9,
    "[WARN] Validation warning: invalid email on lead",
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    bad = g.choice(['"john.doe@"', '"n/a"', '"maria@@acme.com"', '""'])
    return [tag(ctx, "lead_scoring", "WARN", f"Validation warning: lead {g.rec()} has invalid email {bad}")]


@_p(
    "missing-optional-company-size",
    "WARNING",
    "client",
    11,
    '[INFO] Missing optional field "Company Size"',
    SCORING,
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f'Missing optional field "Company Size" for lead {g.rec()}, using default'
    return [tag(ctx, "lead_scoring", "INFO", msg)]


@_p("high-memory-usage", "WARNING", "system", 6, "[WARN] High memory usage")
def _(g: Gen, ctx: Ctx) -> list[str]:
    used = g.randint(1780, 1990)
    return [tag(SYSTEM, "monitor", "WARN", f"High memory usage: {used}MB of 2048MB ({used * 100 // 2048}%)")]


@_p("cpu-usage-high", "WARNING", "system", 4, "[WARN] CPU usage above 90%")
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(SYSTEM, "monitor", "WARN", f"CPU usage above 90% for {g.choice([60, 120, 180, 300])}s")]


@_p(
    "slow-request-batch-score",
    "WARNING",
    "access",
    5,
    "Access line: /run-batch-score-v2 responseTimeMS > 5000",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    path = f"/run-batch-score-v2?stream={g.randint(1, 3)}&limit={g.choice([25, 50, 100])}"
    return [access(g, "GET", 200, path, g.randint(5400, 29000))]


@_p(
    "slow-request-leads-search",
    "WARNING",
    "access",
    4,
    "Access line: /api/leads/search responseTimeMS > 5000",
)
def _(g: Gen, ctx: Ctx) -> list[str]:
    path = (
        f"/api/leads/search?client={g.choice(CLIENTS)}&q={g.choice(['cto', 'founder', 'growth', 'vp+sales'])}"
    )
    return [access(g, "GET", 200, path, g.randint(5100, 12000))]


@_p("app-warn-no-linkedin-url", "WARNING", "client", 8, "[WARN] Lead has no LinkedIn URL", SCORING)
def _(g: Gen, ctx: Ctx) -> list[str]:
    return [tag(ctx, "lead_scoring", "WARN", f"Lead {g.rec()} has no LinkedIn URL, skipping enrichment")]


@_p("app-warn-stale-client-list", "WARNING", "run", 4, "[WARN] Client list for stream N is stale", ("batch",))
def _(g: Gen, ctx: Ctx) -> list[str]:
    msg = f"Client list for stream={ctx.stream} is stale (cached {g.randint(31, 90)} min ago), refreshing"
    return [tag(ctx, "batch-score", "WARN", msg)]


PROBLEM_BY_SLUG = {p.slug: p for p in PROBLEMS}


# --------------------------------------------------------------------------------------------
# Timeline assembly


@dataclass
class Block:
    """Lines logged together (one event): they stay contiguous in the output."""

    ts: int
    seq: int
    lines: list[Label]


@dataclass
class Segment:
    """An ordered list of events logged one after another by one worker (timestamps assigned later)."""

    ctx: Ctx
    items: list[list[Label]] = field(default_factory=list)

    def info(self, op: str, msg: str, level: str = "INFO") -> None:
        self.items.append([(tag(self.ctx, op, level, msg), None, None)])

    def plain(self, *lines: str) -> None:
        self.items.append([(line, None, None) for line in lines])


def occurrence(g: Gen, problem: Problem, ctx: Ctx) -> list[Label]:
    lines = problem.render(g, ctx)
    return [(lines[0], problem.severity, problem.slug)] + [(line, None, problem.slug) for line in lines[1:]]


class Builder:
    """Builds the whole day's timeline and renders it to labelled lines."""

    def __init__(self, seed: int) -> None:
        self.g = Gen(seed)
        self.blocks: list[Block] = []
        self.seq = 0

    # -- placing blocks in time

    def add(self, ts: int, lines: list[Label]) -> None:
        self.blocks.append(Block(ts, self.seq, lines))
        self.seq += 1

    def place(self, seg: Segment, start: int, gap_ms: tuple[int, int]) -> int:
        """Give a segment's items increasing timestamps from ``start``; return the last one."""
        base = ts = start
        for i, item in enumerate(seg.items):
            if i:
                gap = self.g.randint(*gap_ms)
                if self.g.random() < 0.08:  # an AI call or a slow page of Airtable results
                    gap += self.g.randint(2000, 15000)
                base += gap * MS + self.g.sub_ms()
                # The tweak applies to this line only; ``base`` keeps the untweaked clock.
                ts = max(self.tweak(base), ts + MS)
            self.add(ts, item)
        return ts

    def tweak(self, ts: int) -> int:
        """Sometimes land the fraction on 429/500/503 digits: timestamp hard negatives."""
        r = self.g.random()
        sec, frac = ts - ts % NS, ts % NS
        if r < 0.05:
            frac = self.g.choice([429, 500, 503]) * MS + self.g.sub_ms()
        elif r < 0.10:
            frac = (frac // MS) * MS + self.g.choice([429, 500, 503]) * 1000 + self.g.randint(0, 999)
        return sec + frac

    # -- runs

    def client_segment(self, run_id: str, client: str, kind: str, stream: int) -> Segment:
        g = self.g
        ctx = Ctx(f"{run_id}-{client}", client, kind, stream)
        seg = Segment(ctx)
        if kind == "apify":
            n = g.count(20, 300)
            aid = g.apify_id()
            seg.plain(access(g, "POST", 200, f"/api/apify-webhook?client={client}", g.randint(8, 90)))
            seg.info("apify_webhook", f"Received webhook for Apify run {aid} (status SUCCEEDED)")
            seg.info("apify_webhook", f"Dataset {g.apify_id()} contains {n} items")
            if g.random() < 0.5:
                likes = g.randint(0, 900)
                seg.info(
                    "apify_webhook",
                    f'First item: {{"url":"https://www.linkedin.com/posts/{g.hex(8)}","likes":{likes},"comments":0}}',
                    "DEBUG",
                )
            seg.info("airtable-sync", f"Upserted {n} posts into Leads base (errors: 0)")
            if g.random() < 0.4:
                seg.info("apify_webhook", "⚠️ 0 posts had no author profile; nothing skipped")
            seg.info("run-record", "Job status updated to COMPLETED")
            return seg

        total = g.count(40, 220)
        size = g.choice([20, 25, 40, 50])
        batches = max(1, min(6, total // size))
        seg.info("lead_scoring", f"Starting lead scoring for {client} (stream {stream})")
        seg.info("run-record", f"Created client run record {g.rec()} for {ctx.run}")
        seg.info("lead_scoring", f"Fetched {total} leads pending scoring")
        if g.random() < 0.35:
            seg.plain(
                f'🔍 DEBUG lead payload: {{"id":"{g.rec()}","fields":{{"Name":"{g.choice(CLIENTS)}",'
                f'"Status":"To Be Scored","Error Message":null,"Retry Count":0}}}}'
            )
        if g.random() < 0.25:
            seg.info("lead_scoring", "Retrying in 2s (attempt 1/3) as planned for cold start")
        for b in range(1, batches + 1):
            seg.info("lead_scoring", f"Scoring batch {b}/{batches} ({size} leads)")
            for _ in range(g.randint(1, 3)):
                seg.info(
                    "lead_scoring",
                    f"Lead {g.rec()} scored {g.randint(5, 98)}/100 in {g.randint(400, 4800)}ms",
                    "DEBUG",
                )
            seg.info("lead_scoring", f"✅ Batch {b} complete: {size} successful, 0 failed")
        seg.info("lead_scoring", f"Processed {total} leads")
        seg.info("lead_scoring", f"📊 Summary: scored: {total}, failed: 0, batch size: {size}")
        seg.info("lead_scoring", f"❌ {g.choice([0, 0, 0, 2, 5])} leads rejected (score below threshold)")
        seg.info("airtable-sync", f'Updated field "Error Message" on {total} leads (errorCount=0)')
        if g.random() < 0.5:
            seg.info("post_scoring", f"⚠️ Skipping client {client}: no new posts")
        else:
            k = g.randint(5, 60)
            seg.info("post_scoring", f"Fetching posts for {k} leads")
            seg.info("post_scoring", f"Scored {k * 3} posts, {g.randint(0, k)} relevant")
        seg.info(
            "lead_scoring",
            f"Token usage: prompt={g.randint(20_000, 90_000)} completion={g.randint(2000, 9000)}",
        )
        seg.info("run-record", f"Client run record updated: Status=Completed, {total} leads scored")
        return seg

    def run(self, kind: str, start: int, stream: int, clients: list[str]) -> dict:
        """Lay out one run; returns the run's segments so problems can be injected before placement."""
        g = self.g
        run_id = datetime.fromtimestamp(start // NS, tz=UTC).strftime("%y%m%d-%H%M%S")
        base = Ctx(run_id, "SYSTEM", kind, stream)
        head = Segment(base)
        tail = Segment(base)
        if kind == "smart":
            head.plain(
                access(g, "POST", 202, f"/smart-resume-client-by-client?stream={stream}", g.randint(20, 120))
            )
            head.info("smart_resume", f"Starting smart resume for stream {stream}")
            head.items.append(
                [
                    (
                        tag(SYSTEM, "client-service", "INFO", "Retrieved 12 clients from Clients base"),
                        None,
                        None,
                    )
                ]
            )
            head.info(
                "smart_resume",
                f"Found {len(clients)} clients needing processing on stream={stream}: {', '.join(clients)}",
            )
            for other in g.rng.sample([c for c in CLIENTS if c not in clients], 2):
                head.info("smart_resume", f"⏭️ Client {other} up to date, skipping")
            tail.info(
                "smart_resume", f"📊 Summary: {len(clients)} clients processed in {g.randint(90, 900)}s"
            )
            tail.info("smart_resume", "🎉 SMART RESUME PROCESSING COMPLETED ✅")
        elif kind == "batch":
            head.plain(
                access(g, "GET", 200, f"/run-batch-score-v2?stream={stream}&limit=50", g.randint(30, 900))
            )
            head.info("batch-score", f"Batch scoring started for stream {stream} (limit 50)")
            head.info("batch-score", f"Processing {len(clients)} clients: {', '.join(clients)}")
            tail.info("batch-score", f"Batch scoring finished for {len(clients)} clients")
            tail.info("batch-score", "✅ ALL CLIENTS UP TO DATE")
        segments = [self.client_segment(run_id, c, kind, stream) for c in clients]
        return {
            "kind": kind,
            "start": start,
            "id": run_id,
            "head": head,
            "tail": tail,
            "clients": segments,
            "late": None,
        }

    # -- the day

    def build(self) -> list[Label]:
        g = self.g
        runs: list[dict] = []
        # Scoring runs: smart resumes on three streams and batch scores, overlapping in time.
        t = T0 + 10 * 60 * NS
        for i in range(24):
            kind = "smart" if i % 2 == 0 else "batch"
            stream = i % 3 + 1
            clients = g.rng.sample(CLIENTS, g.randint(2, 5))
            runs.append(self.run(kind, t + g.randint(0, 59) * NS + g.sub_ms() * 7, stream, clients))
            t += g.randint(20, 55) * 60 * NS
        end_of_day = t
        # Apify webhook runs: one client each, spread over the day.
        for _ in range(22):
            start = T0 + g.randint(15 * 60, (end_of_day - T0) // NS - 600) * NS
            runs.append(self.run("apify", start, 0, [g.choice(CLIENTS)]))
        runs.sort(key=lambda r: r["start"])

        # Crash runs: scoring runs that die; they get no tail (no completion marker).
        scoring_runs = [r for r in runs if r["kind"] != "apify"]
        crash_runs = g.rng.sample(scoring_runs[2:-2], 5)
        crash_slugs = ["node-heap-oom", "node-heap-oom", "node-heap-oom", "node-segfault", "node-segfault"]
        for r, slug in zip(crash_runs, crash_slugs, strict=True):
            r["crash"] = slug
        completed = [r for r in runs if "crash" not in r]

        # Late segments: lines logged under a completed run's id after its marker.
        late_runs = g.rng.sample(completed, 12)
        for r in late_runs:
            seg = r["clients"][0]
            late = Segment(Ctx(seg.ctx.run, seg.ctx.client, r["kind"], seg.ctx.stream))
            late.info("airtable-sync", f"Post-run sync: {g.randint(1, 40)} records updated")
            late.info("run-record", "Post-run cleanup: released scoring lock")
            r["late"] = late

        # Inject problems into segments before timestamps are assigned.
        system_items: list[tuple[int, list[Label]]] = []
        for p in PROBLEMS:
            if p.place == "client":
                pool = [s for r in runs if r["kind"] in p.kinds for s in r["clients"]]
                for seg in self.spread(pool, p.count):
                    self.inject(seg, occurrence(g, p, seg.ctx))
            elif p.place == "run":
                pool = [r["head"] for r in runs if r["kind"] in p.kinds]
                for seg in self.spread(pool, p.count):
                    # After the run's "Starting ..." line (index 1), anywhere up to the end of the head.
                    seg.items.insert(g.randint(2, len(seg.items)), occurrence(g, p, seg.ctx))
            elif p.place == "late":
                for r in self.spread(late_runs, p.count):
                    r["late"].items.insert(
                        g.randint(0, len(r["late"].items)), occurrence(g, p, r["late"].ctx)
                    )
            elif p.place in ("system", "access"):
                for _ in range(p.count):
                    ts = T0 + g.randint(5 * 60, (end_of_day - T0) // NS) * NS + g.randint(0, NS - 1)
                    system_items.append((ts, occurrence(g, p, SYSTEM)))

        # Assign timestamps run by run.
        for r in runs:
            last = self.place(r["head"], r["start"], (40, 900))
            ends = []
            for seg in r["clients"]:
                begin = last + g.randint(200, 4000) * MS
                ends.append(self.place(seg, begin, (60, 2500)))
            finish = max(ends)
            if "crash" in r:
                crash_ts = finish + g.randint(300, 5000) * MS
                self.add(crash_ts, occurrence(g, PROBLEM_BY_SLUG[r["crash"]], r["head"].ctx))
                self.startup(crash_ts + g.randint(15, 45) * NS)
                stale = crash_ts + g.randint(31, 46) * 60 * NS
                self.add(stale, occurrence(g, PROBLEM_BY_SLUG["run-marked-crashed"], r["head"].ctx))
                continue
            done = self.place(r["tail"], finish + g.randint(300, 3000) * MS, (100, 1500))
            if r["late"] is not None:
                self.place(r["late"], done + g.randint(5, 120) * NS, (200, 20000))

        for ts, lines in system_items:
            self.add(ts, lines)
        self.background(T0, end_of_day + 30 * 60 * NS)
        self.builds()
        return self.render()

    def spread(self, pool: list, n: int) -> list:
        """Pick ``n`` containers, cycling through a shuffled pool so occurrences land in different runs."""
        order = list(pool)
        self.g.rng.shuffle(order)
        return [order[i % len(order)] for i in range(n)]

    def inject(self, seg: Segment, item: list[Label]) -> None:
        # After the first line, before the last: problems happen while the work is under way.
        seg.items.insert(self.g.randint(1, max(1, len(seg.items) - 1)), item)

    def startup(self, ts: int) -> None:
        """A process start: the punycode deprecation warning and the listening line."""
        g = self.g
        self.add(ts, occurrence(g, PROBLEM_BY_SLUG["deprecation-punycode"], SYSTEM))
        self.add(ts + g.randint(50, 400) * MS, [("🚀 Server listening on port 10000", None, None)])
        msg = tag(SYSTEM, "client-service", "INFO", "Retrieved 12 clients from Clients base")
        self.add(ts + g.randint(500, 2000) * MS, [(msg, None, None)])

    def background(self, start: int, end: int) -> None:
        """System chatter, health checks, the Python and Java sidecars: all normal (null) lines."""
        g = self.g
        t = start
        while t < end:
            t += g.randint(40, 240) * NS + g.randint(0, NS - 1)
            t = self.tweak(t)
            r = g.random()
            if r < 0.40:
                line = access(g, "GET", 200, "/health", g.randint(1, 40))
            elif r < 0.48:
                line = access(
                    g, "GET", 200, f"/api/error-report?client={g.choice(CLIENTS)}", g.randint(15, 4800)
                )
            elif r < 0.55:
                line = access(
                    g, "GET", 200, f"/api/leads/search?client={g.choice(CLIENTS)}&q=cto", g.randint(80, 4900)
                )
            elif r < 0.62:
                line = tag(SYSTEM, "client-service", "INFO", "Retrieved 12 clients from Clients base")
            elif r < 0.69:
                used = g.randint(380, 1500)
                line = tag(
                    SYSTEM, "monitor", "INFO", f"Memory usage: {used}MB of 2048MB ({used * 100 // 2048}%)"
                )
            elif r < 0.73:
                c = g.choice(CLIENTS)
                line = tag(
                    SYSTEM,
                    "api",
                    "INFO",
                    f"GET /api/error-report?client={c} 200 ({g.randint(3, 90)}ms), errors: 0",
                )
            elif r < 0.80:
                job = g.randint(8000, 9999)
                line = g.choice(
                    [
                        f"INFO:enrichment.worker:Job {job} started for client {g.choice(CLIENTS)} "
                        f"({g.randint(5, 80)} leads)",
                        f"INFO:enrichment.worker:Job {job} done in {g.randint(2, 40)}.{g.randint(0, 9)}s, "
                        "failed: 0",
                    ]
                )
            elif r < 0.86:
                line = (
                    f"{JTS}  INFO 1 --- [nio-8080-exec-{g.randint(1, 9)}] "
                    "c.a.scoring.web.ScoreController         : "
                    f"Scored lead {g.rec()} in {g.randint(40, 480)} ms (model lead-v3)"
                )
            elif r < 0.90:
                line = tag(
                    SYSTEM, "scheduler", "INFO", f"Next smart resume check in {g.choice([15, 30, 60])} min"
                )
            elif r < 0.93:
                self.add(t, [(line, None, None) for line in self.config_dump()])
                continue
            elif r < 0.96:
                line = f'DEBUG: request options {{"method":"GET","timeout":30000,"retries":3,"url":"https://api.airtable.com/v0/app{g.hex(14)}/Leads"}}'
            else:
                line = tag(
                    SYSTEM,
                    "webhooks",
                    "INFO",
                    f"Retrying in {g.choice([1, 2, 5])}s (attempt 1/3) as planned for cold start",
                )
            self.add(t, [(line, None, None)])

    def config_dump(self) -> list[str]:
        g = self.g
        return [
            tag(SYSTEM, "config", "DEBUG", "Loaded config: {"),
            '  "airtable": {',
            f'    "baseId": "app{g.hex(14)}",',
            '    "timeout": 30000,',
            '    "retries": 3',
            "  },",
            '  "gemini": { "model": "gemini-2.5-flash", "timeout": 60000, "maxRetries": 2 },',
            '  "errorReporting": { "enabled": true, "errorCount": 0 }',
            "}",
        ]

    def builds(self) -> None:
        """Render builds and deploys: successes, npm ci failures and a deploy that cannot start."""
        schedule = [
            (T0 + 5 * 60 * NS, "ok", 0),
            (T0 + 3 * 3600 * NS + 40 * 60 * NS, "npm-ci", 0),
            (T0 + 3 * 3600 * NS + 52 * 60 * NS, "deploy-fail", 1),
            (T0 + 4 * 3600 * NS + 5 * 60 * NS, "ok", 1),
            (T0 + 7 * 3600 * NS + 20 * 60 * NS, "npm-ci", 1),
            (T0 + 7 * 3600 * NS + 31 * 60 * NS, "npm-ci", 0),
            (T0 + 7 * 3600 * NS + 45 * 60 * NS, "deploy-fail", 0),
            (T0 + 8 * 3600 * NS + 2 * 60 * NS, "ok", 0),
        ]
        for start, outcome, colour in schedule:
            self.one_build(start + self.g.randint(0, 59) * NS + self.g.sub_ms() * 11, outcome, colour)

    def one_build(self, start: int, outcome: str, colour: int) -> None:
        g = self.g
        ctx = Ctx("build", "build", "build", stream=colour)
        seg = Segment(ctx)
        seg.plain(f"==> Cloning from {REPO}")
        seg.plain(f"==> Checking out commit {g.hex(40)} in branch main")
        seg.plain("==> Using Node.js version 22.16.0 (default)")
        seg.plain("==> Docs on specifying a Node.js version: https://render.com/docs/node-version")
        if outcome == "npm-ci":
            seg.plain("==> Running build command 'npm ci'...")
            seg.items.append(occurrence(g, PROBLEM_BY_SLUG["npm-ci-lockfile-out-of-sync"], ctx))
            seg.items.append(occurrence(g, PROBLEM_BY_SLUG["render-build-failed"], ctx))
            self.place(seg, start, (200, 3000))
            return
        seg.plain("==> Running build command 'npm install'...")
        seg.items.append(occurrence(g, PROBLEM_BY_SLUG["npm-deprecated-inflight"], ctx))
        seg.items.append(occurrence(g, PROBLEM_BY_SLUG["npm-deprecated-glob"], ctx))
        n = g.randint(400, 430)
        seg.plain(f"added {n} packages, and audited {n + 1} packages in {g.randint(6, 19)}s")
        seg.plain(f"{g.randint(50, 60)} packages are looking for funding", "  run `npm fund` for details")
        seg.plain("found 0 vulnerabilities")
        seg.plain(
            "npm notice",
            "npm notice New major version of npm available! 10.9.2 -> 11.6.2",
            "npm notice Changelog: https://github.com/npm/cli/releases/tag/v11.6.2",
            "npm notice To update run: npm install -g npm@11.6.2",
            "npm notice",
        )
        seg.plain("==> Uploading build...")
        seg.plain(
            f"==> Uploaded in {g.randint(3, 9)}.{g.randint(0, 9)}s. "
            f"Compression took {g.randint(1, 4)}.{g.randint(0, 9)}s"
        )
        ok = "\x1b[32m==> Build successful 🎉\x1b[0m" if colour else "==> Build successful 🎉"
        seg.plain(ok)
        seg.plain("==> Deploying...")
        seg.plain("==> Running 'node index.js'")
        if outcome == "deploy-fail":
            seg.plain("node:internal/modules/cjs/loader:1228", "  throw err;", "  ^")
            seg.items.append(occurrence(g, PROBLEM_BY_SLUG["deploy-missing-module"], ctx))
            seg.plain("")
            seg.plain("Node.js v22.16.0")
            seg.items.append(occurrence(g, PROBLEM_BY_SLUG["render-exited-status-1"], ctx))
            seg.plain(
                "==> Common ways to troubleshoot your deploy: https://render.com/docs/troubleshooting-deploys"
            )
            self.place(seg, start, (200, 3000))
            return
        last = self.place(seg, start, (200, 3000))
        self.startup(last + g.randint(300, 900) * MS)
        live = Segment(ctx)
        live.plain("==> Your service is live 🎉")
        live.plain("==> ")
        live.plain("==> ///////////////////////////////////////////////////////////")
        live.plain("==> ")
        live.plain(f"==> Available at your primary URL https://{HOST}")
        self.place(live, last + g.randint(5, 20) * NS, (5, 60))

    # -- rendering

    def render(self) -> list[tuple[int, Label]]:
        self.blocks.sort(key=lambda b: (b.ts, b.seq))
        out: list[tuple[int, Label]] = []
        prev = 0
        for block in self.blocks:
            for k, (line, sev, group) in enumerate(block.lines):
                ts = max(block.ts + k * 1000, prev + 1)
                prev = ts
                line = line.replace(JTS, java_ts(ts)).replace(NPMTS, npm_ts(ts))
                if ts < PREFIX_UNTIL:
                    line = f"[{iso(ts)}] {line}"
                out.append((ts, (line, sev, group)))
        return out


def iso(ns: int, digits: int = 9) -> str:
    sec, frac = divmod(ns, NS)
    return (
        datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + "." + f"{frac:09d}"[:digits] + "Z"
    )


def java_ts(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{frac // MS:03d}"


def npm_ts(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H_%M_%S") + f"_{frac // MS:03d}Z"


def generate(seed: int = SEED) -> list[dict]:
    """The corpus as a list of records (line, timestamp, severity, group), in time order."""
    return [
        {"line": line, "timestamp": iso(ts, 3), "severity": sev, "group": group}
        for ts, (line, sev, group) in Builder(seed).build()
    ]


def write(records: list[dict], out: Path) -> None:
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def table(records: list[dict]) -> str:
    """The README's group table: slug, severity, head-line occurrences, continuation lines, title."""
    heads: dict[str, int] = {}
    conts: dict[str, int] = {}
    for rec in records:
        if rec["group"] is None:
            continue
        bucket = heads if rec["severity"] is not None else conts
        bucket[rec["group"]] = bucket.get(rec["group"], 0) + 1
    order = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2}
    rows = [
        "| group | severity | occurrences | continuation lines | what |",
        "|---|---|---:|---:|---|",
    ]
    for p in sorted(PROBLEMS, key=lambda p: (order[p.severity], p.slug)):
        rows.append(
            f"| `{p.slug}` | {p.severity} | {heads.get(p.slug, 0)} | {conts.get(p.slug, 0)} | {p.title} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write the JSONL (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--table", action="store_true", help="print the README group table instead of writing"
    )
    args = parser.parse_args(argv)
    records = generate(args.seed)
    if args.table:
        print(table(records))
        return 0
    write(records, args.out)
    print(f"wrote {len(records)} lines to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
