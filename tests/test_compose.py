"""docker-compose.yml and Dockerfile, checked without a Docker engine: the YAML is
parsed, interpolated the way Compose does, and every tunefleet command it runs is
fed to the real CLI (--help, and a parse that converts the option values)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from search.cli import cli
from storage import backend, urls

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

TEST_VALUE = "demo"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# $$ | ${NAME} | ${NAME:-x} ${NAME-x} ${NAME:?x} ${NAME?x} | $NAME
TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>" + NAME + r"))")
BRACED = re.compile(r"(?P<name>" + NAME + r")(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?", re.S)


def interpolate(value, env: dict[str, str], required: list | None = None):
    """Compose-style interpolation of every string in value. Unset variables get
    their :-/- default, else TEST_VALUE; each ${NAME:?msg} is recorded in required
    as (name, msg). Syntax Compose would reject raises ValueError."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, required) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, required) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("bare"):
            return env.get(m.group("bare"), TEST_VALUE)
        inner = BRACED.fullmatch(m.group("braced"))
        if not inner:
            raise ValueError(f"invalid interpolation ${{{m.group('braced')}}} in {value!r}")
        name, op, arg = inner.group("name", "op", "arg")
        current = env.get(name)
        if op in (":-", "-"):
            use_default = current is None or (op == ":-" and current == "")
            return arg if use_default else current
        if op in (":?", "?"):
            if required is not None:
                required.append((name, arg))
            missing = current is None or (op == ":?" and current == "")
            return TEST_VALUE if missing else current
        return TEST_VALUE if current is None else current

    out = TOKEN.sub(sub, value)
    if "$" in TOKEN.sub("", value):
        raise ValueError(f"stray $ in {value!r} (write $$ for a literal $)")
    return out


def load(env: dict[str, str] | None = None, required: list | None = None) -> dict:
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, env or {}, required)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load()


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def tunefleet_services(compose: dict) -> dict[str, dict]:
    services = compose["services"]
    built = {s.get("image") for s in services.values() if "build" in s} - {None}
    return {n: s for n, s in services.items() if "build" in s or s.get("image") in built}


def depends_condition(service: dict, on: str) -> str | None:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return None if on not in deps else "service_started"
    return (deps.get(on) or {}).get("condition", "service_started") if on in deps else None


def published_ports(service: dict) -> list[str]:
    out = []
    for p in service.get("ports") or []:
        out.append(str(p["published"]) if isinstance(p, dict) else str(p))
    return out


# -- the interpolation helper itself ------------------------------------------------

def test_interpolate_helper():
    req = []
    assert interpolate("${A:-x}/${B:?need B}/$$C/$D", {"D": "d"}, req) == "x/demo/$C/d"
    assert req == [("B", "need B")]
    assert interpolate("${A:-x}", {"A": "set"}) == "set"
    with pytest.raises(ValueError):
        interpolate("${NOT A NAME}", {})
    with pytest.raises(ValueError):
        interpolate("cost $5", {})


def test_required_variables_are_named():
    raw = COMPOSE.read_text()
    assert "${" in raw
    required = []
    load({}, required)
    assert ("TUNEFLEET_STUDY", "set TUNEFLEET_STUDY to the study name") in required
    for name, msg in required:
        assert re.fullmatch(NAME, name), name
        assert name in msg, f"the error message for {name} should name it: {msg!r}"
    # every ${...?...} outside comments was seen by the helper
    body = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    assert len(re.findall(r"\$\{[^}]*\?", body)) == len(required)


# -- services ------------------------------------------------------------------------

def test_services_exist(compose):
    assert {"postgres", "dashboard", "worker"} <= set(compose["services"])


def test_postgres_healthcheck_and_volume(compose):
    pg = compose["services"]["postgres"]
    assert pg["image"] == "postgres:16"
    env = env_of(pg)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)
    test = pg["healthcheck"]["test"]
    words = shlex.split(test) if isinstance(test, str) else list(test)
    assert "pg_isready" in words
    assert words[words.index("-U") + 1] == env["POSTGRES_USER"]
    assert words[words.index("-d") + 1] == env["POSTGRES_DB"]
    mounts = [str(v) for v in pg["volumes"]]
    data = [m for m in mounts if m.split(":")[1] == "/var/lib/postgresql/data"]
    assert data, mounts
    assert data[0].split(":")[0] in (compose.get("volumes") or {}), "not a named volume"


def test_default_password_is_overridable():
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-tunefleet}"


def test_worker_gpu_and_scalable(compose):
    w = compose["services"]["worker"]
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
               for d in devices), devices
    assert "container_name" not in w
    assert not w.get("ports"), "fixed host ports break --scale worker=N"
    assert env_of(w).get("HF_HUB_OFFLINE") == "1"
    mounts = {str(v).split(":")[1]: str(v) for v in w["volumes"]}
    assert mounts["/models"].endswith(":ro") and mounts["/models"].startswith("./models:")
    assert mounts["/data"].endswith(":ro") and mounts["/data"].startswith("./data:")


