"""``stream-triage serve`` start-up: the defaults without a config file, and config errors reported at once."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream_triage.config import load_config
from tests.e2e.serve_harness import ROOT, clean_env, http_get, run_serve, toml_text

pytestmark = pytest.mark.e2e


def serve_once(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to exit by itself (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "stream_triage", "serve", *args],
        capture_output=True, text=True, env=clean_env(env), cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_defaults_without_a_config_file_are_sqlite_http_8080_and_syslog_5514() -> None:
    """With no file and no environment: SQLite store, HTTP on 127.0.0.1:8080, syslog TCP on 127.0.0.1:5514."""
    config = load_config(None, {})
    assert config.store.path == "stream-triage.db"
    assert (config.server.http_host, config.server.http_port) == ("127.0.0.1", 8080)
    syslog = config.sources.syslog
    assert (syslog.enabled, syslog.host, syslog.port) == (True, "127.0.0.1", 5514)
    assert (syslog.tls_cert_file, syslog.tls_key_file) == ("", "")
    assert config.sources.http_drain.enabled and config.sources.http_drain.path == "/drain"
    assert not config.sources.render_tail.enabled
    assert not config.airtable_enabled
    assert config.metrics.enabled and not config.metrics.require_token
    assert config.secrets == {}


def test_bad_config_exits_2_and_prints_every_problem_with_its_key(tmp_path: Path) -> None:
    """Every problem of a bad file is printed in one go, each naming its key and what to do; exit code 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        toml_text(
            {
                "server": {"http_port": 99999, "queue_max_batches": 0, "bogus": 1},
                "sources.syslog": {"tls_cert_file": str(tmp_path / "missing.pem"), "max_frame_bytes": "big"},
                "sources.render_tail": {"enabled": True},
                "logging": {"level": "LOUD"},
            }
        ),
        encoding="utf-8",
    )
    result = serve_once(["--config", str(bad)])
    assert result.returncode == 2
    err = result.stderr
    for expected in (
        "server.http_port: must be a port number 0-65535, got 99999",
        "server.queue_max_batches: must be at least 1, got 0",
        "server.bogus: unknown key; valid keys here are:",
        "sources.syslog.max_frame_bytes: expected int, got str 'big'",
        "sources.syslog: set both tls_cert_file and tls_key_file",
        "sources.syslog.tls_cert_file: no such file",
        "sources.render_tail: enabled but RENDER_API_KEY is not set in the environment",
        "sources.render_tail.owner_id: required",
        "sources.render_tail.resources: list at least one service id",
        "logging.level: must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got 'LOUD'",
    ):
        assert expected in err, f"missing {expected!r} in:\n{err}"
    assert err.count("\n  - ") == 10
    assert "ready" not in err and result.stdout == ""


def test_invalid_toml_and_missing_file_exit_2_with_what_to_do(tmp_path: Path) -> None:
    """A syntax error points at the position; a missing file says to pass an existing one."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nhttp_port = 1\n", encoding="utf-8")
    result = serve_once(["--config", str(broken)])
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "fix the syntax" in result.stderr
    result = serve_once(["--config", str(tmp_path / "nope.toml")])
    assert result.returncode == 2
    assert "no such config file; pass an existing file to --config" in result.stderr


def test_a_port_in_use_is_reported_and_exits_2(tmp_path: Path) -> None:
    """When the syslog port is taken, serve says so and exits 2 instead of running half-started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "busy.toml"
        cfg.write_text(
            toml_text(
                {
                    "store": {"path": str(tmp_path / "s.db")},
                    "server": {"http_port": 0},
                    "sources.syslog": {"port": port},
                }
            ),
            encoding="utf-8",
        )
        result = serve_once(["--config", str(cfg)])
    assert result.returncode == 2
    assert "cannot start" in result.stderr and str(port) in result.stderr


def test_serve_with_a_config_file_answers_health_and_readiness(tmp_path: Path) -> None:
    """The subprocess binds the configured ports and answers /healthz and /readyz with 200."""
    with run_serve(tmp_path) as serve:
        assert http_get(serve.url("/healthz")) == (200, b'{"status": "ok"}')
        status, body = http_get(serve.url("/readyz"))
        assert status == 200
        assert b'"ready": true' in body and b'"syslog_listening": true' in body
        assert serve.stop() == 0
    assert "stopped" in serve.log()


def test_an_unreadable_tls_certificate_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    """A cert/key file that is not PEM ends serve with exit 2 and a message naming the keys."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    cfg = tmp_path / "tls.toml"
    cfg.write_text(
        toml_text(
            {
                "store": {"path": str(tmp_path / "s.db")},
                "server": {"http_port": 0},
                "sources.syslog": {"port": 0, "tls_cert_file": str(junk), "tls_key_file": str(junk)},
            }
        ),
        encoding="utf-8",
    )
    result = serve_once(["--config", str(cfg)])
    assert result.returncode == 2
    assert "sources.syslog.tls_cert_file / tls_key_file: cannot load" in result.stderr
    assert "give a PEM certificate and its matching private key" in result.stderr
    assert "Traceback" not in result.stderr
