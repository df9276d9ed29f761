"""The optimiser: AdamW (decay on matrices only), linear warm-up then cosine decay, and this run's settings on resume."""
import math

import torch

from lacy.model.slm import position_embeddings


def adamw_cosine(module, hp, total_steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``module``'s parameters (weight decay on matrices, not on biases, norms or position embeddings)
    and a per-step schedule: ``hp.warmup_steps`` linear warm-up, then cosine to ``hp.min_lr_ratio * hp.lr`` at
    ``total_steps``. ``hp``: the module's hyper-parameters (lr, weight_decay, betas, warmup_steps, min_lr_ratio)."""
    positions = {id(m.weight) for m in position_embeddings(module.model)}  # GPT-2's wpe; none in rotary families
    decay = [p for p in module.parameters() if p.dim() >= 2 and id(p) not in positions]
    no_decay = [p for p in module.parameters() if p.dim() < 2 or id(p) in positions]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp.lr, betas=hp.betas, fused=module.device.type == "cuda")
    total = max(1, int(total_steps))

    def schedule(step: int) -> float:
        if step < hp.warmup_steps:
            return (step + 1) / hp.warmup_steps
        progress = min(1.0, (step - hp.warmup_steps) / max(1, total - hp.warmup_steps))
        return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def reapply_settings(sched: torch.optim.lr_scheduler.LambdaLR, hp) -> None:
    """A resume restores the optimizer's and the schedule's state, their settings included: this run's lr,
    weight decay and betas are put back (the schedule's shape, warm-up, floor and length, is this run's
    already), so ``--model.lr`` on resume applies from the first resumed step. A fresh run: no change."""
    opt = sched.optimizer
    sched.base_lrs = [hp.lr] * len(opt.param_groups)
    for group, decay, factor in zip(opt.param_groups, (hp.weight_decay, 0.0), sched.lr_lambdas):
        group.update(initial_lr=hp.lr, lr=hp.lr * factor(sched.last_epoch), weight_decay=decay,
                     betas=tuple(hp.betas))
