"""Each fine-tuning method trains real steps of the tiny model through the HF Trainer."""

from __future__ import annotations

import optuna
import pytest

from search.spec import StudySpec
from search.study import create, load, space_of
from spaces.space import suggest
from spaces.methods import METHODS
from storage import backend, open_storage
from workers.train import Resident
from search.claim import claim
from workers.trial_outcome import report
from workers.trial_run import train


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_reports(tiny, tmp_path, method):
    model, dataset = map(str, tiny)
    url = f"journal:{tmp_path / 'j.log'}"
    storage = open_storage(url)
    spec = StudySpec(model=model, dataset=dataset, method=method, n_examples=700, n_trials=1,
                     max_steps=4, eval_steps=2, seq_len=48, pruner="none")
    create(storage, method, spec)
    study, spec = load(storage, method)
    trial = claim(study, storage, backend(url), spec)

    params = suggest(trial, space_of(spec))
    store = backend(url).artifacts(storage)
    run = train(trial, params, spec, Resident(spec), store, tmp_path, should_stop=lambda: False)
    assert set(run.callback.eval_losses) == {2, 4}
    assert report(study, trial, params, run, store).startswith("complete")
    (done,) = study.get_trials()
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == run.callback.eval_losses[4]


def test_qlora_loads_the_base_model_in_4bit_nf4(tiny):
    import bitsandbytes as bnb

    from workers.train import build_model

    model, dataset = map(str, tiny)
    spec = StudySpec(model=model, dataset=dataset, method="qlora", n_examples=700)
    params = {"lora_r": 8, "lora_alpha_ratio": 2, "lora_dropout": 0.0}
    built = build_model(spec, params)
    quantized = [m for m in built.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.quant_state.quant_type == "nf4" for m in quantized)
    assert all(m.weight.quant_state.nested for m in quantized), "double quantization"
    trainable = [n for n, p in built.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    # An evaluation must not switch the base to bitsandbytes' backward-less CPU kernel:
    # after it, gradients still reach the first layer's adapter through the frozen base.
    import torch

    ids = torch.tensor([[1, 5, 9, 13, 2]])
    built.eval()
    with torch.no_grad():
        built(input_ids=ids)
    built.train()
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in quantized)
    built(input_ids=ids, labels=ids).loss.backward()
    first_a = next(p for n, p in built.named_parameters() if "layers.0." in n and "lora_B" in n)
    assert first_a.grad is not None and first_a.grad.abs().sum() > 0
