"""Coordinator scale: claim, report and finish latency and throughput of a fleet of
simulated workers, through the coordinator's proxy (tunefleet) and as plain Optuna
RDBStorage clients, against one PostgreSQL (max_connections 100, as installed).

    python -m bench.coordinator_scale.run --trials-per-worker 2   # the grid, about 35 minutes
    python -m bench.coordinator_scale.run --workers 256 --existing 5000 --modes tunefleet
    python -m bench.coordinator_scale.run --workers 256 --trial-seconds 2   # saturate it
    python -m bench.coordinator_scale.run --table bench/coordinator_scale/results/grid.json
    python -m bench.coordinator_scale.run --workers 64 --existing 0 --modes tunefleet \
        --uploads 16 --upload-mib 256 --lease-seconds 20 --out .../bulk.json   # under bulk transfers

Each cell: a fresh database cloned from a template holding a study with
EXISTING finished trials; WORKERS clients (threads, over up to 8 processes)
join (read the study's history once, as a starting worker does), then, all at
once, each run TRIALS_PER_WORKER trials of TRIAL_SECONDS (by default
WORKERS / FLEET_RATE: every fleet asks for the same trials a second), starting
over one trial's length. Timed apart: join; claim (the worker's own claim);
sample (the params, random sampler: the bench measures coordination, not TPE);
wait (from wanting a trial to holding one, waits for the coordinator's queue
included); report (an intermediate value and the median pruner's verdict, as
at an evaluation); finish (tell); renew (a lease renewal, every quarter lease while a trial
"trains"). With --uploads, that many uploaders stream a checkpoint-sized
artifact through the coordinator, and remove it, over and over, for as long as
the workers run. The bench samples pg_stat_activity every
50 ms for the database's connections. Results: bench/coordinator_scale/results/
<name>.json and a table printed (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psycopg2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
STUDY = "scale"


def _admin(sql: str, *args):
    conn = psycopg2.connect(**ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else None
    conn.close()
    return rows


def _url(db: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"


def template(existing: int) -> str:
    """A database holding the study with `existing` finished trials (built once)."""
    from search import attrs
    from search.spec import StudySpec

    db = f"bench_scale_template_{existing}"
    if _admin("SELECT 1 FROM pg_database WHERE datname = %s", db):
        return db
    building = f"{db}_building"  # renamed once whole: a failed build is never taken for a template
    _admin(f"DROP DATABASE IF EXISTS {building} WITH (FORCE)")
    _admin(f"CREATE DATABASE {building}")
    spec = StudySpec(model="tiny", dataset="data.jsonl", method="lora", n_examples=1000, n_params=1_000_000,
                     hidden_size=64, sampler="random", queue_starting_configs=False, n_trials=max(1, existing))
    storage = optuna.storages.RDBStorage(_url(building))
    study = optuna.create_study(study_name=STUDY, storage=storage)
    study.set_user_attr(attrs.SPEC, spec.to_dict())
    study.set_user_attr(attrs.CREATED, time.time())
    dist = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    study.add_trials([optuna.trial.create_trial(params={"learning_rate": 1e-4}, distributions={"learning_rate": dist},
                                                value=float(i), intermediate_values={1: 1.0, 2: 0.5})
                      for i in range(existing)])
    storage.engine.dispose()
    _admin(f"ALTER DATABASE {building} RENAME TO {db}")
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell(mode: str, workers: int, existing: int, a) -> dict:
    from search import attrs
    from search.spec import StudySpec

    db = f"bench_scale_{mode}_{workers}_{existing}"
    _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    _admin(f"CREATE DATABASE {db} TEMPLATE {template(existing)}")
    n_trials = existing + workers * a.trials_per_worker
    storage = optuna.storages.RDBStorage(_url(db))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
    spec.n_trials = n_trials
    if a.lease_seconds:
        spec.lease_seconds = a.lease_seconds
    study.set_user_attr(attrs.SPEC, spec.to_dict())
    storage.engine.dispose()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    coordinator, url = None, _url(db)
    if mode == "tunefleet":
        port = _free_port()
        coordinator = subprocess.Popen([sys.executable, "-m", "search.cli", "coordinator", "--serve",
                                        f"127.0.0.1:{port}", "--connections", str(a.connections),
                                        *(["--transfers", str(a.transfers)] if a.transfers else []),
                                        "--storage", url], env=env, stderr=subprocess.DEVNULL, text=True)
        url = f"grpc://127.0.0.1:{port}"
        _wait_for_port(port)
    processes = min(workers, a.processes)
    trial_s = a.trial_seconds or max(2.0, workers / a.fleet_rate)
    ramp_s = trial_s if a.ramp_seconds is None else a.ramp_seconds
    clients = [subprocess.Popen([sys.executable, "-m", "bench.coordinator_scale.clients", mode, url, STUDY,
                                 str(workers // processes + (i < workers % processes)), str(trial_s),
                                 str(a.timeout), str(ramp_s)], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for i in range(processes)]
    uploads = subprocess.Popen([sys.executable, "-m", "bench.coordinator_scale.clients", "uploads", url,
                                str(a.uploads), str(a.upload_mib)], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) if a.uploads else None
    peak = [0]  # watched from the first connection on, joins included
    watcher = threading.Thread(target=lambda: peak.__setitem__(0, _watch_connections(db, clients)))
    watcher.start()
    for c in clients + ([uploads] if uploads else []):  # every worker has joined (read the study's history)
        if c.stdout.readline().strip() != "joined":
            sys.exit("a client process died while joining")
    started = time.time()
    if uploads:
        uploads.stdin.write("go\n")
        uploads.stdin.flush()
    for c in clients:
        c.stdin.write("go\n")
        c.stdin.close()
    outs = []  # read as they come: a client blocked on a full pipe would never exit
    readers = [threading.Thread(target=lambda c=c: outs.append(json.loads(c.stdout.read()))) for c in clients]
    for r in readers:
        r.start()
    watcher.join()
    wall, peak = time.time() - started, peak[0]
    for r in readers:
        r.join()
    uploaded = {"ops": {"upload": []}, "errors": {}}
    if uploads:
        uploads.stdin.close()  # the uploads stop with the workers
        uploaded = json.loads(uploads.stdout.read())
    if coordinator is not None:
        coordinator.terminate()
        coordinator.wait(timeout=30)
    final = optuna.load_study(study_name=STUDY, storage=optuna.storages.RDBStorage(_url(db)))
    trials = final.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    lapsed = sum("lease expired" in str(t.user_attrs.get("tunefleet.error", "")) for t in trials)
    _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    ops = {k: [x for o in outs for x in o["ops"][k]] for k in ("join", "claim", "sample", "wait", "report", "renew",
                                                                "finish")}
    errors: dict[str, int] = {}
    for o in outs + [uploaded]:
        for kind, n in o["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    finished = sum(o["finished"] for o in outs)
    return {
        "mode": mode, "workers": workers, "existing": existing, "budget": n_trials - existing, "trial_s": trial_s,
        "finished": finished, "complete_in_storage": states.count("COMPLETE") - existing,
        "running_left": states.count("RUNNING"), "wall_s": round(wall, 2),
        "trials_per_s": round(finished / wall, 2), "errors": sum(errors.values()), "error_kinds": sorted(errors, key=errors.get, reverse=True)[:5],
        "peak_connections": peak, "leases_expired": lapsed,
        **{f"{k}_ms": _percentiles(v) for k, v in ops.items()},
        "uploads": len(uploaded["ops"]["upload"]), "upload_mib": a.upload_mib if a.uploads else 0,
        "upload_s": {k: (round(v / 1000, 2) if k != "n" else v) for k, v in _percentiles(uploaded["ops"]["upload"]).items()},
    }


def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    at = lambda q: round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1)  # noqa: E731
    return {"n": len(xs), "p50": at(0.50), "p95": at(0.95), "max": round(1000 * xs[-1], 1)}


def _wait_for_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit("the coordinator did not start")


def _watch_connections(db: str, clients) -> int:
    conn = psycopg2.connect(**ADMIN)
    conn.autocommit = True
    peak = 0
    with conn.cursor() as cur:
        while any(c.poll() is None for c in clients):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))
            peak = max(peak, cur.fetchone()[0])
            time.sleep(0.05)
    conn.close()
    return peak


def table(rows: list[dict]) -> str:
    """The results as the Markdown table of bench/README.md."""
    ms = lambda d: f"{d['p50']:.0f} / {d['p95']:.0f}" if d.get("n") else "-"  # noqa: E731
    out = ["| existing | workers | trial s | setup | finished / budget | trials/s | errors | peak DB conns | "
           "join p50 / p95 ms | claim p50 / p95 ms | sample p50 / p95 ms | wait p50 / p95 ms | report p50 / p95 ms | "
           "finish p50 / p95 ms | renew p50 / p95 / max ms | leases expired | uploads (MiB each, s p50 / p95) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['existing']} | {r['workers']} | {r.get('trial_s', '-')} | {r['mode']} | "
                   f"{r['finished']} / {r['budget']} | {r['trials_per_s']} | {r['errors']} | {r['peak_connections']} | "
                   f"{ms(r.get('join_ms', {}))} | {ms(r['claim_ms'])} | {ms(r.get('sample_ms', {}))} | "
                   f"{ms(r['wait_ms'])} | {ms(r['report_ms'])} | {ms(r['finish_ms'])} | "
                   f"{ms(r.get('renew_ms', {}))}{' / %.0f' % r['renew_ms']['max'] if r.get('renew_ms', {}).get('n') else ''} | "
                   f"{r.get('leases_expired', '-')} | {_uploads(r)} |")
    return "\n".join(out)


def _uploads(row: dict) -> str:
    if not row.get("uploads"):
        return "-"
    took = row["upload_s"]
    return f"{row['uploads']} ({row['upload_mib']}, {took['p50']:.1f} / {took['p95']:.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,8,64,256")
    p.add_argument("--existing", default="0,1000,5000")
    p.add_argument("--modes", default="tunefleet,plain")
    p.add_argument("--trials-per-worker", type=int, default=3)
    p.add_argument("--trial-seconds", type=float, default=0.0,
                   help="Each trial's length; by default WORKERS / FLEET_RATE, at least 2 s.")
    p.add_argument("--fleet-rate", type=float, default=4.0,
                   help="Trials a second the whole fleet asks for, when --trial-seconds is not given.")
    p.add_argument("--ramp-seconds", type=float, default=None,
                   help="Each simulated worker starts at a random time within this many seconds (default: one trial).")
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--connections", type=int, default=16, help="The coordinator's database connections.")
    p.add_argument("--transfers", type=int, default=None, help="The coordinator's --transfers (default: its own).")
    p.add_argument("--lease-seconds", type=float, default=None, help="The study's lease (default: the spec's).")
    p.add_argument("--uploads", type=int, default=0, help="Uploaders streaming checkpoints meanwhile.")
    p.add_argument("--upload-mib", type=int, default=256, help="Each upload's size.")
    p.add_argument("--timeout", type=float, default=240.0, help="Seconds a cell may run once its workers joined.")
    p.add_argument("--out", default=str(HERE / "results" / "grid.json"))
    p.add_argument("--table", metavar="RESULTS", help="Print the Markdown table of a results file, run nothing.")
    a = p.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())["rows"]))
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for existing in map(int, a.existing.split(",")):
        for workers in map(int, a.workers.split(",")):
            for mode in a.modes.split(","):
                row = cell(mode, workers, existing, a)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "args": vars(a),
              "max_connections": int(_admin("SHOW max_connections")[0][0]), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
