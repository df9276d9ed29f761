import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.kb_oracle import KBOracleAnnotator
from lacy.cascade import Generation
from lacy.cli import cli_main
from lacy.data import CorpusDataModule
from lacy.export import export_checkpoint
from lacy.evaluate import KBEvaluation, PlacementDocs, bucket, call_placement, kb_factscore, leakage
from lacy.model import build_slm
from lacy.tokenizer import train_bpe
from lacy.world import ClosedWorld


@pytest.fixture(scope="module")
def world():
    w = ClosedWorld(people=12, max_docs=3, val_docs=6)
    return w, train_bpe(w.bpe_documents(), 600)


def gen(prompt, text):
    return Generation(prompt, text, [], [], [])


def test_kb_factscore_by_hand(world):
    w, _ = world
    a, b = w.people[0], w.people[1]
    fa = a.facts
    gens = [gen(a.name, f" was born in {fa['birth_city']}. {a.name} studied {fa['field']}. {a.name} works for "
                        f"{b.facts['employer'] if b.facts['employer'] != fa['employer'] else 'nobody'}."),
            gen(b.name, " liked long walks."),  # no claim: not responded
            gen(a.name, f" holds {fa['nationality']} citizenship.")]
    wrong = b.facts["employer"] != fa["employer"]
    s1 = (2 + (not wrong)) / (2 + wrong) if wrong else 1.0
    res = kb_factscore(w.kb(), gens, [a.name, b.name, a.name], gamma=10)
    n1 = 2 + wrong
    assert res["respond_ratio"] == pytest.approx(2 / 3)
    assert res["claims_per_bio"] == pytest.approx((n1 + 0 + 1) / 3)
    assert res["factscore"] == pytest.approx((s1 + 1.0) / 2)
    assert res["factscore_penalised"] == pytest.approx((s1 * math.exp(1 - 10 / n1) + math.exp(1 - 10)) / 2)
    assert res["supported_birth_city"] == res["supported_field"] == 1.0 and res["supported_nationality"] == 1.0
    assert res.get("supported_employer") == (0.0 if wrong else None)  # "works for nobody" is no claim
    assert res["claims_birth_city"] == res["claims_nationality"] == pytest.approx(1 / 3)


def train_copier(tok, probes, steps=300):
    """A micro model that has memorised each probe with its gold answer (a model that leaks everything)."""
    torch.manual_seed(0)
    model = build_slm("micro", len(tok), 64)
    seqs = [[tok.eos_token_id] + tok(f"{p['prompt']} {p['answer']}.")["input_ids"] for p in probes]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.eos_token_id] * (width - len(s)) for s in seqs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_leakage_is_one_for_a_copier_and_zero_for_a_model_that_never_copies(world):
    w, tok = world
    probes = [p for p in w.kb().probes() if p["attribute"] in ("birth_city", "field")][:6]
    copier = train_copier(tok, probes)
    res = leakage(copier, tok, probes)
    assert res["leakage"] == 1.0
    assert set(res) >= {"leakage", f"leakage_{'1' if probes[-1]['popularity'] == 1 else '2-4'}"}
    # the same model asked about answers it never saw: nothing leaks
    swapped = [dict(p, answer=probes[(i + 1) % len(probes)]["answer"] + "x") for i, p in enumerate(probes)]
    assert leakage(copier, tok, swapped)["leakage"] == 0.0


def test_call_placement_counts(world):
    w, tok = world
    docs = PlacementDocs.build(w.kb(), tok, [(p.name, d) for p, d in w.val_documents()])
    torch.manual_seed(0)
    slm = build_slm("micro", len(tok), 256).eval()
    share = np.concatenate(docs.fact).mean()
    everything = call_placement(slm, docs, rate=1.0)
    assert everything["placement_recall"] == 1.0 and everything["placement_precision"] == pytest.approx(share)
    assert everything["fact_token_share"] == pytest.approx(share)
    some = call_placement(slm, docs, rate=0.1)
    assert 0 <= some["placement_recall"] <= 0.1 / share + 1e-9
    assert np.concatenate(docs.derived).sum() > 0  # nationality, profession, employer city are in every bio


