"""A worker: claim a trial (search/claim.py), build it, train it, report it; until the
budget is spent.

While it trains, the worker renews its trial's lease (search/leases.py) and the
Trainer checkpoints at every evaluation into the artifact store, so a trial
whose worker dies is queued again and resumed from there by another worker.
SIGINT and SIGTERM end the running trial at its next step: it is told FAIL and
queued again to resume, so no trial is ever left RUNNING by this process. A
worker leaves once the budget is spent and no trial runs any more.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import asha, attrs, budget, leases, ready
from search.claim import claim
from search.study import load, space_of
from spaces.space import suggest
from storage import behind_coordinator, open_artifacts, open_storage, outage
from storage import optuna_compat as compat
from workers.detectors import DivergenceDetector
from workers.quiet import quiet_libraries
from workers.signals import Stop

MAX_CONSECUTIVE_FAILURES = 3
STORAGE_PATIENCE_S = 600  # a database restart or a network blip, not an outage to sit through


def say(message: str) -> None:
    print(f"[worker {socket.gethostname()}:{os.getpid()}] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """How a trial's training went on this worker."""

    callback: object  # the PruningCallback: verdict, eval losses, interrupted, best
    log_history: list = field(default_factory=list)
    micro_batch: int = 0
    accumulation: int = 0
    oom_retries: int = 0
    infeasible: bool = False  # out of memory even at micro-batch 1
    timing: object = None  # the TimingCallback: seconds in steps, evaluations, checkpoints (always set by train)
    cost: dict = field(default_factory=dict)  # {"tokens", "seconds"} this trial trained itself

    @property
    def value(self) -> float | None:
        """The trial's value: the best eval loss it reached."""
        return self.callback.best


def train(trial, params, spec, resident, artifact_store, workdir: Path, should_stop, faults=None) -> Run:
    """Trains the trial on the resident base, continuing the trial it resumes or is promoted
    from, if any; on an out-of-memory error, again from its last checkpoint at half the micro-batch."""
    import torch

    from search import progress
    from workers.batch import first_micro_batch, free_device_memory, smaller
    from workers.callback import PruningCallback
    from workers.checkpoint import CheckpointCallback, restore
    from workers.cost import CostCallback
    from workers.timing import TimingCallback
    from workers.train import build_trainer

    output_dir = workdir / f"trial-{trial.number}"
    shutil.rmtree(output_dir, ignore_errors=True)
    resume = restore(trial.study, trial, artifact_store, output_dir)
    total = progress.trial_steps(spec, params["batch_size"])
    micro, retries = first_micro_batch(spec, params, free_device_memory()), 0
    timing, cost = TimingCallback(), CostCallback(trial)
    while True:
        model = resident.model_for(params)
        hook = faults.attach(model) if faults else None
        callback = PruningCallback(trial, spec, total, should_stop=should_stop)
        trainer = build_trainer(spec, params, resident.data, model, micro, total, str(output_dir),
                                [callback, CheckpointCallback(trial, artifact_store, callback.points), cost, timing])
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            if callback.verdict is None and not callback.interrupted and total not in callback.eval_losses:
                callback.on_evaluate(trainer.args, trainer.state, trainer.control, metrics=trainer.evaluate())
            return Run(callback, trainer.state.log_history, micro, params["batch_size"] // micro, retries,
                       timing=timing, cost=cost.settle(trainer.state))
        except torch.OutOfMemoryError:
            so_far = cost.settle(trainer.state)  # what the attempt processed counts
            if micro == 1:
                return Run(callback, trainer.state.log_history, 1, params["batch_size"], retries, True, timing, so_far)
            micro, retries = smaller(micro, params["batch_size"]), retries + 1
            resume = _latest_checkpoint(output_dir) or resume
        finally:
            if hook is not None:
                hook.remove()
            del trainer
            resident.release(model)


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def _note(trial, outcome: str, params: dict, callback) -> None:
    """A Markdown note on the trial, shown by optuna-dashboard: why it ended, on what evidence."""
    from optuna_dashboard import save_note

    lines = [f"## Trial {trial.number}: {outcome}", ""]
    if callback.verdict is not None:
        lines += ["| evidence | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in callback.verdict.evidence.items()]
        lines.append("")
    curve = ", ".join(f"{step}: {loss:.4f}" for step, loss in callback.eval_losses.items())
    lines += [f"eval loss by step: {curve or 'none'}", "",
              "params: " + ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                                     for k, v in params.items())]
    save_note(trial, "\n".join(lines))


