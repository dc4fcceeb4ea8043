"""Shared fixtures: a real PostgreSQL database per test, a tiny real model, the real CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import psycopg2
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the tests may reach a model hub
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
IN_CI = os.environ.get("CI") == "true"


def _pg_reachable() -> bool:
    try:
        psycopg2.connect(connect_timeout=3, **PG).close()
        return True
    except psycopg2.OperationalError:
        return False


def require_postgres() -> None:
    """PostgreSQL missing: a failure under CI, a skip on a laptop without one."""
    if not _pg_reachable():
        message = f"PostgreSQL is not reachable on {PG['host']}:{PG['port']}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _admin(sql: str) -> None:
    conn = psycopg2.connect(connect_timeout=3, **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@pytest.fixture
def pg_url():
    """A fresh, empty database on the real server, dropped afterwards."""
    require_postgres()
    name = f"tunefleet_test_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(model dir, dataset) of a tiny real Llama, briefly pretrained, built offline."""
    from workers.tiny import build_assets

    return build_assets(tmp_path_factory.mktemp("tiny"), pretrain_steps=60)


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TUNEFLEET_STORAGE"}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def tunefleet(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd,
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def start_tunefleet(*args, cwd=None, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd,
                            env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