def test_call_placement_by_popularity_and_fig5_losses(world):
    w, tok = world
    val = [(p.name, d) for p, d in w.val_documents()]
    pop = {p.name: p.docs for p in w.people}
    docs = PlacementDocs.build(w.kb(), tok, val, pop)
    torch.manual_seed(0)
    slm = build_slm("micro", len(tok), 256).eval()
    some = call_placement(slm, docs, rate=0.2, reference=slm)
    # the bucket recalls are the overall recall split by the subject's popularity: weighted, they add up
    facts = {b: sum(f.sum() for f, p in zip(docs.fact, docs.popularity) if p and bucket(p) == b)
             for b in ("1", "2-4", "5-9", "10+")}
    assert sum(some.get(f"placement_recall_{b}", 0) * n for b, n in facts.items()) / sum(facts.values()) == \
        pytest.approx(some["placement_recall"])
    assert some["fig5_ref_call_loss"] == some["fig5_call_loss"]  # the model as its own reference
    per_relation = {r: sum(rel.get(r, np.zeros(0, bool)).sum() for rel in docs.relations) for r in w.kb().attributes}
    assert sum(some.get(f"placement_recall_{r}", 0) * n for r, n in per_relation.items()) / sum(
        per_relation.values()) == pytest.approx(some["placement_recall"])  # relations split the fact tokens
    # calling everything: the call-side loss is the plain cross-entropy over the vocabulary without <CALL>
    everything = call_placement(slm, docs, rate=1.0)
    ce = torch.cat([torch.nn.functional.cross_entropy(slm(input_ids=torch.as_tensor(i)[None]).logits[0, :-1, :-1],
                                                      torch.as_tensor(i[1:]), reduction="none") for i in docs.ids])
    assert everything["fig5_call_loss"] == pytest.approx(ce.mean().item(), rel=1e-5)
    assert math.isnan(everything["fig5_noncall_loss"])


def test_kb_oracle_flags_exactly_the_values(world, tmp_path):
    w, tok = world
    oracle = KBOracleAnnotator(key="fact")
    oracle.bind(w)
    person, doc = next(iter(w.val_documents()))
    enc = tok(doc, return_offsets_mapping=True)
    flags = oracle.annotate([doc], [np.asarray(enc["offset_mapping"])])[0]
    flagged = "".join(tok.decode([i]) for i, f in zip(enc["input_ids"], flags) if f)
    assert flagged.replace(" ", "") == "".join(
        v.replace(" ", "") for c in w.kb().claims(doc) for v in [c.value])
    with pytest.raises(ValueError, match="no knowledge base"):
        KBOracleAnnotator().bind(object())
    w.kb().save(tmp_path / "kb.json")  # from a file: same flags
    from_file = KBOracleAnnotator(kb=str(tmp_path / "kb.json"), key="fact")
    assert np.array_equal(from_file.annotate([doc], [np.asarray(enc["offset_mapping"])])[0], flags)


