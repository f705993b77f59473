"""Continuation lines and top in-app frames for Node, Python and Java traces."""

from __future__ import annotations

import pytest

from stream_triage.pipeline.stacktrace import (
    is_continuation,
    is_trace_line,
    starts_traceback,
    top_app_frame,
    trace_lines,
)

NODE = [
    "    at Object.get (/opt/render/project/src/node_modules/airtable/lib/record.js:48:11)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
    "    at async updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)",
    "    at async /opt/render/project/src/routes/smartResume.js:88:9",
]
PYTHON = [
    "Traceback (most recent call last):",
    '  File "/app/worker/main.py", line 41, in run',
    "    score_batch(batch)",
    '  File "/app/worker/scoring.py", line 118, in score_batch',
    "    raise ValueError(f'bad score {s}')",
    '  File "/usr/lib/python3.11/site-packages/httpx/_client.py", line 900, in send',
    "ValueError: bad score 11",
]
JAVA = [
    "\tat java.base/java.util.HashMap.get(HashMap.java:556)",
    "\tat com.acme.leads.ScoreService.score(ScoreService.java:77)",
    "\tat com.acme.leads.Worker.run(Worker.java:31)",
    "Caused by: java.io.IOException: stream closed",
    "\t... 12 more",
]


def test_node_top_frame_skips_node_modules_and_internal() -> None:
    """The innermost Node frame in app code is the service, without line numbers or the project root."""
    assert top_app_frame(NODE) == "updateClientRun (services/clientRunService.js)"


def test_node_anonymous_frame_is_the_file() -> None:
    """A frame without a function name is named by its file."""
    assert top_app_frame(NODE[1:2] + NODE[3:]) == "routes/smartResume.js"


def test_python_top_frame_is_the_innermost_app_frame() -> None:
    """Python prints innermost last; site-packages frames are skipped."""
    assert top_app_frame(PYTHON) == "score_batch (worker/scoring.py)"


def test_java_top_frame_skips_the_platform() -> None:
    """java.* frames are skipped; the first app frame names method and file."""
    assert top_app_frame(JAVA) == "com.acme.leads.ScoreService.score (ScoreService.java)"


def test_no_app_frame_gives_none() -> None:
    """Only vendor frames: no service."""
    assert top_app_frame(NODE[:2]) is None
    assert top_app_frame([]) is None


@pytest.mark.parametrize(
    "text",
    NODE + JAVA + ["Traceback (most recent call last):", '  File "/app/x.py", line 1, in f', '  "fields": {',
                   "}", "},", "  ]", "During handling of the above exception, another exception occurred:"],
)  # fmt: skip
def test_continuation_lines(text: str) -> None:
    """Frames, causes, tracebacks and indented JSON continue the previous line."""
    assert is_continuation(text)


@pytest.mark.parametrize(
    "text",
    ["==> Build successful 🎉", "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
     "ValueError: bad score 11", "[251103-081522] [A] [op] [INFO] x", ""],
)  # fmt: skip
def test_non_continuation_lines(text: str) -> None:
    """Unindented lines start their own event (a Python exception line only inside a traceback)."""
    assert not is_continuation(text)


def test_python_exception_tail_continues_only_inside_traceback() -> None:
    """`ValueError: …` after Traceback frames belongs to the traceback."""
    assert is_continuation("ValueError: bad score 11", in_traceback=True)
    assert is_continuation("requests.exceptions.ConnectionError: boom", in_traceback=True)
    assert not is_continuation("Loaded 14 clients", in_traceback=True)


def test_starts_traceback() -> None:
    """Python traceback openers are recognised."""
    assert starts_traceback("Traceback (most recent call last):")
    assert starts_traceback("During handling of the above exception, another exception occurred:")
    assert not starts_traceback("    at x (/app/a.js:1:1)")


def test_trace_lines_exclude_json_bodies() -> None:
    """Frames and exception lines are trace; indented JSON and Python source lines are not."""
    assert all(is_trace_line(t) for t in [*NODE, JAVA[0], JAVA[3], JAVA[4], PYTHON[0], PYTHON[1], PYTHON[6]])
    assert not is_trace_line('  "fields": {')
    assert not is_trace_line("    score_batch(batch)")


def test_trace_lines_keep_python_source_lines_and_drop_json() -> None:
    """Python's source and caret lines stay in the trace; a JSON body after a Node error does not."""
    py = [*PYTHON[:5], "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^", PYTHON[6]]
    assert trace_lines(py) == py
    node = ['  "statusCode": 422,', NODE[0], NODE[2], "}"]
    assert trace_lines(node) == [NODE[0], NODE[2]]
