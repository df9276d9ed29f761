"""The LaCy training objective (method.md section 3), in one place.

    L = -(1/N) sum_i [ C_i log p(<CALL> | x_<=i) + (1 - C_i) log p_noCALL(x_{i+1} | x_<=i) ]

``<CALL>`` is the last logit. ``p_noCALL`` is the softmax over the other logits, renormalised, so an
ordinary target never pushes the ``<CALL>`` logit down; ``p(<CALL>)`` is the full softmax. At a call
position the original token gets no gradient. N counts the non-padding targets (label != -100).
"""
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class TokenLosses:
    """Per-position losses from one forward pass, shape (B, T)."""

    target: Tensor  # -log p_noCALL(ground truth); 0 at padding. Detach it to rank tokens.
    call: Tensor  # -log p(<CALL>) under the full softmax
    call_logodds: Tensor  # <CALL> logit - logsumexp(other logits): ranks like p(<CALL>), without saturating
    valid: Tensor  # bool, label != IGNORE_INDEX


def token_losses(logits: Tensor, labels: Tensor) -> TokenLosses:
    """Both losses every position could receive. Cost: one logsumexp over the vocabulary."""
    logits = logits.float()
    vocab = logits[..., :-1]
    call_logit = logits[..., -1]
    lse_vocab = torch.logsumexp(vocab, dim=-1)  # normaliser of p_noCALL
    call_logodds = call_logit - lse_vocab
    valid = labels != IGNORE_INDEX
    safe = labels.masked_fill(~valid, 0)
    target = (lse_vocab - vocab.gather(-1, safe.unsqueeze(-1)).squeeze(-1)).masked_fill(~valid, 0.0)
    # -log p(<CALL>) = log(1 + exp(-log-odds)): stable when p(<CALL>) -> 1 or -> 0
    call = torch.nn.functional.softplus(-call_logodds)
    return TokenLosses(target=target, call=call, call_logodds=call_logodds, valid=valid)


def lacy_objective(losses: TokenLosses, call_mask: Tensor) -> Tensor:
    """Mean over valid targets of the ``<CALL>`` loss at call positions and the no-CALL loss elsewhere."""
    call_mask = call_mask & losses.valid
    per_token = torch.where(call_mask, losses.call, losses.target)
    return (per_token * losses.valid).sum() / losses.valid.sum().clamp(min=1)
