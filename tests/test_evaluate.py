import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.kb_oracle import KBOracleAnnotator
from lacy.inference.cascade import Generation
from lacy.cli import cli_main
from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.io.export import export_checkpoint
from lacy.eval.kb_eval import KBEvaluation
from lacy.worlds.fact_masks import PlacementDocs
from lacy.eval.kb_metrics import bucket, call_placement, kb_factscore, leakage
from lacy.model.gpt2 import build_slm
from lacy.data.tokenizer import train_bpe
from lacy.worlds.closed_world import ClosedWorld


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


def test_nothing_to_score_is_no_score(world):
    """Bios without a single claim (abstentions) are not "every claim false": no score, respond ratio 0."""
    w, _ = world
    a, b = w.people[0], w.people[1]
    res = kb_factscore(w.kb(), [gen(a.name, " liked long walks."), gen(b.name, "")], [a.name, b.name])
    assert res["factscore"] is None and res["factscore_penalised"] is None
    assert res["respond_ratio"] == 0.0 and res["claims_per_bio"] == 0.0
    assert json.loads(json.dumps(res, allow_nan=False))["factscore"] is None  # JSON null, no NaN
    one = kb_factscore(w.kb(), [gen(a.name, " liked long walks."), gen(a.name, f" studied {a.facts['field']}.")],
                       [a.name, a.name])
    assert one["factscore"] == 1.0 and one["respond_ratio"] == 0.5  # the silent bio is out of the mean


def test_report_logs_no_scalar_for_nothing_to_score(tmp_path, capsys):
    """report(): a None metric is JSON null and "n/a" in the table, and never a TensorBoard scalar."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lacy.eval.report import report

    class Reporter(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def test_step(self, batch, batch_idx):
            pass

        def on_test_epoch_end(self):
            report(self.trainer, self, {"row": {"factscore": None, "respond_ratio": 0.0}}, "world", "out.json",
                   ["factscore", "respond_ratio"])

    trainer = L.Trainer(logger=TensorBoardLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    trainer.test(Reporter(), dataloaders=torch.utils.data.DataLoader(torch.zeros(1, 1)), verbose=False)
    text = (Path(trainer.log_dir) / "out.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "row": {"factscore": None, "respond_ratio": 0.0}}
    assert "| row | n/a | 0.000 |" in capsys.readouterr().out
    (events,) = Path(trainer.log_dir).glob("events.out.tfevents.*")
    ea = EventAccumulator(str(events))
    ea.Reload()
    assert {t for t in ea.Tags()["scalars"] if t.startswith("world/")} == {"world/row/respond_ratio"}


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


def test_leakage_has_a_chance_baseline_and_an_answered_share():
    """Issue 30: a constant guess "leaks" where the constant is right. By hand: 4 birth-town probes, answers
    Split x3 + Graz; the SLM writes Split every time -> leakage 0.75 = the chance of always writing the most
    frequent answer (0.75), answered 1.0; a silent SLM -> leakage 0, answered 0. The mentor (entity-valued) is
    answered by any person's name; a year by its pattern."""
    from lacy.eval.kb_metrics import leakage_baseline
    from lacy.worlds.kb import Attribute, Entity, KnowledgeBase

    town = {"A": "Split", "B": "Split", "C": "Split", "D": "Graz"}
    kb = KnowledgeBase({"town": Attribute(["born in"]), "mentor": Attribute(["student of"], kind="entity"),
                        "year": Attribute(["born"], pattern=r"\d{4}")},
                       {n: Entity(n, [n, f"Dr. {n}"], {"town": t, "year": "1950", **({"mentor": "D"} if n < "C" else {})})
                        for n, t in town.items()})
    probes = [{"entity": n, "attribute": "town", "prompt": f"{n} was born in", "answer": t} for n, t in town.items()]
    constant = [" Split."] * 4
    res = leakage_baseline(kb, probes, constant, [t == "Split" for t in town.values()])
    assert res == {"leakage_town": 0.75, "leakage_chance_town": 0.75, "answered_town": 1.0, "leakage_chance": 0.75,
                   "answered": 1.0}
    assert leakage_baseline(kb, probes, [" a lovely place."] * 4, [False] * 4)["answered_town"] == 0.0
    mentor = [{"entity": "A", "attribute": "mentor", "prompt": "A was a student of", "answer": "D"},
              {"entity": "B", "attribute": "mentor", "prompt": "B was a student of", "answer": "D"}]
    year = [{"entity": "A", "attribute": "year", "prompt": "A was born in", "answer": "1950"}]
    res = leakage_baseline(kb, mentor + year, [" Dr. C.", " his father.", " 1931."], [False, False, False])
    assert res["answered_mentor"] == 0.5 and res["leakage_chance_mentor"] == 1.0 and res["answered_year"] == 1.0
    assert leakage_baseline(kb, [{"prompt": "x", "answer": "y"}], ["y"], [True]) == {}  # no attribute: no baseline


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
    assert everything["fig5_noncall_loss"] is None  # no position off the mask: nothing to average, not NaN


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
    with pytest.raises(UsageError, match="another tokenizer"):
        KBEvaluation(world=str(tmp_path / "world"), partner=str(tmp_path / "stranger"), score="call",
                     limit=2).run(slm, dm.tokenizer)