def test_dashboard_port_on_loopback_only(compose):
    services = compose["services"]
    assert "127.0.0.1:8080:8080" in published_ports(services["dashboard"])
    for name, service in services.items():
        for port in published_ports(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_tunefleet_services_share_the_built_image(compose):
    services = tunefleet_services(compose)
    assert set(services) == {"coordinator", "dashboard", "worker"}
    for s in services.values():
        assert s["build"] in (".", {"context": "."})
    assert len({s.get("image") for s in services.values()}) == 1


# -- commands against the real CLI ----------------------------------------------------

def _commands(compose):
    return {name: command_of(s) for name, s in tunefleet_services(compose).items()}


@pytest.mark.parametrize("service", ["coordinator", "dashboard", "worker"])
def test_command_exists_in_cli(compose, service):
    cmd = _commands(compose)[service]
    assert cmd[0] == "tunefleet", cmd
    env = {k: v for k, v in os.environ.items() if k != urls.ENV_VAR}
    proc = subprocess.run([sys.executable, "-m", "search.cli", *cmd[1:], "--help"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Usage:" in proc.stdout


@pytest.mark.parametrize("service", ["coordinator", "dashboard", "worker"])
def test_command_parses(compose, service):
    """Parse the arguments (types included) without running the command."""
    args = _commands(compose)[service][1:]
    cmd, rest, ctx = cli, list(args), click.Context(cli, info_name="tunefleet")
    while isinstance(cmd, click.Group):
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = click.Context(cmd, info_name=name, parent=ctx)
    parent = cmd.make_context(name, list(rest), parent=ctx.parent)
    assert not parent.args, f"unexpected arguments {parent.args}"
    if service == "worker":
        assert parent.params["name"] == TEST_VALUE
    if service == "dashboard":
        assert parent.params["host"] == "0.0.0.0" and parent.params["port"] == 8080


def test_storage_env_var_is_the_one_the_cli_reads(compose):
    envvars = {p.envvar for c in [cli.commands["worker"], cli.commands["dashboard"]]
               for p in c.params if p.name == "storage_url"}
    assert envvars == {"TUNEFLEET_STORAGE"} == {urls.ENV_VAR}
    for name, s in tunefleet_services(compose).items():
        env = env_of(s)
        assert "TUNEFLEET_STORAGE" in env, name
        stray = [k for k, v in env.items() if "://" in v and k != "TUNEFLEET_STORAGE"]
        assert not stray, f"{name}: storage URL under {stray}"


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_storage_url_points_at_postgres_service(password):
    compose = load({"POSTGRES_PASSWORD": password} if password else {})
    services = compose["services"]
    pg_env = env_of(services["postgres"])
    assert pg_env["POSTGRES_PASSWORD"] == (password or "tunefleet")
    for name in ("coordinator", "dashboard"):
        s = services[name]
        url = urlsplit(env_of(s)["TUNEFLEET_STORAGE"])
        assert url.scheme == "postgresql"
        assert url.hostname == "postgres" and url.hostname in services
        assert url.port == 5432
        assert url.username == pg_env["POSTGRES_USER"]
        assert url.password == pg_env["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"]
        assert urls.normalise(url.geturl()).startswith("postgresql+psycopg2://")
        assert depends_condition(s, "postgres") == "service_healthy", name


def test_workers_reach_the_database_through_the_coordinator(compose):
    """However many workers run, only the coordinator holds database connections."""
    services = compose["services"]
    coordinator, worker = services["coordinator"], services["worker"]
    cmd = command_of(coordinator)
    serve = urls.grpc_address("grpc://" + cmd[cmd.index("--serve") + 1])
    assert serve[0] == "0.0.0.0", "the workers are on other containers"
    url = env_of(worker)["TUNEFLEET_STORAGE"]
    assert backend(url).address == ("coordinator", serve[1]) and backend(url).behind_coordinator
    assert not any("postgres" in v for v in env_of(worker).values()), "no database password on the workers"
    probe = " ".join(coordinator["healthcheck"]["test"])
    assert f"'127.0.0.1', {serve[1]}" in probe, probe
    assert depends_condition(worker, "coordinator") == "service_healthy"
    assert int(cmd[cmd.index("--connections") + 1]) <= 20


def test_coordinator_healthcheck_probes_a_live_port():
    """The healthcheck's own command, run here against a listening and a closed port."""
    import socket

    words = load()["services"]["coordinator"]["healthcheck"]["test"]
    assert words[:2] == ["CMD", "python"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = words[-1].replace("13000", str(port))
        assert subprocess.run([sys.executable, *words[2:-1], code], timeout=30).returncode == 0
    assert subprocess.run([sys.executable, *words[2:-1], code], capture_output=True, timeout=30).returncode != 0


# -- Dockerfile -------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_project():
    ins = _instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    installs = []
    for op, rest in ins:
        if op != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            words = shlex.split(part)
            if "pip" in words and "install" in words:
                installs.append([w for w in words[words.index("install") + 1:] if not w.startswith("-")])
    assert any("." in targets for targets in installs), installs
    assert ("ENV", "HF_HUB_OFFLINE=1") in ins
    copy = [rest.split() for op, rest in ins if op == "COPY"]
    assert any(c[0] == "." for c in copy), "the repository is not copied"


def test_dockerfile_default_cmd_runs():
    cmd = [rest for op, rest in _instructions() if op == "CMD"][-1]
    words = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert words[0] == "tunefleet"
    proc = subprocess.run([sys.executable, "-m", "search.cli", *words[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stdout + proc.stderr
