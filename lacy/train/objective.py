"""The LaCy training objective (method.md section 3), in one place.

    L = -(1/N) sum_i [ C_i log p(<CALL> | x_<=i) + (1 - C_i) log p_noCALL(x_{i+1} | x_<=i) ]

``<CALL>`` is the last logit (lacy/model/call_token.py). ``p_noCALL`` is the softmax over the other logits, renormalised, so an
ordinary target never pushes the ``<CALL>`` logit down; ``p(<CALL>)`` is the full softmax. At a call
position the original token gets no gradient. N counts the non-padding targets (label != -100).

Variant **[ours]**, ``noncall="full"``: a non-call target is scored under the full softmax over the extended
vocabulary, ``-log p(x_{i+1}) = -log p_noCALL(x_{i+1}) - log(1 - p(<CALL>))``, so every ordinary target also
trains ``<CALL>`` down. Why: under the paper's form nothing ever pushes ``<CALL>`` down and p(<CALL>) saturates near
1, also where no call is due (docs/results.md, "The `<CALL>` score: the paper's objective against the full
softmax"), so the cascade depends on how an unconstrained score happens to rank positions, and plain
``generate()`` writes only ``<CALL>``. Call targets and the ranking loss are unchanged.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from lacy.model.call_token import call_logit, noncall_logits

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
    vocab = noncall_logits(logits)
    lse_vocab = torch.logsumexp(vocab, dim=-1)  # normaliser of p_noCALL
    call_logodds = call_logit(logits) - lse_vocab
    valid = labels != IGNORE_INDEX
    safe = labels.masked_fill(~valid, 0)
    target = (lse_vocab - vocab.gather(-1, safe.unsqueeze(-1)).squeeze(-1)).masked_fill(~valid, 0.0)
    # -log p(<CALL>) = log(1 + exp(-log-odds)): stable when p(<CALL>) -> 1 or -> 0
    call = torch.nn.functional.softplus(-call_logodds)
    return TokenLosses(target=target, call=call, call_logodds=call_logodds, valid=valid)


NONCALL_FORMS = ("renormalised", "full")


def lacy_objective(losses: TokenLosses, call_mask: Tensor, noncall: str = "renormalised") -> Tensor:
    """Mean over valid targets of the ``<CALL>`` loss at call positions and the non-call loss elsewhere.

    ``noncall``: "renormalised" (paper, method.md section 3): -log p_noCALL(target), ``<CALL>`` untouched;
    "full" [ours]: -log of the target's full-softmax probability, which also trains ``<CALL>`` down.
    Returns a scalar (nats per valid target).
    """
    if noncall not in NONCALL_FORMS:
        raise ValueError(f"noncall must be one of {NONCALL_FORMS}, got {noncall!r}")
    call_mask = call_mask & losses.valid
    # -log(1 - p(<CALL>)) = softplus(log-odds of <CALL>): the full softmax's extra term, stable at saturation
    other = losses.target + torch.nn.functional.softplus(losses.call_logodds) if noncall == "full" else losses.target
    per_token = torch.where(call_mask, losses.call, other)
    return (per_token * losses.valid).sum() / losses.valid.sum().clamp(min=1)
