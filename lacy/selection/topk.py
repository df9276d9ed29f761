"""Pure tensor functions every strategy is built from. No host syncs: k stays a tensor.

A strategy is "score the candidates, take the k best", with k = round(rate * number of targets).
Ties are broken by position (earlier first) through a stable sort, so a selection is reproducible.
"""
import torch
from torch import Tensor


def budget(valid: Tensor, rate: float) -> Tensor:
    """Number of calls for a batch: round(rate * valid targets), a 0-d tensor (round half to even)."""
    return torch.round(valid.sum() * rate).long()


def select_top(scores: Tensor, candidates: Tensor, k: Tensor | int) -> Tensor:
    """Boolean mask of the ``k`` highest-scoring candidates (all of them when fewer than ``k``).

    ``scores`` and ``candidates`` have the same shape; non-candidates are never selected.
    """
    flat = scores.detach().float().flatten().masked_fill(~candidates.flatten(), float("-inf"))
    order = torch.sort(flat, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return (rank < k).view_as(candidates) & candidates


def uniform_scores(shape: torch.Size, seed: int, device: torch.device) -> Tensor:
    """Reproducible uniform scores: a fresh generator seeded per step, so a resumed run draws the same."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(shape, generator=gen, device=device)
