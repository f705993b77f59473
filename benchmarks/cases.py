"""The benchmark cases. Each runs in a fresh child process pinned to one core and returns a dict.

Every case is a function ``case(workdir, scale) -> dict`` with at least ``lines`` and ``seconds``;
``lines_per_s`` and ``peak_rss_mb`` are added by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing as mp
import os
import resource
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.corpus import generate, lines_of, run_starts

Result = dict[str, Any]


def _corpus(workdir: Path, lines: int, **kw: Any) -> Path:
    name = "c{}_{}.log".format(lines, "_".join(f"{k}{v}" for k, v in sorted(kw.items())))
    path = workdir / name
    if not path.exists():
        generate(path, lines, **kw)
    # Read it once, untimed, so that every sample streams it from the page cache: these VMs keep
    # only a few hundred MB of it and drop a corpus between cases, and the first sample of a case
    # then measured the disk (up to 40 MB read, ~20 % slower) instead of the pipeline.
    with path.open("rb") as fh:
        while fh.read(1 << 20):
            pass
    return path


def _config(tmp: Path, **route: int) -> Any:
    from stream_triage.config import load_config

    config = load_config(None, {})
    config.store.path = str(tmp / f"bench-{os.getpid()}-{time.monotonic_ns()}.db")
    for key, value in route.items():
        setattr(config.route, key, value)
    return config


# ------------------------------------------------------------------------------------------- replay
def baseline(workdir: Path, scale: float) -> Result:
    """The old approach: 44 regexes per line, first match by severity, dedupe by masked line."""
    from stream_triage.baseline import OldTriage

    n = int(1_000_000 * scale)
    path = _corpus(workdir, n)
    old = OldTriage()
    start = time.perf_counter()
    with path.open(encoding="utf-8") as fh:
        issues = old.run(line.rstrip("\n") for line in fh)
    return {"lines": n, "seconds": time.perf_counter() - start, "issues": len(issues)}


def replay(workdir: Path, scale: float, lines: int = 1_000_000, runs: int = 40, emoji: float = 0.0) -> Result:
    """parse → route → match → context → fingerprint → SQLite store, input streamed from a file."""
    from stream_triage.session import TriageSession
    from stream_triage.sinks.sqlite import IssueStore
    from stream_triage.sources.files import read_inputs

    n = int(lines * scale)
    path = _corpus(workdir, n, runs=runs, **({"emoji": emoji} if emoji else {}))
    config = _config(workdir)
    store = IssueStore(config.store.path)
    session = TriageSession(config, store)
    start = time.perf_counter()
    session.feed_all(read_inputs([str(path)], batches=True))
    session.finish()
    seconds = time.perf_counter() - start
    store.close()
    issues = len(session.memory.issues)
    occurrences = sum(i.occurrences for i in session.memory.issues.values())
    return {"lines": n, "seconds": seconds, "issues": issues, "occurrences": occurrences}


def replay_emoji(workdir: Path, scale: float) -> Result:
    """The replay case with an emoji starting a fifth of the INFO messages."""
    return replay(workdir, scale, emoji=0.2)


def replay_10x_small(workdir: Path, scale: float) -> Result:
    """The replay case at a tenth of the lines, for the linearity check."""
    return replay(workdir, scale, lines=100_000)


def runs_10(workdir: Path, scale: float) -> Result:
    """Throughput with 10 concurrently open runs (opened before timing; no completion markers)."""
    return _open_runs(workdir, scale, 10)


def runs_10000(workdir: Path, scale: float) -> Result:
    """Throughput with 10,000 concurrently open runs (opened before timing; no completion markers)."""
    return _open_runs(workdir, scale, 10_000)


def _open_runs(workdir: Path, scale: float, runs: int) -> Result:
    from stream_triage.pipeline.triage import Triage
    from stream_triage.records import LineBatch, RawRecord
    from stream_triage.sources.files import read_inputs

    n = int(500_000 * scale)
    path = _corpus(workdir, n, runs=runs, marker=False, rotate=False)
    triage = Triage(_config(workdir))
    # Warm-up, not timed: every run opens and announces its type and stream, so the timed part
    # measures lines routed among ``runs`` open runs, not run creation.
    triage.process_many([RawRecord(t, "s", None, i) for i, t in enumerate(run_starts(runs))])
    batches = [b for b in read_inputs([str(path)], batches=True) if isinstance(b, LineBatch)]
    start = time.perf_counter()
    for batch in batches:
        triage.process_batch(batch)
    seconds = time.perf_counter() - start
    return {"lines": n, "seconds": seconds, "open_runs": triage.open_runs}


def memory_10000_runs(workdir: Path, scale: float) -> Result:
    """RSS growth for 10,000 open runs, each with a full 25-line context ring and a pending issue."""
    from stream_triage.pipeline.triage import Triage
    from stream_triage.records import RawRecord

    triage = Triage(_config(workdir))
    triage.process(RawRecord("[251103-000000] [A] [op] [INFO] warm-up", "s", None, 0))
    before = _rss_now_mb()
    lines = 0
    start = time.perf_counter()
    for r in range(10_000):
        run = f"2511{r // 3600 % 28 + 1:02d}-{r // 60 % 60:02d}{r % 60:02d}{r % 100:02d}"
        client = f"Client-{r % 97}"
        for i in range(30):
            text = (
                f"[{run}-{client}] [{client}] [lead_scoring] [INFO] Processed lead rec{r:07d}{i:07d} "
                f"score={i * 7 % 100} in {100 + i} ms (batch {i % 40} of 40) for stream {r % 3 + 1}"
            )
            triage.process(RawRecord(text, "s", None, lines))
            lines += 1
        triage.process(RawRecord(f"[{run}-{client}] [{client}] [lead_scoring] [ERROR] Failed to update run record "
                                 f"rec{r:014d}: Request failed with status code 503", "s", None, lines))  # fmt: skip
        lines += 1
    seconds = time.perf_counter() - start
    return {"lines": lines, "seconds": seconds, "open_runs": triage.open_runs, "rss_growth_mb": _rss_now_mb() - before}


def patterns_default(workdir: Path, scale: float) -> Result:
    """Throughput with the default pack."""
    return _patterns(workdir, scale, 0)


def patterns_500(workdir: Path, scale: float) -> Result:
    """Throughput with the default pack plus generated patterns, 500 in all."""
    return _patterns(workdir, scale, 500)


def _patterns(workdir: Path, scale: float, total: int) -> Result:
    from stream_triage.patterns import default_pack_path, load_pack
    from stream_triage.pipeline.triage import Triage
    from stream_triage.records import LineBatch
    from stream_triage.sources.files import read_inputs

    config = _config(workdir)
    if total:
        extra = workdir / "pack500.toml"
        count = total - len(load_pack(default_pack_path()))
        verbs = ["sync", "export", "import", "render", "refresh", "charge", "notify", "archive", "rotate", "index"]
        nouns = ["invoice", "widget", "webhook", "ledger", "thumbnail", "mailbox", "token", "cache", "report", "quota"]
        with extra.open("w", encoding="utf-8") as fh:
            for i in range(count):
                v, noun = verbs[i % 10], nouns[i // 10 % 10]
                fh.write(
                    f'[[pattern]]\nid = "gen-{i}"\nseverity = "{("ERROR", "WARNING")[i % 2]}"\n'
                    f"regex = '''\\b(?:could not|failed to) {v} (?:the )?{noun}s? #?{i}\\b"
                    f"|\\b{noun}-{v}-{i} (?:crashed|stalled)\\b'''\n"
                    f'description = "generated {i}"\n\n'
                )
        config.patterns.files = [str(extra)]
    n = int(500_000 * scale)
    path = _corpus(workdir, n)
    triage = Triage(config)
    batches = [b for b in read_inputs([str(path)], batches=True) if isinstance(b, LineBatch)]
    start = time.perf_counter()
    for batch in batches:
        triage.process_batch(batch)
    seconds = time.perf_counter() - start
    return {"lines": n, "seconds": seconds, "patterns": len(triage.patterns.specs)}


# ------------------------------------------------------------------------------------------- flush
def flush_latency(workdir: Path, scale: float) -> Result:
    """Completion marker accepted → the run's 100 distinct issues committed to SQLite."""
    from stream_triage.pipeline.triage import Triage
    from stream_triage.records import RawRecord
    from stream_triage.sinks.sqlite import IssueStore

    config = _config(workdir)
    triage = Triage(config)
    store = IssueStore(config.store.path)
    words = ["ledger", "invoice", "widget", "mailbox", "thumbnail", "quota", "report", "cache", "index", "token"]
    samples = []
    lines = 0
    runs = max(20, int(200 * scale))
    for r in range(runs):
        run = f"251103-{r // 3600:02d}{r // 60 % 60:02d}{r % 60:02d}"
        for i in range(100):
            text = f"[{run}] [Ann-Lee] [op{i}] [ERROR] Failed to sync {words[i % 10]} {words[i // 10]} for rec{r:014d}"
            triage.process(RawRecord(text, "s", None, lines))
            lines += 1
        marker = RawRecord(
            f"[{run}] [SYSTEM] [smart_resume] [INFO] SMART RESUME PROCESSING COMPLETED", "s", None, lines
        )
        lines += 1
        start = time.perf_counter()
        flushes = triage.process(marker)
        changes = store.apply(flushes)
        samples.append(time.perf_counter() - start)
        assert sum(len(f.issues) for f in flushes) == 100, "each run flushes its 100 issues"
        assert len(changes) == 100
    store.close()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"lines": lines, "seconds": sum(samples), "flush_p50_ms": statistics.median(samples) * 1000,
            "flush_p99_ms": p99 * 1000, "flushes": len(samples)}  # fmt: skip