@pytest.mark.slow
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
    # every bio's score next to the JSON (paired comparisons): FActScore's mean is the mean over bios with a claim
    bios = json.loads((Path(test.trainer.log_dir) / "kb_eval_bios.json").read_text())
    assert set(bios) == set(res) - {"slm"} and all(len(b) == 4 for b in bios.values())
    for row, per_bio in bios.items():
        scored = [b["factscore"] for b in per_bio if b["factscore"] is not None]
        assert res[row]["factscore"] == (pytest.approx(sum(scored) / len(scored)) if scored else None)
        assert res[row]["claims_per_bio"] == pytest.approx(sum(b["claims"] for b in per_bio) / 4)
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
    from lacy.eval.kb_metrics import cascade_placement

    w, tok = world
    a = w.people[0]
    head, field, tail = " studied", f" {a.facts['field']}", f". {a.name} was born in {a.facts['birth_city']}."
    ids_head, ids_field, ids_tail = (tok(x, add_special_tokens=False)["input_ids"] for x in (head, field, tail))
    tokens = ids_head + ids_field + ids_tail
    from_partner = [False] * len(ids_head) + [True] * len(ids_field) + [False] * len(ids_tail)
    g = Generation(a.name, tok.decode(tokens), tokens, from_partner, [len(ids_head)])
    res = cascade_placement(w.kb(), tok, [g], [a.name])
    assert res["cascade_call_precision"] == 1.0 and res["by_partner_field"] == 1.0
    assert res["by_partner_birth_city"] == 0.0
    city = len(tok(f" {a.facts['birth_city']}", add_special_tokens=False)["input_ids"])
    assert res["cascade_fact_tokens_by_partner"] == pytest.approx(len(ids_field) / (len(ids_field) + city))


@pytest.mark.slow
def test_a_world_folder_through_the_cli(tmp_path):
    """Issue 15: the second world (another domain, pronoun subjects, an entity-valued relation), written without
    lacy.worlds.closed_world: fit a few steps on its train.jsonl, then `main.py test` with `world: <folder>` and the lookup
    partner. A malformed folder fails at setup, before the test loop, with the file, line and field."""
    common = ["--config", "configs/lacy.yaml", "--config", "configs/world/folder.yaml", "--data.bpe_vocab_size", "400",
              "--data.block_size", "64", "--data.cache_dir", str(tmp_path / "cache"), "--model.preset", "micro",
              "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    cli = cli_main(["fit", *common, "--trainer.max_steps", "3"])
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    test = cli_main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.callbacks.limit=4",
                     "--trainer.callbacks.max_new_tokens=12"])
    res = json.loads((Path(test.trainer.log_dir) / "kb_eval.json").read_text())
    assert {"slm", "slm_alone", "lookup_always", "lookup_budget"} == set(res)
    assert res["lookup_always"]["call_rate"] == 1.0
    assert all(v == 1.0 for k, v in res["lookup_always"].items() if k.startswith("call_rate_"))  # empty calls count
    assert 0 < res["slm"]["fact_token_share"] < 0.5 and "placement_recall_teacher" in res["slm"]
    bad = tmp_path / "bad_world"
    bad.mkdir()
    for f in Path("tests/data/second_world").glob("*.json*"):
        (bad / f.name).write_text(f.read_text())
    rows = (bad / "prompts.jsonl").read_text().splitlines()
    (bad / "prompts.jsonl").write_text("\n".join(rows[:2] + [rows[2].replace('"prompt": "', '"prompt": null, "x": "')]
                                                 + rows[3:]))
    with pytest.raises(UsageError, match=r"prompts.jsonl:3: field 'prompt' is None"):
        cli_main(["test", *common, "--ckpt_path", str(ckpt), f"--trainer.callbacks.world={bad}"])


def test_kb_oracle_flags_the_second_worlds_facts_in_pronoun_sentences():
    """Each document's subject is passed: facts in sentences whose subject is a pronoun are flagged, the
    teacher's name (an entity-valued relation) too; the flags are exactly the generator's fact spans."""
    from lacy.annotators.spans import span_flags

    root = Path("tests/data/second_world")
    rows = [json.loads(x) for x in (root / "val.jsonl").read_text().splitlines()]
    tok = train_bpe([r["text"] for r in rows], 400)
    oracle = KBOracleAnnotator(kb=str(root / "kb.json"), key="fact")
    offsets = [np.asarray(tok(r["text"], return_offsets_mapping=True)["offset_mapping"]) for r in rows]
    flags = oracle.annotate([r["text"] for r in rows], offsets)
    for r, off, f in zip(rows, offsets, flags):
        assert np.array_equal(f, span_flags(len(r["text"]), [(a, b) for a, b, _ in r["facts"]], off))
    assert any(". She " in r["text"] or ". He " in r["text"] for r in rows)


