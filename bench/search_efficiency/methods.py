"""The searches compared, each run in this process for a budget of training tokens.

Every tunefleet-style search goes through tunefleet's own code, as
tests/test_asha.py does: search.study.create + load (seeded), then
search.claim.claim, workers.trial_run.train and workers.trial_outcome.report, with workers.train.Resident. A search
starts trials until the non-padding training tokens of all its trials
(`tunefleet.cost`, pruned and paused ones included) reach the budget; the
last trial may run past it, and the report ignores whatever completes beyond.

Methods:

- tunefleet            (a)  tunefleet's default: StudySpec(sampler="prior", pruner="asha"): the prior
                            space (learning rate scaled with the batch), the seeds' starting config
                            queued first, asha's rungs and promotions, the detectors on.
- tpe-median           (b)  StudySpec(sampler="tpe", pruner="median", queue_starting_configs=False) over a
                            plain wide space, detectors off: Optuna's TPE + MedianPruner.
- tpe-hyperband        (b') as (b) with Optuna's HyperbandPruner over the same evaluation keys.
- random               (c)  sampler="random", pruner="none", the plain space, detectors off.
- hf-optuna            (d)  transformers' Trainer.hyperparameter_search(backend="optuna") with its default
                            space (learning rate, epochs 1-5, batch, seed) and Optuna's default MedianPruner.
- neps-priorband       (e)  NePS PriorBand (neural-pipeline-search, bench/neps_priorband.py) over the same
                            prior space and the same fidelity (a fraction of the run, rungs at 1/9, 1/3, 1);
                            promotions continue from the checkpoint as tunefleet's do.
- tunefleet-lr-x30     (a') as (a), with the learning-rate prior (and the starting config's LR)
                            centred 30x above the problem's truth.
- tunefleet-lr-div30   (a'') as (a), centred 30x below the truth.

Every trial of every method sees the same data in full: `epochs` of the
problem's training split (HF's own space searches its epochs, 1 to 5). The
sampler of every search is seeded with the search's seed; StudySpec.seed stays
0 in all of them, because it also fixes the train/eval split and the training
seed, and every method must be judged on the same eval set.
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
from spaces.param import Param
from spaces.space import starting_configs, suggest
from storage import backend, open_storage
from storage import optuna_compat as compat

METHODS = {
    "tunefleet": "(a) tunefleet default",
    "tpe-median": "(b) Optuna TPE + MedianPruner, plain space",
    "tpe-hyperband": "(b') Optuna TPE + HyperbandPruner, plain space",
    "random": "(c) random search, no pruning, plain space",
    "hf-optuna": "(d) HF Trainer.hyperparameter_search(backend='optuna'), default space",
    "neps-priorband": "(e) NePS PriorBand, the same priors and fidelity",
    "tunefleet-lr-x30": "(a') tunefleet default, LR prior centred 30x above the truth",
    "tunefleet-lr-div30": "(a'') tunefleet default, LR prior centred 30x below the truth",
}
DEFAULT_METHODS = tuple(METHODS)
LR_VARIANTS = {"tunefleet-lr-x30": 30.0, "tunefleet-lr-div30": 1 / 30}

# The plain space of baselines (b), (b') and (c): wide, uniform, no expert knowledge.
PLAIN_LR = (1e-6, 1e-1)
PLAIN_BATCH = (4, 8, 16, 32, 64)
PLAIN_OVERRIDES = {"learning_rate": {"low": PLAIN_LR[0], "high": PLAIN_LR[1]},
                   "batch_size": {"choices": list(PLAIN_BATCH)}}
# Detectors whose thresholds are never reached: "no pruning" for the baselines, and whole runs for
# the replay's tables. A non-finite loss or gradient norm still ends a trial (no threshold to lift).
NO_DETECTORS = Detectors(divergence_ratio=1e30, divergence_rise=1e30, divergence_patience=10**9,
                         plateau_window=10**9, plateau_min_improvement=0.0,
                         explosion_ratio=1e30, explosion_patience=10**9,
                         vanishing_ratio=1e-300, vanishing_patience=10**9,
                         overfit_ratio=1e30, overfit_patience=10**9)


@dataclass(frozen=True)
class TrialConfig:
    """What every trial of every method gets (and the LR sweep too)."""

    epochs: float = 1.0
    """Passes over the training split of a trial that runs in full (per problem: problems.EPOCHS)."""
    evals_per_trial: int = 10
    seq_len: int = 80
    """It truncates ~13% of the docstrings examples and ~45% of the moduledocs chunks (their tails carry no loss)."""
    max_eval_examples: int = 64
    max_micro_batch: int = 8
    """Also the eval batch: eval loss depends slightly on eval batching (<0.1% here)."""
    train_on: str = "assistant"
    """Chat: the loss on the assistant turns, tunefleet's default (the full run of 2026-12-01,
    results/full, trained on every token)."""


@dataclass
class Options:
    """How (a) is set up; recorded with every result."""

    default_sampler: str = "prior"
    default_pruner: str = "asha"


# ---- one search ---------------------------------------------------------------------------------------


def base_spec(problem, tc: TrialConfig, **options) -> StudySpec:
    # seed=0 in every search: it fixes the train/eval split and the training seed, so every method
    # is judged on the same eval set; the search's own seed goes to the sampler (load(seed=...)).
    return StudySpec(model=problem.model_dir, dataset=problem.dataset, method=problem.method,
                     n_examples=problem.n_examples, n_params=problem.n_params, hidden_size=problem.hidden_size,
                     epochs=tc.epochs, evals_per_trial=tc.evals_per_trial, seq_len=tc.seq_len,
                     max_eval_examples=tc.max_eval_examples, max_micro_batch=tc.max_micro_batch,
                     train_on=tc.train_on, columns=problem.columns, seed=0, **options)


def lr_prior(problem, tc: TrialConfig) -> Param:
    """The learning-rate parameter of the problem's default (prior-informed) space."""
    return space_of(base_spec(problem, tc))["learning_rate"]