def _retry_at_half_lr(study, trial, params: dict, spec) -> bool:
    """002's adjustment, applied once: the diverged params again at lr x 0.5, if the
    budget has room, the learning rate is searched (not fixed) and this is no retry itself."""
    lr = space_of(spec)["learning_rate"]
    if not spec.retry_diverged or lr.choices is not None or attrs.RETRY_OF in trial.user_attrs:
        return False
    if budget.trials_spent(study, spec):
        return False
    study.enqueue_trial({**params, "learning_rate": lr.nearest(params["learning_rate"] * 0.5)},
                        user_attrs={attrs.SOURCE: f"trial {trial.number} diverged: its params at half the learning rate",
                                    attrs.RETRY_OF: trial.number})
    return True


def report(study, trial, params, run: Run, artifact_store, claimed_at: float | None = None) -> str:
    """Tells the trial's end to the study, with its cost, curves, timing and a note for the
    dashboard; the outcome in words. Its value is the best eval loss it reached."""
    from workers import checkpoint, curves
    from workers.callback import EARLY_STOPPING

    callback, verdict, value = run.callback, run.callback.verdict, run.value
    if claimed_at is not None and run.timing.first_step_at is not None:
        t = run.timing
        trial.set_user_attr(attrs.TIMING, {"claim_to_first_step_s": round(t.first_step_at - claimed_at, 3),
                                           "steps_s": round(t.steps_s, 3), "eval_s": round(t.eval_s, 3),
                                           "checkpoint_s": round(t.checkpoint_s, 3),
                                           "trial_s": round(time.time() - claimed_at, 3)})
    trial.set_user_attr(attrs.COST, run.cost)
    if callback.interrupted:
        trial.set_user_attr(attrs.ERROR, "interrupted by a signal; queued again to resume from its checkpoint")
        study.tell(trial, state=TrialState.FAIL)
        leases.queue_resume(study, trial, "interrupted")
        return "interrupted; queued again to resume from its checkpoint"
    trial.set_user_attr(attrs.BATCH, {"micro_batch": run.micro_batch, "accumulation": run.accumulation,
                                      "oom_retries": run.oom_retries,
                                      "started_at_step": callback.started_at_step})
    trial.set_constraint("fits_in_memory", 1.0 if run.infeasible else -1.0)
    curves.upload(trial, run.log_history, artifact_store)
    first_result = value is not None and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if run.infeasible:
        trial.set_user_attr(attrs.INFEASIBLE, f"out of memory at micro-batch 1 (effective batch {params['batch_size']})")
        state, outcome = TrialState.PRUNED, "infeasible: out of memory even at micro-batch 1"
    elif callback.paused:
        trial.set_user_attr(attrs.PAUSED, attrs.Paused(rung=verdict.evidence["rung"], step=verdict.step))
        trial.set_user_attr(attrs.PRUNE, verdict.to_dict())
        state, outcome = TrialState.PRUNED, (f"paused at the rung at step {verdict.step} (rank "
                                             f"{verdict.evidence['rank']} of {verdict.evidence['reached']}); "
                                             "checkpoint kept for a promotion")
    elif verdict is not None and value is not None and (verdict.detector in EARLY_STOPPING or first_result):
        # Convergence, or the study's first result: a study never ends without a complete trial.
        trial.set_user_attr(attrs.EARLY_STOP, verdict.to_dict())
        state, outcome = TrialState.COMPLETE, (f"complete, stopped early by {verdict.detector} at step "
                                               f"{verdict.step}, best eval loss {value:.4f}")
    elif verdict is not None:
        trial.set_user_attr(attrs.PRUNE, verdict.to_dict())
        state, outcome = TrialState.PRUNED, f"pruned by {verdict.detector} at step {verdict.step}"
    elif value is None:
        raise RuntimeError("the trial ended without an evaluation")
    else:
        state, outcome = TrialState.COMPLETE, f"complete, best eval loss {value:.4f}"
    if run.oom_retries:
        outcome += f" (micro-batch {run.micro_batch} after {run.oom_retries} out-of-memory retries)"
    _note(trial, outcome, params, callback)
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    checkpoint.finish(trial, artifact_store, keep_latest=callback.paused,
                      keep_best=callback.paused or state == TrialState.COMPLETE)
    if state == TrialState.COMPLETE:
        checkpoint.keep_top(study, trial, artifact_store, callback.spec.keep_best)
    if state == TrialState.PRUNED and verdict is not None and verdict.detector == DivergenceDetector.name \
            and _retry_at_half_lr(study, trial, params, callback.spec):
        outcome += "; queued again at half the learning rate"
    return outcome


