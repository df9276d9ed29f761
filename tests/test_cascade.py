import math

import pytest
import torch

from lacy.inference.cascade import CallPolicy, Cascade, Generation, call_scores

from lacy.inference.partners import LookupPartner, ModelPartner, TextPartner
from lacy.model.gpt2 import build_slm
from lacy.data.tokenizer import train_bpe
from lacy.worlds.closed_world import ClosedWorld


@pytest.fixture(scope="module")
def world():
    w = ClosedWorld(people=20, max_docs=3, val_docs=5)
    return w, train_bpe(w.bpe_documents(), 600)


def model(tok, seed, preset="micro"):
    torch.manual_seed(seed)
    return build_slm(preset, len(tok), 128).eval()


def test_call_scores_by_hand():
    logits = torch.tensor([[math.log(1.0), math.log(3.0), math.log(4.0)]])  # last = <CALL>
    assert call_scores(logits, "call").item() == pytest.approx(0.0)  # log(4 / (1 + 3))
    assert call_scores(logits, "uncertainty").item() == pytest.approx(-math.log(3 / 4))
    with pytest.raises(ValueError, match="uncertainty"):
        call_scores(logits, "entropy")


def test_marked_brackets_each_partner_run(world):
    _, tok = world
    ids = tok(" She works in Paris as a nurse.")["input_ids"]  # ' P' 'ar' 'i' 's' ... ' ' 'n' 'ur' 's' 'e' '.'
    partner = [False] * 3 + [True] * 4 + [False] * 2 + [True] * 6
    g = Generation("Ann", tok.decode(ids), ids, partner, [3, 9])
    assert g.marked(tok) == " She works in [Paris] as a [nurse.]"
    assert Generation("Ann", "", ids, [False] * len(ids), []).marked(tok) == " She works in Paris as a nurse."


def test_never_calling_is_the_slm_greedy_continuation(world):
    w, tok = world
    slm = model(tok, 0)
    prompts = [p["prompt"] for p in w.prompts()[:3]] + [p["prompt"] for p in w.kb().probes()[:2]]  # ragged
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1  # left padding is exercised
    gens = Cascade(slm, tok, batch_size=5).generate(prompts, max_new_tokens=12, stop_at_eos=False)
    for p, g in zip(prompts, gens):  # one prompt at a time, no cache, <CALL> never chosen
        ids = [tok.eos_token_id] + tok(p)["input_ids"]
        for _ in range(12):
            ids.append(int(slm(input_ids=torch.tensor([ids])).logits[0, -1, :-1].argmax()))
        assert g.tokens == ids[-12:] and not any(g.from_partner)


def test_always_calling_a_partner_reproduces_the_partner(world):
    w, tok = world
    slm, partner = model(tok, 0), model(tok, 1, "tiny")
    prompts = [p["prompt"] for p in w.prompts()[:4]]
    alone = Cascade(partner, tok, batch_size=4).generate(prompts, max_new_tokens=16, stop_at_eos=False)
    for piece in ("token", "word", "entity"):
        casc = Cascade(slm, tok, ModelPartner(partner, tok, piece=piece), CallPolicy("always"), batch_size=2)
        gens = casc.generate(prompts, max_new_tokens=16, stop_at_eos=False)
        assert [g.tokens for g in gens] == [g.tokens for g in alone]
        assert all(all(g.from_partner) for g in gens) and casc.stats.call_rate == 1.0


def test_partner_cache_processes_each_token_once(world):
    w, tok = world
    slm, partner = model(tok, 0), model(tok, 1)
    prompts = [p["prompt"] for p in w.prompts()[:6]]
    runs = {}
    for cache in (True, False):
        mp = ModelPartner(partner, tok, piece="word", cache=cache)
        casc = Cascade(slm, tok, mp, CallPolicy("budget", rate=0.3, score="uncertainty"), batch_size=6)
        runs[cache] = (casc.generate(prompts, max_new_tokens=40, stop_at_eos=False), mp.tokens_processed)
    assert [g.tokens for g in runs[True][0]] == [g.tokens for g in runs[False][0]]  # same text either way
    text_tokens = sum(len(g.tokens) + 2 for g in runs[True][0]) + sum(len(tok(p)["input_ids"]) for p in prompts)
    assert runs[True][1] <= text_tokens  # the cache reads the text at most once
    assert runs[False][1] > 2 * runs[True][1]


@pytest.mark.parametrize("rate", [0.1, 0.22, 0.4])
def test_budget_holds_the_target_rate_within_one_point(world, rate):
    w, tok = world
    slm, partner = model(tok, 0), model(tok, 1)
    casc = Cascade(slm, tok, ModelPartner(partner, tok, piece="word"), CallPolicy("budget", rate=rate,
                                                                                   score="uncertainty"))
    casc.generate([p["prompt"] for p in w.prompts()], max_new_tokens=60, stop_at_eos=False)
    assert abs(casc.stats.call_rate - rate) <= 0.01
    assert casc.stats.partner_tokens > casc.stats.calls  # word pieces: more than one token per call


