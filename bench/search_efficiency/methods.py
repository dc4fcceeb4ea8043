"""The searches compared, each run in this process for a budget of optimizer steps.

Every tunefleet-style search goes through tunefleet's own code, as
tests/test_methods.py does: search.study.create + load (seeded), then
workers.worker.claim, train and report, with workers.train.TrialData. A search
starts trials until the optimizer steps its trials have trained reach the
budget (a pruned trial counts the steps it ran); the last trial may run past
the budget, and the report ignores whatever finishes beyond it.

Methods:

- tunefleet            (a)  tunefleet's default: StudySpec(sampler="prior", pruner="default"):
                            prior-informed space, the seeds' starting config queued first, detectors on.
- tpe-median           (b)  StudySpec(sampler="tpe", pruner="median", queue_starting_configs=False) over a
                            plain space (space_overrides), detectors off: Optuna's TPE + MedianPruner.
- random               (c)  sampler="random", pruner="none", the plain space, no starting config, detectors off.
- hf-optuna            (d)  transformers' Trainer.hyperparameter_search(backend="optuna") with its
                            default space (no hp_space) and Optuna's default MedianPruner.
- tunefleet-lr-x30     (a') as (a), with the learning-rate prior (and the starting config's LR)
                            centred 30x above the problem's truth.
- tunefleet-lr-div30   (a'') as (a), centred 30x below the truth (optional).

The sampler of every search is seeded with the search's seed; StudySpec.seed
stays 0 in all of them, because it also fixes the train/eval split and the
training seed, and every method must be judged on the same eval set. The
seeded TPE and random samplers draw the same first (startup) points for the
same seed: (b) and (c) start from common random numbers.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import attrs
from search.spec import Detectors, StudySpec
from search.study import create, load, space_of
from spaces.space import Param, starting_configs, suggest
from storage import open_artifacts, open_storage

METHODS = {
    "tunefleet": "(a) tunefleet default",
    "tpe-median": "(b) Optuna TPE + MedianPruner, plain space",
    "random": "(c) random search, no pruning, plain space",
    "hf-optuna": "(d) HF Trainer.hyperparameter_search(backend='optuna'), default space",
    "tunefleet-lr-x30": "(a') tunefleet default, LR prior centred 30x above the truth",
    "tunefleet-lr-div30": "(a'') tunefleet default, LR prior centred 30x below the truth",
}
DEFAULT_METHODS = ("tunefleet", "tpe-median", "random", "hf-optuna", "tunefleet-lr-x30")

# The plain space of baselines (b) and (c): wide, uniform, no expert knowledge.
PLAIN_LR = (1e-6, 1e-2)
PLAIN_BATCH = (4, 8, 16, 32, 64)
PLAIN_OVERRIDES = {"learning_rate": {"low": PLAIN_LR[0], "high": PLAIN_LR[1]},
                   "batch_size": {"choices": list(PLAIN_BATCH)}}
# Detectors that never fire (a non-finite loss still ends a trial): "no pruning" for (c).
NO_DETECTORS = Detectors(divergence_ratio=1e30, divergence_rise=1e30, divergence_patience=10**9,
                         plateau_window=10**9, plateau_min_improvement=0.0)


@dataclass(frozen=True)
class TrialConfig:
    """What every trial of every method gets (and the LR sweep too)."""

    max_steps: int = 40
    eval_steps: int = 5
    seq_len: int = 80
    """80 rather than 96 keeps the full run near 25 minutes on 2 cores (-19% time); it truncates
    ~13% of the docstrings examples and ~45% of the moduledocs chunks (their tails carry no loss)."""
    max_eval_examples: int = 64
    max_micro_batch: int = 8
    """Also the eval batch of batches >= 8: eval loss depends slightly on eval batching (<0.1% here)."""


@dataclass
class Options:
    """How (a) and the baselines are set up; recorded with every result."""

    default_sampler: str = "prior"
    default_pruner: str = "default"
    baseline_detectors: bool = False
    """Run tunefleet's divergence/plateau detectors in (b) too (off: (b) is plain Optuna TPE + MedianPruner)."""


# ---- one search ---------------------------------------------------------------------------------------


def base_spec(problem, tc: TrialConfig, **options) -> StudySpec:
    # seed=0 in every search: it fixes the train/eval split and the training seed, so every method
    # is judged on the same eval set; the search's own seed goes to the sampler (load(seed=...)).
    return StudySpec(model=problem.model_dir, dataset=problem.dataset, method=problem.method,
                     n_examples=problem.n_examples, n_params=problem.n_params, hidden_size=problem.hidden_size,
                     max_steps=tc.max_steps, eval_steps=tc.eval_steps,
                     seq_len=tc.seq_len, max_eval_examples=tc.max_eval_examples,
                     max_micro_batch=tc.max_micro_batch, seed=0, **options)


def lr_prior(problem) -> Param:
    """The learning-rate parameter of the problem's default (prior-informed) space."""
    return space_of(base_spec(problem, TrialConfig()))["learning_rate"]


