"""The warm worker: one resident base model serves every trial of a study, and a
trial on a base that already served others trains exactly as on a cold one."""

from __future__ import annotations

import optuna
import pytest
import torch
from safetensors.torch import load_file

from search.spec import StudySpec
from spaces.methods import METHODS
from workers.train import Resident
from workers.trial_run import train

PARAMS = {"learning_rate": 1e-2, "batch_size": 4, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
          "weight_decay": 0.01, "max_grad_norm": 1.0, "lora_r": 8, "lora_alpha_ratio": 2, "lora_dropout": 0.0,
          "num_virtual_tokens": 8}


def _trial(params):
    trial = optuna.create_study().ask()
    for name, value in params.items():
        trial.suggest_categorical(name, [value])
    return trial


def _final_loss(resident, spec, params, tmp_path):
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    return train(_trial(params), params, spec, resident, store, tmp_path, should_stop=lambda: False).value


@pytest.mark.parametrize("method", METHODS)
def test_a_warm_base_trains_a_trial_exactly_as_a_cold_one(tiny, tmp_path, method):
    model, dataset = map(str, tiny)
    spec = StudySpec(model=model, dataset=dataset, method=method, n_examples=700, max_steps=4, eval_steps=4,
                     seq_len=48)
    warm = Resident(spec)
    base = warm.base
    _final_loss(warm, spec, {**PARAMS, "learning_rate": 3e-2, "lora_r": 16}, tmp_path)  # another trial first
    after_warm = _final_loss(warm, spec, PARAMS, tmp_path)
    cold = _final_loss(Resident(spec), spec, PARAMS, tmp_path)
    assert after_warm == cold
    assert warm.base is base or method in ("lora", "qlora"), "the base model itself is kept"
    assert not [n for n, _ in warm.base.named_modules() if "lora_" in n], "no adapter left on the base"


def test_full_fine_tuning_restores_the_pristine_weights(tiny, tmp_path):
    model, dataset = map(str, tiny)
    spec = StudySpec(model=model, dataset=dataset, method="full", n_examples=700, max_steps=3, eval_steps=3,
                     seq_len=48)
    warm = Resident(spec)
    _final_loss(warm, spec, PARAMS, tmp_path)
    on_disk = load_file(f"{model}/model.safetensors")
    trained = warm.base.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in on_disk.items()), "training changed the weights"
    restored = warm.model_for(PARAMS).state_dict()
    assert all(torch.equal(restored[k], v) for k, v in on_disk.items())
