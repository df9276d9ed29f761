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


def test_random_share_draws_part_of_the_calls_as_spacy_only_does():
    """Issue 27's switch [ours]: of k calls, round(share x k) are spaCy-only's uniform draw among the flagged
    tokens, the rest the highest losses among the other flagged ones; share 1 is spaCy-only exactly, 0 the paper."""
    torch.manual_seed(0)
    target, valid = torch.rand(4, 25), torch.ones(4, 25, dtype=torch.bool)
    fact = torch.rand(4, 25) < 0.5
    batch, losses = {"fact": fact, "labels": torch.zeros(4, 25, dtype=torch.long)}, losses_of(target, valid)
    for step in (0, 3):
        assert torch.equal(LaCy(random_share=1.0, seed=2).select(batch, losses, step),
                           SpacyOnly(seed=2).select(batch, losses, step))
        assert torch.equal(LaCy(random_share=0.0).select(batch, losses, step), LaCy().select(batch, losses, step))
    half = LaCy(call_rate=0.2, random_share=0.5).select(batch, losses, step=1)  # k = 20: 10 drawn, 10 by loss
    assert half.sum().item() == 20 and not (half & ~fact).any()
    top10 = torch.zeros_like(fact).flatten()
    top10[torch.where(fact.flatten(), target.flatten(), -1.0).topk(10).indices] = True
    assert (half.flatten() & top10).sum() == 10  # the ten highest losses are always called
    assert not torch.equal(half, LaCy(call_rate=0.2).select(batch, losses, step=1))  # and others than the top 20
    with pytest.raises(UsageError, match="random_share"):
        LaCy(random_share=1.5)
    # outside a planned fit (main.py test / validate: no TokenBudget planned a warm-up) the rule selects as usual
    assert torch.equal(LaCy(warmup=0.5).select(batch, losses, step=1), LaCy().select(batch, losses, step=1))


def test_warmup_learns_every_target_first_and_keeps_vanillas_gradient_budget(data_kwargs, tmp_path):
    """Issue 27's warm-up [ours]: no calls for the first share of the ground-truth-gradient budget, then LaCy's
    rule; TokenBudget plans it: by hand, 4 x 32 = 128 targets a step, 15% calls leave 109; budget 2,000 with
    warmup 0.5: W = ceil(1,000 / 128) = 8 steps without calls, then ceil((2,000 - 1,024) / 109) = 9 steps."""
    import numpy as np

    from lacy.data.annotation import Annotator
    from lacy.train.budget import TokenBudget
    from tests.helpers import fit

    class EveryToken(Annotator):  # fact flags on every token: LaCy's budget always binds
        name, dtype = "fact", np.bool_

        def fingerprint(self):
            return "all"

        def annotate(self, texts, offsets):
            return [np.ones(len(o), dtype=bool) for o in offsets]

    class Recorder(LaCy):
        def select(self, batch, losses, step):
            mask = super().select(batch, losses, step)
            self.calls.append((self._global_step, int(mask.sum())))
            return mask

    lacy = Recorder(warmup=0.5)
    lacy.calls = []
    data = dict(data_kwargs, annotators=[EveryToken()])
    trainer, model = fit(data, tmp_path, [lacy, TokenBudget(max_tokens=2000, count="gradient")], max_steps=-1)
    assert lacy.warmup_steps == 8 and trainer.global_step == 8 + 9
    assert all(n == 0 for step, n in lacy.calls if step < 8) and all(n == 19 for step, n in lacy.calls if step >= 8)
    assert model.gradient_tokens.item() == 8 * 128 + 9 * 109  # >= 2,000, less than one more step
    with pytest.raises(UsageError, match="warmup=0.2 is a share of the ground-truth-gradient budget"):
        fit(data, tmp_path, [LaCy(warmup=0.2)], max_steps=2)
