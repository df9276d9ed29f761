"""Vanilla: no calls. The plain next-token loss over the original vocabulary."""
import torch

from lacy.selection.strategy import CallStrategy


class Vanilla(CallStrategy):
    """No ``<CALL>`` targets; the ``<CALL>`` row is never trained. The no-call baseline."""

    makes_calls = False  # a cascade over it calls where it is unsure (the confidence cascade)

    def __init__(self):
        super().__init__(call_rate=0.0)

    def select(self, batch, losses, step):
        return torch.zeros_like(losses.valid)
