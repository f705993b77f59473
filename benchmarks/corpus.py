"""Deterministic benchmark corpora in the shapes of real runs (seeded; nothing is downloaded).

~140-byte structured lines from many interleaved runs and clients, about 1 % problem lines (some with
Node stack traces), plus Render build output and access lines. Generated to a file, streamed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CLIENTS = [
    "Ann-Lee", "Guy-Wilson", "Dean-Hobin", "Maria-Chen", "Tom-Baker", "Ivy-Stone", "Raj-Patel", "Zoe-Kim",
    "Leo-Marsh", "Eva-Novak", "Sam-Ortiz", "Nia-Brown",
]  # fmt: skip
OPERATIONS = ["lead_scoring", "post_scoring", "smart_resume", "apify_webhook", "airtable-sync", "run-record"]
INFO = [
    "Processed lead {rec} score={n} in {ms} ms (batch {b} of 40)",
    "Fetched {n} posts for profile {rec} from Apify dataset {hex}",
    "Updated Airtable record {rec} fields Status, Score, Last Scored",
    "Batch {b} complete: {n} successful, 0 failed",
    "Gemini scoring request {uuid} finished in {ms} ms tokens={n}",
    "Queued {n} leads for scoring on stream {s} (client run {rec})",
]
PROBLEMS = [
    ("ERROR", "Chunk processing error: leads.map is not a function TypeError: leads.map is not a function", True),
    ("ERROR", "Failed to update run record {rec}: Request failed with status code 503", False),
    ("WARN", "Gemini API rate limited (429 Too Many Requests), retrying in {n} s", False),
    ("ERROR", 'Unknown field name: "Stream" while updating {rec}', False),
    ("ERROR", "timeout of 30000ms exceeded calling Vertex AI for lead {rec}", False),
    ("WARN", "Failed to parse AI response for lead {rec}: Unexpected token < in JSON at position {n}", False),
    ("ERROR", "Cannot read properties of undefined (reading 'fields') in scorePost", True),
]
FRAMES = [
    "    at scoreChunk (/opt/render/project/src/services/leadScoring.js:{n}:21)",
    "    at Array.forEach (<anonymous>)",
    "    at processTicksAndRejections (node:internal/process/task_queues:95:5)",
]
BUILD = ["==> Cloning from https://github.com/acme/leads-service", "==> Running build command 'npm install'...",
         "==> Build successful 🎉", "==> Deploying..."]  # fmt: skip
ACCESS = ('clientIP="203.0.113.{n}" requestID="{uuid}" responseTimeMS={ms} responseBytes={n} '
          'userAgent="node-fetch/1.0"')  # fmt: skip


_ID_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
EMOJI = ["✅", "🚀", "🎉", "➜", "📊", "⚠️", "🔄", "—"]  # as Node services sprinkle them over INFO lines


def run_ids(runs: int) -> list[str]:
    """The ids of the first ``runs`` runs ``lines_of`` opens."""
    t0 = datetime(2025, 11, 3, 8, 0, 0, tzinfo=UTC)
    return [(t0 + timedelta(seconds=17 * i)).strftime("%y%m%d-%H%M%S") for i in range(runs)]


def run_starts(runs: int) -> Iterator[str]:
    """One start line per run of ``run_ids(runs)``, announcing its type and stream (warm-up input)."""
    for i, run in enumerate(run_ids(runs)):
        head = f"[2025-11-03T07:59:59.000000Z] [{run}] [SYSTEM] [smart_resume] [INFO]"
        yield f"{head} Starting smart resume for stream {i % 3 + 1}"


def generate(path: Path, lines: int, **shape: Any) -> Path:
    """Write ``lines_of(lines, **shape)`` to ``path`` (returned), a line each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for line in lines_of(lines, **shape):
            fh.write(line)
            fh.write("\n")
    return path


def lines_of(
    count: int,
    *,
    runs: int = 40,
    seed: int = 1,
    problem_rate: float = 0.01,
    marker: bool = True,
    rotate: bool = True,
    emoji: float = 0.0,
) -> Iterator[str]:
    """The corpus as an iterator of lines. Runs rotate: each lives for ``count / runs`` lines on average
    (with ``rotate=False`` the same ``runs`` runs stay open throughout). A fraction ``emoji`` of the
    INFO lines start their message with an emoji (drawn from a second generator: the rest of the
    corpus is the same as without)."""
    marks = random.Random(seed + 1)
    rng = random.Random(seed)
    t0 = datetime(2025, 11, 3, 8, 0, 0, tzinfo=UTC)
    base = [t0 + timedelta(seconds=17 * i) for i in range(runs)]
    run_ids = [b.strftime("%y%m%d-%H%M%S") for b in base]
    next_run = runs
    per_run = max(50, count // max(1, runs) * 2)
    left = [rng.randint(per_run // 2, per_run) for _ in range(runs)]
    produced = 0
    while produced < count:
        slot = rng.randrange(runs)
        run = run_ids[slot]
        client = CLIENTS[rng.randrange(len(CLIENTS))]
        ts = (t0 + timedelta(milliseconds=produced * 3)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        op = OPERATIONS[rng.randrange(len(OPERATIONS))]
        fill = {
            "rec": "rec" + "".join(rng.choice(_ID_CHARS) for _ in range(14)),
            "n": rng.randint(1, 999),
            "ms": rng.randint(20, 4000),
            "b": rng.randint(1, 40),
            "s": rng.randint(1, 3),
            "hex": f"{rng.getrandbits(48):012x}",
            "uuid": f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
            f"a{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}",
        }  # fmt: skip
        roll = rng.random()
        if roll < problem_rate:
            level, text, trace = PROBLEMS[rng.randrange(len(PROBLEMS))]
            yield f"[{ts}] [{run}-{client}] [{client}] [{op}] [{level}] {text.format(**fill)}"
            produced += 1
            if trace:
                for frame in FRAMES:
                    if produced < count:
                        yield frame.format(**fill)
                        produced += 1
        elif roll < 0.004 + problem_rate:
            yield BUILD[rng.randrange(len(BUILD))]
            produced += 1
        elif roll < 0.02 + problem_rate:
            yield ACCESS.format(**fill)
            produced += 1
        else:
            tmpl = INFO[rng.randrange(len(INFO))]
            mark = f"{marks.choice(EMOJI)} " if emoji and marks.random() < emoji else ""
            yield f"[{ts}] [{run}-{client}] [{client}] [{op}] [INFO] {mark}{tmpl.format(**fill)}"
            produced += 1
        left[slot] -= 1
        if rotate and left[slot] <= 0:
            if marker and produced < count:
                yield f"[{ts}] [{run}] [SYSTEM] [smart_resume] [INFO] 🎉 SMART RESUME PROCESSING COMPLETED ✅"
                produced += 1
            t = t0 + timedelta(seconds=17 * next_run)
            next_run += 1
            run_ids[slot] = t.strftime("%y%m%d-%H%M%S")
            left[slot] = rng.randint(per_run // 2, per_run)
