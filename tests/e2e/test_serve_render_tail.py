"""The ``render_tail`` source inside ``serve``: Render's live log WebSocket, across a dropped socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.serve_harness import (
    COMPLETED_RUNS,
    UNFINISHED_RUN,
    RenderFakeThread,
    expected_issues,
    multi_run_lines,
    run_serve,
    stored_issues,
    stored_runs,
)

pytestmark = pytest.mark.e2e

SRV = "srv-d3k8abc"
SENTINEL = "[SYSTEM] [SYSTEM] [client-service] [INFO] heartbeat after the reconnect"
RECEIVED = "stream_triage_lines_received_total"


def test_render_tail_loses_and_repeats_nothing_across_a_dropped_socket(tmp_path: Path) -> None:
    """Lines sent live, while the socket is down (gap backfill) and after the reconnect each arrive once."""
    lines = multi_run_lines()
    with RenderFakeThread() as render:
        sections = {
            "sources.render_tail": {
                "enabled": True,
                "api_base_url": render.fake.base_url,
                "owner_id": render.fake.owner_id,
                "resources": [SRV],
            }
        }
        with run_serve(tmp_path, sections, env={"RENDER_API_KEY": render.fake.api_key}) as serve:
            render.wait_subscribers(1)
            render.push_lines(SRV, lines[:12])
            serve.wait_metric(RECEIVED, 12, source="render_tail")
            assert render.call(render.fake.drop_sockets) == 1
            render.push_lines(SRV, lines[12:24])  # nobody subscribed: only the history has these
            render.wait_subscribers(1)
            render.push_lines(SRV, lines[24:])
            serve.wait_metric(RECEIVED, len(lines), source="render_tail")
            # Gap backfill and duplicates come before anything new, so once the sentinel is in, the count is final.
            render.push_lines(SRV, [SENTINEL])
            serve.wait_metric(RECEIVED, len(lines) + 1, source="render_tail")
            assert serve.metric(RECEIVED, source="render_tail") == len(lines) + 1
            assert serve.stop() == 0
        subscriptions = len(render.fake.subscribe_requests)
    assert subscriptions == 2
    assert stored_issues(serve.db) == expected_issues(lines)
    assert stored_runs(serve.db) == {**dict.fromkeys(COMPLETED_RUNS, "marker"), UNFINISHED_RUN: "shutdown"}
