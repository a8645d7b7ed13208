"""docker-compose.yaml, Dockerfile, .env.example and .dockerignore, checked without Docker.

The compose file is interpolated with the values of .env.example (what `cp .env.example
.env` gives), then validated against the Compose Specification JSON schema that Docker
Compose v2.40.3 itself uses (tests/data/compose-spec.json; its source is noted in
tests/data/compose-spec.README.md), and checked for the services, health checks, mounts,
connections and variables this package relies on. When a Docker Compose binary is at
hand (COMPOSE_BIN, or docker-compose on PATH), `config --quiet` runs too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-worker", "airflow-triggerer", "airflow-init")
SERVICES = ("postgres", "redis", *AIRFLOW_SERVICES, "loyalty-db", "demo-data", "notification-sink", "grafana",
            "loyalty-slack-actions")
ONE_SHOT = ("airflow-init", "demo-data")
CONNECTIONS = {  # conn id -> conn_type (spec: checks.md)
    "loyalty_db": "postgres",
    "loyalty_monitoring_db": "postgres",
    "slack_loyalty_alerts": "slackwebhook",
    "slack_loyalty_reports": "slackwebhook",
    "pagerduty_loyalty": "pagerduty_events",
}
SINK = "http://notification-sink:8025"
GRAFANA_DIR = ROOT / "grafana"
POOL_COMMAND = 'airflow pools set loyalty_db 4 "Concurrent check queries on loyalty_db"'

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt},
# $NAME, and $$ (a literal $), as Compose interpolates them.
_VAR = re.compile(r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else value is None) else value
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise AssertionError(f"required variable {name} is not set: {arg}")
            return value
        if op in (":+", "+"):
            return arg if not (unset_or_empty if op == ":+" else value is None) else ""
        return value or ""

    return _VAR.sub(sub, text)


def interpolate_tree(node, env):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def variables_used(text: str) -> set[str]:
    """Variables Compose interpolates in `text` (full-line comments left out)."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {m.group("braced") or m.group("bare") for m in _VAR.finditer(text) if m.group(0) != "$$"}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw, env) -> dict:
    return interpolate_tree(raw, env)


def environment(service: dict) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        value = dict(item.partition("=")[::2] for item in value)
    return {k: "" if v is None else str(v) for k, v in value.items()}


