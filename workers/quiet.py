"""Library chatter off: a worker prints one line per trial, a command its own output."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """One line per trial is the worker's output; the libraries' per-step chatter goes."""
    # bitsandbytes warns at import that optional hub kernels are absent: they are not needed.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # ...by way of huggingface's `kernels`, which warns offline that it cannot check the hub
    # kernels' publisher (HF_HUB_OFFLINE is how tunefleet runs), whether or not it loads them.
    logging.getLogger("kernels").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*autograd kernel was not registered.*")
    # On a CPU bitsandbytes pages nothing (the README says so); on a GPU this never shows.
    warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated.*")
    # peft's prefix tuning hands its prefix to the model as past_key_values, which transformers
    # 5 warns about on every forward (GPT-NeoX): peft's to change, nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*`past_key_values` is deprecated.*")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
