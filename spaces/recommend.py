"""`tunefleet suggest`: one configuration from the priors, sized to a GPU."""

from __future__ import annotations

import math

from spaces import export, memory, priors
from spaces.methods import method as method_of
from spaces.space import prior_space


def _fit(method, dims, n_params, n_embedding, batch, seq_len, budget, params, ranks=1) -> dict:
    """What fits one GPU of a trial over `ranks` GPUs, each training its share of the batch."""
    kwargs = {"lora_r": params.get("lora_r", 16), "num_virtual_tokens": params.get("num_virtual_tokens", 20),
              "ranks": ranks}
    share = export.per_rank_batch(batch, ranks)
    micro = memory.largest_micro_batch(method, dims, n_params, n_embedding, share, seq_len, budget, **kwargs)
    breakdown = memory.estimate(method, dims, n_params, n_embedding, max(micro, 1), seq_len, **kwargs)
    return {"micro_batch": micro, "fits": micro > 0, "breakdown": breakdown, "total": memory.total(breakdown)}


def search_range(space: dict, batch_size: int | None = None) -> dict:
    """What a study would search: [low, high] or the choices of each hyperparameter; the
    learning rate's at batch_size when one is given."""
    out = {name: list(p.choices) if p.choices is not None else [p.low, p.high] for name, p in space.items()}
    if batch_size:
        out["batch_size"] = [batch_size]
    return out


def recommend(method: str, dims: dict, n_params: int, n_embedding: int, n_examples: int,
              gpu_memory_gb: float, seq_len: int, batch_size: int | None = None, gpus_per_trial: int = 1) -> dict:
    """One configuration at the prior's centres, at the effective batch given (else the batch
    prior's centre), its learning rate for that batch, and what fits each GPU of a trial over
    `gpus_per_trial` GPUs (FSDP shards full fine-tuning; adapters train under DDP)."""
    space = prior_space(method, n_params, n_examples, dims["hidden"])
    params = {name: p.centre for name, p in space.items()}
    ranges = search_range(space, batch_size)
    if batch_size:
        lr = priors.learning_rate(method, n_params, dims["hidden"], batch_size)
        params.update(batch_size=batch_size, learning_rate=lr.centre)
        ranges["learning_rate"] = [lr.low, lr.high]
    batch = params["batch_size"]
    epochs = priors.epochs(n_examples)
    total_steps = math.ceil(n_examples / batch) * epochs
    budget = gpu_memory_gb * 1e9  # GPUs are sold in GB
    fit = _fit(method, dims, n_params, n_embedding, batch, seq_len, budget, params, gpus_per_trial)
    result = {
        "method": method, "n_params": n_params, "size_class": priors.size_class(n_params),
        "n_examples": n_examples, "gpu_memory_gb": gpu_memory_gb, "gpus_per_trial": gpus_per_trial,
        "sharded": method_of(method).shards(gpus_per_trial),
        "seq_len": seq_len,
        "params": params, "search_range": ranges,
        "epochs": epochs, "total_steps": total_steps, "early_stopping": priors.EARLY_STOPPING,
        "memory": fit,
    }
    if fit["fits"]:
        args = export.training_arguments(params, method, total_steps, max(1, total_steps // 10),
                                         fit["micro_batch"], ranks=gpus_per_trial)
        # The estimate assumes checkpointing and bf16, as 000's complete config does.
        args.update(gradient_checkpointing=True, bf16=True)
        result.update(training_arguments=args, peft_config=export.peft_config(params, method),
                      quantization_config=export.quantization_config(method))
    else:
        result["alternatives"] = []
        for other in method_of(method).alternatives:
            other_params = {name: p.centre for name, p in prior_space(other, n_params, n_examples,
                                                                          dims["hidden"]).items()}
            other_fit = _fit(other, dims, n_params, n_embedding, batch, seq_len, budget, other_params, gpus_per_trial)
            if other_fit["fits"]:
                result["alternatives"].append({"method": other, "micro_batch": other_fit["micro_batch"],
                                               "total": other_fit["total"]})
        if method_of(method).shards(2):  # the same method, its state sharded over more GPUs
            for gpus in (n for n in (2, 4, 8) if n > gpus_per_trial and batch % n == 0):
                more = _fit(method, dims, n_params, n_embedding, batch, seq_len, budget, params, gpus)
                if more["fits"]:
                    result["alternatives"].append({"method": method, "gpus_per_trial": gpus,
                                                   "micro_batch": more["micro_batch"], "total": more["total"]})
                    break
        shorter = seq_len // 2
        while shorter >= 128 and not result["alternatives"]:
            if _fit(method, dims, n_params, n_embedding, batch, shorter, budget, params, gpus_per_trial)["fits"]:
                result["alternatives"].append({"method": method, "seq_len": shorter})
            shorter //= 2
    return result
