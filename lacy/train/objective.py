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
from torch.autograd.function import once_differentiable

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
    """Both losses every position could receive, from logits (B, T, V) with ``<CALL>`` last and labels (B, T).
    Cost: one logsumexp over the vocabulary (and, in backward, one pass that writes the logits' gradient)."""
    valid = labels != IGNORE_INDEX
    target, lse_vocab, call = _VocabTerms.apply(logits.float(), labels.masked_fill(~valid, 0))
    call_logodds = call - lse_vocab
    # -log p(<CALL>) = log(1 + exp(-log-odds)): stable when p(<CALL>) -> 1 or -> 0
    return TokenLosses(target=target.masked_fill(~valid, 0.0), call=torch.nn.functional.softplus(-call_logodds),
                       call_logodds=call_logodds, valid=valid)


class _VocabTerms(torch.autograd.Function):
    """(-log p_noCALL(label), logsumexp of the non-call logits, the ``<CALL>`` logit), each (B, T), from logits
    (B, T, V) and labels (B, T) with no ignore index. Why a Function: autograd's gradient of these three through a
    slice, a logsumexp and a gather makes about ten passes over the (B, T, V) logits (zero-filled slice and gather
    gradients, the logsumexp's exp and products), most of the objective's time on a CPU; :meth:`backward` writes
    the same gradient in one: softmax(non-call) * (g_target + g_lse), minus g_target at the label, g_call in the
    last column (docs/benchmarks.md, "The objective's backward")."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor):
        vocab = noncall_logits(logits)
        lse = torch.logsumexp(vocab, dim=-1)
        target = lse - vocab.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, labels, lse)
        return target, lse, call_logit(logits).contiguous()  # a copy (B, T), not a view of the input

    @staticmethod
    @once_differentiable  # the objective is trained with first derivatives only
    def backward(ctx, g_target: Tensor, g_lse: Tensor, g_call: Tensor):
        logits, labels, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        vocab = grad[..., :-1]
        torch.sub(noncall_logits(logits), lse.unsqueeze(-1), out=vocab)
        vocab.exp_().mul_((g_target + g_lse).unsqueeze(-1))  # softmax over the non-call logits, times both grads
        vocab.scatter_add_(-1, labels.unsqueeze(-1), -g_target.unsqueeze(-1))
        grad[..., -1] = g_call
        return grad, None


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
