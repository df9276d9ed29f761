"""The ``<CALL>`` row, in one place: its token, its id (the last one) and what the other logits mean without it.

An SLM's vocabulary is its tokenizer's plus ``<CALL>`` appended as the last row of the embedding and the LM head.
Everything that reads logits (the objective, the cascade, the evaluations, the export) splits them here:

- ``noncall_logits(logits)``: the other tokens' logits; their softmax is **p_noCALL**, the distribution the
  objective trains at ordinary targets (method.md section 3) and the one the SLM writes with when it does not call;
- ``call_logodds(logits)``: the ``<CALL>`` logit minus the logsumexp of the others, which ranks positions like
  p(``<CALL>``) but does not saturate (p(``<CALL>``) sits at 0.96-0.999 in CALL-trained models).
"""
import torch
from torch import Tensor

CALL_TOKEN = "<CALL>"


def call_id(vocab_size: int) -> int:
    """The ``<CALL>`` id of a vocabulary of ``vocab_size`` ids (``<CALL>`` included): the last one."""
    return vocab_size - 1


def noncall_logits(logits: Tensor) -> Tensor:
    """(..., V) -> (..., V - 1): every logit but ``<CALL>``'s; softmax of the result = p_noCALL."""
    return logits[..., :-1]


def call_logit(logits: Tensor) -> Tensor:
    """(..., V) -> (...): the ``<CALL>`` logit."""
    return logits[..., -1]


def call_logodds(logits: Tensor) -> Tensor:
    """(..., V) -> (...): log p(``<CALL>``) - log(1 - p(``<CALL>``)) = ``<CALL>`` logit - logsumexp(others)."""
    return call_logit(logits) - torch.logsumexp(noncall_logits(logits), dim=-1)
