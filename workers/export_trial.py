"""`tunefleet export`: a trial's kept checkpoint as a finished model in a directory.

DIR/adapter/ (peft's own files: `PeftModel.from_pretrained(base, DIR/adapter)`) or,
for full fine-tuning, DIR/model/, each with the tokenizer; DIR/merged/ with --merge
(LoRA and QLoRA: the adapter merged into the base at full precision);
DIR/training_args.json and DIR/peft_config.json (what the trial trained with, from
the one mapping in spaces/export.py); DIR/trl_sft.yaml, a config for TRL's
`trl sft --config` that trains the same run again; DIR/README.md.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import attrs, progress
from search.spec import StudySpec
from spaces import export
from spaces.errors import InputError
from spaces.methods import method as method_of

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
MODEL_SKIP = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
              "scaler.pt")


def choose(study: optuna.Study, spec: StudySpec, number: int | None):
    """The trial to export: the one asked for, else the best complete trial; it must have kept
    its best checkpoint (the best keep_best complete trials do)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if number is None:
        if not complete:
            raise InputError(f"study '{study.study_name}' has no complete trial yet")
        trial = min(complete, key=lambda t: (t.value, t.number))
    else:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise InputError(f"study '{study.study_name}' has no trial {number}")
        trial = found[0]
    if attrs.BEST_CHECKPOINT not in trial.system_attrs:
        raise _kept_none(trial, spec)
    return trial


def _kept_none(trial, spec: StudySpec) -> InputError:
    return InputError(f"trial {trial.number} ({trial.state.name}) kept no checkpoint: the best "
                      f"{spec.keep_best} complete trial(s) keep theirs (study create --keep-best)")


