"""Loss-only: the top ``call_rate`` of the batch by the SLM's current loss, facts or not.

The thesis' foil: loss alone also delegates high-loss tokens that are acceptable alternatives.
"""
from lacy.selection.topk import budget, select_top
from lacy.selection.strategy import CallStrategy


def loss_only(loss, valid, rate: float):
    """The round(rate * valid) highest-loss valid targets."""
    return select_top(loss, valid, budget(valid, rate))


class LossOnly(CallStrategy):
    def select(self, batch, losses, step):
        return loss_only(losses.target, losses.valid, self.call_rate)
