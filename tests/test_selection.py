import torch

from baselines.loss_only import loss_only
from baselines.random_calls import random_calls
from lacy.selection.lacy_rule import lacy_select
from lacy.selection.topk import budget, select_top


def test_select_top_picks_highest_and_breaks_ties_by_position():
    scores = torch.tensor([[1.0, 5.0, 5.0, 2.0, 5.0]])
    cand = torch.ones(1, 5, dtype=torch.bool)
    assert select_top(scores, cand, 2).tolist() == [[False, True, True, False, False]]


def test_select_top_never_picks_non_candidates_or_padding():
    scores = torch.tensor([[9.0, 1.0, 8.0, 0.5]])
    cand = torch.tensor([[False, True, False, True]])
    assert select_top(scores, cand, 1).tolist() == [[False, True, False, False]]
    # more k than candidates: all candidates, nothing else
    assert select_top(scores, cand, torch.tensor(3)).tolist() == [[False, True, False, True]]


def test_k_zero_selects_nothing():
    assert not select_top(torch.rand(2, 8), torch.ones(2, 8, dtype=torch.bool), torch.tensor(0)).any()


def test_budget_rounds_the_valid_count():
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[0, :7] = False  # 33 valid
    assert budget(valid, 0.15).item() == 5  # round(4.95)
    assert budget(valid, 0.0).item() == 0


def test_random_calls_exact_rate_reproducible_and_only_valid():
    valid = torch.ones(8, 64, dtype=torch.bool)
    valid[:, 50:] = False
    a = random_calls(valid, 0.15, seed=3)
    assert a.sum().item() == round(0.15 * valid.sum().item())
    assert not (a & ~valid).any()
    assert torch.equal(a, random_calls(valid, 0.15, seed=3))
    assert not torch.equal(a, random_calls(valid, 0.15, seed=4))


def test_loss_only_takes_the_highest_losses():
    loss = torch.tensor([[0.1, 3.0, 0.2, 2.0, 7.0, 0.0]])
    valid = torch.tensor([[True, True, True, True, False, True]])  # the 7.0 is padding
    assert loss_only(loss, valid, 0.4).tolist() == [[False, True, False, True, False, False]]


def test_lacy_never_calls_a_high_loss_non_fact():
    loss = torch.tensor([[9.0, 1.0, 2.0, 0.5]])
    fact = torch.tensor([[False, True, True, True]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    call = lacy_select(loss, valid, fact, torch.tensor(2))
    assert call.tolist() == [[False, True, True, False]]  # the low-loss fact (0.5) is learned


def test_lacy_calls_all_facts_when_fewer_than_k():
    loss = torch.rand(2, 6)
    fact = torch.zeros(2, 6, dtype=torch.bool)
    fact[1, 2] = True
    valid = torch.ones(2, 6, dtype=torch.bool)
    assert torch.equal(lacy_select(loss, valid, fact, budget(valid, 0.5)), fact)
