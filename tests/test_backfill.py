"""``stream-triage backfill`` and ``tail`` as a user runs them, against the local fake of Render's logs API."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import orjson

from tests.e2e.prometheus import wait_until
from tests.e2e.serve_harness import (
    ROOT,
    UNFINISHED_RUN,
    RenderFakeThread,
    clean_env,
    expected_issues,
    multi_run_lines,
    stored_issues,
    stored_runs,
)

SRV = "srv-d3k8abc"
OTHER_RUN = [
    f"[251103-090000-Lena-Fischer] [Lena-Fischer] [lead_scoring] [INFO] Scored lead rec{i:05d} in {40 + i % 17}ms"
    for i in range(220)
] + ["[251103-090000-Lena-Fischer] [Lena-Fischer] [lead_scoring] [ERROR] Batch 9 failed: 3 of 25 leads failed"]


def cli(render: RenderFakeThread, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stream_triage <args>`` against the fake (bounded)."""
    env = {"RENDER_API_KEY": key if key is not None else render.fake.api_key}
    if key == "":
        env = {}
    return subprocess.run(
        [sys.executable, "-m", "stream_triage", *args, "--api-base-url", render.fake.base_url,
         "--owner-id", render.fake.owner_id, "--resource", SRV],
        capture_output=True, text=True, env=clean_env(env), cwd=ROOT, timeout=60,
    )  # fmt: skip


def add_lines(render: RenderFakeThread, lines: list[str], ts: str | None = None) -> None:
    """Store lines in the fake's history (1 ms apart from 2025-11-03T08:15:22Z unless ``ts`` is given)."""

    def add() -> None:
        render.fake.add(*(render.fake.make_log(SRV, line, **({"ts": ts} if ts else {})) for line in lines))

    render.call(add)


def test_backfill_by_run_id_pages_through_the_window_and_keeps_only_that_run(tmp_path: Path) -> None:
    """``--run-id`` derives the window, follows every page, and reports and stores only that run's issues."""
    lines = multi_run_lines()
    db = tmp_path / "bf.db"
    with RenderFakeThread() as render:
        add_lines(render, lines + OTHER_RUN)
        result = cli(render, "backfill", "--run-id", "251103-081522", "--json", "--no-progress", "--db", str(db))
        requests = render.fake.requests
    assert result.returncode == 0, result.stderr
    doc = orjson.loads(result.stdout)
    want = expected_issues(lines, run_id="251103-081522")
    assert {i["fingerprint"]: i["occurrences"] for i in doc["issues"]} == want
    assert {r["run_id"] for r in doc["runs"]} == {"251103-081522"}
    assert stored_issues(db) == want
    assert len(requests) == 3  # 250 logs, 100 a page
    first = dict(requests[0])
    assert (first["startTime"], first["endTime"]) == ("2025-11-03T08:14:22.000000Z", "2025-11-03T11:15:22.000000Z")
    assert first["direction"] == "forward" and first["limit"] == "100"


def test_backfill_window_backs_off_on_429_and_leaves_out_logs_outside_it(tmp_path: Path) -> None:
    """``--since/--until``: two 429s are waited out; logs before and after the window are not fetched."""
    lines = multi_run_lines()
    db = tmp_path / "bf.db"
    outside = "[251103-070000] [SYSTEM] [batch-score] [ERROR] Batch 1 failed: 25 of 25 leads failed"
    with RenderFakeThread() as render:
        add_lines(render, [outside], ts="2025-11-03T07:00:00.000000000Z")
        add_lines(render, lines)
        add_lines(render, [outside.replace("070000", "093000")], ts="2025-11-03T09:30:00.000000000Z")
        render.call(lambda: render.fake.fail_next(2, 429, reset_s=0))
        args = ["backfill", "--since", "2025-11-03T08:00:00Z", "--until", "2025-11-03T09:00:00Z", "--no-progress"]
        result = cli(render, *args, "--db", str(db))
        requests = render.fake.requests
    assert result.returncode == 0, result.stderr
    assert "Fetched 29 logs from 2025-11-03T08:00:00" in result.stdout
    assert len(requests) == 3  # two refused, then the single page
    assert stored_issues(db) == expected_issues(lines)
    assert stored_runs(db)[UNFINISHED_RUN] == "eof"


def test_backfill_without_an_api_key_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """No RENDER_API_KEY: exit 2 and say where to get one; nothing is requested."""
    with RenderFakeThread() as render:
        result = cli(render, "backfill", "--run-id", "251103-081522", "--db", str(tmp_path / "x.db"), key="")
        assert render.fake.requests == []
    assert result.returncode == 2
    assert "RENDER_API_KEY: set it in the environment" in result.stderr


def test_backfill_with_a_rejected_key_exits_1_without_printing_it(tmp_path: Path) -> None:
    """A key the API refuses is a clear error (exit 1); the key itself is never printed."""
    bad = "rnd_rejected_00112233445566778899"
    with RenderFakeThread() as render:
        result = cli(render, "backfill", "--run-id", "251103-081522", "--db", str(tmp_path / "x.db"), key=bad)
    assert result.returncode == 1
    assert "RENDER_API_KEY rejected (HTTP 401" in result.stderr
    assert bad not in result.stderr + result.stdout


def test_tail_for_a_duration_survives_a_dropped_socket_without_loss_or_repeats(tmp_path: Path) -> None:
    """``tail --duration``: lines pushed live, during a drop (gap backfill) and after it are each counted once."""
    lines = multi_run_lines()
    db = tmp_path / "tail.db"
    with RenderFakeThread() as render:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_triage", "tail", "--duration", "4", "--db", str(db),
             "--api-base-url", render.fake.base_url, "--owner-id", render.fake.owner_id, "--resource", SRV],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=clean_env({"RENDER_API_KEY": render.fake.api_key}),
        )  # fmt: skip
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout or ()), daemon=True)
        reader.start()
        try:
            render.wait_subscribers(1)
            render.push_lines(SRV, lines[:21])  # up to the first run's completion marker
            wait_until(lambda: any("batch-failed" in line for line in out), 20, "the marker flush to print")
            assert render.call(render.fake.drop_sockets) == 1
            render.push_lines(SRV, lines[21:26])  # while disconnected: only the history has them
            render.wait_subscribers(1)
            render.push_lines(SRV, lines[26:])
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            reader.join(timeout=10)
        subscriptions = len(render.fake.subscribe_requests)
    assert subscriptions == 2
    assert stored_issues(db) == expected_issues(lines)
    printed = "".join(out)
    assert "251103-084008 timeout" in printed  # the run that completed during the gap
    assert f"{UNFINISHED_RUN} connection-refused" in printed  # flushed when the duration ended
