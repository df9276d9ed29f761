"""The LaCy rule (method.md section 2): delegate fact tokens that are hard for the model right now.

    C_LaCy(x_i) = C_spaCy(x_i) * 1[ loss_i in the top of the batch ]

Implemented as top-k by the SLM's current per-token loss (same forward pass) among the batch's fact
tokens, k = round(call_rate * valid targets); all fact tokens when there are fewer than k [ours].

Two switches [ours, default off: the paper's rule] let the ranking act on losses the SLM could have learned
(docs/results.md found the rule feeding on itself: a fact delegated early gets no gradient, stays hard and stays
delegated): ``warmup``, no calls for the first share of the ground-truth-gradient budget (lacy.TokenBudget plans
the steps, so the total stays Vanilla's), and ``random_share``, a share of each batch's calls drawn uniformly
from the flagged tokens (spaCy-only's draw) before the loss ranking takes the rest.
"""
import math
import warnings

import torch
from lightning.pytorch.utilities import rank_zero_info

from lacy.errors import UsageError
from lacy.selection.topk import budget, select_top, uniform_scores
from lacy.selection.strategy import CallStrategy


def lacy_select(loss, valid, fact, k):
    """The k highest-loss fact tokens; a non-fact token is never called, whatever its loss."""
    return select_top(loss, valid & fact, k)


class LaCy(CallStrategy):
    """Needs ``batch["fact"]`` from :class:`lacy.annotators.spacy_facts.SpacyFactAnnotator` in ``data.annotators``.

    Args:
        call_rate: budget as a fraction of the batch's valid targets (paper: 0.15 with 25% fact tokens).
        fact_fraction: budget as a fraction of the batch's fact tokens instead (paper's equivalent: 0.6);
            keeps the learned/delegated ratio fixed on corpora with fewer facts than Wikipedia [ours].
            When set, call_rate is ignored.
        seed: seed of random draws (``random_share``, subclasses that sample).
        warmup: [ours] share of the ground-truth-gradient budget learned with no calls before the rule starts
            (e.g. 0.2); needs lacy.TokenBudget(count: gradient), which plans the steps: W = ceil(warmup x budget /
            tokens per step) steps without calls, then enough steps at the call rate for the rest. 0 = the paper.
        random_share: [ours] share of each batch's calls given to flagged tokens drawn uniformly (as spaCy-only
            draws them), the rest to the highest losses among the other flagged tokens; 1 = spaCy-only, 0 = the paper.
    """

    requires = ("fact",)
    flag_key = "fact"  # the side array whose tokens may be delegated

    def __init__(self, call_rate: float = 0.15, fact_fraction: float | None = None, seed: int = 0,
                 warmup: float = 0.0, random_share: float = 0.0):
        super().__init__(call_rate, seed)
        if fact_fraction is not None and not 0.0 <= fact_fraction <= 1.0:
            raise UsageError(f"{type(self).__name__}: fact_fraction={fact_fraction} must be in [0, 1]")
        if not 0.0 <= warmup < 1.0:
            raise UsageError(f"{type(self).__name__}: warmup={warmup} must be in [0, 1) (a share of the budget)")
        if not 0.0 <= random_share <= 1.0:
            raise UsageError(f"{type(self).__name__}: random_share={random_share} must be in [0, 1]")
        self.fact_fraction, self.warmup, self.random_share = fact_fraction, warmup, random_share
        self.warmup_steps: int | None = None  # set by lacy.TokenBudget when warmup > 0
        self._global_step = 0

    def facts(self, batch, losses):
        return self.side(batch, self.flag_key).bool() & losses.valid

    def call_budget(self, losses, fact):
        """k, the number of calls in this batch (a 0-d tensor)."""
        if self.fact_fraction is not None:
            return budget(fact, self.fact_fraction)
        return budget(losses.valid, self.call_rate)

    def scores(self, batch, losses, step):
        """What ranks the fact tokens: the SLM's current loss (ablations override this)."""
        return losses.target

    def select(self, batch, losses, step):
        fact = self.facts(batch, losses)
        k = self.call_budget(losses, fact)
        if self.warmup_steps is not None and self._global_step < self.warmup_steps:  # a fit's warm-up: no calls
            return torch.zeros_like(fact)
        if not self.random_share:
            return lacy_select(self.scores(batch, losses, step), losses.valid, fact, k)
        drawn = select_top(uniform_scores(fact.shape, self.step_seed(step), fact.device), fact,
                           torch.round(k * self.random_share).long())
        return drawn | lacy_select(self.scores(batch, losses, step), losses.valid, fact & ~drawn, k - drawn.sum())

    def warmup_steps_for(self, max_tokens: int, tokens_per_step: int) -> int:
        """Optimiser steps without calls for ``warmup`` of a ``max_tokens`` ground-truth-gradient budget, at
        ``tokens_per_step`` targets a step (lacy.TokenBudget plans the rest at the call rate)."""
        return math.ceil(self.warmup * max_tokens / tokens_per_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._global_step = trainer.global_step  # an int: the warm-up test costs no device sync

    def metrics(self, batch, call_mask):
        fact = batch[self.flag_key].bool() & (batch["labels"] >= 0)
        return {"fact_rate": fact.float().mean(), "calls_per_fact": call_mask.sum() / fact.sum().clamp(min=1),
                "cap_binds": (call_mask.sum() < fact.sum()).float()}  # more flagged tokens than the budget

    def on_fit_start(self, trainer, pl_module) -> None:
        """Warn when the batch budget reaches the flagged fraction: every fact would be delegated, none learned."""
        if self.warmup and self.warmup_steps is None:
            raise UsageError(f"{type(self).__name__}: warmup={self.warmup} is a share of the ground-truth-gradient "
                             "budget: add lacy.TokenBudget(max_tokens: N, count: gradient) to trainer.callbacks")
        if self.warmup:
            rank_zero_info(f"{type(self).__name__}: no calls for the first {self.warmup_steps:,} steps (warmup "
                           f"{self.warmup:.0%} of the ground-truth-gradient budget)")
        side = getattr(trainer.datamodule, "side", {}).get("train", {})
        if self.flag_key not in side or self.fact_fraction is not None:
            return
        flagged = float(side[self.flag_key].mean())
        share = min(1.0, self.call_rate / max(flagged, 1e-9))
        rank_zero_info(f"{type(self).__name__}: {flagged:.1%} of training tokens are flagged ({self.flag_key}); "
                       f"call_rate {self.call_rate:.1%} delegates ~{share:.0%} of them")
        if self.call_rate >= flagged:
            warnings.warn(f"{type(self).__name__}: call_rate={self.call_rate} is not below the flagged fraction "
                          f"{flagged:.3f}: every fact token becomes <CALL> and none is learned. Lower call_rate or "
                          "use fact_fraction (paper's equivalent 0.6)", stacklevel=1)
