"""Configuration: TOML + environment → typed config; every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_triage.config import DEFAULT_COMPLETION_MARKERS, Config, RunTypeRule, load_config
from stream_triage.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stream-triage.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    """No file: the documented defaults."""
    config = load_config(None, env={})
    assert config == Config()
    assert (config.route.context_before, config.route.context_after) == (25, 25)
    assert config.flush.grace_after_marker_s == 600.0
    assert config.flush.idle_timeout_s == 1800.0
    assert config.flush.completion_markers == DEFAULT_COMPLETION_MARKERS
    assert config.patterns.slow_request_ms == 5000
    assert config.store.path == "stream-triage.db"
    assert [r.name for r in config.run_metadata.run_types] == [
        "smart-resume", "batch-score", "apify-webhook", "scheduled-job", "api-endpoint",
    ]  # fmt: skip


def test_file_values_are_typed(tmp_path: Path) -> None:
    """Values from TOML land in their sections; ints are accepted for float fields."""
    path = write(
        tmp_path,
        """
[route]
context_before = 5
context_line_chars = 200
[flush]
grace_after_marker_s = 60
completion_markers = ["RUN DONE"]
[patterns]
slow_request_ms = 2500
disabled = ["deprecation"]
[[run_metadata.run_types]]
name = "enrichment"
regex = "(?i)enrich"
[store]
path = "/var/lib/st/issues.db"
""",
    )
    config = load_config(path, env={})
    assert config.route.context_before == 5
    assert config.route.context_after == 25
    assert config.flush.grace_after_marker_s == 60.0 and isinstance(config.flush.grace_after_marker_s, float)
    assert config.flush.completion_markers == ["RUN DONE"]
    assert config.patterns.disabled == ["deprecation"]
    assert config.run_metadata.run_types == [RunTypeRule("enrichment", "(?i)enrich")]
    assert config.store.path == "/var/lib/st/issues.db"


def test_stream_triage_db_env_overrides_the_store_path(tmp_path: Path) -> None:
    """STREAM_TRIAGE_DB wins over the file."""
    path = write(tmp_path, '[store]\npath = "from-file.db"\n')
    assert load_config(path, env={"STREAM_TRIAGE_DB": "/tmp/env.db"}).store.path == "/tmp/env.db"
    assert load_config(path, env={}).store.path == "from-file.db"


def test_secrets_come_from_the_environment_only() -> None:
    """Known secret variables are collected; others are not."""
    config = load_config(None, env={"AIRTABLE_API_KEY": "patX", "HOME": "/root", "RENDER_API_KEY": ""})
    assert config.secrets == {"AIRTABLE_API_KEY": "patX"}
    assert "patX" not in repr(config)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Unknown keys, wrong types, bad regexes and out-of-range numbers come in one error."""
    path = write(
        tmp_path,
        """
[route]
context_befor = 5
context_after = "ten"
max_open_runs = 0
[flush]
completion_markers = ["(unclosed"]
[parse]
line_regex = "^\\\\[(?P<run>\\\\d+)\\\\]"
[sinks]
x = 1
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = info.value.problems
    text = "\n".join(problems)
    assert "route.context_befor: unknown key; valid keys here are:" in text
    assert "context_before" in text
    assert "route.context_after: expected int, got str 'ten'" in text
    assert "route.max_open_runs: must be at least 1, got 0" in text
    assert "flush.completion_markers[0]: invalid regular expression '(unclosed'" in text
    assert "parse.line_regex: the regex must define the named group(s) message" in text
    assert "sinks.x: unknown key" in text
    assert len(problems) == 6
    assert str(info.value).startswith("invalid configuration:\n  - ")


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    """`true` for a number is a type error, not 1."""
    with pytest.raises(ConfigError, match=r"route\.context_before: expected int, got bool True"):
        load_config(write(tmp_path, "[route]\ncontext_before = true\n"), env={})


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    """A missing config file names the path and the option."""
    with pytest.raises(ConfigError, match="no such config file; pass an existing file to --config"):
        load_config(tmp_path / "nope.toml", env={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    with pytest.raises(ConfigError, match=r"stream-triage\.toml: not valid TOML"):
        load_config(write(tmp_path, "[route\ncontext_before = 1\n"), env={})


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    """`route = 5` is reported, not crashed on."""
    with pytest.raises(ConfigError, match="route: expected a table, got int"):
        load_config(write(tmp_path, "route = 5\n"), env={})