def test_valid_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes(compose):
    """The vendored schema is the strict one (no unknown keys), not a permissive stub."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_service_is_there(compose):
    assert set(SERVICES) <= set(compose["services"])


def test_long_running_services_have_health_checks(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_airflow_services_follow_the_official_layout(compose):
    services = compose["services"]
    api = services["airflow-apiserver"]
    assert api["command"] == "api-server"
    assert "/api/v2/monitor/health" in " ".join(api["healthcheck"]["test"])
    assert any(str(p).endswith(":8080") for p in api["ports"])
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-worker"]["command"] == "celery worker"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    init_env = environment(services["airflow-init"])
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for name in AIRFLOW_SERVICES:
        service, env = services[name], environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        targets = {v.split(":")[1] for v in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= targets, name
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert environment(services["airflow-worker"])["DUMB_INIT_SETSID"] == "0"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_bind_mounts_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} is not declared"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_demo_services(compose):
    services = compose["services"]
    db = services["loyalty-db"]
    assert any(v.startswith("./include/sql/schema/loyalty.sql:/docker-entrypoint-initdb.d/")
               for v in db["volumes"])
    demo = services["demo-data"]
    assert demo["entrypoint"][:3] == ["python", "-m", "demo.generate"]
    assert "--replace" in demo["command"]
    # the demo data only ever goes to the demo database, whatever LOYALTY_DB_HOST says
    assert "host=loyalty-db " in environment(demo)["LOYALTY_DEMO_DSN"]
    assert demo["depends_on"]["loyalty-db"]["condition"] == "service_healthy"
    sink = services["notification-sink"]
    assert sink["entrypoint"][:3] == ["python", "-m", "demo.capture_server"]
    assert "8025" in sink["command"]
    assert services["airflow-scheduler"]["depends_on"]["demo-data"]["condition"] == "service_completed_successfully"


def test_slack_actions_listener_service(compose):
    """The Slack actions listener (shared/spec/slack-actions.md): the package's image and
    connections, its own command, not part of the api-server or the triggerer."""
    services = compose["services"]
    listener, scheduler = services["loyalty-slack-actions"], services["airflow-scheduler"]
    assert listener["command"].split()[:3] == ["python", "-m", "loyalty_checks.slack_actions"]
    assert listener["image"] == scheduler["image"] and listener["build"] == scheduler["build"]
    assert listener["working_dir"] == "/opt/airflow"
    env = environment(listener)
    assert env["PYTHONPATH"] == "/opt/airflow/plugins"
    conns = {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}
    assert conns == {k: v for k, v in environment(scheduler).items() if k.startswith("AIRFLOW_CONN_")}
    assert listener["env_file"] == scheduler["env_file"]  # AIRFLOW_CONN_SLACK_LOYALTY_SOCKET comes from .env
    assert {v.split(":")[1] for v in listener["volumes"]} >= {"/opt/airflow/plugins", "/opt/airflow/include"}
    alive = listener["command"].split("--alive-file")[1].split()[0]
    assert alive in " ".join(listener["healthcheck"]["test"])
    assert listener["depends_on"]["loyalty-db"]["condition"] == "service_healthy"
    assert listener["restart"] == "on-failure"  # exits 0 where no Slack app is configured
    for name in ("airflow-apiserver", "airflow-triggerer"):
        assert "slack_actions" not in json.dumps(services[name].get("command"))


def test_airflow_init_creates_the_pool_of_the_checks(compose):
    """After the entrypoint's migration and user creation, airflow-init sets the pool the
    measure tasks run in (loyalty_checks.factory.POOL)."""
    from loyalty_checks.factory import POOL

    init = compose["services"]["airflow-init"]
    script = init["command"][-1]
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[-1] == f"exec /entrypoint {POOL_COMMAND}"     # the entrypoint migrates first
    assert POOL_COMMAND.split()[3] == POOL
    env = environment(init)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true" and env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_grafana_service(compose, raw):
    grafana = compose["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", grafana["image"]), "pin a Grafana release"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    assert grafana["depends_on"]["loyalty-db"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":") for v in grafana["volumes"]}
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/loyalty.yaml").read_text(encoding="utf-8"))
    dashboards_path = provider["providers"][0]["options"]["path"]
    expected = {"/etc/grafana/provisioning/datasources": "./grafana/provisioning/datasources",
                "/etc/grafana/provisioning/dashboards": "./grafana/provisioning/dashboards",
                dashboards_path: "./grafana/dashboards"}
    for target, source in expected.items():
        assert mounts[target][0] == source and mounts[target][2] == "ro", target
    assert mounts["/var/lib/grafana"][0] in compose["volumes"]
    env = environment(grafana)
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_path + "/") and (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()
    assert env["GF_USERS_ALLOW_SIGN_UP"] == env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    raw_env = raw["services"]["grafana"]["environment"]
    assert raw_env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert raw_env["GF_SECURITY_SECRET_KEY"].startswith("${GRAFANA_SECRET_KEY:?")
    # every ${VAR} of the data source provisioning is set on the container, and the
    # dashboards read the database the Airflow connections point at
    provisioning = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/loyalty.yaml").read_text(encoding="utf-8"))
    wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(provisioning)))
    assert wanted and wanted <= set(env), f"not set on the grafana service: {sorted(wanted - set(env))}"
    airflow_db = json.loads(environment(compose["services"]["airflow-scheduler"])["AIRFLOW_CONN_LOYALTY_DB"])
    for prefix in ("LOYALTY_DB", "LOYALTY_MONITORING_DB"):
        assert env[f"{prefix}_ADDRESS"] == f"{airflow_db['host']}:{airflow_db['port']}"
        assert env[f"{prefix}_NAME"] == airflow_db["schema"] and env[f"{prefix}_USER"] == airflow_db["login"]


def test_connections(compose):
    for name in AIRFLOW_SERVICES:
        env = environment(compose["services"][name])
        conns = {key[len("AIRFLOW_CONN_"):].lower(): json.loads(value)
                 for key, value in env.items() if key.startswith("AIRFLOW_CONN_")}
        assert {k: c["conn_type"] for k, c in conns.items()} == CONNECTIONS, name
        for db in ("loyalty_db", "loyalty_monitoring_db"):
            assert conns[db]["host"] == "loyalty-db" and conns[db]["schema"] == "loyalty", name
        assert conns["slack_loyalty_alerts"]["password"] == f"{SINK}/slack/alerts"
        assert conns["slack_loyalty_reports"]["password"] == f"{SINK}/slack/reports"
        assert conns["pagerduty_loyalty"]["extra"] == {"events_api_url": f"{SINK}/pagerduty", "allow_http": True}


def test_every_variable_is_documented_in_env_example(env):
    used = variables_used(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert used - set(env) == set(), "used in docker-compose.yaml but not in .env.example"
    assert set(env) - used == set(), "in .env.example but not used by docker-compose.yaml"


def test_secrets_are_required_variables(raw):
    """Passwords, keys and secrets are ${VAR:?...} (or optional ${VAR:-} with an empty
    default), never literals in the file."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name in variables_used(text):
        if re.search(r"PASSWORD|SECRET|ROUTING_KEY", name):
            assert re.search(r"\$\{" + name + r":\?", text), f"{name} should be required (${{{name}:?...}})"

    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$", re.I)

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, (str, int, float)) and secretish.search(str(k)):
                    assert re.fullmatch(r"\$\{[A-Za-z0-9_]+(:?[-?][^}]*)?\}", str(v)), \
                        f"{path}/{k} is a literal: {v!r}"
                    assert not re.search(r":-[^}]", str(v)), f"{path}/{k} has a default value: {v!r}"
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(raw, "")
    # credentials inside URLs, DSNs and connection JSON come from variables too
    for m in re.finditer(r"://[^:/@\s]+:(.*?)@", text):
        assert m.group(1).startswith("${") or m.group(1) == "", f"literal password in URL: {m.group(0)}"
    for m in re.finditer(r'"password":\s*"([^"]*)"', text):
        assert m.group(1).startswith("${"), f"literal password in a connection: {m.group(0)}"
    for m in re.finditer(r"password=(\S+)", text):
        assert m.group(1).startswith("${"), f"literal password in a DSN: {m.group(0)}"
    assert not re.search(r"hooks\.slack\.com/services/T|xox[abp]-|-----BEGIN", text)


