"""Pattern packs: the shipped default loads; user packs are validated with file, line and id."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_triage.config import Config
from stream_triage.errors import PatternError
from stream_triage.patterns import default_pack_path, load_pack, parse_pack
from stream_triage.pipeline.triage import build_patterns
from stream_triage.records import Severity


def test_default_pack_loads_with_unique_ids_and_descriptions() -> None:
    """The shipped pack is valid; every pattern has a unique id and a description."""
    specs = load_pack(default_pack_path())
    ids = [s.id for s in specs]
    assert len(ids) == len(set(ids)) >= 30
    assert all(s.description for s in specs)
    assert {s.severity for s in specs} == set(Severity)
    assert {s.id for s in specs if s.levels} == {"level-critical", "level-error", "level-warn"}


def test_origin_points_at_the_id_line() -> None:
    """Each spec knows its file and line for error messages."""
    text = default_pack_path().read_text(encoding="utf-8").splitlines()
    for spec in load_pack(default_pack_path()):
        line = int(spec.origin.split(":")[-1].split(" ")[0])
        assert text[line - 1].replace(" ", "") == f'id="{spec.id}"'


def test_every_problem_is_reported_with_file_line_and_id() -> None:
    """A broken pack lists each problem with its location."""
    text = """
[[pattern]]
id = "ok"
severity = "ERROR"
regex = 'boom'

[[pattern]]
id = "bad-severity"
severity = "FATAL"
regex = 'x'

[[pattern]]
id = "bad-regex"
severity = "ERROR"
regex = '(unclosed'

[[pattern]]
id = "ok"
severity = "WARNING"
regex = 'dup'

[[pattern]]
id = "empty"
severity = "WARNING"
regex = ''

[[pattern]]
id = "typo"
severity = "WARNING"
regex = 'x'
sevrity = "ERROR"

[[pattern]]
id = "no-group"
severity = "WARNING"
regex = 'took \\d+ms'
min_value = 500
"""
    with pytest.raises(PatternError) as info:
        parse_pack(text, "user.toml")
    message = str(info.value)
    assert "user.toml:8 (pattern 'bad-severity'): severity must be CRITICAL, ERROR or WARNING, got 'FATAL'" in message
    assert "user.toml:13 (pattern 'bad-regex'): regex does not compile" in message
    assert "user.toml:18 (pattern 'ok'): duplicate id" in message
    assert "user.toml:23 (pattern 'empty'): an empty regex matches every line" in message
    assert "user.toml:28 (pattern 'typo'): unknown key 'sevrity'" in message
    assert "user.toml:34 (pattern 'no-group'): min_value needs a capture group" in message
    assert message.count("\n  - ") == 6


def test_invalid_toml_and_unreadable_file(tmp_path: Path) -> None:
    """Syntax errors and missing files are PatternErrors naming the file."""
    with pytest.raises(PatternError, match=r"mine\.toml: not valid TOML"):
        parse_pack("[[pattern]\n", "mine.toml")
    with pytest.raises(PatternError, match=r"missing\.toml: cannot read pattern pack"):
        load_pack(tmp_path / "missing.toml")


def test_level_only_pattern_and_not_levels() -> None:
    """`levels` with an empty regex matches on level alone; not_levels excludes levels."""
    [spec, other] = parse_pack(
        """
[[pattern]]
id = "any-error"
severity = "ERROR"
regex = ''
levels = ["error"]

[[pattern]]
id = "retry"
severity = "WARNING"
regex = 'retry'
not_levels = ["info"]
"""
    )
    assert spec.levels == frozenset({"ERROR"})
    assert other.not_levels == frozenset({"INFO"})


def test_user_pack_adds_overrides_and_disables(tmp_path: Path) -> None:
    """A user pattern with a built-in id replaces it; new ids are added; disabled ids are dropped."""
    user = tmp_path / "mine.toml"
    user.write_text(
        """
[[pattern]]
id = "deprecation"
severity = "ERROR"
regex = 'DeprecationWarning'
description = "we treat deprecations as errors"

[[pattern]]
id = "lead-quota"
severity = "WARNING"
regex = 'lead quota (?:reached|exceeded)'
""",
        encoding="utf-8",
    )
    config = Config()
    config.patterns.files = [str(user)]
    config.patterns.disabled = ["high-cpu"]
    ps = build_patterns(config)
    ids = [s.id for s in ps.specs]
    assert ids.count("deprecation") == 1
    assert "lead-quota" in ids and "high-cpu" not in ids
    m = ps.match("(node:42) DeprecationWarning: Buffer() is deprecated")
    assert (m.pattern_id, m.severity) == ("deprecation", Severity.ERROR)
    assert ps.match("Lead quota reached for Ann-Lee").pattern_id == "lead-quota"
    assert ps.match("CPU usage above 95% for 60s") is None


def test_without_the_default_pack_only_user_patterns_fire(tmp_path: Path) -> None:
    """use_default_pack = false leaves only the user's patterns."""
    user = tmp_path / "mine.toml"
    user.write_text('[[pattern]]\nid = "x"\nseverity = "ERROR"\nregex = "lead quota"\n', encoding="utf-8")
    config = Config()
    config.patterns.use_default_pack = False
    config.patterns.files = [str(user)]
    ps = build_patterns(config)
    assert [s.id for s in ps.specs] == ["x"]
    assert ps.match("FATAL ERROR: Reached heap limit") is None
