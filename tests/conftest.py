"""Shared fixtures: a real PostgreSQL database per test, a tiny real model, the real CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

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


def kept_artifacts(url: str, study_name: str) -> set[str]:
    """All that a study that has ended may leave in its artifact store: the best checkpoints
    of its k best complete trials, every trial's curves and the study's plots."""
    import optuna
    from optuna.artifacts import get_all_artifact_meta

    from search import attrs
    from search.spec import StudySpec
    from storage import open_storage

    storage = open_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials()
    k = StudySpec.from_dict(study.user_attrs[attrs.SPEC]).keep_best
    best = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)[:k]
    kept = {t.system_attrs[attrs.BEST_CHECKPOINT]["artifact"] for t in best}
    curves = {m.artifact_id for t in trials for m in get_all_artifact_meta(t, storage=storage)}
    return kept | curves | {m.artifact_id for m in get_all_artifact_meta(study, storage=storage)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, which checks passwords (user tf,
    password right-password) and can be stopped and started under running clients."""

    def __init__(self):
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bindirs or not shutil.which("runuser"):
            (pytest.fail if IN_CI else pytest.skip)("PostgreSQL server binaries or runuser not found")
        # Not pytest's tmp_path: its parents are closed to the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="tunefleet-pg-"))
        self.root.chmod(0o755)
        self.bindir, self.data, self.port = bindirs[-1], self.root / "pg", free_port()
        self.data.mkdir()
        (self.root / "pw").write_text("right-password\n")
        shutil.chown(self.data, "postgres")
        shutil.chown(self.root / "pw", "postgres")
        self._as_postgres("initdb", "-D", self.data, "-U", "tf", "--auth=scram-sha-256", f"--pwfile={self.root / 'pw'}")
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://tf:right-password@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-w", "-l", self.data / "log", "-o",
                          f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-m", "immediate", "stop")

    def _as_postgres(self, tool: str, *args) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", self.bindir / tool, *map(str, args)],
                       check=True, capture_output=True)


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    yield server
    try:
        server.stop()
    except subprocess.CalledProcessError:  # stopped by the test already
        pass
    shutil.rmtree(server.root, ignore_errors=True)
