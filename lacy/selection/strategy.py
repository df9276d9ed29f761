"""The plug-in point for selection strategies: a Lightning Callback that picks call positions.

The module does one forward pass, computes per-token losses, and asks the one configured strategy
(found among ``trainer.callbacks``) for a boolean call mask. A strategy may read side arrays from the
batch (``requires``) and may attach things to it in Callback hooks (e.g. an online reference forward).
"""
import importlib

import lightning as L
from torch import Tensor

from lacy.errors import UsageError
from lacy.train.objective import TokenLosses


class CallStrategy(L.Callback):
    """Base class. Subclasses implement :meth:`select`.

    Args:
        call_rate: fraction of the batch's valid targets that become ``<CALL>`` (paper: 0.15).
        seed: seed of any random draw (drawn per step, so resumed runs draw the same).
    """

    requires: tuple[str, ...] = ()  # batch keys (side arrays) this strategy reads
    makes_calls: bool = True  # False (Vanilla): no <CALL> is trained, so a cascade calls by uncertainty

    def __init__(self, call_rate: float = 0.15, seed: int = 0):
        if not 0.0 <= call_rate < 1.0:
            raise UsageError(f"{type(self).__name__}: call_rate={call_rate} must be in [0, 1) "
                             "(at 1 every target is a call and nothing is learned)")
        self.call_rate, self.seed = call_rate, seed
        self.rank, self.world = 0, 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.rank, self.world = trainer.global_rank, trainer.world_size

    def step_seed(self, step: int) -> int:
        """A distinct, reproducible seed per (strategy seed, step, rank)."""
        return (self.seed * 1_000_003 + step) * self.world + self.rank

    def side(self, batch: dict, key: str) -> Tensor:
        if key not in batch:
            raise UsageError(f"{type(self).__name__} needs batch[{key!r}], which no annotator provides; add the "
                           f"annotator that writes {key!r} to data.annotators (see configs/lacy.yaml)")
        return batch[key]

    def select(self, batch: dict, losses: TokenLosses, step: int) -> Tensor:
        """Boolean (B, T) mask of call targets. ``losses.target`` is this step's detached per-token loss."""
        raise NotImplementedError

    def metrics(self, batch: dict, call_mask: Tensor) -> dict[str, Tensor]:
        """Strategy-specific tensors to log (no host sync)."""
        return {}


def _class(callback) -> type:
    """A callback's class: the object's own, or the one its parsed config names (``class_path``)."""
    path = getattr(callback, "class_path", None)
    if path is None:
        return type(callback)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def find_strategy(callbacks: list):
    """The one ``CallStrategy`` among ``trainer.callbacks`` (objects, or their parsed configs before they are
    built: then its class); UsageError for none or several (a config that forgets the strategy would otherwise
    train a plain LM). The module calls it once and hands the strategy on (``CallLM.strategy``)."""
    found = [cb for cb in callbacks if issubclass(_class(cb), CallStrategy)]
    if len(found) != 1:
        names = [_class(cb).__name__ for cb in found] or "none"
        raise UsageError(
            f"trainer.callbacks: exactly one selection strategy must be listed, found {names}; add one "
            "(e.g. class_path: lacy.LaCy, or baselines.Vanilla for a plain LM), see configs/*.yaml")
    return found[0]
