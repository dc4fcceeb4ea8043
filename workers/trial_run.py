"""Running one claimed trial on this worker: the resident base with the trial's adapter, the
Trainer with its callbacks (pruning, checkpoints, cost, timing), resumed from the trial's own
or its parent's checkpoint, and on an out-of-memory error again from the last checkpoint at
half the micro-batch (workers/batch.py). What happened is a Run; telling it is
workers/trial_outcome.py's."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from search import progress


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