def shifted_lr_override(problem, tc: TrialConfig, centre: float) -> dict:
    """space_overrides moving the LR prior's centre to `centre`, its confidence unchanged.

    The range stays the documents' unless the centre falls outside it; then the
    range is widened just enough to hold the centre with the same margin on
    that side as the documents' range has around their own centre (a user who
    believes in a centre gives it room on both sides). A centre above 1.0, the most
    spaces/space.py allows a learning rate, is 1.0 (prefix tuning's truth of 0.1 x30)."""
    lr = lr_prior(problem, tc)
    centre = min(centre, 1.0)
    override = {"centre": centre}
    if centre > lr.high:
        override["high"] = min(1.0, centre * lr.high / lr.centre)  # 1.0: the most spaces/space.py allows
    if centre < lr.low:
        override["low"] = centre * lr.low / lr.centre
    return {"learning_rate": override}


def _setup(method: str, problem, tc: TrialConfig, seed: int, truth_lr: float | None, opts: Options, storage):
    """(study, spec) for the tunefleet-style methods: tunefleet's own create and load."""
    n_trials = 10_000  # an upper bound only: the token budget ends the search
    if method == "tunefleet" or method in LR_VARIANTS:
        options = {"sampler": opts.default_sampler, "pruner": opts.default_pruner}
        if method in LR_VARIANTS:
            if truth_lr is None:
                raise ValueError(f"{method} needs the problem's truth learning rate")
            # The whole prior is wrong, the starting config's LR included: create() queues the
            # starting config at a centre the user set.
            options.update(space_overrides=shifted_lr_override(problem, tc, truth_lr * LR_VARIANTS[method]))
    elif method in ("tpe-median", "tpe-hyperband", "random"):
        sampler, pruner = {"tpe-median": ("tpe", "median"), "tpe-hyperband": ("tpe", "hyperband"),
                           "random": ("random", "none")}[method]
        options = {"sampler": sampler, "pruner": pruner, "space_overrides": PLAIN_OVERRIDES,
                   "queue_starting_configs": False, "detectors": NO_DETECTORS, "retry_diverged": False}
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
    """(one record per trial, one summary of the search); budget in training tokens."""
    opts = opts or Options()
    _quiet()
    started = time.time()
    if method == "hf-optuna":
        records, how = _run_hf(problem, seed, tc, budget)
    elif method == "neps-priorband":
        from bench.search_efficiency.neps_priorband import run as run_neps

        records, how = run_neps(problem, seed, tc, budget)
    else:
        records, how = _run_tunefleet_loop(problem, method, seed, tc, budget, truth_lr, opts)
    for r in records:
        r.update(problem=problem.name, method=method, seed=seed)
    summary = {"problem": problem.name, "method": method, "seed": seed, "setup": how, "budget": budget,
               "trials": len(records), "tokens": sum(r["tokens"] for r in records),
               "wall_s": round(time.time() - started, 1)}
    return records, summary


