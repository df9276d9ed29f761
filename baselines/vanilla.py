"""Vanilla: no calls. The plain next-token loss over the original vocabulary."""
import torch

from lacy.strategy import CallStrategy


class Vanilla(CallStrategy):
    """No ``<CALL>`` targets; the ``<CALL>`` row is never trained. The no-call baseline."""

    def __init__(self):
        super().__init__(call_rate=0.0)

    def select(self, batch, losses, step):
        return torch.zeros_like(losses.valid)