def test_lookup_partner_writes_the_true_value(world):
    w, tok = world
    kb, person = w.kb(), w.people[0]
    lookup = LookupPartner(kb, tok, piece="entity")
    ctx = [tok.eos_token_id] + tok(f"{person.name} studied {person.facts['field']}. {person.name} was born in")[
        "input_ids"]
    assert tok.decode(lookup.piece_for(0, ctx)) == " " + person.facts["birth_city"]
    date = person.facts["birth_date"]
    ctx = [tok.eos_token_id] + tok(f"{person.name} was born on {date.split()[0]}")["input_ids"]
    assert tok.decode(lookup.piece_for(0, ctx)) == " " + " ".join(date.split()[1:])  # continues a started value
    word = LookupPartner(kb, tok, piece="token")
    assert len(word.piece_for(0, ctx)) == 1
    assert lookup.piece_for(0, [tok.eos_token_id] + tok(f"{person.name} liked long")["input_ids"]) == []


def test_a_calling_policy_needs_a_partner(world):
    w, tok = world
    with pytest.raises(ValueError, match="needs a partner"):
        Cascade(model(tok, 0), tok, None, CallPolicy("budget"))
    with pytest.raises(ValueError, match="mode"):
        CallPolicy("sometimes")


def test_text_partner_with_another_tokenizer(world):
    """A partner with its own tokenizer: always calling it reproduces its own text; its cache is cut back to
    the shared prefix, so it reads much less than re-reading every context."""
    w, tok = world
    other = train_bpe([d for _, d in w.train_documents()][::-1], 450)  # another vocabulary and other ids
    assert other.get_vocab() != tok.get_vocab()
    partner = model(other, 2)
    prompts = [p["prompt"] for p in w.prompts()[:3]]
    alone = Cascade(partner, other, batch_size=3).generate(prompts, max_new_tokens=12, stop_at_eos=False)
    tp = TextPartner(partner, other, tok, piece="word")
    casc = Cascade(model(tok, 0), tok, tp, CallPolicy("always"), batch_size=3)
    gens = casc.generate(prompts, max_new_tokens=12, stop_at_eos=False)
    for a, g in zip(alone, gens):  # spaces may differ where a mid-word piece re-tokenises (documented)
        ours, theirs = g.text.replace(" ", ""), a.text.replace(" ", "")
        assert ours.startswith(theirs[: len(ours)]) or theirs.startswith(ours)
        assert all(g.from_partner)
    assert tp.tokens_processed < 2 * sum(len(other(p + g.text)["input_ids"]) for p, g in zip(prompts, gens))


def test_threshold_calibrated_on_other_prompts_lands_near_the_rate(world):
    w, tok = world
    slm, partner = model(tok, 0), model(tok, 1)
    budget = CallPolicy("budget", rate=0.22, score="uncertainty")
    prompts = [p["prompt"] for p in w.prompts()]  # calibrate on half the people, apply to the other half
    Cascade(slm, tok, ModelPartner(partner, tok), budget).generate(prompts[::2], 40, stop_at_eos=False)
    fixed = CallPolicy("threshold", threshold=budget.calibrated_threshold(), score="uncertainty")
    casc = Cascade(slm, tok, ModelPartner(partner, tok), fixed)
    casc.generate(prompts[1::2], 40, stop_at_eos=False)
    assert 0.12 < casc.stats.call_rate < 0.32  # no online control: near, not on, the rate
    with pytest.raises(ValueError, match="budget-mode generation first"):
        CallPolicy("budget").calibrated_threshold()


def test_argmax_mode_calls_where_call_is_the_top_token(world):
    w, tok = world
    slm, partner = model(tok, 0), model(tok, 1)
    call_bias = torch.zeros(len(tok))  # make <CALL> the top token everywhere: every free step calls
    call_bias[-1] = 1e4
    slm.lm_head.register_forward_hook(lambda m, i, o: o + call_bias)
    casc = Cascade(slm, tok, ModelPartner(partner, tok, piece="token"), CallPolicy("argmax"))
    gens = casc.generate([p["prompt"] for p in w.prompts()[:3]], 8, stop_at_eos=False)
    assert all(all(g.from_partner) for g in gens)
    none = Cascade(model(tok, 0), tok, ModelPartner(partner, tok), CallPolicy("argmax"))
    none.generate([p["prompt"] for p in w.prompts()[:3]], 8, stop_at_eos=False)
    assert none.stats.calls == 0  # an untrained <CALL> row is never the top token


