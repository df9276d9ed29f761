import math

import torch
import torch.nn.functional as F

from lacy.train.objective import IGNORE_INDEX, _VocabTerms, lacy_objective, token_losses


def test_matches_hand_computation():
    # vocabulary of 3 real tokens + <CALL> (last); two positions: one call, one ordinary
    logits = torch.tensor([[[1.0, 2.0, 0.0, 3.0], [0.5, 0.0, 1.5, 2.0]]])
    labels = torch.tensor([[1, 2]])
    call = torch.tensor([[True, False]])
    lse_all_0 = math.log(math.e ** 1 + math.e ** 2 + math.e ** 0 + math.e ** 3)
    call_loss_0 = lse_all_0 - 3.0  # -log p(<CALL>) under the full softmax
    lse_vocab_1 = math.log(math.e ** 0.5 + math.e ** 0 + math.e ** 1.5)
    target_loss_1 = lse_vocab_1 - 1.5  # -log p_noCALL(label): <CALL> removed, renormalised
    loss = lacy_objective(token_losses(logits, labels), call)
    assert torch.isclose(loss, torch.tensor((call_loss_0 + target_loss_1) / 2), atol=1e-6)


def test_without_calls_equals_cross_entropy_over_original_vocab():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 10, (3, 7))
    labels[0, :2] = IGNORE_INDEX  # padding is ignored by both
    ours = lacy_objective(token_losses(logits, labels), torch.zeros(3, 7, dtype=torch.bool))
    ref = F.cross_entropy(logits[..., :-1].reshape(-1, 10), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.isclose(ours, ref, atol=1e-6)


def test_padding_ignored_even_if_marked_as_call():
    logits = torch.randn(1, 4, 6)
    labels = torch.tensor([[1, 2, IGNORE_INDEX, IGNORE_INDEX]])
    a = lacy_objective(token_losses(logits, labels), torch.tensor([[False, True, True, True]]))
    b = lacy_objective(token_losses(logits[:, :2], labels[:, :2]), torch.tensor([[False, True]]))
    assert torch.isclose(a, b)


def test_gradients_go_where_the_method_says():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    labels = torch.tensor([[3, 1]])
    lacy_objective(token_losses(logits, labels), torch.tensor([[True, False]])).backward()
    g = logits.grad[0]
    # ordinary position: the <CALL> logit gets no gradient (p_noCALL excludes it)
    assert g[1, -1] == 0
    # call position: the <CALL> logit is pushed up, the original target is not trained (it is pushed down
    # like every other token, by its softmax share only)
    assert g[0, -1] < 0
    p = torch.softmax(logits[0, 0].detach(), -1)
    assert torch.allclose(g[0, :-1], p[:-1] / 2, atol=1e-6)


def test_call_loss_is_stable_when_call_saturates():
    logits = torch.zeros(1, 1, 4)
    logits[..., -1] = 200.0
    losses = token_losses(logits, torch.tensor([[0]]))
    assert losses.call.item() < 1e-30 or losses.call.item() == 0.0
    assert torch.isclose(losses.call_logodds, torch.tensor([[200.0 - math.log(3)]]))
    assert torch.isfinite(losses.target).all()


def test_full_noncall_form_is_cross_entropy_over_the_extended_vocabulary():
    # [ours] noncall="full": with no calls the objective is plain cross-entropy over all logits, <CALL> included
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 8, (2, 5))
    labels[1, -1] = IGNORE_INDEX
    ours = lacy_objective(token_losses(logits, labels), torch.zeros(2, 5, dtype=torch.bool), noncall="full")
    ref = F.cross_entropy(logits.reshape(-1, 9), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.isclose(ours, ref, atol=1e-6)
    # call positions keep the paper's -log p(<CALL>): same value under both forms when every target calls
    every = labels != IGNORE_INDEX
    assert torch.isclose(lacy_objective(token_losses(logits, labels), every, noncall="full"),
                         lacy_objective(token_losses(logits, labels), every), atol=1e-6)


def test_full_noncall_form_trains_call_down_at_ordinary_targets():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    labels = torch.tensor([[3, 1]])
    lacy_objective(token_losses(logits, labels), torch.tensor([[True, False]]), noncall="full").backward()
    p = torch.softmax(logits[0, 1].detach(), -1)
    assert logits.grad[0, 1, -1] > 0  # gradient descent lowers the <CALL> logit where it is not the target
    assert torch.isclose(logits.grad[0, 1, -1], p[-1] / 2, atol=1e-6)  # its full-softmax share, / N = 2


def test_full_noncall_form_is_finite_when_call_saturates():
    logits = torch.zeros(1, 1, 4)
    logits[..., -1] = 200.0
    loss = lacy_objective(token_losses(logits, torch.tensor([[0]])), torch.tensor([[False]]), noncall="full")
    assert torch.isclose(loss, torch.tensor(200.0), atol=1e-3)  # -log p_full(0) = 200 + log(3 + e^-200) - 0


def test_unknown_noncall_form_is_refused():
    import pytest

    with pytest.raises(ValueError, match="renormalised"):
        lacy_objective(token_losses(torch.zeros(1, 1, 3), torch.tensor([[0]])), torch.tensor([[False]]), "fulll")


def test_the_hand_written_gradient_is_autograd_s():
    """_VocabTerms.backward against numerical differentiation (float64), and the whole objective's gradient,
    both non-call forms, against autograd through the plain formulas (slice, logsumexp, gather)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_VocabTerms.apply, (logits, torch.randint(0, 5, (2, 3))))
    x = torch.randn(3, 5, 9, requires_grad=True)
    labels = torch.randint(0, 8, (3, 5))
    labels[0, :2] = IGNORE_INDEX
    call = torch.rand(3, 5) < 0.4
    for noncall in ("renormalised", "full"):
        grad, = torch.autograd.grad(lacy_objective(token_losses(x, labels), call, noncall), x)
        vocab, valid = x[..., :-1], labels != IGNORE_INDEX
        lse = torch.logsumexp(vocab, -1)
        target = lse - vocab.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logodds = x[..., -1] - lse
        other = target + F.softplus(logodds) if noncall == "full" else target
        ref = (torch.where(call & valid, F.softplus(-logodds), other) * valid).sum() / valid.sum()
        assert torch.allclose(grad, torch.autograd.grad(ref, x)[0], atol=1e-7), noncall
