"""The deployment files parse and agree with each other: ports, paths, job names, secrets, mounts."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_triage.app import Service
from stream_triage.config import SECRET_ENV, Config, load_config
from stream_triage.errors import ConfigError
from tests.e2e.prometheus import ROOT, promtool, require_binary

DEPLOY = ROOT / "deploy"
SECRETS = {*SECRET_ENV, "AIRTABLE_BASE_ID"}
EXAMPLE_CONFIGS = ["render.toml", "vm.toml", "compose.toml"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _toml(name: str) -> dict[str, Any]:
    return tomllib.loads((DEPLOY / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    return _yaml(ROOT / "render.yaml")


@pytest.fixture(scope="module")
def prom_config() -> dict[str, Any]:
    return _yaml(DEPLOY / "prometheus" / "prometheus.yml")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of a compose service's bind mounts (``./x:/y[:ro]``)."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        out[container] = host
    return out


def test_every_yaml_and_json_file_parses() -> None:
    """All deployment YAML and the dashboard JSON are syntactically valid."""
    yamls = [ROOT / "render.yaml", ROOT / "docker-compose.yml", *DEPLOY.rglob("*.yml"),
             *(ROOT / "grafana" / "provisioning").rglob("*.yml")]
    assert len(yamls) >= 7
    for path in yamls:
        assert isinstance(_yaml(path), dict), path
    json.loads((ROOT / "grafana" / "dashboards" / "stream-triage.json").read_text(encoding="utf-8"))


def test_compose_runs_the_service_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    """Compose has the three services, builds the Dockerfile, mounts only existing files, binds loopback."""
    services = compose["services"]
    assert set(services) == {"stream-triage", "prometheus", "grafana"}
    assert services["stream-triage"]["build"] == "."
    for service in services.values():
        for host in _mounts(service).values():
            if host.startswith("./"):
                assert (ROOT / host).exists(), host
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} would be published on every interface"


def test_compose_prometheus_mounts_the_config_and_alert_rules(
    compose: dict[str, Any], prom_config: dict[str, Any]
) -> None:
    """Prometheus gets prometheus.yml and alerts.yml where the config expects them, and the token secret."""
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    for rule_file in prom_config["rule_files"]:
        assert mounts[rule_file] == "./deploy/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    (job,) = prom_config["scrape_configs"]
    secret = job["authorization"]["credentials_file"]
    assert secret == f"/run/secrets/{prometheus['secrets'][0]}"
    assert compose["secrets"][prometheus["secrets"][0]]["environment"] == "STREAM_TRIAGE_METRICS_TOKEN"


def test_compose_grafana_mounts_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    """Grafana mounts grafana/provisioning and the dashboards directory the provider reads."""
    mounts = _mounts(compose["services"]["grafana"])
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = _yaml(ROOT / "grafana" / "provisioning" / "dashboards" / "stream-triage.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    datasource = _yaml(ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_the_service_where_compose_runs_it(prom_config: dict[str, Any]) -> None:
    """The stream-triage job targets the compose service on the port deploy/compose.toml binds."""
    (job,) = prom_config["scrape_configs"]
    assert job["job_name"] == "stream-triage"
    assert job["metrics_path"] == "/metrics"
    port = _toml("compose.toml")["server"]["http_port"]
    assert job["static_configs"][0]["targets"] == [f"stream-triage:{port}"]
    assert job["authorization"]["type"] == "Bearer"
    assert prom_config["rule_files"]


def test_blueprint_is_a_web_service_with_health_check_disk_and_secret_env(blueprint: dict[str, Any]) -> None:
    """render.yaml: one web service, /healthz, a disk holding the DB, secrets as sync: false."""
    service = blueprint["services"][0]
    assert service["type"] == "web"
    assert service["healthCheckPath"] == "/healthz"
    assert service["startCommand"] == "stream-triage serve --config deploy/render.toml"
    assert (ROOT / "deploy" / "render.toml").exists()
    env = {e["key"]: e for e in service["envVars"]}
    db = env["STREAM_TRIAGE_DB"]["value"]
    assert db.startswith(service["disk"]["mountPath"] + "/")
    assert service["disk"]["sizeGB"] >= 1
    secrets = {k for k in env if k in SECRETS}
    assert secrets >= {"RENDER_API_KEY", "AIRTABLE_API_KEY", "STREAM_TRIAGE_DRAIN_TOKEN",
                       "STREAM_TRIAGE_METRICS_TOKEN"}
    for key in secrets:
        assert env[key] == {"key": key, "sync": False}, key


def test_blueprint_port_matches_the_render_config(blueprint: dict[str, Any]) -> None:
    """Render routes to $PORT: the blueprint's PORT equals render.toml's http_port on 0.0.0.0."""
    env = {e["key"]: e.get("value") for e in blueprint["services"][0]["envVars"]}
    server = _toml("render.toml")["server"]
    assert server["http_host"] == "0.0.0.0"
    assert int(env["PORT"]) == server["http_port"]
    config = _toml("render.toml")
    assert config["sources"]["render_tail"]["enabled"] is True
    assert config["sources"]["http_drain"]["enabled"] is True
    assert config["sources"]["syslog"]["enabled"] is False


def test_dockerfile_runs_as_non_root_with_a_stdlib_health_check() -> None:
    """The image is python:3.11-slim; a build stage with a compiler makes the wheel (and fails without
    the compiled kernel in it); the image installs it, drops root, and probes /healthz with urllib."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    build = text[: text.rindex("\nFROM ")]
    assert "gcc" in build and "COPY pyproject.toml setup.py" in build and "_kernel" in build
    assert re.search(r"^RUN pip install /wheels/\*\.whl", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0", "0:0"}
    joined = text.replace("\\\n", " ")  # fold line continuations
    healthcheck = re.search(r"^HEALTHCHECK .*", joined, re.M)
    assert healthcheck and "urllib.request" in healthcheck.group(0) and "/healthz" in healthcheck.group(0)
    assert "curl" not in healthcheck.group(0)


def test_systemd_unit_parses_and_is_hardened() -> None:
    """The unit parses, runs `serve` with the VM config and an EnvironmentFile, without privileges."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / "stream-triage.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    assert "stream-triage serve --config /etc/stream-triage/vm.toml" in service["ExecStart"]
    assert service["EnvironmentFile"] == "/etc/stream-triage/env"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "DynamicUser": "yes",
                       "PrivateTmp": "yes", "ProtectHome": "yes"}.items():
        assert service[key] == value, key
    assert service["CapabilityBoundingSet"] == ""
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_vm_config_listens_for_tls_syslog_with_the_credentials_systemd_provides() -> None:
    """vm.toml binds syslog TLS on 0.0.0.0:6514 and its cert/key are the unit's LoadCredential files."""
    syslog = _toml("vm.toml")["sources"]["syslog"]
    assert (syslog["host"], syslog["port"]) == ("0.0.0.0", 6514)
    text = (DEPLOY / "systemd" / "stream-triage.service").read_text(encoding="utf-8")
    credentials = dict(re.findall(r"^LoadCredential=([^:]+):(\S+)", text, re.M))
    for key in ("tls_cert_file", "tls_key_file"):
        path = Path(syslog[key])
        assert path.parent == Path("/run/credentials/stream-triage.service"), key
        assert path.name in credentials, key
    assert _toml("vm.toml")["store"]["path"].startswith("/var/lib/stream-triage/")


def test_example_configs_keep_secrets_out() -> None:
    """No example config contains a secret key or anything that looks like a token."""
    for name in EXAMPLE_CONFIGS:
        text = (DEPLOY / name).read_text(encoding="utf-8")
        for secret in SECRETS:
            assert f"{secret.lower()} =" not in text.lower(), (name, secret)
        assert not re.search(r"(?im)^\s*[\w.]*(?:api_key|token|password|secret)\s*=\s*[\"']", text), name


def _blueprint_env(blueprint: dict[str, Any]) -> dict[str, str]:
    """The environment render.yaml gives the service: its values, and a dummy for each secret."""
    return {
        e["key"]: str(e["value"]) if "value" in e else f"dummy-{e['key'].lower()}"
        for e in blueprint["services"][0]["envVars"]
    }


def _compose_env(compose: dict[str, Any]) -> dict[str, str]:
    """The service's environment in docker-compose.yml with .env holding only the required variables.

    ``${X:?…}`` is required (a dummy here), ``${X:-}`` is optional and left empty, as compose does.
    """
    env = {}
    for key, value in compose["services"]["stream-triage"]["environment"].items():
        required = re.fullmatch(r"\$\{(\w+):\?.*\}", str(value))
        optional = re.fullmatch(r"\$\{(\w+):-(.*)\}", str(value))
        if required:
            env[key] = f"dummy-{required.group(1).lower()}"
        elif optional:
            env[key] = optional.group(2)
        else:
            env[key] = str(value)
    return env


# What deploy/systemd/stream-triage.service's EnvironmentFile holds (deploy/README.md, section 2).
VM_ENV = {
    "AIRTABLE_API_KEY": "dummy-airtable-key",
    "AIRTABLE_BASE_ID": "appDummy00000000",
    "STREAM_TRIAGE_SYSLOG_TOKEN": "dummy-syslog-token",
    "STREAM_TRIAGE_METRICS_TOKEN": "dummy-metrics-token",
}


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key, standing in for the files systemd's LoadCredential= provides."""
    openssl = require_binary("openssl", "openssl")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=logs.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def _vm_config_with(tls_pair: tuple[Path, Path], tmp_path: Path) -> Path:
    """vm.toml with its /run/credentials paths pointed at ``tls_pair``; nothing else changed."""
    cert, key = tls_pair
    text = (DEPLOY / "vm.toml").read_text(encoding="utf-8")
    syslog = _toml("vm.toml")["sources"]["syslog"]
    assert syslog["tls_cert_file"] in text and syslog["tls_key_file"] in text
    text = text.replace(syslog["tls_cert_file"], str(cert)).replace(syslog["tls_key_file"], str(key))
    path = tmp_path / "vm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _builds_a_service(config: Config, tmp_path: Path) -> None:
    """The service's topology builds from the config (patterns, sources, TLS context, sinks); nothing starts."""
    config.store.path = str(tmp_path / "issues.db")
    service = Service(config)
    try:
        assert (service.syslog is not None) == config.sources.syslog.enabled
        assert (service.drain is not None) == config.sources.http_drain.enabled
        assert (service.render_tail is not None) == config.sources.render_tail.enabled
        assert len(service.sinks) == int(config.airtable_enabled)
    finally:
        service.runner.close()
        service.store.close()


def test_render_config_loads_with_the_blueprint_environment(blueprint: dict[str, Any], tmp_path: Path) -> None:
    """render.toml plus render.yaml's variables: no config error; tail, drain, Airtable and token on."""
    config = load_config(DEPLOY / "render.toml", env=_blueprint_env(blueprint))
    assert (config.server.http_host, config.server.http_port) == ("0.0.0.0", 8080)
    assert config.store.path == "/var/data/stream-triage.db"
    assert config.sources.render_tail.enabled and config.sources.http_drain.enabled
    assert not config.sources.syslog.enabled
    assert config.airtable_enabled
    assert config.metrics.require_token
    assert set(config.secrets) == {"RENDER_API_KEY", "AIRTABLE_API_KEY", "STREAM_TRIAGE_DRAIN_TOKEN",
                                   "STREAM_TRIAGE_METRICS_TOKEN"}
    _builds_a_service(config, tmp_path)


def test_vm_config_loads_with_its_env_file_and_certificates(tls_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """vm.toml with the unit's EnvironmentFile and a real certificate pair: TLS syslog on :6514, HTTP on loopback."""
    config = load_config(_vm_config_with(tls_pair, tmp_path), env=VM_ENV)
    syslog = config.sources.syslog
    assert (syslog.enabled, syslog.host, syslog.port) == (True, "0.0.0.0", 6514)
    assert (syslog.tls_cert_file, syslog.tls_key_file) == tuple(map(str, tls_pair))
    assert (config.server.http_host, config.server.http_port) == ("127.0.0.1", 8080)
    assert not config.sources.http_drain.enabled and not config.sources.render_tail.enabled
    assert config.airtable_enabled and config.metrics.require_token
    _builds_a_service(config, tmp_path)


def test_vm_config_names_the_missing_certificate_files() -> None:
    """Outside systemd the /run/credentials files do not exist: the error names both keys."""
    with pytest.raises(ConfigError) as exc:
        load_config(DEPLOY / "vm.toml", env=VM_ENV)
    assert sorted(p.split(":")[0] for p in exc.value.problems) == [
        "sources.syslog.tls_cert_file", "sources.syslog.tls_key_file",
    ]


def test_compose_config_loads_with_the_compose_environment(compose: dict[str, Any], tmp_path: Path) -> None:
    """compose.toml plus docker-compose.yml's variables (only the required ones set): drain and plain syslog."""
    env = _compose_env(compose)
    assert env["AIRTABLE_API_KEY"] == "" and env["STREAM_TRIAGE_METRICS_TOKEN"].startswith("dummy-")
    config = load_config(DEPLOY / "compose.toml", env=env)
    assert config.store.path == "/data/stream-triage.db"
    assert (config.sources.syslog.port, config.sources.syslog.tls_cert_file) == (5514, "")
    assert config.sources.http_drain.enabled and not config.sources.render_tail.enabled
    assert not config.airtable_enabled
    assert set(config.secrets) == {"STREAM_TRIAGE_DRAIN_TOKEN", "STREAM_TRIAGE_METRICS_TOKEN"}
    _builds_a_service(config, tmp_path)


def test_promtool_check_config_accepts_prometheus_yml(tmp_path: Path, prom_config: dict[str, Any]) -> None:
    """`promtool check config` accepts prometheus.yml, with its container paths pointed at local files."""
    token = tmp_path / "metrics_token"
    token.write_text("t0ken", encoding="utf-8")
    local = dict(prom_config)
    local["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    (job,) = local["scrape_configs"]
    authorization = {**job["authorization"], "credentials_file": str(token)}
    local["scrape_configs"] = [{**job, "authorization": authorization}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(local), encoding="utf-8")
    proc = promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
