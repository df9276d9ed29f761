"""The paper's "loss-based calls": a uniformly random ``call_rate`` of the batch's targets.

The model learns a constant ``<CALL>`` prior; at inference it calls where every other token's
probability falls below it, i.e. it becomes a confidence cascade.
"""
from lacy.selection.topk import budget, select_top, uniform_scores
from lacy.selection.strategy import CallStrategy


def random_calls(valid, rate: float, seed: int):
    """Exactly round(rate * valid) positions, uniformly among valid targets."""
    return select_top(uniform_scores(valid.shape, seed, valid.device), valid, budget(valid, rate))


class RandomCalls(CallStrategy):
    def select(self, batch, losses, step):
        return random_calls(losses.valid, self.call_rate, self.step_seed(step))
