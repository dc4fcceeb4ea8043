"""Learning-rate schedules as the HF Trainer runs them, for `tunefleet schedules`."""

from __future__ import annotations

from pathlib import Path

SHOWN = ("cosine", "linear", "constant_with_warmup", "cosine_with_restarts")
RESTART_CYCLES = 3


def curves(steps: int, warmup_steps: int, peak: float = 1.0, names=SHOWN) -> dict[str, list[float]]:
    """The learning rate at every step of each schedule (transformers' own get_scheduler)."""
    from workers.quiet import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import get_scheduler

    result = {}
    for name in names:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
        # Restarts need more than one cycle to show (002 mistook plain cosine for this).
        extra = {"num_cycles": RESTART_CYCLES} if name == "cosine_with_restarts" else None
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=steps,
                                  scheduler_specific_kwargs=extra)
        lrs = []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        result[name] = lrs
    return result


def plot(lr_curves: dict[str, list[float]], warmup_steps: int, path: Path) -> None:
    from workers import plots

    fig, (ax,) = plots.figure(1, 9, 4.5, f"schedules over {len(next(iter(lr_curves.values())))} steps")
    for name, lrs in lr_curves.items():
        ax.plot(range(len(lrs)), lrs, label=name)
    if warmup_steps:
        ax.axvline(warmup_steps, color="grey", linestyle=":", label=f"end of warmup ({warmup_steps} steps)")
    ax.set(xlabel="optimizer step", ylabel="learning rate")
    ax.legend()
    fig.savefig(path)
