"""Builders for one trial: the model (with its peft adapter) and the HF Trainer."""

from __future__ import annotations

import os
import tempfile

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PrinterCallback, Trainer,
                          TrainingArguments)

from search.spec import StudySpec
from spaces import export
from workers.data import Collator, train_eval_split


class TrialData:
    """Tokenizer and tokenized split, built once per worker and shared by its trials."""

    def __init__(self, spec: StudySpec):
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model, trust_remote_code=spec.trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.train, self.eval = train_eval_split(spec, self.tokenizer)
        self.collator = Collator(self.tokenizer.pad_token_id)


def build_model(spec: StudySpec, params: dict):
    import peft

    kwargs = {"trust_remote_code": spec.trust_remote_code}
    quantization = export.quantization_config(spec.method)
    if quantization:
        dtype = getattr(torch, quantization.pop("bnb_4bit_compute_dtype"))
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization, bnb_4bit_compute_dtype=dtype)
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(spec.model, **kwargs)
    if quantization:
        _keep_4bit_weights_differentiable(model)
    config = export.peft_config(params, spec.method)
    if config is None:
        return model
    if quantization:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return peft.get_peft_model(model, peft.get_peft_config(config))


def _keep_4bit_weights_differentiable(model) -> None:
    """bitsandbytes repacks 4-bit weights for a fast CPU kernel at the first
    no-grad forward (our evaluation) and keeps them so; that kernel has no
    backward, so every later training step would lose the gradient through the
    frozen base. Turning the repacking off keeps QLoRA exact on CPU."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def build_trainer(spec: StudySpec, params: dict, data: TrialData, callback) -> Trainer:
    kwargs = export.training_arguments(params, spec.method, spec.max_steps, spec.eval_steps,
                                       spec.max_micro_batch, spec.seed)
    args = TrainingArguments(
        # Nothing is saved there (save_strategy "no"); one path per process, not one per trial.
        output_dir=os.path.join(tempfile.gettempdir(), f"tunefleet-{os.getpid()}"), disable_tqdm=True,
        log_level="error",
        # The divergence detector must see a nan, not the Trainer's stand-in for it.
        logging_nan_inf_filter=False, dataloader_pin_memory=torch.cuda.is_available(), **kwargs,
    )
    trainer = Trainer(model=build_model(spec, params), args=args, train_dataset=data.train,
                      eval_dataset=data.eval, data_collator=data.collator,
                      processing_class=data.tokenizer, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # the worker reports per trial, not per step
    return trainer