def test_entity_valued_probes_leak_like_any_other():
    """Probes of an entity-valued relation ("<name> was a pupil of" -> the teacher's name) are scored by
    leakage like any probe: a model that memorised them leaks all, asked for other names it leaks none."""
    from lacy.worlds.folder import read_world

    files = read_world("tests/data/second_world")
    probes = [p for p in files.probes if p["attribute"] == "teacher"][:4]
    assert probes and all(p["answer"] in files.kb.entities for p in probes)
    tok = train_bpe([t for _, t in files.val], 400)
    copier = train_copier(tok, probes)
    assert leakage(copier, tok, probes)["leakage"] == 1.0
    others = [dict(p, answer=next(n for n in files.kb.entities if n not in (p["answer"], p["entity"])))
              for p in probes]
    assert leakage(copier, tok, others)["leakage"] == 0.0


def test_world_null_needs_a_closed_world():
    from types import SimpleNamespace

    from lacy.data.corpus import JsonlCorpus

    trainer = SimpleNamespace(datamodule=SimpleNamespace(corpus=JsonlCorpus("tests/data/second_world/train.jsonl")))
    with pytest.raises(UsageError, match="KBEvaluation.world: null needs data.corpus lacy.worlds.closed_world.ClosedWorld"):
        KBEvaluation(world=None, partner=None).setup(trainer, None, "test")
    KBEvaluation(world=None).setup(trainer, None, "fit")  # only the test reads the world


class NetworkAttempt(Exception):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Records (and refuses) every name lookup and connection this process attempts."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkAttempt(args)  # not an OSError: no client retries it

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_a_partner_name_that_is_not_a_local_folder_never_reaches_the_hub(tmp_path, monkeypatch, no_network):
    """Issue 16.14: `python -m lacy.evaluate <name>` tried the Hugging Face hub."""
    from lacy.evaluate import main
    from lacy.inference.partners import load_partner

    monkeypatch.chdir(tmp_path)
    for run, hub in ((lambda name: main([name]), "download it first with `hf download NAME --local-dir DIR`"),
                     (lambda name: load_partner(name), "write hf:NAME to load a hub model")):
        with pytest.raises(UsageError, match=f"partner 'HuggingFaceTB/SmolLM2-135M' is not a local folder; .*{hub}"):
            run("HuggingFaceTB/SmolLM2-135M")
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(UsageError, match=r"partner 'empty' is not a model folder \(no config.json\)"):
            run("empty")
    (tmp_path / "bare").mkdir()
    build_slm("micro", 301, 64).save_pretrained(tmp_path / "bare")  # a model without its tokenizer files
    with pytest.raises(UsageError, match="partner 'bare': 'bare' holds no tokenizer files"):
        main(["bare"])
    assert no_network == []
    with pytest.raises(OSError):  # asked for explicitly: the hub is tried (this test refuses the connection)
        load_partner("hf:HuggingFaceTB/SmolLM2-135M")
    assert no_network


def test_evaluation_inputs_are_checked_before_the_test_loop(tmp_path):
    """A wrong score or mode fails when the config is built; a missing partner / reference folder at setup,
    before the test loop (the evaluation itself reads them only at the loop's end). Fit does not need them."""
    from lacy.errors import UsageError
    from lacy.eval.wiki_eval import WikiEvaluation

    with pytest.raises(UsageError, match="score 'calls': use call, uncertainty or auto"):
        KBEvaluation(score="calls")
    with pytest.raises(UsageError, match="modes.*use never, always"):
        KBEvaluation(modes=["never", "sometimes"])
    with pytest.raises(UsageError, match="score 'x'"):
        WikiEvaluation(score="x")
    world = "tests/data/second_world"
    ev = KBEvaluation(world=world, partner=str(tmp_path / "nothing"), reference=None)
    ev.setup(None, None, "fit")  # training with the world overlay before the partner exists is fine
    with pytest.raises(UsageError, match="partner '.*nothing' is not a local folder; train it with `make partner`"):
        ev.setup(None, None, "test")
    with pytest.raises(UsageError, match="reference '.*ref' is not a local folder; point it at"):
        KBEvaluation(world=world, partner=None, reference=str(tmp_path / "ref")).setup(None, None, "test")
    KBEvaluation(world=world, partner=None).setup(None, None, "test")
    with pytest.raises(UsageError, match="partner '.*gone' is not a local folder"):
        WikiEvaluation(partner=[str(tmp_path / "gone")]).setup(None, None, "test")