def _run_tunefleet_loop(problem, method, seed, tc, budget, truth_lr, opts):
    from search.claim import claim
    from workers.trial_outcome import report
    from workers.trial_run import train

    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-") as tmp:
        url = f"journal:{Path(tmp) / 'journal.log'}"
        storage = open_storage(url)
        study, spec = _setup(method, problem, tc, seed, truth_lr, opts, storage)
        space = space_of(spec)
        how = {k: getattr(spec, k) for k in ("sampler", "pruner", "space_overrides", "queue_starting_configs")}
        how["detectors"] = "off" if spec.detectors == NO_DETECTORS else "on"
        warm, store = resident(spec), backend(url).artifacts(storage)
        records, used, failures = [], 0, 0
        while used < budget and failures < 3:  # as the worker: three failed trials in a row end it
            trial = claim(study, storage, backend(url), spec)
            if trial is None:
                break
            t0 = time.time()
            params = suggest(trial, space)
            run = None
            try:
                run = train(trial, params, spec, warm, store, Path(tmp), should_stop=lambda: False)
                report(study, trial, params, run, store)
                failures = 0
            except Exception as e:  # as the worker does: the trial fails, the search goes on
                trial.set_user_attr(attrs.ERROR, f"{type(e).__name__}: {e}".splitlines()[0])
                study.tell(trial, state=TrialState.FAIL)
                failures += 1
            frozen = storage.get_trial(compat.trial_id(trial))
            tokens = (frozen.user_attrs.get(attrs.COST) or {}).get("tokens", 0)
            used += tokens
            records.append(record(frozen, params, tokens, used, run, time.time() - t0))
    return records, how


def record(frozen, params, tokens, cumulative, run, wall) -> dict:
    """One trial as the report reads it. `found` is the loss a complete trial found (its best eval
    loss, whose checkpoint it keeps); paused and pruned trials find nothing."""
    callback = run.callback if run is not None else None
    verdict = callback.verdict.to_dict() if callback is not None and callback.verdict else None
    lineage = frozen.user_attrs.get(attrs.LINEAGE, frozen.number)
    started = (frozen.user_attrs.get(attrs.BATCH) or {}).get("started_at_step", 0)
    ended = max(callback.eval_losses, default=started) if callback is not None else started
    found = frozen.value if frozen.state == TrialState.COMPLETE and frozen.value is not None \
        and math.isfinite(frozen.value) else None
    return {
        "trial": frozen.number, "lineage": lineage, "params": params, "state": frozen.state.name,
        "paused": attrs.PAUSED in frozen.user_attrs, "tokens": int(tokens), "cumulative_tokens": int(cumulative),
        "steps": max(0, ended - started), "eval_curve": {str(k): round(v, 6) for k, v in
                                                        sorted(frozen.intermediate_values.items())},
        "found": found, "ended_by": verdict, "source": frozen.user_attrs.get(attrs.SOURCE),
        "wall_s": round(wall, 2),
    }


# ---- (d) transformers' own hyperparameter_search ----------------------------------------------------

HF_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}


