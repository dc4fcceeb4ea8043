"""`tunefleet ray-workers NAME --address ADDR`: tunefleet workers as actors on an existing Ray cluster.

Each actor runs one `tunefleet worker` child process with the GPUs Ray gave the actor
(Ray sets CUDA_VISIBLE_DEVICES in it), so a worker behaves as on any machine: SIGTERM
re-queues its trial, its output and exit code are its own. The launcher places the actors,
a fixed number or as many as the free resources allow while the study's budget lasts (a
failed worker ends the filling), and stops them all on SIGINT/SIGTERM.

With --gpus-per-trial N each worker trains its trials on N ranks (workers/multi_gpu.py):
its actor reserves N times a rank's resources as one bundle of a placement group, so all
N GPUs of a trial are on one node and are reserved together or not at all.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from spaces.errors import InputError
from search.signals import Stop

# Every actor imports this module: what only the launcher needs (Ray, Optuna) is imported in its functions.
POLL_S = 2.0
TAIL_LINES = 20


class WorkerActor:
    """The body of one Ray actor: a worker process, and a way to stop it."""

    def __init__(self):
        self._lock = threading.Lock()  # stop() runs on a second actor thread, maybe before work() starts
        self._child = None
        self._stopped = False

    def ready(self) -> str:
        return socket.gethostname()

    def work(self, worker_args: list[str], env: dict) -> dict:
        """Runs `tunefleet worker *worker_args` to its end: host, pid, exit code, last lines."""
        with self._lock:
            if self._stopped:
                return {"host": socket.gethostname(), "pid": None, "code": 0, "tail": ["stopped before it started"]}
            self._child = subprocess.Popen([sys.executable, "-m", "search.cli", "worker", *worker_args],
                                           env={**os.environ, **env}, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
        tail = collections.deque(maxlen=TAIL_LINES)
        for line in self._child.stdout:
            print(line, end="", flush=True)  # Ray forwards it to the launcher's terminal
            tail.append(line.rstrip("\n"))
        code = self._child.wait()
        return {"host": socket.gethostname(), "pid": self._child.pid, "code": code if code >= 0 else 128 - code,
                "tail": list(tail)}

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._child is not None and self._child.poll() is None:
                self._child.terminate()  # the worker ends its trial at the next step and re-queues it


@dataclass
class _Slot:
    actor: object
    work: object  # ObjectRef of WorkerActor.work: the worker's outcome
    ready: object  # ObjectRef resolved once Ray has placed the actor
    host: str | None = None  # set once placed
    group: object = None  # the placement group of a multi-rank worker, removed when it ends


class _Fleet:
    """The launcher's actors, placed or waiting for resources, and how the ended ones did."""

    def __init__(self, ray, actor_class, worker_args: list[str], env: dict, bundle: dict | None = None):
        self.ray, self.actor_class, self.worker_args, self.env = ray, actor_class, worker_args, env
        self.bundle = bundle  # a multi-rank worker's resources, placed together on one node
        self.slots: dict[int, _Slot] = {}
        self.numbers = itertools.count(1)
        self.worst = 0
        self.stopping = False

    def add(self, n: int) -> None:
        for _ in range(n):
            group, actor_class = None, self.actor_class
            if self.bundle:
                from ray.util.placement_group import placement_group
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                group = placement_group([self.bundle], strategy="STRICT_PACK")
                actor_class = actor_class.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=0))
            actor = actor_class.remote()
            ready = actor.ready.remote()
            self.slots[next(self.numbers)] = _Slot(actor, actor.work.remote(self.worker_args, self.env), ready,
                                                   group=group)

    def _forget(self, number: int) -> None:
        slot = self.slots.pop(number)
        if slot.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(slot.group)

    def all_placed(self) -> bool:
        return all(s.host is not None for s in self.slots.values())

    def drop_unplaced(self) -> None:
        """Actors still waiting for resources would start only to find nothing to do."""
        self.wait(0)
        for number, slot in list(self.slots.items()):
            if slot.host is None:
                self.ray.kill(slot.actor)
                self._forget(number)
                print(f"worker {number} never started: no free resources for it in time", flush=True)

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            for slot in self.slots.values():
                slot.actor.stop.remote()

    def wait(self, timeout: float) -> None:
        """Notes actors placed and reports workers ended within `timeout` seconds."""
        refs = {s.ready: n for n, s in self.slots.items() if s.host is None}
        refs.update({s.work: n for n, s in self.slots.items()})
        if not refs:
            time.sleep(timeout)
            return
        done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in sorted(done, key=lambda r: r != self.slots[refs[r]].ready):  # placed before ended
            number = refs[ref]
            slot = self.slots[number]
            try:
                value = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:  # the actor died: its node left, or it was killed
                value = {"code": 1, "tail": [str(e).strip().splitlines()[0]]}
            if ref != slot.ready:
                self._ended(number, value)
                self._forget(number)
            elif isinstance(value, str):
                slot.host = value
                print(f"worker {number} started on {slot.host}", flush=True)
            else:
                slot.host = "?"  # died unplaced: its work() reports it

    def _ended(self, number: int, outcome: dict) -> None:
        code, tail = outcome["code"], outcome["tail"]
        where = f" on {outcome['host']} pid {outcome['pid']}" if outcome.get("pid") else ""
        print(f"worker {number}{where} exited {code}: {tail[-1] if tail else 'no output'}", flush=True)
        if code:
            print("\n".join(f"  {line}" for line in tail), file=sys.stderr, flush=True)
        self.worst = max(self.worst, code)


