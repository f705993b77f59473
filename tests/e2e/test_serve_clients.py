"""Real syslog clients against ``serve`` on loopback: util-linux ``logger`` and ``rsyslogd`` forwarding over TLS."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.prometheus import free_port, require_binary, wait_until
from tests.e2e.serve_harness import (
    COMPLETED_RUNS,
    MULTI_RUN_LOG,
    UNFINISHED_RUN,
    client_tls,
    connect,
    expected_issues,
    http_get,
    lf,
    make_cert,
    multi_run_lines,
    octet,
    rfc5424,
    run_serve,
    stored_issues,
    stored_runs,
    wait_closed,
)

pytestmark = pytest.mark.e2e

TOKEN = "stk_render_6b0e8f1d2c3a4b5e6f7a8b9c"
SD = f'[auth@41058 token="{TOKEN}"]'
SLOW = "[SYSTEM] [SYSTEM] [client-service] [INFO] a slow sender's line"
HOSTILE_GOOD = "[SYSTEM] [SYSTEM] [client-service] [INFO] a good line between bad frames"


def logger(port: int, *options: str, path: Path = MULTI_RUN_LOG) -> None:
    """``logger`` sending every line of ``path`` to 127.0.0.1:port over TCP."""
    subprocess.run(
        [require_binary("logger"), "--tcp", "-n", "127.0.0.1", "-P", str(port), "-t", "lead-scoring",
         *options, "-f", str(path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    "options", [["--rfc5424", "--octet-count"], []], ids=["rfc5424-octet-counted", "default-LF-framed"]
)
def test_logger_delivers_the_multi_run_log(tmp_path: Path, options: list[str]) -> None:
    """util-linux logger (octet counting, then plain LF framing) delivers every line; the issues match replay."""
    lines = multi_run_lines()
    with run_serve(tmp_path) as serve:
        logger(serve.syslog_port, *options)
        serve.wait_metric("stream_triage_lines_received_total", len(lines), source="syslog")
        assert serve.stop() == 0
    assert stored_issues(serve.db) == expected_issues(lines)
    assert stored_runs(serve.db) == {**dict.fromkeys(COMPLETED_RUNS, "marker"), UNFINISHED_RUN: "shutdown"}


def rsyslog_config(directory: Path, listen_port: int, target_port: int, driver: str, ca: Path) -> Path:
    """An rsyslogd config: imtcp on ``listen_port`` forwarding over TLS (anon) to ``target_port``, nothing else."""
    conf = directory / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{directory}" defaultNetstreamDriverCAFile="{ca}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{listen_port}" ruleset="forward")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{target_port}" protocol="tcp"
         StreamDriver="{driver}" StreamDriverMode="1" StreamDriverAuthMode="anon"
         Template="RSYSLOG_SyslogProtocol23Format" TCP_Framing="octet-counted"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
""",
        encoding="utf-8",
    )
    return conf


