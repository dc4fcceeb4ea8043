"""One process of simulated workers for bench/coordinator_scale: THREADS clients,
each with its own storage client, that first join (open the study and read its
history, as a worker does once when it starts), then, once told to go, loop
claim -> report x2 -> finish until the study's budget is spent, renewing the
trial's lease every quarter lease while it "trains", as the worker's Heartbeat
does. Prints one JSON document: latencies and errors.

`uploads` mode: THREADS uploaders that write a checkpoint-sized artifact through
the coordinator and remove it, over and over, from `go` until stdin closes.

tunefleet: the worker's own claim (search.claim.claim) through the coordinator's
proxy. plain: Optuna's RDBStorage straight to PostgreSQL, ask/tell, each client
checking the budget before it asks (no lock: what a plain fleet does).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

import optuna

from search import ready_wire
from search.budget import COUNTED
from search.spec import StudySpec
from search.study import space_of
from spaces.space import suggest


def client(mode: str, url: str, name: str, trial_s: float, timeout_s: float, ramp_s: float, out: dict, lock,
           joined: threading.Barrier, go: threading.Event) -> None:
    from search.claim import claim
    from storage import backend

    ops = {k: [] for k in OPS}
    errors, finished = [], 0
    storage = study = None
    try:  # a worker's start: it opens the study and reads its history once, then works for hours
        t0 = time.perf_counter()
        storage, study, spec, space = _join(mode, url, name)
        ops["join"].append(time.perf_counter() - t0)
    except Exception as e:
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    joined.wait()
    go.wait()
    deadline = time.time() + timeout_s
    time.sleep(random.uniform(0, ramp_s))  # workers start their trials over the ramp, not in one instant
    while time.time() < deadline:
        try:
            if study is None:
                storage, study, spec, space = _join(mode, url, name)
            wanted = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                if mode == "tunefleet":
                    trial = claim(study, storage, backend(url), spec)
                elif len(study.get_trials(deepcopy=False, states=COUNTED)) < spec.n_trials:
                    trial = study.ask()
                else:
                    trial = None
                if trial is not None:
                    ops["claim"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    suggest(trial, space)  # one storage write per parameter
                    ops["sample"].append(time.perf_counter() - t0)
                    break
                if time.time() > deadline or not _more_may_come(mode, study, spec):
                    break
                time.sleep(random.uniform(0.5, 1.5))  # the worker's wait for the coordinator's queue
            if trial is None:
                break
            ops["wait"].append(time.perf_counter() - wanted)
            for step in (1, 2):  # an evaluation, as the worker's PruningCallback reports it
                if mode == "tunefleet":
                    _train(storage, trial, trial_s / 2, spec.lease_seconds, ops, errors)
                else:
                    time.sleep(trial_s / 2)
                t0 = time.perf_counter()
                trial.report(random.random(), step)
                trial.should_prune()
                ops["report"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            study.tell(trial, random.random())
            ops["finish"].append(time.perf_counter() - t0)
            finished += 1
        except Exception as e:  # counted, and the client goes on, as a worker would
            errors.append(_kind(e))
            time.sleep(0.5)
    with lock:
        for k, v in ops.items():
            out["ops"][k] += v
        for e in errors:  # counted by kind: thousands of refused connections must not flood the pipe
            out["errors"][e] = out["errors"].get(e, 0) + 1
        out["finished"] += finished


def _train(storage, trial, seconds: float, lease_s: float, ops: dict, errors: list) -> None:
    """`seconds` of training, renewing the lease every quarter lease as the Heartbeat does;
    a renewal that comes later than a whole lease after the last is a lost lease."""
    from search.leases import renew
    from storage import optuna_compat as compat

    end = time.time() + seconds
    while (left := end - time.time()) > 0:
        time.sleep(min(left, lease_s / 4))
        t0 = time.perf_counter()
        renew(storage, compat.trial_id(trial), lease_s)
        ops["renew"].append(time.perf_counter() - t0)
        if time.perf_counter() - t0 > lease_s:
            errors.append("lease lost: a renewal took longer than a lease")


def uploader(url: str, path: str, out: dict, lock, go: threading.Event, stop: threading.Event) -> None:
    from storage import backend, open_storage

    store = backend(url).artifacts(open_storage(url))
    go.wait()
    while not stop.is_set():
        artifact = f"bench-{random.getrandbits(64):x}"
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as f:
                store.write(artifact, f)
            took = time.perf_counter() - t0
            store.remove(artifact)
        except Exception as e:
            with lock:
                out["errors"][_kind(e)] = out["errors"].get(_kind(e), 0) + 1
            time.sleep(0.5)
            continue
        with lock:
            out["ops"]["upload"].append(took)


def _kind(e: Exception) -> str:
    if callable(getattr(e, "code", None)) and callable(getattr(e, "details", None)):  # a gRPC error
        return f"{e.code().name}: {(e.details() or '')[:160]}"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _join(mode: str, url: str, name: str):
    from storage import open_storage

    storage = open_storage(url) if mode == "tunefleet" else optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    spec = StudySpec.from_dict(study.user_attrs["tunefleet.spec"])
    study.get_trials(deepcopy=False)  # the history, into the client's cache
    return storage, study, spec, space_of(spec)


def _more_may_come(mode: str, study, spec) -> bool:
    """As the worker asks it: behind the proxy the coordinator's published queue says."""
    if mode == "tunefleet":
        return ready_wire.more_may_come(study)
    return len(study.get_trials(deepcopy=False, states=COUNTED)) < spec.n_trials


OPS = ("join", "claim", "sample", "wait", "report", "renew", "finish")


def uploads_main() -> None:
    """uploads URL THREADS SIZE_MIB: says `joined`, uploads from the first line on stdin until it closes."""
    import os
    import tempfile

    url, threads, size_mib = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out, lock = {"ops": {"upload": []}, "errors": {}}, threading.Lock()
    go, stop = threading.Event(), threading.Event()
    with tempfile.NamedTemporaryFile() as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
        f.flush()
        workers = [threading.Thread(target=uploader, args=(url, f.name, out, lock, go, stop))
                   for _ in range(threads)]
        for w in workers:
            w.start()
        print("joined", flush=True)
        sys.stdin.readline()
        go.set()
        sys.stdin.read()  # until the bench closes it
        stop.set()
        for w in workers:
            w.join()
    print(json.dumps(out))


def main() -> None:
    """Joins every client, says `joined` on stdout, starts them when a line comes on stdin,
    and prints the results as one JSON line at the end."""
    if sys.argv[1] == "uploads":
        return uploads_main()
    mode, url, name, threads, trial_s, timeout_s = sys.argv[1:7]
    ramp_s = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out, lock = {"ops": {k: [] for k in OPS}, "errors": {}, "finished": 0}, threading.Lock()
    joined, go = threading.Barrier(int(threads) + 1), threading.Event()
    workers = [threading.Thread(target=client, args=(mode, url, name, float(trial_s), float(timeout_s), ramp_s, out,
                                                     lock, joined, go))
               for _ in range(int(threads))]
    for w in workers:
        w.start()
    joined.wait()
    print("joined", flush=True)
    sys.stdin.readline()
    go.set()
    for w in workers:
        w.join()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
