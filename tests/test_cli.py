"""The command line: replay (plain, Render dump, NDJSON, stdin), --json, issues, patterns."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_triage import cli
from stream_triage.config import Config
from stream_triage.pipeline import triage as triage_mod
from tests.helpers import default_patterns

ROOT = Path(__file__).resolve().parent.parent
RUN = "251103-081522"
TS = "2025-11-03T08:15:"

PLAIN = [
    f"[{TS}22.429113507Z] [{RUN}] [SYSTEM] [smart_resume] [INFO] Starting smart resume stream 2",
    f"[{TS}23.000Z] [{RUN}-Ann-Lee] [Ann-Lee] [smart_resume] [ERROR] Failed to update recAbCdEfGhIjKlMn: "
    'Unknown field name: "Stream"',
    "    at updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)",
    f"[{TS}24.000Z] [{RUN}-Bo-Chen] [Bo-Chen] [smart_resume] [INFO] 12 leads processed",
    f"[{TS}25.000Z] [{RUN}-Bo-Chen] [Bo-Chen] [smart_resume] [ERROR] Failed to update recZyXwVuTsRqPoNm: "
    'Unknown field name: "Stream"',
    "    at updateClientRun (/opt/render/project/src/services/clientRunService.js:212:17)",
    f"[{TS}26.000Z] [{RUN}] [SYSTEM] [smart_resume] [INFO] SMART RESUME PROCESSING COMPLETED",
]


@pytest.fixture(autouse=True)
def _reuse_compiled_default_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands reuse the compiled default pack (compiling takes seconds); custom packs compile."""
    real = triage_mod.build_patterns

    def build(config: Config):
        return default_patterns() if config.patterns == Config().patterns else real(config)

    monkeypatch.setattr(triage_mod, "build_patterns", build)
    monkeypatch.setattr(cli, "build_patterns", build)
    monkeypatch.delenv("STREAM_TRIAGE_DB", raising=False)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    rc = cli.main(["replay", "--no-store", "--json", *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


def test_replay_plain_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints runs and aggregated issues with every documented key."""
    rc, doc, err = replay_json(capsys, str(write(tmp_path / "a.log", PLAIN)))
    assert (rc, err) == (0, "")
    assert set(doc) == {"runs", "issues"}
    [run] = doc["runs"]
    assert run["run_id"] == RUN and run["ended"] == "marker" and run["stream"] == 2
    assert run["client_ids"] == ["Ann-Lee", "Bo-Chen"]
    [issue] = doc["issues"]
    assert {
        "fingerprint", "severity", "pattern", "message", "run_id", "run_ids", "client_id", "service",
        "occurrences", "first_seen", "last_seen", "line_numbers", "stack_trace", "context",
    } <= set(issue)  # fmt: skip
    assert issue["severity"] == "ERROR"
    assert issue["pattern"] == "airtable-unknown-field"
    assert issue["occurrences"] == 2
    assert issue["line_numbers"] == [2, 5]  # continuation lines are not occurrences
    assert issue["run_id"] == RUN and issue["run_ids"] == [RUN]
    assert issue["client_id"] == "Ann-Lee"
    assert issue["service"] == "updateClientRun (services/clientRunService.js)"
    assert issue["first_seen"] == "2025-11-03T08:15:23.000Z"
    assert issue["last_seen"] == "2025-11-03T08:15:25.000Z"
    assert issue["stack_trace"] == PLAIN[2]
    assert issue["context"][1].startswith(">> [251103-081522-Ann-Lee]")


def test_replay_aggregates_and_numbers_lines_across_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two files: one aggregated issue, line numbers counted across the inputs in order."""
    a = write(tmp_path / "a.log", PLAIN)
    second = [line.replace(RUN, "251104-081522").replace("2025-11-03", "2025-11-04") for line in PLAIN]
    b = write(tmp_path / "b.log", second)
    rc, doc, _ = replay_json(capsys, str(a), str(b))
    assert rc == 0
    [issue] = doc["issues"]
    assert issue["occurrences"] == 4
    assert issue["line_numbers"] == [2, 5, 9, 12]
    assert issue["run_ids"] == [RUN, "251104-081522"]
    assert issue["run_id"] == "251104-081522"
    assert [r["run_id"] for r in doc["runs"]] == [RUN, "251104-081522"]


def render_dump(lines: list[str]) -> dict:
    logs = []
    for n, line in enumerate(lines):
        ts, _, message = line.partition("] ") if line.startswith("[20") else ("", "", line)
        logs.append(
            {
                "id": f"log-{n}",
                "timestamp": ts[1:] if ts else f"{TS}59.000Z",
                "message": message,
                "labels": [{"name": "instance", "value": "srv-abc-1"}, {"name": "type", "value": "app"}],
            }
        )
    return {"logs": logs, "hasMore": False}


def test_replay_render_api_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Render API dump is detected; line numbers are indexes in `logs`; multi-line messages split."""
    # Render sends a stack trace as one multi-line message: entries 2 and 3 merge.
    lines = [*PLAIN[:2], PLAIN[2], *PLAIN[3:]]
    doc_in = render_dump(lines)
    doc_in["logs"][1]["message"] += "\n" + doc_in["logs"].pop(2)["message"]
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(doc_in, indent=2), encoding="utf-8")
    rc, doc, err = replay_json(capsys, str(path))
    assert (rc, err) == (0, "")
    [issue] = doc["issues"]
    assert issue["line_numbers"] == [2, 4]
    assert issue["stack_trace"] == PLAIN[2]
    assert issue["first_seen"] == "2025-11-03T08:15:23.000Z"


def test_replay_ndjson_with_a_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NDJSON is detected; a malformed line is reported with file and line, the rest processed, exit 1."""
    objs = [json.dumps(o) for o in render_dump(PLAIN)["logs"]]
    objs.insert(3, '{"timestamp": "2025-11-03T08:15:23Z", "message": "broken')
    path = write(tmp_path / "logs.ndjson", objs)
    rc, doc, err = replay_json(capsys, str(path))
    assert rc == 1
    assert f"{path}:4: malformed JSON line" in err
    assert "1 bad input record(s) skipped" in err
    [issue] = doc["issues"]
    assert issue["occurrences"] == 2
    assert issue["line_numbers"] == [2, 6]  # positions are the file's line numbers


def test_ndjson_line_numbers_count_blank_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Positions in NDJSON match the file's line numbers even with blank lines in between."""
    objs = [json.dumps(o) for o in render_dump(PLAIN)["logs"]]
    objs.insert(2, "")
    path = write(tmp_path / "logs.ndjson", objs)
    _, doc, _ = replay_json(capsys, str(path))
    assert doc["issues"][0]["line_numbers"] == [2, 6]


def test_replay_reads_standard_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`-` reads standard input."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(PLAIN) + "\n").encode())))
    rc, doc, _ = replay_json(capsys, "-")
    assert rc == 0
    assert doc["issues"][0]["line_numbers"] == [2, 5]


def test_unreadable_file_is_reported_and_others_processed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file gets a clear message; the other inputs are still replayed."""
    good = write(tmp_path / "a.log", PLAIN)
    rc, doc, err = replay_json(capsys, str(tmp_path / "missing.log"), str(good))
    assert rc == 1
    assert f"{tmp_path / 'missing.log'}: cannot open: No such file or directory" in err
    assert doc["issues"][0]["occurrences"] == 2


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid UTF-8 bytes are replaced; the line is still triaged."""
    path = tmp_path / "bad.log"
    path.write_bytes(b"[251103-081522] [Ann-Lee] [scrape] [ERROR] Failed to parse profile \xff\xfe\xc3 name\n")
    rc, doc, _ = replay_json(capsys, str(path))
    assert rc == 0
    [issue] = doc["issues"]
    assert issue["message"] == "Failed to parse profile \ufffd\ufffd\ufffd name"
    assert issue["pattern"] == "failed-operation"


def test_replay_summary_text_and_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json a readable summary is printed and issues are stored in --db."""
    db = tmp_path / "st.db"
    rc = cli.main(["replay", "--db", str(db), str(write(tmp_path / "a.log", PLAIN))])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "Replayed 7 lines from 1 input(s): 1 run(s) (1 marker)" in out
    assert "1 issue(s): 0 CRITICAL, 1 ERROR, 0 WARNING" in out
    assert "airtable-unknown-field" in out
    assert f"Stored in {db}" in out
    assert db.exists()


def test_issues_lifecycle_fixed_then_regressed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """issues list/show/set-status; a FIXED issue replayed again is REGRESSED (db from STREAM_TRIAGE_DB)."""
    monkeypatch.setenv("STREAM_TRIAGE_DB", str(tmp_path / "env.db"))
    log = str(write(tmp_path / "a.log", PLAIN))
    assert cli.main(["replay", log]) == 0
    capsys.readouterr()

    assert cli.main(["issues", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    fp = listed["fingerprint"]
    assert listed["status"] == "NEW"

    assert cli.main(["issues", "list"]) == 0
    out = capsys.readouterr().out
    assert fp in out and "NEW" in out and "Unknown field name" in out

    assert cli.main(["issues", "show", fp[:6]]) == 0
    out = capsys.readouterr().out
    assert f"Fingerprint:       {fp}" in out
    assert "Pattern Matched:   airtable-unknown-field, failed-operation, level-error" in out
    assert "Service/Function:  updateClientRun (services/clientRunService.js)" in out
    assert "Runs Affected:     1" in out
    assert "Stack Trace:" in out and "Context:" in out

    assert cli.main(["issues", "set-status", fp, "FIXED", "--notes", "added Stream field", "--commit", "9f8e7d6"]) == 0
    assert capsys.readouterr().out.strip() == f"{fp} → FIXED"
    assert cli.main(["issues", "show", "--json", fp]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "FIXED"

    assert cli.main(["issues", "list", "--status", "FIXED"]) == 0
    assert fp in capsys.readouterr().out
    assert cli.main(["replay", log]) == 0
    capsys.readouterr()
    assert cli.main(["issues", "show", fp]) == 0
    out = capsys.readouterr().out
    assert "Status:            REGRESSED" in out
    assert "Fix Notes:         added Stream field" in out
    assert "Fix Commit:        9f8e7d6" in out
    assert "Occurrences:       4" in out
    assert "Runs Affected:     1" in out  # the same run replayed twice is still one run


def test_issues_commands_on_unknown_fingerprint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown fingerprints give a message and exit 1; an empty store lists no issues."""
    db = str(tmp_path / "empty.db")
    assert cli.main(["issues", "list", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "no issues"
    assert cli.main(["issues", "show", "--db", db, "abc"]) == 1
    assert "no issue with fingerprint 'abc'" in capsys.readouterr().err
    assert cli.main(["issues", "set-status", "--db", db, "abc", "FIXED"]) == 1
    assert "no issue with fingerprint 'abc'" in capsys.readouterr().err


def test_store_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store that cannot be opened is a clear message and exit code 2."""
    (tmp_path / "dir.db").mkdir()
    assert cli.main(["issues", "list", "--db", str(tmp_path / "dir.db")]) == 2
    assert "stream-triage: cannot open issue store" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Config problems are printed, exit code 2."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[route]\ncontext_before = -1\n", encoding="utf-8")
    assert cli.main(["replay", "--no-store", "--config", str(cfg), str(write(tmp_path / "a.log", PLAIN))]) == 2
    assert "route.context_before: must be at least 0, got -1" in capsys.readouterr().err


def test_patterns_test_prints_match_masked_message_and_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    """`patterns test LINE` shows the parse, the match, the masked message and the fingerprint."""
    line = f"[{RUN}-Ann-Lee] [Ann-Lee] [gemini] [ERROR] timeout of 30000ms exceeded for lead recAbCdEfGhIjKlMn"
    assert cli.main(["patterns", "test", line]) == 0
    out = capsys.readouterr().out
    assert "match:        timeout (ERROR); all: timeout, level-error" in out
    assert "masked:       timeout of <n>ms exceeded for lead <id>" in out
    assert "run_id:       251103-081522" in out
    assert "run_suffix:   Ann-Lee" in out
    assert cli.main(["patterns", "test", "--json", line]) == 0
    doc = json.loads(capsys.readouterr().out)
    other = "[251104-120000] [Bo-Chen] [gemini] [ERROR] timeout of 45000ms exceeded for lead recZyXwVuTsRqPoNm"
    assert cli.main(["patterns", "test", "--json", other]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprint"] == doc["fingerprint"]
    assert len(doc["fingerprint"]) == 16


def test_patterns_test_fingerprint_matches_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fingerprint `patterns test` prints is the one replay stores for the same line."""
    line = f"[{RUN}] [Ann-Lee] [leads] [ERROR] Failed to fetch leads for Ann Lee, password=hunter2 rejected"
    cli.main(["patterns", "test", "--json", line])
    expected = json.loads(capsys.readouterr().out)["fingerprint"]
    _, doc, _ = replay_json(capsys, str(write(tmp_path / "one.log", [line])))
    assert doc["issues"][0]["fingerprint"] == expected


def test_patterns_test_without_match_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A line no pattern matches says so and exits 1."""
    assert cli.main(["patterns", "test", "[251103-081522] [Ann-Lee] [batch] [INFO] 50 successful, 0 failed"]) == 1
    out = capsys.readouterr().out
    assert "match:        no match" in out


def test_patterns_list(capsys: pytest.CaptureFixture[str]) -> None:
    """`patterns list` shows every active pattern."""
    assert cli.main(["patterns", "list"]) == 0
    out = capsys.readouterr().out
    assert "CRITICAL node-fatal-error" in out
    assert "Hyperscan prefilter on" in out


@pytest.mark.e2e
def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    """`python -m stream_triage replay --json` works as a separate process, reading stdin."""
    proc = subprocess.run(
        [sys.executable, "-m", "stream_triage", "replay", "--no-store", "--json", "-"],
        input=("\n".join(PLAIN) + "\n").encode(),
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert [i["pattern"] for i in doc["issues"]] == ["airtable-unknown-field"]
    assert doc["issues"][0]["line_numbers"] == [2, 5]