def shifted_lr_override(problem, centre: float) -> dict:
    """space_overrides moving the LR prior's centre to `centre`, its confidence unchanged.

    The range stays the documents' unless the centre falls outside it; then the
    range is widened just enough to hold the centre with the same margin on
    that side as the documents' range has around their own centre (a user who
    believes in a centre gives it room on both sides)."""
    lr = lr_prior(problem)
    override = {"centre": centre}
    if centre > lr.high:
        override["high"] = min(1.0, centre * lr.high / lr.centre)  # 1.0: the most spaces/space.py allows
    if centre < lr.low:
        override["low"] = centre * lr.low / lr.centre
    return {"learning_rate": override}


def _setup(method: str, problem, tc: TrialConfig, seed: int, budget: int, truth_lr: float | None,
           opts: Options, storage):
    """(study, spec) for the tunefleet-style methods: tunefleet's own create and load."""
    n_trials = budget  # an upper bound only (every trial trains at least one step): the step budget ends it
    if method in ("tunefleet", "tunefleet-lr-x30", "tunefleet-lr-div30"):
        options = {"sampler": opts.default_sampler, "pruner": opts.default_pruner}
        factor = {"tunefleet-lr-x30": 30.0, "tunefleet-lr-div30": 1 / 30}.get(method)
        if factor is not None:
            if truth_lr is None:
                raise ValueError(f"{method} needs the problem's truth learning rate")
            # The whole prior is wrong, the starting config's LR included: create() queues the
            # starting config at a centre the user set.
            options.update(space_overrides=shifted_lr_override(problem, truth_lr * factor))
    elif method in ("tpe-median", "random"):
        tpe = method == "tpe-median"
        options = {"sampler": "tpe" if tpe else "random", "pruner": "median" if tpe else "none",
                   "space_overrides": PLAIN_OVERRIDES, "queue_starting_configs": False}
        if not (tpe and opts.baseline_detectors):
            options["detectors"] = NO_DETECTORS
    else:
        raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    name = f"{problem.name}-{method}-{seed}"
    create(storage, name, base_spec(problem, tc, n_trials=n_trials, **options))
    return load(storage, name, seed=seed)


_DATA: dict = {}


def resident(spec: StudySpec):
    """workers.train.Resident (data and base model), built once per (model, method, data config)."""
    from workers.train import Resident

    key = (spec.model, spec.method, spec.dataset, spec.seq_len, spec.eval_fraction, spec.max_eval_examples,
           spec.seed)
    if key not in _DATA:
        _DATA[key] = Resident(spec)
    return _DATA[key]


def run_search(problem, method: str, seed: int, tc: TrialConfig, budget: int, truth_lr: float | None = None,
               opts: Options | None = None) -> tuple[list[dict], dict]:
    """(one record per trial, one summary of the search)."""
    opts = opts or Options()
    _quiet()
    started = time.time()
    if method == "hf-optuna":
        records, how = _run_hf(problem, seed, tc, budget)
    else:
        records, how = _run_tunefleet_loop(problem, method, seed, tc, budget, truth_lr, opts)
    for r in records:
        r.update(problem=problem.name, method=method, seed=seed)
    summary = {"problem": problem.name, "method": method, "seed": seed, "setup": how, "budget": budget,
               "trials": len(records), "steps": sum(r["steps"] for r in records),
               "wall_s": round(time.time() - started, 1)}
    return records, summary


def _run_tunefleet_loop(problem, method, seed, tc, budget, truth_lr, opts):
    from workers.worker import claim, report, train

    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-") as tmp:
        url = f"journal:{Path(tmp) / 'journal.log'}"
        storage = open_storage(url)
        study, spec = _setup(method, problem, tc, seed, budget, truth_lr, opts, storage)
        space = space_of(spec)
        how = {k: getattr(spec, k) for k in ("sampler", "pruner", "space_overrides", "queue_starting_configs")}
        how["detectors"] = "off" if spec.detectors == NO_DETECTORS else "on"
        warm, store = resident(spec), open_artifacts(storage, url)
        records, used, failures = [], 0, 0
        while used < budget and failures < 3:  # as the worker: three failed trials in a row end it
            trial = claim(study, storage, url, spec)
            if trial is None:
                break
            t0 = time.time()
            params = suggest(trial, space)
            try:
                run = train(trial, params, spec, warm, store, Path(tmp), should_stop=lambda: False)
                report(study, trial, params, run, store)
                callback = run.callback
                verdict = callback.verdict.to_dict() if callback.verdict else None
                steps = callback.verdict.step if callback.verdict else spec.max_steps
                curve, failures = dict(callback.eval_losses), 0
            except Exception as e:  # as the worker does: the trial fails, the search goes on
                trial.set_user_attr(attrs.ERROR, f"{type(e).__name__}: {e}".splitlines()[0])
                study.tell(trial, state=TrialState.FAIL)
                verdict, steps, curve = {"detector": "error", "evidence": str(e)[:200]}, 0, {}
                failures += 1
            frozen = storage.get_trial(trial._trial_id)
            used += steps
            records.append(_record(frozen, params, steps, used, curve, verdict, time.time() - t0,
                                   frozen.user_attrs.get(attrs.SOURCE)))
    return records, how