def test_kb_evaluation_from_world_files_with_a_trained_partner_folder(world, tmp_path):
    w, tok = world
    w.write(tmp_path / "world")
    dm = CorpusDataModule(corpus=w, bpe_vocab_size=600, block_size=64, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    torch.manual_seed(1)
    build_slm("micro", len(dm.tokenizer), 64).save_pretrained(tmp_path / "partner")
    dm.tokenizer.save_pretrained(tmp_path / "partner")
    torch.manual_seed(0)
    slm = build_slm("micro", len(dm.tokenizer), 256).eval()
    ev = KBEvaluation(world=str(tmp_path / "world"), partner=str(tmp_path / "partner"), score="uncertainty",
                      max_new_tokens=24, limit=6)
    res = ev.run(slm, dm.tokenizer)
    assert set(res) == {"slm", "partner_alone", "slm_alone", "lookup_always", "trained_always", "lookup_budget",
                        "trained_budget"}
    assert res["slm_alone"]["call_rate"] == 0.0 and res["trained_always"]["call_rate"] == 1.0
    buckets = [k for k in res["trained_always"] if k.startswith("call_rate_")]
    assert buckets and all(res["trained_always"][k] == 1.0 and res["slm_alone"][k] == 0.0 for k in buckets)
    assert abs(res["trained_budget"]["call_rate"] - 0.22) < 0.05
    # always calling the trained partner writes exactly what the partner writes alone
    assert res["trained_always"]["factscore"] == res["partner_alone"]["factscore"]
    other = train_bpe(["another tokenizer entirely " * 30], 300)
    build_slm("micro", len(other), 64).save_pretrained(tmp_path / "stranger")
    other.save_pretrained(tmp_path / "stranger")
    with pytest.raises(ValueError, match="another tokenizer"):
        KBEvaluation(world=str(tmp_path / "world"), partner=str(tmp_path / "stranger"), score="call",
                     limit=2).run(slm, dm.tokenizer)


@pytest.mark.parametrize("strategy", ["lacy", "llm_judge"])
def test_world_fit_then_test_through_the_cli(strategy, tmp_path):
    """The documented commands: a strategy config + the world overlay (+ the oracle judge), fit, then test."""
    extra = ["--config", "configs/world/kb_oracle.yaml"] if strategy == "llm_judge" else []
    common = ["--config", f"configs/{strategy}.yaml", "--config", "configs/world/slm.yaml", *extra,
              "--data.corpus.init_args.people", "12", "--data.corpus.init_args.val_docs", "6",
              "--data.block_size", "64", "--data.cache_dir", str(tmp_path / "cache"), "--model.preset", "micro",
              "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    cli = cli_main(["fit", *common, "--trainer.max_steps", "4"])
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    export_checkpoint(ckpt, tmp_path / "exported")  # a CLI checkpoint (its hparams carry CLI keys) exports
    assert (tmp_path / "exported" / "config.json").exists()
    # the overlay's KBEvaluation is the last callback: these flags set its arguments
    test = cli_main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.callbacks.partner=null", "--trainer.callbacks.limit=4",
                     "--trainer.callbacks.max_new_tokens=16", "--trainer.callbacks.sweep=[0,0.5]"])
    ev = next(c for c in test.trainer.callbacks if isinstance(c, KBEvaluation))
    res = json.loads((Path(test.trainer.log_dir) / "kb_eval.json").read_text())
    assert res == json.loads(json.dumps(ev.results)) and ev.score == "call"
    assert {"slm", "slm_alone", "lookup_always", "lookup_budget", "lookup_budget@0", "lookup_budget@0.5"} == set(res)
    assert res["lookup_budget@0"]["call_rate"] == 0.0
    assert (Path(test.trainer.log_dir) / "kb_eval.png").stat().st_size > 1000  # the FactScore-vs-call-rate plot
    # readable in TensorBoard: the plot as an image, the table and a few bios per row (partner in [brackets]) as text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(test.trainer.log_dir).Reload()
    assert events.Tags()["images"] == ["world/factscore_vs_call_rate"]
    texts = {t.split("/text_summary")[0] for t in events.Tags()["tensors"]}
    assert {"world/table", *(f"world_bios/{row}" for row in res if row != "slm")} <= texts
    always = events.Tensors("world_bios/lookup_always/text_summary")[0].tensor_proto.string_val[0].decode()
    assert always.count("**") == 2 * min(3, 4) and "[" in always  # 3 bios; the lookup partner wrote in each


def test_cascade_placement_by_hand(world):
    """A bio whose field value the partner wrote (one call at its first token) and whose birth city the SLM wrote."""
    from lacy.evaluate import cascade_placement

    w, tok = world
    a = w.people[0]
    head, field, tail = f" studied", f" {a.facts['field']}", f". {a.name} was born in {a.facts['birth_city']}."
    ids_head, ids_field, ids_tail = (tok(x, add_special_tokens=False)["input_ids"] for x in (head, field, tail))
    tokens = ids_head + ids_field + ids_tail
    from_partner = [False] * len(ids_head) + [True] * len(ids_field) + [False] * len(ids_tail)
    g = Generation(a.name, tok.decode(tokens), tokens, from_partner, [len(ids_head)])
    res = cascade_placement(w.kb(), tok, [g], [a.name])
    assert res["cascade_call_precision"] == 1.0 and res["by_partner_field"] == 1.0
    assert res["by_partner_birth_city"] == 0.0
    city = len(tok(f" {a.facts['birth_city']}", add_special_tokens=False)["input_ids"])
    assert res["cascade_fact_tokens_by_partner"] == pytest.approx(len(ids_field) / (len(ids_field) + city))
