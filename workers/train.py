"""Builders for one trial: the model (with its peft adapter) and the HF Trainer.

A worker keeps one `Resident` per study: the tokenizer, the tokenized split
and the base model (4-bit for QLoRA) stay loaded between trials. Each trial
gets a fresh adapter on the resident base, or, for full fine-tuning, the
base's pristine weights copied back in; `release` undoes the trial's changes.
"""

from __future__ import annotations

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PrinterCallback, Trainer,
                          TrainingArguments)

from search import progress
from search.spec import StudySpec
from spaces import export
from spaces.methods import method as method_of
from workers.data import Collator, train_eval_split


class TrialData:
    """Tokenizer and tokenized split, built once per worker and shared by its trials."""

    def __init__(self, spec: StudySpec):
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir(), trust_remote_code=spec.trust_remote_code)
        self.tokenizer.chat_template = spec.chat_template or self.tokenizer.chat_template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.train, self.eval = train_eval_split(spec, self.tokenizer)
        self.collator = Collator(self.tokenizer.pad_token_id)
        if spec.packing:
            from transformers import DataCollatorWithFlattening

            self.collator = DataCollatorWithFlattening()


def load_base(spec: StudySpec):
    """The base model as the method trains it: quantized and prepared for QLoRA."""
    import peft

    kwargs = {"trust_remote_code": spec.trust_remote_code}
    quantization = export.quantization_config(spec.method)
    if quantization:
        dtype = getattr(torch, quantization.pop("bnb_4bit_compute_dtype"))
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization, bnb_4bit_compute_dtype=dtype)
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(spec.model_dir(), **kwargs)
    if spec.packing:
        # transformers keeps packed examples apart only without a cache (masking_utils looks for
        # packed position_ids only when there is none): the Trainer turns it off itself, loops of
        # our own (the LR range test) would otherwise attend across examples.
        model.config.use_cache = False
    if quantization:
        _keep_4bit_weights_differentiable(model)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def with_adapter(base, spec: StudySpec, params: dict):
    """The trial's model: a fresh peft adapter on the base (the base itself for full fine-tuning)."""
    import peft

    config = export.peft_config(params, spec.method)
    if config is None:
        return base
    torch.manual_seed(spec.seed)  # the same initial adapter on a warm base as on a cold one
    return peft.get_peft_model(base, peft.get_peft_config(config))


def build_model(spec: StudySpec, params: dict):
    """A cold build: base and adapter for one trial."""
    return with_adapter(load_base(spec), spec, params)


class Resident:
    """The worker's warm state for one study: data and the base model, loaded once. A base
    that FSDP shards (full fine-tuning over several GPUs) is sharded in place, so it is
    loaded again for each trial instead."""

    def __init__(self, spec: StudySpec, ranks: int = 1):
        self.spec = spec
        self.data = TrialData(spec)
        self.fresh_per_trial = shards(spec, ranks)
        self.base = None if self.fresh_per_trial else load_base(spec)
        # Full fine-tuning trains the base itself: keep its weights to restore per trial.
        self.pristine = ({k: v.detach().to("cpu", copy=True) for k, v in self.base.state_dict().items()}
                         if self.base is not None and method_of(spec.method).adapter is None else None)

    def model_for(self, params: dict):
        if self.fresh_per_trial:
            return with_adapter(load_base(self.spec), self.spec, params)
        if self.pristine is not None:
            self.base.load_state_dict(self.pristine)
        return with_adapter(self.base, self.spec, params)

    def release(self, model) -> None:
        """Takes the trial's adapter off the base (LoRA layers out, prefix wrapper dropped)."""
        if model is not self.base and method_of(self.spec.method).adapter == "lora":
            self.base = model.unload()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _keep_4bit_weights_differentiable(model) -> None:
    """bitsandbytes repacks 4-bit weights for a fast CPU kernel at the first
    no-grad forward (our evaluation) and keeps them so; that kernel has no
    backward, so every later training step would lose the gradient through the
    frozen base. Turning the repacking off keeps QLoRA exact on CPU."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def shards(spec: StudySpec, ranks: int) -> bool:
    """FSDP shards the trial's weights over its ranks: full fine-tuning over several GPUs.
    accelerate has FSDP for GPUs only: CPU ranks train every method under DDP."""
    return method_of(spec.method).shards(ranks) and torch.cuda.is_available()


def build_trainer(spec: StudySpec, params: dict, data: TrialData, model, micro_batch: int, total_steps: int,
                  output_dir: str, callbacks: list, ranks: int = 1) -> Trainer:
    """The Trainer of one trial of total_steps. When it evaluates and checkpoints is the
    PruningCallback's to say (at the trial's evaluation points, search/progress.py)."""
    kwargs = export.training_arguments(params, spec.method, total_steps, progress.eval_steps(spec, total_steps),
                                       spec.max_micro_batch, spec.seed, micro_batch=micro_batch, ranks=ranks)
    # A checkpoint at every evaluation, for a resume after this worker dies (workers/checkpoint.py).
    kwargs.update(eval_strategy="no", save_strategy="no", save_total_limit=1,
                  include_num_input_tokens_seen="non_padding")  # the trial's cost (workers/cost.py)
    if ranks > 1:  # the ranks' process group is workers/ranks.py's; the Trainer wraps the model
        kwargs.update(**({} if torch.cuda.is_available() else {"use_cpu": True, "ddp_backend": "gloo"}))
        if shards(spec, ranks):  # FSDP2, its layers from the model's _no_split_modules
            kwargs.update(fsdp=True, fsdp_config={"version": 2, "state_dict_type": "FULL_STATE_DICT"})
        else:  # DDP: every rank holds the (4-bit) base and the adapter
            kwargs.update(ddp_find_unused_parameters=False)
    args = TrainingArguments(
        output_dir=output_dir, disable_tqdm=True, log_level="error",
        # The divergence detector must see a nan, not the Trainer's stand-in for it.
        logging_nan_inf_filter=False, dataloader_pin_memory=torch.cuda.is_available(), **kwargs,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                      data_collator=data.collator, processing_class=data.tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the worker reports per trial, not per step
    if params["lr_scheduler_type"] == export.WSD:  # evaluations on a cooled-down branch
        from workers.cooldown import CooldownBranch

        trainer.add_callback(CooldownBranch(trainer, total_steps, kwargs["per_device_train_batch_size"],
                                            kwargs["gradient_accumulation_steps"], spec.seed))
    return trainer