def test_env_example_holds_placeholders_only(env):
    for key, value in env.items():
        if re.search(r"PASSWORD|SECRET|ROUTING_KEY|FERNET", key):
            assert value == "" or value.startswith("change-me"), f"{key}={value!r} is not a placeholder"
        if key.endswith("WEBHOOK_URL") or key == "PAGERDUTY_EVENTS_API_URL":
            assert value.startswith(SINK), f"{key} should point at the sink in the example"
        assert not (value.startswith('"') or value.startswith("'")), f"{key}: values are used verbatim"


def test_env_file_stays_out_of_git_and_image():
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and "!.env.example" in ignored


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert re.search(r"^RUN pip install --no-cache-dir -r /opt/airflow/requirements\.txt$", text, re.M)
    assert (ROOT / "requirements.txt").is_file()
    pins = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^apache-airflow==3\.3\.2$", pins, re.M)  # the image's Airflow stays put
    assert re.search(r"^psycopg\[binary\]==", pins, re.M)        # demo.generate and the checks
    for folder in ("dags", "plugins", "include", "demo"):
        assert f"COPY --chown=airflow:root {folder}/ /opt/airflow/{folder}/" in text
        assert (ROOT / folder).is_dir()


def _compose_binary() -> str | None:
    return os.environ.get("COMPOSE_BIN") or shutil.which("docker-compose")


@pytest.mark.skipif(_compose_binary() is None, reason="no Docker Compose binary (set COMPOSE_BIN)")
def test_docker_compose_config_accepts_it(tmp_path):
    result = subprocess.run(
        [_compose_binary(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