# ------------------------------------------------------------------------------------------- live
def live_syslog(workdir: Path, scale: float) -> Result:
    """RFC 5424 octet-counted over TCP from a sender process to ``serve``'s syslog listener."""
    return _live(workdir, scale, "syslog")


def live_http(workdir: Path, scale: float) -> Result:
    """Logplex bodies POSTed from a sender process to ``serve``'s /drain."""
    return _live(workdir, scale, "http")


def live_syslog_ingest(workdir: Path, scale: float) -> Result:
    """``live_syslog`` with a pipeline that only counts lines: the cost of ingest alone (socket → queue)."""
    return _live(workdir, scale, "syslog", stub=True)


def live_http_ingest(workdir: Path, scale: float) -> Result:
    """``live_http`` with a pipeline that only counts lines: the cost of ingest alone (request → queue)."""
    return _live(workdir, scale, "http", stub=True)


class _CountingTriage:
    """Stands in for ``Triage`` in the ingest cases: accepts every batch and does nothing with it."""

    open_runs = 0
    fast_path_off = None

    def __init__(self) -> None:
        self.match_counts: dict[tuple[str, str], int] = {}

    def process_many(self, records: Any, now: float | None = None) -> list[Any]:
        return []

    def process_batch(self, batch: Any, now: float | None = None) -> list[Any]:
        return []

    def tick(self, now: float) -> list[Any]:
        return []

    def flush_all(self, reason: Any) -> list[Any]:
        return []


