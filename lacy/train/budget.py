"""Budgets in tokens and a global batch size (litgpt-style), turned into Lightning's steps and accumulation.

The paper equalises methods by the tokens that receive a ground-truth gradient: a run that delegates 15%
of its targets trains 1/0.85 times longer than the no-call baseline. ``count: gradient`` plans the steps
from the strategy's call rate: exact when every micro-batch delegates round(rate x targets); a batch with
fewer candidates than that (e.g. few fact tokens for LaCy) delegates fewer, so the plan slightly overshoots.
``train/gradient_tokens`` logs the realised count.
"""
import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lacy.errors import UsageError
from lacy.selection.strategy import CallStrategy


class TokenBudget(L.Callback):
    """Sets ``max_steps`` from a token budget and gradient accumulation from a global batch size.

    Args:
        max_tokens: training length in tokens (null: keep trainer.max_steps).
        global_batch_size: sequences per optimiser step over all devices (null: keep
            trainer.accumulate_grad_batches); accumulation = global / (data.batch_size x devices x nodes).
        count: ``seen`` counts every target token; ``gradient`` counts the targets that get a ground-truth
            gradient (not delegated), the paper's equaliser across methods.
    """

    def __init__(self, max_tokens: int | None = None, global_batch_size: int | None = None, count: str = "seen"):
        if count not in ("seen", "gradient"):
            raise UsageError(f"TokenBudget: count={count!r} must be 'seen' or 'gradient'")
        self.max_tokens, self.global_batch_size, self.count = max_tokens, global_batch_size, count

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        micro, block, world = trainer.datamodule.batch_size, trainer.datamodule.block_size, trainer.world_size
        if self.global_batch_size is not None:
            per_pass = micro * world
            if self.global_batch_size % per_pass:
                raise UsageError(f"TokenBudget: global_batch_size={self.global_batch_size} is not a multiple of "
                                 f"data.batch_size x devices = {micro} x {world}; change one of them")
            trainer.accumulate_grad_batches = self.global_batch_size // per_pass
        sequences = micro * world * trainer.accumulate_grad_batches
        if self.max_tokens is None:
            return
        per_micro = micro * block
        full_step = per_micro * world * trainer.accumulate_grad_batches
        strategy, warm = pl_module.strategy, 0
        if self.count == "gradient":
            per_micro -= round(self._call_rate(strategy) * per_micro)
            if getattr(strategy, "warmup", 0):  # LaCy's warm-up [ours]: steps without calls, every target learned
                warm = strategy.warmup_steps = strategy.warmup_steps_for(self.max_tokens, full_step)
        steps = warm + math.ceil(max(0, self.max_tokens - warm * full_step) /
                                 (per_micro * world * trainer.accumulate_grad_batches))
        trainer.fit_loop.epoch_loop.max_steps = steps
        trainer.fit_loop.max_epochs = -1
        rank_zero_info(f"TokenBudget: {self.max_tokens:,} {self.count} tokens = {steps:,} steps of {sequences} "
                       f"sequences x {block} tokens (accumulation {trainer.accumulate_grad_batches})"
                       + (f", the first {warm:,} without calls (warm-up)" if warm else ""))

    @staticmethod
    def _call_rate(strategy: CallStrategy) -> float:
        if getattr(strategy, "fact_fraction", None) is not None:
            raise UsageError("TokenBudget(count='gradient') needs a strategy with a fixed call_rate (a "
                             "fact_fraction budget varies per batch); use count: seen")
        return strategy.call_rate
