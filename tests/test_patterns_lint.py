"""Safe pattern packs: load-time validation, the match time limit, and `patterns lint`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stream_triage.config import load_config
from stream_triage.errors import PatternError
from stream_triage.patterns import lint as lint_mod
from stream_triage.patterns import parse_pack
from stream_triage.pipeline.match import PatternSet
from stream_triage.pipeline.triage import Triage, build_patterns
from stream_triage.records import EndReason, RawRecord

CATASTROPHIC = r"(a+)+$"
# Hyperscan's prefilter ignores the lookbehind, so a line of a's ending in c passes it and reaches
# `regex`, where the lookbehind always fails after the nested quantifier: catastrophic backtracking.
CATASTROPHIC_UNFILTERED = r"(a+)+(?<!a)c"
BAD_PACK = """\
# A user's pack with a pattern that is too eager and one that backtracks catastrophically.
[[pattern]]
id = "any-429"
severity = "WARNING"
regex = '429'
description = "bare 429: fires on timestamps and byte counts"

[[pattern]]
id = "a-run"
severity = "ERROR"
regex = '(a+)+$'
description = "nested quantifier"

[[pattern]]
id = "payment-declined"
severity = "ERROR"
regex = '\\bpayment declined\\b'
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _config_with_pack(tmp_path: Path, pack: str) -> Path:
    pack_path = _write(tmp_path, "user.toml", pack)
    return _write(tmp_path, "config.toml", f"[patterns]\nfiles = [{json.dumps(str(pack_path))}]\n")


