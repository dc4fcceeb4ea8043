"""A worker: claim a trial, build it, train it, report it; until the budget is spent.

SIGINT and SIGTERM end the running trial at its next step: it is told FAIL and
its params are queued again, so no trial is ever left RUNNING by this process.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import optuna
from optuna.trial import TrialState

from search import attrs
from search.study import load, space_of
from spaces.space import suggest
from storage import claim_lock, open_storage
from workers.quiet import quiet_libraries

MAX_CONSECUTIVE_FAILURES = 3
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class Stop:
    """Set by SIGINT/SIGTERM; read between and during trials."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def say(message: str) -> None:
    print(f"[worker {socket.gethostname()}:{os.getpid()}] {message}", file=sys.stderr, flush=True)


def claim(study: optuna.Study, storage, url) -> optuna.Trial | None:
    """The next trial, or None once the study's budget is spent."""
    with claim_lock(storage, url, study.study_name):
        # Re-read: `study create --resume` may have raised the budget meanwhile.
        n_trials = study.user_attrs[attrs.SPEC]["n_trials"]
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= n_trials:
            return None
        trial = study.ask()
    trial.set_user_attr(attrs.WORKER, {"host": socket.gethostname(), "pid": os.getpid(), "claimed_at": time.time()})
    return trial


def train(trial, params, spec, data, stop):
    """(final eval loss or None, callback holding the verdict)."""
    from workers.callback import PruningCallback
    from workers.train import build_trainer

    callback = PruningCallback(trial, spec, should_stop=stop)
    trainer = build_trainer(spec, params, data, callback)
    trainer.train()
    if callback.verdict is None and not callback.interrupted and spec.max_steps not in callback.eval_losses:
        callback.on_evaluate(trainer.args, trainer.state, trainer.control, metrics=trainer.evaluate())
    final = callback.eval_losses.get(spec.max_steps)
    return final, callback


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
    if len(study.get_trials(deepcopy=False, states=COUNTED + (TrialState.WAITING,))) >= spec.n_trials:
        return False
    study.enqueue_trial({**params, "learning_rate": lr.nearest(params["learning_rate"] * 0.5)},
                        user_attrs={attrs.SOURCE: f"trial {trial.number} diverged: its params at half the learning rate",
                                    attrs.RETRY_OF: trial.number})
    return True


def report(study, trial, params, final, callback) -> str:
    """Tell the trial's end to the study, with a note for the dashboard; the outcome in words."""
    if callback.interrupted:
        trial.set_user_attr(attrs.ERROR, "interrupted by a signal; its params were queued again")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(params, user_attrs={attrs.SOURCE: f"retry of interrupted trial {trial.number}"})
        outcome = "interrupted; its params are queued again"
    elif callback.verdict is not None:
        trial.set_user_attr(attrs.PRUNE, callback.verdict.to_dict())
        study.tell(trial, state=TrialState.PRUNED)
        outcome = f"pruned by {callback.verdict.detector} at step {callback.verdict.step}"
        if callback.verdict.detector == "divergence" and _retry_at_half_lr(study, trial, params, callback.spec):
            outcome += "; queued again at half the learning rate"
    else:
        study.tell(trial, final)
        outcome = f"complete, eval loss {final:.4f}"
    _note(trial, outcome, params, callback)
    return outcome


def run(study_name: str, url: str | None = None, threads: int | None = None) -> int:
    """Work on the study until its budget is spent or a signal arrives; the exit code."""
    stop = Stop()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    study, spec = load(storage, study_name)
    quiet_libraries()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from workers.train import TrialData

    data = TrialData(spec)
    space = space_of(spec)
    failures = 0
    while not stop():
        trial = claim(study, storage, url)
        if trial is None:
            say("study budget spent; exiting")
            break
        started = time.time()
        try:
            params = suggest(trial, space)
            final, callback = train(trial, params, spec, data, stop)
            outcome = report(study, trial, params, final, callback)
            failures = 0
        except Exception as e:  # one broken trial must not leave it RUNNING or stop the worker
            trial_error = f"{type(e).__name__}: {e}".splitlines()[0]
            trial.set_user_attr(attrs.ERROR, trial_error)
            study.tell(trial, state=TrialState.FAIL)
            outcome, failures = f"failed: {trial_error}", failures + 1
        say(f"trial {trial.number} {outcome} ({time.time() - started:.1f} s)")
        if failures >= MAX_CONSECUTIVE_FAILURES:
            say(f"{failures} trials failed in a row; stopping")
            return 1
    return 0