def _frames(lines: list[str]) -> bytes:
    out = []
    for i, line in enumerate(lines):
        msg = f"<134>1 2025-11-03T08:15:{i % 60:02d}.000Z host app web.1 - - {line}".encode()
        out.append(b"%d %s" % (len(msg), msg))
    return b"".join(out)


def _other_core() -> None:
    # The sender must not share the service's core: it stands for another machine.
    with contextlib.suppress(AttributeError, OSError):
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})


def _send_syslog(port: int, payload: bytes, ready: Any) -> None:
    _other_core()
    ready.wait()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)


def _send_http(port: int, bodies: list[tuple[bytes, int]], ready: Any) -> None:
    _other_core()
    ready.wait()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for n, (body, count) in enumerate(bodies):
        while True:
            conn.request(
                "POST",
                "/drain",
                body,
                {"Content-Type": "application/logplex-1", "Logplex-Msg-Count": str(count), "Logplex-Frame-Id": f"f{n}"},
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status != 503:
                break
            time.sleep(0.01)  # honour backpressure, as a drain sender does
    conn.close()


def _live(workdir: Path, scale: float, kind: str, stub: bool = False) -> Result:
    from stream_triage.app import Service

    n = int(400_000 * scale)
    lines = list(lines_of(n, runs=40))
    expected = 0 if stub else _expected_occurrences(workdir, lines)
    config = _config(workdir)
    config.server.http_port = 0
    config.sources.syslog.port = 0
    config.sources.syslog.max_frame_bytes = 1 << 20
    ctx = mp.get_context("spawn")
    ready = ctx.Event()

    async def main() -> Result:
        service = Service(config)
        if stub:
            service.triage = service.runner.triage = _CountingTriage()  # type: ignore[assignment]
        await service.start()
        if kind == "syslog":
            sender = ctx.Process(target=_send_syslog, args=(service.syslog.port, _frames(lines), ready))  # type: ignore[union-attr]
        else:
            bodies = [(_frames(lines[i : i + 1000]), len(lines[i : i + 1000])) for i in range(0, n, 1000)]
            sender = ctx.Process(target=_send_http, args=(service.http_port, bodies, ready))
        sender.start()
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        cpu_start = time.process_time()
        ready.set()
        deadline = start + 600
        while service.runner.lines_processed < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start  # the service's own CPU time: the sender runs elsewhere
        await asyncio.to_thread(sender.join, 30)
        processed = service.runner.lines_processed
        await service.stop()
        return {"lines": processed, "seconds": seconds, "cpu_us_per_line": cpu / max(1, processed) * 1e6}

    result = asyncio.run(main())
    if stub:
        result["all_lines"] = result["lines"] == n
        return result
    from stream_triage.sinks.sqlite import IssueStore

    store = IssueStore(config.store.path)
    got = sum(i.occurrences for i in store.list_issues(limit=100_000) if i.pattern != "run-incomplete")
    store.close()
    result["issues_correct"] = got == expected and result["lines"] == n
    result["occurrences"] = got
    result["expected_occurrences"] = expected
    return result


def _expected_occurrences(workdir: Path, lines: list[str]) -> int:
    from stream_triage.pipeline.triage import Triage
    from stream_triage.records import EndReason, RawRecord

    triage = Triage(_config(workdir))
    flushes = triage.process_many(RawRecord(t, "host/app/web.1", None, i) for i, t in enumerate(lines))
    flushes += triage.flush_all(EndReason.EOF)
    return sum(i.occurrences for f in flushes for i in f.issues if i.pattern_id != "run-incomplete")


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CASES = {
    "baseline": baseline,
    "replay": replay,
    "replay_100k": replay_10x_small,
    "replay_emoji": replay_emoji,
    "runs_10": runs_10,
    "runs_10000": runs_10000,
    "memory_10000_runs": memory_10000_runs,
    "patterns_default": patterns_default,
    "patterns_500": patterns_500,
    "flush_latency": flush_latency,
    "live_syslog": live_syslog,
    "live_http": live_http,
    "live_syslog_ingest": live_syslog_ingest,
    "live_http_ingest": live_http_ingest,
}


def child(name: str, workdir: str, scale: float, cpu: int, queue: Any) -> None:
    """Entry point of a benchmark child process: pin to ``cpu``, run the case, report its result."""
    with contextlib.suppress(AttributeError, OSError):  # not every platform can pin
        os.sched_setaffinity(0, {cpu})
    try:
        result = CASES[name](Path(workdir), scale)
        result["peak_rss_mb"] = peak_rss_mb()
        queue.put(result)
    except BaseException as exc:  # report, don't leave the parent waiting
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:  # the case's SQLite files are scratch (``_config`` names them after this process)
        for db in Path(workdir).glob(f"bench-{os.getpid()}-*.db*"):
            db.unlink(missing_ok=True)