def test_lookup_partner_writes_the_value_of_the_sentences_subject():
    """Issue 15, fault 4, on the second world: after "a pupil of <teacher>", the pronoun sentences are about
    the bio's subject, so the lookup writes her values, not the teacher's; the teacher is a value it writes."""
    import json
    from pathlib import Path

    from lacy.worlds.kb import KnowledgeBase

    root = Path(__file__).parent / "data" / "second_world"
    kb = KnowledgeBase.load(root / "kb.json")
    tok = train_bpe([json.loads(x)["text"] for x in (root / "train.jsonl").read_text().splitlines()], 400)
    lookup = LookupPartner(kb, tok, piece="entity", max_piece_tokens=32)
    name, facts = next((n, e.attributes) for n, e in kb.entities.items()
                       if kb.entities[e.attributes["teacher"]].attributes["orchestra"] != e.attributes["orchestra"])
    teacher = facts["teacher"]
    ask = lambda text: tok.decode(lookup.piece_for(0, [tok.eos_token_id] + tok(text)["input_ids"]))
    assert ask(f"{name} was a pupil of") == " " + teacher  # an entity-valued relation: the other's name
    assert ask(f"{name} was a pupil of {teacher}. She joined the") == " " + facts["orchestra"]
    assert ask(f"{name} studied under {teacher} for years. He was born in") == " " + facts["birth_year"]
    assert ask(f"{name} grew up in {facts['hometown']}. The debut of {teacher} came in") == (
        " " + kb.entities[teacher].attributes["debut_year"])  # "the <relation> of <name>": the possessor's


def test_generation_spent_counts_empty_calls():
    """A call the partner could not answer is charged one token, as CascadeStats charges it."""
    g = Generation("A", "", [5, 6, 7, 8], [False, True, True, False], [0, 1, 3])  # calls at 0 and 3 were empty
    assert g.spent == 4 and g.call_rate == 1.0
    assert Generation("A", "", [5, 6], [False, True], [1]).spent == 1


def greedy_alone(slm, ids: list[int], n: int) -> list[int]:
    """The SLM's greedy continuation of ``ids`` by hand: full forward each step, no cache, <CALL> never chosen."""
    out = []
    for _ in range(n):
        out.append(int(slm(input_ids=torch.tensor([ids + out])).logits[0, -1, :-1].argmax()))
    return out


def test_batched_generation_equals_each_prompt_alone(world):
    """Each row's budget is its own room in the context (block 32): a short prompt batched with a 28-token one
    writes as many tokens as alone, token for token, with or without a partner."""
    w, tok = world
    torch.manual_seed(0)
    slm = build_slm("micro", len(tok), 32).eval()
    doc = next(iter(w.train_documents()))[1]
    prompts = [w.prompts()[0]["prompt"], tok.decode(tok(doc)["input_ids"][:27])]  # EOS + 27 tokens = 28
    lengths = [1 + len(tok(p)["input_ids"]) for p in prompts]
    assert lengths[1] == 28 and lengths[0] <= 20
    batched = Cascade(slm, tok, batch_size=2).generate(prompts, max_new_tokens=12, stop_at_eos=False)
    assert [len(g.tokens) for g in batched] == [12, 4]
    for p, g, n in zip(prompts, batched, lengths):
        alone = Cascade(slm, tok, batch_size=1).generate([p], max_new_tokens=12, stop_at_eos=False)[0]
        assert g.tokens == alone.tokens == greedy_alone(slm, [tok.eos_token_id] + tok(p)["input_ids"], min(12, 32 - n))
    partner = model(tok, 1)  # 128 positions: the SLM's context is the limit
    with_partner = lambda batch, ps: Cascade(slm, tok, ModelPartner(partner, tok, piece="word"), CallPolicy(
        "threshold", threshold=6.0, score="uncertainty"), batch_size=batch).generate(ps, 12, stop_at_eos=False)
    together = with_partner(2, prompts)
    separate = [with_partner(1, [p])[0] for p in prompts]
    assert [(g.tokens, g.from_partner) for g in together] == [(g.tokens, g.from_partner) for g in separate]
    assert any(any(g.from_partner) for g in together) and not all(all(g.from_partner) for g in together)


def test_a_prompt_longer_than_the_context_is_cut_from_the_left(world):
    w, tok = world
    torch.manual_seed(0)
    slm = build_slm("micro", len(tok), 32).eval()
    long = " ".join(d for _, d in list(w.train_documents())[:2])
    ids = [tok.eos_token_id] + tok(long)["input_ids"]
    assert len(ids) > 32
    short = w.prompts()[1]["prompt"]
    with pytest.warns(UserWarning, match="keeps its last 31 tokens"):
        gens = Cascade(slm, tok, batch_size=2).generate([long, short], max_new_tokens=6, stop_at_eos=False)
    assert gens[0].tokens == greedy_alone(slm, ids[-31:], 1)  # the context's last slot
    assert len(gens[1].tokens) == 6  # the other row is unaffected