def _run_hf(problem, seed, tc, budget):
    from transformers import AutoModelForCausalLM, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    spec = base_spec(problem, tc)
    data = resident(spec).data

    def model_init(trial=None):
        from workers.train import load_base

        model = load_base(spec)  # 4-bit and prepared for QLoRA, as the method needs
        if problem.method in ("lora", "qlora"):
            import peft

            model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **HF_LORA))
        return model

    class Recorder(TrainerCallback):
        """Per trial: the tokens it trained and its eval losses; stops the study once the budget is spent."""

        def __init__(self):
            self.trainer, self.used, self.trials, self.current = None, 0, [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self.current = {"curve": {}, "t0": time.time(), "tokens0": state.num_input_tokens_seen}

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.current is not None and metrics and "eval_loss" in metrics:
                self.current["curve"][state.global_step] = float(metrics["eval_loss"])

        def on_train_end(self, args, state, control, **kwargs):
            # Called once per trial: at the end of training, or by the Trainer just before it
            # raises optuna.TrialPruned.
            trial = self.trainer._trial
            tokens = state.num_input_tokens_seen - self.current["tokens0"]
            self.used += tokens
            self.trials.append({"number": trial.number, "params": dict(trial.params), "tokens": tokens,
                                "cumulative": self.used, "curve": self.current["curve"],
                                "steps": state.global_step, "max_steps": state.max_steps,
                                "wall": time.time() - self.current["t0"]})
            self.current = None
            if self.used >= budget:
                trial.study.stop()  # ends the search after this trial

    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-hf-") as tmp:
        # A user's arguments: evaluate every tenth of the run, count tokens; the rest is HF's default.
        args = TrainingArguments(output_dir=tmp, num_train_epochs=tc.epochs, eval_strategy="steps", eval_steps=0.1,
                                 save_strategy="no", report_to="none", logging_steps=10, disable_tqdm=True,
                                 log_level="error", per_device_eval_batch_size=tc.max_micro_batch,
                                 dataloader_pin_memory=False, include_num_input_tokens_seen="non_padding")
        recorder = Recorder()
        trainer = Trainer(model_init=model_init, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=data.collator, processing_class=data.tokenizer, callbacks=[recorder])
        trainer.remove_callback(PrinterCallback)  # per-step log lines
        recorder.trainer = trainer
        storage = optuna.storages.InMemoryStorage()
        name = f"{problem.name}-hf-optuna-{seed}"
        trainer.hyperparameter_search(backend="optuna", direction="minimize", n_trials=100_000,
                                      hp_space=lambda trial: hf_default_space(trial, tc.epochs),
                                      study_name=name, storage=storage,
                                      sampler=optuna.samplers.TPESampler(seed=seed))
        frozen = {t.number: t for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
    records = []
    for t in recorder.trials:
        ft = frozen[t["number"]]
        complete = ft.state == TrialState.COMPLETE and t["steps"] >= t["max_steps"]
        finite = [v for v in t["curve"].values() if math.isfinite(v)]
        records.append({
            "trial": ft.number, "lineage": ft.number, "params": t["params"], "state": ft.state.name, "paused": False,
            "tokens": int(t["tokens"]), "cumulative_tokens": int(t["cumulative"]), "steps": t["steps"],
            "eval_curve": {str(k): round(v, 6) for k, v in sorted(t["curve"].items())},
            # As for every method: a complete run's best eval loss (HF's objective is its last).
            "found": min(finite) if complete and finite else None,
            "ended_by": {"detector": "pruner:MedianPruner"} if ft.state == TrialState.PRUNED else None,
            "source": None, "wall_s": round(t["wall"], 2)})
    how = {"search": f"transformers {_version('transformers')} Trainer.hyperparameter_search(backend='optuna', "
                     "direction='minimize'), its default hp space (learning_rate 1e-6..1e-4, num_train_epochs 1..5 "
                     "in units of the problem's trial length, seed, per_device_train_batch_size 4..64)",
           "sampler": f"TPESampler(seed={seed})", "pruner": "MedianPruner() (Optuna's default)",
           "model_init": "workers.train.load_base" + (f" + LoRA {HF_LORA}" if problem.method != "full" else "")}
    return records, how


def hf_default_space(trial, epochs: float) -> dict:
    """transformers' default_hp_space_optuna, with its 1-5 epochs counted in the benchmark's trial
    lengths (a problem's trial may be a fraction of an epoch of a large dataset)."""
    from transformers.trainer_utils import default_hp_space_optuna

    space = default_hp_space_optuna(trial)
    space["num_train_epochs"] = space["num_train_epochs"] * epochs
    return space


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---- the learning-rate sweep that sets the "truth" ------------------------------------------------


def sweep_point(problem, trial_config: dict, lr: float) -> float:
    """Best eval loss of a full run of the seeds' starting config at this LR (no pruning, no detectors)."""
    from workers.trial_run import train

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
        value = train(trial, params, spec, resident(spec), store, Path(tmp), should_stop=lambda: False).value
    return float("nan") if value is None else value


def full_trial_tokens(problem, tc: TrialConfig) -> int:
    """Non-padding tokens of one full trial (its epochs of the training split): the budget's unit."""
    spec = base_spec(problem, tc)
    data = resident(spec).data
    per_epoch = sum(len(e["input_ids"]) for e in data.train)
    return round(tc.epochs * per_epoch)


def _quiet() -> None:
    import logging
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