def launch(name: str, address: str, url: str | None, worker_args: list[str], num_workers: int | None,
           cpus: float, gpus: float, poll_s: float = POLL_S, ranks: int = 1) -> int:
    """Places workers of study `name` on the Ray cluster at `address`: `num_workers`, or
    with None as many as the free resources allow, more as they grow, until the budget is
    spent. Waits for them all; the worst exit code."""
    from search.study import load
    from storage import backend

    _check_reachable(address)
    where = backend(url)  # actors run elsewhere than the launcher: a journal's path is absolute
    url = where.url
    study, _ = load(where.open(), name)  # a missing study: one error here, not one per worker
    ray = _connect(address)
    per_worker = {k: v * ranks for k, v in (("CPU", cpus), ("GPU", gpus)) if v}
    _warn_if_no_node_fits(ray, per_worker)
    # max_concurrency 2: stop() must run while work() is still running.
    actor_class = ray.remote(num_cpus=cpus * ranks, num_gpus=gpus * ranks, max_concurrency=2)(WorkerActor)
    # The URL goes in the environment, not on command lines that `ps` shows.
    fleet = _Fleet(ray, actor_class, worker_args + (["--gpus-per-trial", str(ranks)] if ranks > 1 else []),
                   {"TUNEFLEET_STORAGE": url}, per_worker if ranks > 1 else None)
    stop = Stop()  # after ray.init, which sets its own SIGTERM handler
    if num_workers:
        fleet.add(num_workers)
    while True:
        finishing = stop.requested or fleet.worst != 0 or _spent(study)
        if finishing:
            fleet.drop_unplaced()
        if stop.requested:
            fleet.stop()
        elif not num_workers and not finishing and fleet.all_placed():
            fleet.add(_fits(ray.available_resources(), per_worker))
        if not fleet.slots and (finishing or num_workers):
            return fleet.worst
        fleet.wait(poll_s)


def _check_reachable(address: str) -> None:
    """ray.init retries an address nobody listens on for minutes: a bad one is an error in seconds."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address takes HOST:PORT of the Ray head (or ray://HOST:PORT, or auto), not '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise InputError(f"no Ray cluster at {address}: {e.strerror or e}") from None


def _connect(address: str):
    import logging

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each worker's lines say how its own trials ended
    import ray

    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"cannot join the Ray cluster at {address}: {str(e).strip().splitlines()[0]}") from None
    return ray


def _spent(study) -> bool:
    """Whether no trial may start any more, read as the workers read it: no new configuration
    may, and none is queued (a queued one still needs a worker)."""
    from search import attrs, budget
    from search.spec import StudySpec
    from storage import outage

    try:
        spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])  # `study create --resume` may raise it
        if budget.stop_reason(study, spec) is not None:
            return True
        from optuna.trial import TrialState

        return budget.trials_spent(study, spec) and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    except KeyError:  # the study was deleted: its workers leave too
        return True
    except Exception as e:
        if outage.unreachable(e):  # the workers wait out an outage, and so does the launcher
            return False
        raise


def _fits(available: dict, per_worker: dict) -> int:
    """Workers the free resources hold, counted cluster-wide (a node's leftovers may not add up:
    the launcher adds none while one waits for its resources)."""
    return min(int(available.get(k, 0.0) / v + 1e-9) for k, v in per_worker.items())


def _warn_if_no_node_fits(ray, per_worker: dict) -> None:
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if not any(all(node.get(k, 0.0) >= v for k, v in per_worker.items()) for node in nodes):
        need = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
        print(f"no node of the cluster has {need} for a worker; waiting for one to join", file=sys.stderr,
              flush=True)