def run(study_name: str, url: str | None = None, threads: int | None = None, artifacts: str | None = None,
        faults=None) -> int:
    """Work on the study until its budget is spent or a signal arrives; the exit code.
    `faults` (tests only) arms the model with injected errors, e.g. OutOfMemoryAbove."""
    stop = Stop()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    study, spec = load(storage, study_name)
    artifact_store = open_artifacts(storage, url, artifacts)
    quiet_libraries()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from workers.multi_gpu import device_info
    from workers.train import Resident

    resident = Resident(spec)
    device = device_info()
    # The Trainer runs a full gc.collect() at every train() (0.3 s here, per trial, over the
    # millions of objects torch and transformers import); frozen, they are no longer scanned.
    gc.freeze()
    space = space_of(spec)
    workdir = Path(tempfile.gettempdir()) / f"tunefleet-{os.getpid()}"
    failures = 0
    queued_only = behind_coordinator(url)  # takes trials the coordinator queued; creates none
    try:
        while not stop():
            started = time.time()
            try:
                trial = claim(study, storage, url, spec, device, say=say)
            except Exception as e:
                if not outage.unreachable(e):
                    raise
                if not _wait_for_storage(study, e, stop):
                    return 1
                continue
            if trial is None:
                if queued_only and ready.more_may_come(study):
                    time.sleep(random.uniform(0.5, 1.5))  # the coordinator queues trials as workers take them
                    continue
                reason = budget.stop_reason(study, spec)
                if reason is None and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(min(spec.lease_seconds / 4, 5))  # a running trial may lose its lease and come back
                    continue
                if reason is None:
                    _release_paused(study, artifact_store)
                say(f"{reason or 'study budget spent'}; exiting")
                break
            with leases.Heartbeat(storage, compat.trial_id(trial), spec.lease_seconds) as lease:
                outcome, failed = _work_on(study, trial, spec, space, resident, artifact_store, workdir,
                                           lambda: stop() or lease.lost, lease, faults, started)
            if outcome is None:  # the storage stayed away
                return 1
            failures = failures + 1 if failed else 0
            say(f"trial {trial.number} {outcome} ({time.time() - started:.1f} s)")
            if failures >= MAX_CONSECUTIVE_FAILURES:
                say(f"{failures} trials failed in a row; stopping")
                return 1
    except KeyError:
        if study.study_name in optuna.get_all_study_names(storage):
            raise
        say(f"study '{study.study_name}' was deleted; exiting")
        return 2
    return 0


def _work_on(study, trial, spec, space, resident, artifact_store, workdir, should_stop, lease, faults,
             claimed_at) -> tuple[str | None, bool]:
    """Trains and reports one claimed trial: (outcome in words, or None if the storage
    did not come back; whether the trial failed)."""
    try:
        params = suggest(trial, space)
        result = train(trial, params, spec, resident, artifact_store, workdir, should_stop=should_stop,
                       faults=faults)
        if lease.lost:
            raise optuna.exceptions.UpdateFinishedTrialError("lease lost")
        return report(study, trial, params, result, artifact_store, claimed_at=claimed_at), False
    except optuna.exceptions.UpdateFinishedTrialError:
        return "dropped: its lease ran out and it was queued again elsewhere", False
    except Exception as e:
        if not outage.unreachable(e):  # one broken trial must not leave it RUNNING or stop the worker
            return _fail(study, trial, e, artifact_store), True
        say(f"trial {trial.number} abandoned: the storage went away")  # its lease re-queues it
        if not _wait_for_storage(study, e, should_stop):
            return None, False
        return "abandoned while the storage was away; it resumes from its checkpoint", False
    finally:
        shutil.rmtree(workdir / f"trial-{trial.number}", ignore_errors=True)


def _release_paused(study, artifact_store) -> None:
    """The study is done: paused trials will not be promoted, so their checkpoints go."""
    from workers.checkpoint import remove_pointers

    for t in asha.paused(study.get_trials(deepcopy=False)):
        remove_pointers(t, artifact_store)


def _wait_for_storage(study, error: Exception, stop, give_up_s: float = STORAGE_PATIENCE_S) -> bool:
    """Waits for the storage to come back; False (after saying why) if it does not."""
    say(f"storage unreachable ({type(error).__name__}); retrying for up to {give_up_s / 60:g} minutes")
    if outage.wait_until_back(lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                              give_up_s, stop):
        say("storage is back")
        return True
    if not stop():
        say(f"storage unreachable for {give_up_s / 60:g} minutes; exiting")
    return stop()


def _fail(study, trial, error: Exception, artifact_store) -> str:
    from workers.checkpoint import discard

    message = f"{type(error).__name__}: {error}".splitlines()[0]
    try:
        trial.set_user_attr(attrs.ERROR, message)
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return f"failed: {message}"  # its lease ran out meanwhile: its checkpoint is another's now
    except Exception as e:
        if not outage.unreachable(e):
            raise
        return f"failed: {message} (not recorded: the storage went away; its lease re-queues it)"
    try:
        discard(trial, artifact_store)
    except Exception:  # the store is what failed: nothing more to clean
        pass
    return f"failed: {message}"