def _lint_args(config: Path | None, as_json: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    lint_mod.add_parser(parser.add_subparsers())
    argv = ["lint", "--slow-ms", "100"] + (["--config", str(config)] if config else [])
    argv += ["--json"] if as_json else []
    return parser.parse_args(argv)


def test_bad_regexes_are_reported_together_with_file_line_and_id(tmp_path: Path) -> None:
    """Every broken pattern of a user pack is listed at once, each with file:line and its id."""
    pack = _write(
        tmp_path,
        "broken.toml",
        "[[pattern]]\nid = \"ok\"\nseverity = \"ERROR\"\nregex = 'fine'\n\n"
        "[[pattern]]\nid = \"unclosed\"\nseverity = \"ERROR\"\nregex = 'took (\\d+'\nmin_value = 5\n\n"
        "[[pattern]]\nid = \"bad-unless\"\nseverity = \"WARNING\"\nregex = 'x'\nunless = '[z-a]'\n",
    )
    config = load_config(_write(tmp_path, "c.toml", f"[patterns]\nfiles = [{json.dumps(str(pack))}]\n"), {})
    with pytest.raises(PatternError) as err:
        build_patterns(config)
    text = str(err.value)
    assert f"{pack}:7 (pattern 'unclosed'): regex does not compile" in text
    assert f"{pack}:13 (pattern 'bad-unless'): unless does not compile" in text
    assert "'ok'" not in text


def test_unknown_keys_and_severities_name_the_pattern() -> None:
    """A typo in a key or a severity is reported with the pattern's line and id."""
    with pytest.raises(PatternError, match=r"p\.toml:2 \(pattern 'x'\): unknown key 'regx'"):
        parse_pack("[[pattern]]\nid = 'x'\nseverity = 'ERROR'\nregx = 'a'\n", "p.toml")
    with pytest.raises(PatternError, match="severity must be CRITICAL, ERROR or WARNING, got 'FATAL'"):
        parse_pack("[[pattern]]\nid = 'x'\nseverity = 'FATAL'\nregex = 'a'\n", "p.toml")


def _single(rx: str) -> list:
    return parse_pack(f"[[pattern]]\nid = 'a-run'\nseverity = 'ERROR'\nregex = '{rx}'\n", "user.toml")


@pytest.mark.timeout(30)  # a hang guard, not a timing assertion
@pytest.mark.parametrize(
    ("rx", "end", "hyperscan"), [(CATASTROPHIC, "b", False), (CATASTROPHIC_UNFILTERED, "c", True)]
)
def test_catastrophic_pattern_on_a_long_line_is_cut_off_and_counted(rx: str, end: str, hyperscan: bool) -> None:
    """A backtracking pattern on a 50,000-char line ends at the time limit as no match, counted."""
    patterns = PatternSet(_single(rx), timeout_s=0.05, use_hyperscan=hyperscan)
    assert patterns.match("a" * 50_000 + end) is None
    assert patterns.timeouts == {"a-run": 1}


@pytest.mark.timeout(30)  # a hang guard, not a timing assertion
def test_hyperscan_prefilter_rules_out_the_catastrophic_line_before_regex_runs() -> None:
    """With the prefilter, `(a+)+$` never reaches the backtracking engine on a line ending in b."""
    patterns = PatternSet(_single(CATASTROPHIC), timeout_s=0.05, use_hyperscan=True)
    if not patterns.accelerated:
        pytest.skip("hyperscan is not installed")
    assert patterns.match("a" * 50_000 + "b") is None
    assert patterns.timeouts == {}


@pytest.mark.timeout(60)  # a hang guard, not a timing assertion
def test_pipeline_goes_on_after_a_pattern_times_out(tmp_path: Path) -> None:
    """With the bad pattern active, a hostile line is skipped and the next real error still becomes an issue."""
    pack = BAD_PACK.replace(f"'{CATASTROPHIC}'", f"'{CATASTROPHIC_UNFILTERED}'")
    config = load_config(_config_with_pack(tmp_path, pack), {})
    triage = Triage(config)
    run = "[251103-081522-Ann-Lee] [Ann-Lee] [billing]"
    triage.process(RawRecord(f"{run} [INFO] " + "a" * 50_000 + "c", "t", 1762157722.0, 1))
    triage.process(RawRecord(f"{run} [INFO] Payment declined for invoice 7", "t", 1762157723.0, 2))
    flushes = triage.flush_all(EndReason.EOF)
    issues = [i for f in flushes for i in f.issues]
    assert [(i.pattern_id, i.positions) for i in issues] == [("payment-declined", [2])]
    assert triage.patterns.timeouts["a-run"] >= 1


def test_default_pack_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped pack matches none of the known-good lines and has no slow pattern: exit 0."""
    assert lint_mod.run(_lint_args(None)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["false_positives"] == [] and doc["slow"] == []
    assert doc["patterns"] >= 40 and "batch-failed" in doc["timings_ms"]


@pytest.mark.timeout(60)  # a hang guard, not a timing assertion
def test_lint_flags_a_user_pattern_matching_negatives_and_a_slow_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare `429` matches known-good lines and `(a+)+$` times out on long lines: both reported, exit 1."""
    assert lint_mod.run(_lint_args(_config_with_pack(tmp_path, BAD_PACK))) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    eager = [f for f in doc["false_positives"] if f["pattern"] == "any-429"]
    assert any("responseBytes=429" in f["line"] for f in eager)
    assert any("Processed 429 leads" in f["line"] for f in eager)
    assert all(f["origin"].startswith(str(tmp_path / "user.toml")) for f in eager)
    assert {f["pattern"] for f in doc["false_positives"]} == {"any-429"}
    (slow,) = doc["slow"]
    assert slow["pattern"] == "a-run" and slow["timed_out"] is True


def test_lint_text_output_and_broken_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report names the offending patterns; a pack that does not load is exit 1 with the reason."""
    assert lint_mod.run(_lint_args(_config_with_pack(tmp_path, BAD_PACK), as_json=False)) == 1
    out = capsys.readouterr().out
    assert "False positives" in out and "any-429" in out and "Slow patterns" in out and "a-run" in out
    broken = _config_with_pack(tmp_path, "[[pattern]]\nid = 'x'\nseverity = 'ERROR'\nregex = '('\n")
    assert lint_mod.run(_lint_args(broken)) == 1
    assert "(pattern 'x'): regex does not compile" in capsys.readouterr().err


def test_lint_function_checks_levels_like_the_pipeline() -> None:
    """Negatives are parsed first, so a WARN-only pattern does not fire on an INFO line that mentions it."""
    specs = parse_pack(
        "[[pattern]]\nid = 'retry'\nseverity = 'WARNING'\nregex = 'retrying'\nnot_levels = ['INFO']\n", "p.toml"
    )
    report = lint_mod.lint(specs, negatives=["[x] [y] [z] [INFO] Retrying in 2s"], adversarial=[])
    assert report.ok
    report = lint_mod.lint(specs, negatives=["Retrying in 2s (untagged)"], adversarial=[])
    assert [f.pattern for f in report.false_positives] == ["retry"]