@contextlib.contextmanager
def run_rsyslogd(directory: Path, conf: Path, listen_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start rsyslogd in the foreground with ``conf`` and its own pid file; stop it on exit."""
    directory.mkdir(exist_ok=True)
    log = open(directory / "rsyslogd.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [require_binary("rsyslogd"), "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"rsyslogd exited: {(directory / 'rsyslogd.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen_port), timeout=1):
                return True
            return False

        wait_until(listening, 20, "rsyslogd to listen", interval=0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def hostile_clients(port: int, tls: ssl.SSLContext) -> None:
    """What an exposed port meets: garbage, non-TLS, bad and oversized frames, wrong tokens, slow senders."""
    # Plain bytes to the TLS port: the handshake fails, nothing else happens.
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05garbage\r\n\x00\xff" * 20)
        wait_closed(raw)
    # One TLS connection with malformed, garbage and oversized frames around one good frame.
    with connect(port, tls) as sock:
        sock.sendall(
            lf(b"<999>1 this is not syslog")
            + lf(b"\xff\xfe\xfd binary garbage")
            + octet(rfc5424("x" * 5000, sd=SD))
            + lf(b"no pri at all")
            + octet(rfc5424(HOSTILE_GOOD, sd=SD))
        )
        sock.unwrap().close()
    # A wrong token: the server closes the connection.
    with connect(port, tls) as sock:
        sock.sendall(octet(rfc5424(HOSTILE_GOOD, sd='[auth@41058 token="stk_guess_0000000000000000"]')))
        assert wait_closed(sock) == b""


def slow_client(port: int, tls: ssl.SSLContext, done: threading.Event) -> None:
    """Dribble one frame a few bytes at a time, then hold the connection open until ``done``."""
    frame = octet(rfc5424(SLOW, sd=SD))
    with connect(port, tls) as sock:
        for i in range(0, len(frame), 16):
            sock.sendall(frame[i : i + 16])
            time.sleep(0.01)
        sock.sendall(b"37 <14>1 - - - - - - partial fra")  # an octet frame that never completes
        done.wait(30)


def require_rsyslog_driver(driver: str) -> None:
    """Skip when rsyslog's TLS driver module is not installed; CI installs rsyslog-gnutls, so gtls fails there."""
    if not [
        *Path("/usr/lib").glob(f"*/rsyslog/lmnsd_{driver}.so"),
        *Path("/usr/lib/rsyslog").glob(f"lmnsd_{driver}.so"),
    ]:
        package = "rsyslog-gnutls" if driver == "gtls" else "rsyslog-openssl"
        message = f"rsyslog {driver} driver missing: install the Debian package {package}"
        if os.environ.get("CI") and driver == "gtls":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("driver", ["gtls", "ossl"])
def test_rsyslog_forwards_over_tls_while_bad_clients_hit_the_port(tmp_path: Path, driver: str) -> None:
    """rsyslogd (imtcp ← logger, omfwd TLS) delivers the multi-run log; hostile and slow clients change nothing."""
    require_binary("openssl")
    require_rsyslog_driver(driver)
    cert, key = make_cert(tmp_path)
    tls = client_tls(cert)
    lines = multi_run_lines()
    sections = {"sources.syslog": {"tls_cert_file": str(cert), "tls_key_file": str(key), "max_frame_bytes": 1024}}
    with run_serve(tmp_path, sections, env={"STREAM_TRIAGE_SYSLOG_TOKEN": TOKEN}) as serve:
        done = threading.Event()
        slow = threading.Thread(target=slow_client, args=(serve.syslog_port, tls, done))
        slow.start()
        try:
            listen = free_port()
            rs_dir = tmp_path / "rsyslog"
            rs_dir.mkdir()
            conf = rsyslog_config(rs_dir, listen, serve.syslog_port, driver, cert)
            with run_rsyslogd(rs_dir, conf, listen):
                hostile_clients(serve.syslog_port, tls)
                logger(listen, "--rfc5424", "--octet-count", "--sd-id", "auth@41058", "--sd-param", f'token="{TOKEN}"')
                serve.wait_metric("stream_triage_lines_received_total", len(lines) + 2, source="syslog")
                metrics = serve.metrics()
        finally:
            done.set()
            slow.join(timeout=30)
        assert http_get(serve.url("/readyz"))[0] == 200
        assert serve.stop() == 0

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    assert value("stream_triage_lines_received_total", source="syslog") == len(lines) + 2
    assert value("stream_triage_auth_failures_total", source="syslog") == 1
    assert value("stream_triage_frames_rejected_total", source="syslog", reason="oversized") == 1
    assert value("stream_triage_frames_rejected_total", source="syslog", reason="malformed") == 3
    assert stored_issues(serve.db) == expected_issues(lines)
    assert stored_runs(serve.db) == {**dict.fromkeys(COMPLETED_RUNS, "marker"), UNFINISHED_RUN: "shutdown"}
    log = serve.log()
    assert TOKEN not in log and "stk_guess" not in log
    assert log.count("wrong or missing token") == 1