def _record(frozen, params, steps, cumulative, curve, verdict, wall, source=None) -> dict:
    finite = [v for v in curve.values() if math.isfinite(v)]
    return {
        "trial": frozen.number, "params": params, "state": frozen.state.name,
        "steps": steps, "cumulative_steps": cumulative, "examples": steps * _batch(params),
        "eval_curve": {str(k): round(v, 6) for k, v in sorted(curve.items())},
        "final_eval_loss": frozen.value if frozen.state == TrialState.COMPLETE else None,
        "best_eval_loss": min(finite) if finite else None,
        "ended_by": verdict, "source": source, "wall_s": round(wall, 2),
    }


def _batch(params: dict) -> int:
    return int(params.get("batch_size") or params.get("per_device_train_batch_size") or 0)


# ---- (d) transformers' own hyperparameter_search ----------------------------------------------------

HF_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}


def _run_hf(problem, seed, tc, budget):
    from transformers import AutoModelForCausalLM, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    spec = base_spec(problem, tc)
    data = resident(spec).data

    def model_init(trial=None):
        model = AutoModelForCausalLM.from_pretrained(problem.model_dir)
        if problem.method == "lora":
            import peft

            model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **HF_LORA))
        return model

    class Recorder(TrainerCallback):
        """Per trial: the steps it trained and its eval losses; stops the study once the budget is spent."""

        def __init__(self):
            self.trainer, self.used, self.trials, self.current = None, 0, [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self.current = {"curve": {}, "t0": time.time()}

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.current is not None and metrics and "eval_loss" in metrics:
                self.current["curve"][state.global_step] = float(metrics["eval_loss"])

        def on_train_end(self, args, state, control, **kwargs):
            # Called once per trial: at the end of training, or by the Trainer just before it
            # raises optuna.TrialPruned.
            trial = self.trainer._trial
            self.used += state.global_step
            self.trials.append({"number": trial.number, "params": dict(trial.params), "steps": state.global_step,
                                "cumulative": self.used, "curve": self.current["curve"],
                                "wall": time.time() - self.current["t0"]})
            self.current = None
            if self.used >= budget:
                trial.study.stop()  # ends the search after this trial

    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-hf-") as tmp:
        args = TrainingArguments(output_dir=tmp, max_steps=tc.max_steps, eval_strategy="steps",
                                 eval_steps=tc.eval_steps, save_strategy="no", report_to="none",
                                 logging_steps=tc.eval_steps, disable_tqdm=True, log_level="error",
                                 per_device_eval_batch_size=tc.max_micro_batch, dataloader_pin_memory=False)
        recorder = Recorder()
        trainer = Trainer(model_init=model_init, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=data.collator, processing_class=data.tokenizer, callbacks=[recorder])
        trainer.remove_callback(PrinterCallback)  # per-step log lines
        recorder.trainer = trainer
        storage = optuna.storages.InMemoryStorage()
        name = f"{problem.name}-hf-optuna-{seed}"
        trainer.hyperparameter_search(backend="optuna", direction="minimize", n_trials=budget,
                                      study_name=name, storage=storage,
                                      sampler=optuna.samplers.TPESampler(seed=seed))
        frozen = {t.number: t for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
    records = []
    for t in recorder.trials:
        ft = frozen[t["number"]]
        verdict = None
        if ft.state == TrialState.PRUNED:
            verdict = {"detector": "pruner:MedianPruner", "step": t["steps"]}
        records.append(_record(ft, t["params"], t["steps"], t["cumulative"], t["curve"], verdict, t["wall"]))
    how = {"search": f"transformers {_version('transformers')} Trainer.hyperparameter_search(backend='optuna', "
                     "direction='minimize'), default hp space",
           "sampler": f"TPESampler(seed={seed})", "pruner": "MedianPruner() (Optuna's default)",
           "model_init": "from_pretrained" + (f" + LoRA {HF_LORA}" if problem.method == "lora" else "")}
    return records, how


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---- the learning-rate sweep that sets the "truth" ------------------------------------------------


def sweep_point(problem, trial_config: dict, lr: float) -> float:
    """Final eval loss of the seeds' starting config at this LR (no pruning, no detectors)."""
    from workers.worker import train

    _quiet()
    tc = TrialConfig(**trial_config)
    spec = base_spec(problem, tc, pruner="none", detectors=NO_DETECTORS,
                     space_overrides={"learning_rate": {"low": 1e-8, "high": 1.0}})
    space = space_of(spec)
    config = {**starting_configs(problem.method, space)[0], "learning_rate": lr}
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(config)
    trial = study.ask()
    params = suggest(trial, space)
    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-") as tmp:
        store = optuna.artifacts.FileSystemArtifactStore(tmp)
        final = train(trial, params, spec, resident(spec), store, Path(tmp), should_stop=lambda: False).value
    return float("nan") if final is None else final


def _quiet() -> None:
    import logging
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*autograd kernel was not registered.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
