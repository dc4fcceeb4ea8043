"""The baseline: transformers' own `Trainer.hyperparameter_search` (Optuna backend)
with `model_init`, on the same model, data, space, trial length and evaluation
as the tunefleet worker. Prints one JSON line: wall time and per-trial timings.

    python -m bench.trial_overhead.hf_baseline MODEL DATASET N_TRIALS MAX_STEPS EVAL_STEPS SEQ_LEN THREADS
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

STARTED = time.time()  # before the heavy imports, as the worker's wall time is taken


def main(model: str, dataset: str, n_trials: int, max_steps: int, eval_steps: int, seq_len: int,
         threads: int) -> None:
    import optuna
    import torch
    import peft
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from search.spec import StudySpec
    from workers.quiet import quiet_libraries
    from workers.timing import TimingCallback
    from workers.train import TrialData

    quiet_libraries()
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = StudySpec(model=model, dataset=dataset, method="lora", n_examples=2 ** 20, seq_len=seq_len)
    data = TrialData(spec)
    timing, trials = TimingCallback(), []

    def model_init(trial):
        if trial is not None:  # None: the Trainer's own call at construction
            _close(trials, timing)
            timing.__init__()  # one callback on the Trainer, reset for each trial
            trials.append({"started": time.time()})
        base = AutoModelForCausalLM.from_pretrained(model)
        r = trial.params.get("r", 16) if trial is not None else 16
        return peft.get_peft_model(base, peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05,
                                                         target_modules="all-linear", task_type="CAUSAL_LM"))

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True),
                "r": trial.suggest_categorical("r", [8, 16, 32]),
                "gradient_accumulation_steps": trial.suggest_categorical("gradient_accumulation_steps", [1, 2])}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=max_steps, eval_strategy="steps", eval_steps=eval_steps,
                                 per_device_train_batch_size=8, per_device_eval_batch_size=8, logging_steps=1,
                                 save_strategy="no", report_to="none", disable_tqdm=True, log_level="error")
        trainer = Trainer(model_init=model_init, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=data.collator, processing_class=data.tokenizer)
        trainer.add_callback(timing)
        trainer.hyperparameter_search(direction="minimize", backend="optuna", n_trials=n_trials, hp_space=hp_space,
                                      compute_objective=lambda metrics: metrics["eval_loss"],
                                      pruner=optuna.pruners.NopPruner())
    _close(trials, timing)
    print(json.dumps({"wall_s": round(time.time() - STARTED, 2), "trials": trials}))


def _close(trials: list[dict], timing) -> None:
    if trials and timing.first_step_at is not None:
        trials[-1].update(claim_to_first_step_s=round(timing.first_step_at - trials[-1].pop("started"), 3),
                          steps_s=round(timing.steps_s, 3), eval_s=round(timing.eval_s, 3))

if __name__ == "__main__":
    model, dataset, *numbers = sys.argv[1:]
    main(model, dataset, *map(int, numbers))
