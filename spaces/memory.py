"""Peak GPU memory of a fine-tuning run, estimated from the model's shape.

The formula (bytes; P parameters, E of them embeddings, T trainable; s tokens
per example, b examples per micro-batch, h hidden size, L layers, V vocabulary):

- weights: full 2P (bf16); LoRA and prefix 2P (frozen bf16 base) + 4T (fp32
  adapters or prefixes); QLoRA 0.516(P - E) (4-bit NF4 with double quantization: 4.127
  bits per weight, QLoRA paper) + 2E (embeddings and head stay bf16) + 4T.
- gradients: 2T for full fine-tuning (bf16), 4T for fp32 adapters.
- optimizer: AdamW keeps two fp32 moments per trainable weight, 8T, plus an
  fp32 master copy, 4T, when the trained weights are bf16 (full fine-tuning);
  QLoRA's paged 8-bit AdamW keeps 2T.
- activations, with gradient checkpointing (000's default): the input of each
  layer is kept, 2sbh per layer in bf16, and one layer is recomputed at a time
  with all its intermediates, 34sbh (Korthikanti et al. 2022, "Reducing
  activation recomputation", without the s^2 attention term that SDPA/flash
  attention never materialises); without checkpointing 34sbhL. Plus the
  logits: bf16, their fp32 copy for the loss and its gradient, 10sbV.
- overhead: 1 GiB for the CUDA context, cuBLAS workspaces and fragmentation.
- a trial over R ranks (one per GPU): with FSDP (full fine-tuning) each rank keeps 1/R of
  the weights, gradients and optimizer state, and gathers the bf16 weights of two layers at
  a time (the one computing, the one prefetched), 2 x 2P/L; with DDP (adapters) each rank
  keeps everything, plus DDP's gradient buckets, a copy of the gradients. Activations are
  per rank: b is the rank's micro-batch.

The seeds' heuristics are not used: 000's `tokens_per_gb = 1000 * (8 / size)`
has no basis and hides a negative budget behind max(1, ...); 002 charges 2 GB
per 2048-token sample whatever the model, and passes a parameter count as GB.
"""

from __future__ import annotations

from spaces.methods import method as method_of

GIB = 2 ** 30
OVERHEAD = 1 * GIB
QLORA_BYTES_PER_WEIGHT = 4.127 / 8


def trainable_parameters(method: str, dims: dict, n_params: int, lora_r: int = 16,
                         num_virtual_tokens: int = 20) -> int:
    h, layers, inter = dims["hidden"], dims["layers"], dims["intermediate"]
    adapter = method_of(method).adapter
    if adapter is None:
        return n_params
    if adapter == "prefix":  # a key and a value vector per virtual token and layer
        return num_virtual_tokens * layers * 2 * h
    head_dim = dims.get("head_dim") or h // dims["heads"]
    q, kv = dims["heads"] * head_dim, dims["kv_heads"] * head_dim
    # LoRA on every linear layer: r x (in + out) for q, k, v, o, gate, up, down.
    per_layer = lora_r * ((h + q) * 2 + (h + kv) * 2 + (h + inter) * 2 + (inter + h))
    return layers * per_layer


def estimate(method: str, dims: dict, n_params: int, n_embedding: int, micro_batch: int, seq_len: int,
             lora_r: int = 16, num_virtual_tokens: int = 20, checkpointing: bool = True,
             ranks: int = 1) -> dict[str, float]:
    """Bytes per component for one device of a trial over `ranks` devices: weights, gradients,
    optimizer, activations, overhead."""
    m = method_of(method)
    t = trainable_parameters(method, dims, n_params, lora_r, num_virtual_tokens)
    if m.adapter is None:  # the bf16 weights are the trained ones
        weights = 2 * n_params
    elif m.quantized:  # a 4-bit base but for its embeddings and head, and fp32 adapters
        weights = QLORA_BYTES_PER_WEIGHT * (n_params - n_embedding) + 2 * n_embedding + 4 * t
    else:  # a frozen bf16 base, fp32 adapters or prefixes
        weights = 2 * n_params + 4 * t
    gradients, optimizer = m.gradient_bytes * t, m.optimizer_bytes * t
    if m.shards(ranks):
        weights = weights / ranks + 2 * (2 * n_params / dims["layers"])
        gradients, optimizer = gradients / ranks, optimizer / ranks
    elif ranks > 1:
        gradients *= 2
    s, b, h, layers = seq_len, micro_batch, dims["hidden"], dims["layers"]
    if m.adapter == "prefix":
        s += num_virtual_tokens
    per_layer = 34 * s * b * h
    activations = (2 * s * b * h * layers + per_layer) if checkpointing else per_layer * layers
    activations += 10 * s * b * dims["vocab"]
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer,
            "activations": activations, "overhead": OVERHEAD, "trainable_parameters": t}


def total(breakdown: dict) -> float:
    return sum(v for k, v in breakdown.items() if k != "trainable_parameters")


def largest_micro_batch(method: str, dims: dict, n_params: int, n_embedding: int, effective_batch: int,
                        seq_len: int, budget_bytes: float, cap: int | None = None, **kwargs) -> int:
    """The largest divisor of the effective batch (up to cap) whose estimated peak fits the
    budget, or 0 if none does: micro-batch x accumulation stays exactly the effective batch.
    `suggest` and the worker both size a device with it."""
    top = min(effective_batch, cap or effective_batch)
    for b in (d for d in range(top, 0, -1) if effective_batch % d == 0):
        if total(estimate(method, dims, n_params, n_embedding, b, seq_len, **kwargs)) <= budget_bytes:
            return b
    return 0
