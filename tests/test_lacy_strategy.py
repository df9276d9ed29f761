import pytest
import torch

from baselines import SpacyOnly
from lacy.errors import UsageError
from lacy.selection.lacy_rule import LaCy
from lacy.train.objective import TokenLosses


def losses_of(target, valid):
    return TokenLosses(target=target, call=torch.zeros_like(target), call_logodds=torch.zeros_like(target),
                       valid=valid)


def test_lacy_budget_as_fraction_of_batch_and_of_facts():
    torch.manual_seed(0)
    target = torch.rand(4, 25)
    valid = torch.ones(4, 25, dtype=torch.bool)
    fact = torch.rand(4, 25) < 0.4
    batch = {"fact": fact, "labels": torch.zeros(4, 25, dtype=torch.long)}
    by_batch = LaCy(call_rate=0.1).select(batch, losses_of(target, valid), step=0)
    assert by_batch.sum().item() == 10 and not (by_batch & ~fact).any()
    by_fact = LaCy(fact_fraction=0.5).select(batch, losses_of(target, valid), step=0)
    assert by_fact.sum().item() == round(0.5 * fact.sum().item())
    # the called facts are exactly the highest-loss ones
    assert target[by_fact].min() >= target[fact & ~by_fact].max()
    m = LaCy(fact_fraction=0.5).metrics(batch, by_fact)
    assert torch.isclose(m["calls_per_fact"], by_fact.sum() / fact.sum())


def test_lacy_without_fact_flags_says_which_annotator_is_missing():
    with pytest.raises(UsageError, match="data.annotators"):
        LaCy().select({"labels": torch.zeros(1, 3)}, losses_of(torch.rand(1, 3), torch.ones(1, 3, dtype=torch.bool)), 0)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_call_rate_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="call_rate"):
        LaCy(call_rate=bad)


def test_spacy_only_samples_facts_uniformly_ignoring_loss():
    target = torch.arange(200.0).view(1, 200)  # loss increasing with position
    valid = torch.ones(1, 200, dtype=torch.bool)
    fact = torch.zeros(1, 200, dtype=torch.bool)
    fact[0, ::2] = True  # 100 facts
    batch = {"fact": fact, "labels": torch.zeros(1, 200, dtype=torch.long)}
    s = SpacyOnly(call_rate=0.1, seed=1)
    call = s.select(batch, losses_of(target, valid), step=5)
    assert call.sum().item() == 20 and not (call & ~fact).any()
    assert torch.equal(call, s.select(batch, losses_of(target, valid), step=5))  # reproducible per step
    # not the 20 highest-loss facts (LaCy's choice)
    assert not torch.equal(call, LaCy(call_rate=0.1).select(batch, losses_of(target, valid), step=5))