def _unpack(store, trial, spec: StudySpec, into: Path) -> Path:
    """The trial's best checkpoint, unpacked. A trial pushed out of the best keep_best still
    points at the checkpoint it let go of (a finished trial's attrs cannot change)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    into.mkdir(parents=True)
    try:
        with store.open_reader(trial.system_attrs[attrs.BEST_CHECKPOINT]["artifact"]) as f, \
                tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(into, filter="data")
    except ArtifactNotFound:
        raise _kept_none(trial, spec) from None
    return into


def _weights(checkpoint: Path, out: Path, spec: StudySpec, tokenizer) -> Path:
    """The trained weights alone (no optimizer state), the base named as the user named it."""
    out.mkdir(parents=True)
    adapter = method_of(spec.method).adapter
    keep = ADAPTER_FILES if adapter else None
    for f in checkpoint.iterdir():
        if f.is_file() and (f.name in keep if keep else f.name not in MODEL_SKIP):
            shutil.copy2(f, out / f.name)
    if adapter:
        config = json.loads((out / "adapter_config.json").read_text())
        config.update(base_model_name_or_path=spec.model, revision=spec.revision)
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(out)
    return out


def _merge(adapter: Path, out: Path, spec: StudySpec, tokenizer) -> None:
    """The adapter merged into the base loaded at full precision (for QLoRA too: merging into
    4-bit weights would round the update away)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(spec.model_dir(), trust_remote_code=spec.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _trl_dataset(spec: StudySpec) -> dict | None:
    """The dataset as TRL's dataset mixture loads it (datasets.load_dataset); None for a
    save_to_disk directory, which load_dataset cannot read."""
    from spaces.dataset import BUILDERS

    path = Path(spec.dataset)
    if path.is_file():
        return {"path": BUILDERS[path.suffix], "data_files": str(path), "split": "train"}
    if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
        return None
    return {"path": spec.dataset, "split": spec.dataset_split or "train"}


def trl_config(spec: StudySpec, fmt: str, params: dict, args: dict) -> dict:
    """`trl sft --config` fields (TRL's ScriptArguments, SFTConfig, ModelConfig and
    DatasetMixtureConfig) for the same configuration: the eval examples a held-out share of
    the same size (TRL draws its own), the columns as TRL names them."""
    config = {"model_name_or_path": spec.model, "model_revision": spec.revision or "main",
              "trust_remote_code": spec.trust_remote_code, "max_length": spec.seq_len, "output_dir": "trl-sft",
              **{k: args[k] for k in (
                  "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                  "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim", "seed",
                  "per_device_eval_batch_size", "eval_strategy", "eval_steps", "report_to")}}
    dataset = _trl_dataset(spec)
    if dataset is not None:
        config.update(datasets=[dataset], test_split_size=round(1 - progress.n_train(spec) / spec.n_examples, 4)
                      if not spec.eval_dataset else spec.max_eval_examples, dataset_test_split="test")
    m = method_of(spec.method)
    if m.adapter == "lora":  # TRL's own LoRA options; a prefix adapter has none
        peft = export.peft_config(params, spec.method)
        config.update(use_peft=True, lora_r=peft["r"], lora_alpha=peft["lora_alpha"],
                      lora_dropout=peft["lora_dropout"], lora_target_modules=peft["target_modules"])
    if m.quantized:
        quant = export.quantization_config(spec.method)
        config.update(load_in_4bit=True, bnb_4bit_quant_type=quant["bnb_4bit_quant_type"],
                      use_bnb_nested_quant=quant["bnb_4bit_use_double_quant"], dtype=quant["bnb_4bit_compute_dtype"])
    if spec.chat_template:
        config["chat_template_path"] = "chat_template.jinja"
    if fmt == "messages" and spec.train_on == "assistant":
        # TRL finds assistant tokens through {% generation %} markers, which the template must have.
        config["assistant_only_loss"] = True
    return config


def _readme(study, spec, trial, pointer, params, merged: bool) -> str:
    curve = "\n".join(f"| {key} | {value:.4f} |" for key, value in sorted(trial.intermediate_values.items()))
    full = method_of(spec.method).adapter is None
    weights = "model" if full else "adapter"
    load = (f"AutoModelForCausalLM.from_pretrained(\"{weights}\")" if full else
            f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{spec.model}\"), \"adapter\")")
    return f"""# Trial {trial.number} of study `{study.study_name}`

{spec.method} fine-tuning of `{spec.model}`{f" (revision {spec.revision})" if spec.revision else ""} on
`{spec.dataset}`, found by tunefleet ({spec.sampler} sampler, {spec.pruner} pruner, {spec.n_trials}
configurations). Its best eval loss is **{pointer['value']:.4f}**, at step {pointer['step']}; these are
the weights of that evaluation.

Params: {", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`" for k, v in params.items())}

## Load it

```python
from transformers import AutoModelForCausalLM{"" if full else chr(10) + "from peft import PeftModel"}

model = {load}
```
{"" if full else f'''
Merge it into the base: `model.merge_and_unload().save_pretrained("merged")`{" (done: merged/)" if merged else
" (or export again with --merge)"}.
'''}
## Train it again, or on

`trl sft --config trl_sft.yaml` runs the same configuration with TRL; `training_args.json` and
`peft_config.json` are the transformers `TrainingArguments` and peft config the trial trained with.

## Eval loss by evaluation (key: examples seen{" " if not spec.max_steps else ", here steps"})

| key | eval loss |
| --- | --- |
{curve}
"""


def export_trial(study: optuna.Study, spec: StudySpec, store, out: Path, number: int | None = None,
                 merge: bool = False) -> dict:
    """Writes the trial's directory; returns what was written (and records it on the study)."""
    from transformers import AutoTokenizer

    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty (choose another --out)")
    if merge and not method_of(spec.method).mergeable:
        raise InputError(f"--merge needs a LoRA or QLoRA study, not {spec.method}")
    trial = choose(study, spec, number)
    pointer = trial.system_attrs[attrs.BEST_CHECKPOINT]
    params = dict(trial.params)
    tokenizer = AutoTokenizer.from_pretrained(spec.model_dir(), trust_remote_code=spec.trust_remote_code)
    tokenizer.chat_template = spec.chat_template or tokenizer.chat_template
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _unpack(store, trial, spec, Path(tmp) / "checkpoint")
        weights = _weights(checkpoint, out / ("adapter" if method_of(spec.method).adapter else "model"), spec, tokenizer)
    if merge:
        _merge(weights, out / "merged", spec, tokenizer)
    steps = progress.trial_steps(spec, params["batch_size"])
    args = export.training_arguments(params, spec.method, steps, progress.eval_steps(spec, steps),
                                     spec.max_micro_batch, spec.seed)
    (out / "training_args.json").write_text(json.dumps(args, indent=2))
    (out / "peft_config.json").write_text(json.dumps(export.peft_config(params, spec.method), indent=2))
    import yaml

    from spaces.dataset import read_dataset

    fmt, _ = read_dataset(spec.dataset, spec.dataset_split, spec.columns)
    (out / "trl_sft.yaml").write_text(yaml.safe_dump(trl_config(spec, fmt, params, args), sort_keys=False))
    if spec.chat_template:
        (out / "chat_template.jinja").write_text(spec.chat_template)
    (out / "README.md").write_text(_readme(study, spec, trial, pointer, params, merge))
    record = {"trial": trial.number, "value": pointer["value"], "step": pointer["step"], "out": str(out.absolute()),
              "merged": merge, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    _record(study, spec, record, store)
    return record


def _record(study: optuna.Study, spec: StudySpec, record: dict, artifact_store) -> None:
    """The study keeps a list of its exports, shown in optuna-dashboard's study note."""
    from workers import study_note

    study.set_user_attr(study_note.EXPORTS, list(study.user_attrs.get(study_note.EXPORTS, [])) + [record])
    study_note.refresh(study, spec, artifact_store)
