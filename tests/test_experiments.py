"""The studies' generated configs resolve through the real CLI to what the studies mean."""
import json

import numpy as np
import pytest
import torch
import yaml

from experiments.closed_world import STUDIES, SWEEP, dense_specs, run_specs, write_configs
from experiments.report import report
from experiments.runner import read_config
from lacy.cli import cli_main
from lacy.errors import UsageError
from lacy.annotators.spacy_facts import LATER_RULES

DEFAULT = STUDIES["default"]
PARTNER = DEFAULT["partner"]


def printed(paths, capsys, command="fit") -> dict:
    """The config the CLI resolves from these --config files (``--print_config``)."""
    with pytest.raises(SystemExit) as e:
        cli_main([command, *[a for p in paths for a in ("--config", str(p))], "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def resolved(spec, tmp_path, capsys, study=DEFAULT) -> dict:
    return printed(write_configs(spec, tmp_path / spec["name"], study), capsys)


def by_class(items) -> dict:
    """{class name (the last part of its class_path): init_args} of a resolved list of callbacks / annotators."""
    return {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in items or []}


@pytest.mark.parametrize("name", ["rho1-s2", "lacy_true_mask-s1", "lacy_rate0.03-s1", "lacy_facts0.3-s1"])
def test_study_configs(name, tmp_path, capsys):
    spec = next(s for s in run_specs() if s["name"] == name)
    cfg = resolved(spec, tmp_path, capsys)
    callbacks = by_class(cfg["trainer"]["callbacks"])
    assert cfg["seed_everything"] == spec["seed"]
    # the paper's equaliser; a fact_fraction budget calls a varying share, so its seen tokens are planned instead
    budget = ({"max_tokens": round(600 * 8 * 256 / (1 - 0.3 * 0.161)), "count": "seen"} if "facts" in name else
              {"max_tokens": 600 * 8 * 256, "count": "gradient"})
    assert callbacks["TokenBudget"] == dict(budget, global_batch_size=None)
    ev = callbacks["KBEvaluation"]
    assert ev["partner"] == PARTNER and ev["out"] == str(tmp_path / name / "kb_eval.json")
    assert cfg["data"]["corpus"]["class_path"] == "lacy.ClosedWorld"
    assert ev["modes"] == ["never", "budget"] and ev["reference"] is None  # no Vanilla fitted in tmp_path
    if name == "rho1-s2":
        assert callbacks["Rho1"]["reference"] == PARTNER and ev["sweep"] is None
    if name == "lacy_true_mask-s1":
        assert [a["init_args"]["key"] for a in cfg["data"]["annotators"]] == ["fact"]
    if name == "lacy_rate0.03-s1":
        assert callbacks["LaCy"]["call_rate"] == 0.03 and cfg["model"]["fig5_call_rate"] == 0.15
    if name == "lacy_facts0.3-s1":
        assert callbacks["LaCy"]["fact_fraction"] == 0.3
    swept = [s["name"] for s in run_specs() if s["sweep"]]
    assert len(swept) == 9 and all(n.endswith("-s1") and "_rate" not in n and "_facts" not in n for n in swept)
    assert SWEEP


@pytest.mark.parametrize("name", ["lacy_full-s3", "lacy_true_mask-s1", "vanilla-s5", "spacy_only-s2"])
def test_dense_study_configs(name, tmp_path, capsys):
    """Issue 14: the dense world, five seeds of the main methods, the full-softmax objective variant, the
    paper's argmax rule next to the 22% budget, the sweep on seed 1, the same gradient tokens for every run;
    the spaCy rules the study started with (the later ones off, whatever the configs' defaults become)."""
    specs = dense_specs()
    first = specs[:5 * 6 + 4]  # issue 14's runs first, in their order; then issue 27's
    assert [s["seed"] for s in first] == sorted(s["seed"] for s in first)
    assert sorted(s["name"] for s in specs if s["sweep"]) == sorted(
        f"{m}-s1" for m in ("vanilla", "loss_only", "spacy_only", "lacy", "lacy_true_mask", "lacy_full"))
    spec = next(s for s in specs if s["name"] == name)
    cfg = resolved(spec, tmp_path, capsys, STUDIES["dense"])
    callbacks = by_class(cfg["trainer"]["callbacks"])
    assert cfg["seed_everything"] == spec["seed"]
    assert callbacks["TokenBudget"] == dict(max_tokens=600 * 8 * 256, count="gradient", global_batch_size=None)
    world = cfg["data"]["corpus"]["init_args"]
    assert (world["mentor"], world["pronoun_facts"], world["compound"], world["filler"]) == (True, 0.5, 0.8, 0)
    ev = callbacks["KBEvaluation"]
    assert ev["partner"] == "runs/world/dense-partner/hf" and ev["modes"] == ["never", "budget", "argmax"]
    assert cfg["model"]["noncall_softmax"] == ("full" if name == "lacy_full-s3" else "renormalised")
    if name == "lacy_true_mask-s1":
        assert [a["init_args"]["key"] for a in cfg["data"]["annotators"]] == ["fact"] and ev["sweep"] == SWEEP
    spacy = [a["init_args"] for a in cfg["data"]["annotators"] or []
             if a["class_path"].endswith("SpacyFactAnnotator")]
    assert len(spacy) == (name in ("lacy_full-s3", "spacy_only-s2"))
    for rules in spacy:
        assert rules["relation_nouns"] and rules["trim_entities"]
        assert not any(rules[r] for r in LATER_RULES)


def test_self_feeding_fixes_keep_vanillas_gradient_tokens(tmp_path, capsys):
    """Issue 27: five seeds of each fix, ten of the headline pair; every variant's ground-truth-gradient tokens
    are Vanilla's: warm-up inside LaCy's own budget, a warm start as a 40% Vanilla part plus a 60% LaCy part."""
    from experiments.closed_world import BASE_STEPS, BATCH, BLOCK, warm_start_part

    specs = {s["name"]: s for s in dense_specs()}
    for fix in ("lacy_warmup0.2", "lacy_warmup0.4", "lacy_random0.3", "lacy_warmstart0.4", "spacy_ref"):
        assert [n for n in specs if n.startswith(fix + "-s")] == [f"{fix}-s{i}" for i in range(1, 6)]
    assert {n for n in specs if n.split("-s")[0] in ("lacy", "vanilla")} == {
        f"{m}-s{i}" for m in ("lacy", "vanilla") for i in range(1, 11)}
    budget = BASE_STEPS * BATCH * BLOCK
    warm = resolved(specs["lacy_warmup0.2-s3"], tmp_path / "w", capsys, STUDIES["dense"])
    warm = by_class(warm["trainer"]["callbacks"])
    assert warm["LaCy"]["warmup"] == 0.2 and warm["TokenBudget"]["max_tokens"] == budget
    spec = specs["lacy_warmstart0.4-s2"]
    part = warm_start_part(spec)
    assert part["name"] == "vanilla_part0.4-s2" and part["config"] == "vanilla" and part["seed"] == 2
    first = by_class(resolved(part, tmp_path / "p", capsys, STUDIES["dense"])["trainer"]["callbacks"])
    rest = resolved(dict(spec, budget_share=0.6, pretrained="runs/x/hf"), tmp_path / "r", capsys, STUDIES["dense"])
    assert first["TokenBudget"]["max_tokens"] + by_class(rest["trainer"]["callbacks"])["TokenBudget"]["max_tokens"] \
        == budget and first["TokenBudget"]["count"] == "gradient"
    assert rest["model"]["pretrained"] == rest["data"]["tokenizer"] == "runs/x/hf"
    assert "LaCy" in by_class(rest["trainer"]["callbacks"])


def test_fig5_reference_is_the_same_seeds_vanilla(tmp_path, capsys):
    hf = tmp_path / "vanilla-s2" / "lightning_logs" / "version_0" / "hf"
    hf.mkdir(parents=True)
    spec = next(s for s in run_specs() if s["name"] == "lacy-s2")
    write_configs(spec, tmp_path / "lacy-s2", DEFAULT)
    overlay = yaml.safe_load((tmp_path / "lacy-s2" / "study.yaml").read_text())
    assert by_class(overlay["trainer"]["callbacks"])["KBEvaluation"]["reference"] is None  # not fitted yet
    (tmp_path / "vanilla-s2" / "fit.done").touch()
    cfg = resolved(spec, tmp_path, capsys)
    assert by_class(cfg["trainer"]["callbacks"])["KBEvaluation"]["reference"] == str(hf)


@pytest.mark.parametrize("name", ["lacy", "spacy_ref", "llm_judge", "world/dense-partner", "paper/gpt2-334m-lacy"])
def test_a_run_folders_copy_of_a_config_is_what_the_cli_reads(name, tmp_path, capsys):
    """experiments.runner.read_config (the copy a run folder gets: includes and item files expanded) resolves as
    the shipped file does."""
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(read_config(f"configs/{name}.yaml"), sort_keys=False))
    assert printed([copy], capsys) == printed([f"configs/{name}.yaml"], capsys)


def test_a_run_folder_is_self_contained_and_its_changes_are_structured(tmp_path, capsys):
    """The folder's files name no other config (no include, no item file); study.yaml holds the run's changes,
    lists whole; a change to a class the run does not have is refused, not silently dropped."""
    spec = next(s for s in dense_specs() if s["name"] == "spacy_only-s2")
    paths = write_configs(spec, tmp_path / spec["name"], STUDIES["dense"])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["spacy_only.yaml", "dense.yaml", "study.yaml"]
    texts = [yaml.safe_load(open(p)) for p in paths]
    assert not any("config" in t or ".yaml" in str(t) for t in texts)
    study = texts[-1]
    assert set(study) == {"seed_everything", "trainer", "data"} and study["seed_everything"] == 2
    assert [c["class_path"] for c in study["trainer"]["callbacks"]] == [
        "baselines.SpacyOnly", "lacy.ExportHF", "lacy.ModelCheckpoint",
        "lightning.pytorch.callbacks.LearningRateMonitor", "lacy.KBEvaluation", "lacy.TokenBudget"]
    rules = by_class(study["data"]["annotators"])["SpacyFactAnnotator"]
    assert rules["relation_nouns"] and not any(rules[r] for r in LATER_RULES)
    bad = dict(spec, changes={"callbacks": {"LaCy": {"call_rate": 0.1}}})
    with pytest.raises(ValueError, match="no LaCy in callbacks"):
        write_configs(bad, tmp_path / "bad", STUDIES["dense"])


def test_report_aggregates_seeds(tmp_path):
    for seed, fs in ((1, 0.5), (2, 0.7)):
        (tmp_path / f"lacy-s{seed}").mkdir()
        res = {"slm": {"leakage": 0.1 * seed, "leakage_1": 0.0}, "slm_alone": {"factscore": 0.3, "call_rate": 0.0},
               "trained_budget": {"factscore": fs, "call_rate": 0.21},
               "partner_alone": {"factscore": 0.8, "factscore_penalised": 0.7, "leakage": 0.9}}
        if seed == 1:
            res["trained_budget@0.4"] = {"factscore": fs + 0.1, "call_rate": 0.38}
        (tmp_path / f"lacy-s{seed}" / "kb_eval.json").write_text(json.dumps(res))
    text = report(tmp_path).read_text()
    assert "| lacy | 2 | 0.600 ± 0.141 |" in text and "| partner alone | 1 | 0.800 | 0.700 |" in text
    assert "| lacy | 2 | 0.000 ± 0.000 |" in text  # leakage of the 1-document bucket, first column there
    assert "| lacy | 0.300 (0.00) | 0.500 (0.21) | 0.600 (0.38) |" in text  # the seed-1 sweep, by target budget
    assert (tmp_path / "factscore_vs_call_rate.png").exists() and (tmp_path / "factscore_vs_leakage.png").exists()


def test_report_pairs_methods_by_seed_and_prompt(tmp_path):
    """LaCy - Vanilla from the bios' scores: per seed by hand, the interval around it, the argmax rows' table."""
    bios = {("lacy", 1): [1.0, 0.5, None], ("vanilla", 1): [0.5, 0.5, 0.0],
            ("lacy", 2): [1.0, 1.0, 1.0], ("vanilla", 2): [0.5, 0.5, 0.5]}
    for (method, seed), scores in bios.items():
        folder = tmp_path / f"{method}-s{seed}"
        folder.mkdir()
        mean = sum(x for x in scores if x is not None) / sum(x is not None for x in scores)
        res = {"slm": {"leakage": 0.1}, "trained_budget": {"factscore": mean, "call_rate": 0.22},
               "trained_argmax": {"factscore": 0.4, "call_rate": 0.9 if method == "lacy" else 0.0}}
        (folder / "kb_eval.json").write_text(json.dumps(res))
        (folder / "kb_eval_bios.json").write_text(json.dumps(
            {"trained_budget": [{"entity": f"p{i}", "claims": 1, "factscore": x} for i, x in enumerate(scores)]}))
    text = report(tmp_path).read_text()
    # seed 1: 0.75 - 1/3; seed 2: 1.0 - 0.5; mean 0.458; 2 seeds -> sign-flip p = 2/4
    line = next(l for l in text.splitlines() if l.startswith("| lacy - vanilla | trained partner, 22% |"))
    assert "| 2 | +0.417, +0.500 | +0.458 ± 0.059 |" in line and line.endswith("| 0.500 | n/a |")  # no relations
    lo, hi = (float(x) for x in line.split("[")[1].split("]")[0].split(", "))
    assert 0.2 < lo <= 0.458 <= hi <= 0.75
    assert "| lacy | 2 |  |  |  | 0.875 ± 0.177 | 0.900 ± 0.000 | 0.400 ± 0.000 |" in text  # no TensorBoard here


@pytest.mark.parametrize("name", ["lacy_true_mask-s1", "vanilla-s3"])
def test_a_world_folder_study_trains_on_the_folder_and_evaluates_it(name, tmp_path, capsys):
    """Issue 30 item 5: ``--world-folder DIR``: the folder's train.jsonl, its world and kb.json, the lookup partner."""
    from experiments.closed_world import folder_study

    world = "tests/data/second_world"
    study = folder_study(world, None, seeds=3)
    assert study["out"] == "runs/study-second_world" and len(study["specs"]()) == 15
    spec = next(s for s in study["specs"]() if s["name"] == name)
    cfg = resolved(spec, tmp_path, capsys, study)
    corpus = cfg["data"]["corpus"]
    assert corpus["class_path"] == "lacy.JsonlCorpus" and corpus["init_args"]["path"] == f"{world}/train.jsonl"
    ev = by_class(cfg["trainer"]["callbacks"])["KBEvaluation"]
    assert ev["world"] == world and ev["partner"] is None and ev["modes"] == ["never", "budget", "argmax"]
    assert (ev["sweep"] is not None) == (spec["seed"] == 1)
    annotators = by_class(cfg["data"]["annotators"])
    if name.startswith("lacy_true_mask"):
        oracle = {k: v for k, v in annotators["KBOracleAnnotator"].items() if k != "chunk_docs"}
        assert oracle == {"kb": f"{world}/kb.json", "key": "fact"}
    with pytest.raises(UsageError, match="kb.json"):
        folder_study(str(tmp_path), None, 1)


def test_report_of_a_world_without_a_trained_partner(tmp_path):
    """Issue 30 item 5: a world folder's study (lookup partner only): its own relations, the lookup and argmax
    rows, the leakage baseline, and n/a where there was nothing to score."""
    (tmp_path / "vanilla-s1").mkdir()
    res = {"slm": {"leakage": 0.5, "leakage_chance": 0.75, "answered": 1.0, "leakage_town": 0.5,
                   "leakage_chance_town": 0.75, "answered_town": 1.0},
           "slm_alone": {"factscore": None, "call_rate": 0.0},
           "lookup_budget": {"factscore": 0.9, "call_rate": 0.22, "claims_town": 1.5, "supported_town": 0.8,
                             "claims_town|year": 0.1, "top_relation_share": 0.94},
           "lookup_argmax": {"factscore": None, "call_rate": 0.0}}
    (tmp_path / "vanilla-s1" / "kb_eval.json").write_text(json.dumps(res))
    text = report(tmp_path).read_text()
    main = next(l for l in text.splitlines() if l.startswith("| vanilla (confidence cascade) | 1 |"))
    assert main.split(" | ")[2:8] == ["", "", "0.900", "n/a", "0.500", "0.750"]  # no trained partner; n/a alone
    assert "No trained partner in these runs" in text.splitlines()[3]
    assert "## Per relation (lookup partner, 22% calls)" in text and "| town | top relation's share" in text
    assert "| vanilla (confidence cascade) | 1 | 1.500 | 0.940 |" in text  # the ambiguous "town|year": no column
    assert "| vanilla (confidence cascade) | 1 | 0.500 | 0.750 | 1.000 |" in text  # leakage per relation
    assert "| vanilla (confidence cascade) | 1 |  |  |  |  |  |  | 0.900 | n/a |" in text  # argmax, lookup partner


def test_report_names_the_relation_that_carries_a_comparison():
    """Issue 30: a difference that one relation carries is flagged. By hand, pooled claim precision (2 claims per bio
    of each relation): A = (2 x 1.0 + 2 x 0.5) / 4 = 0.75, B = (2 x 0.0 + 2 x 0.25) / 4 = 0.125, A - B = +0.625;
    without city: 0.5 - 0.25 = +0.25 (under half: flagged); without job: 1.0 - 0.0 = +1.0."""
    from experiments.report import relation_carrier

    row = lambda city, job: {"claims_per_bio": 4, "claims_city": 2, "supported_city": city, "claims_job": 2,
                             "supported_job": job}
    assert relation_carrier([row(1.0, 0.5)], [row(0.0, 0.25)]) == "city: +0.625 -> +0.250 without it"
    assert relation_carrier([row(1.0, 1.0)], [row(0.5, 0.5)]) == "no"  # +0.5 with or without either relation
    only = lambda s: {"claims_city": 2, "supported_city": s}
    assert relation_carrier([only(1.0)], [only(0.5)]) == "city: every claim"
    assert relation_carrier([{}], [{}]) == "n/a"  # nothing to score


@pytest.mark.parametrize("method", ["rho1", "lacy"])
def test_real_text_configs(method, tmp_path, capsys):
    from experiments import real_text

    cfg = printed(real_text.write_configs(method, 2, tmp_path / f"{method}-s2"), capsys)
    callbacks = by_class(cfg["trainer"]["callbacks"])
    assert cfg["seed_everything"] == 2 and cfg["data"]["corpus"]["class_path"] == "lacy.WikiSummaries"
    assert callbacks["TokenBudget"]["max_tokens"] == 600 * 8 * 256
    ev = callbacks["WikiEvaluation"]
    assert ev["partner"] == [real_text.PARTNER, "smollm2"] and ev["judge_limit"] == real_text.JUDGE_LIMIT
    assert ev["judge"]["class_path"] == "baselines.HFJudge" and ev["out"] == str(tmp_path / f"{method}-s2" /
                                                                                 "wiki_eval.json")
    if method == "rho1":
        assert callbacks["Rho1"]["reference"] == real_text.PARTNER


def test_real_text_partner_reference_configs(tmp_path, capsys):
    """The reference run tests the partner (its own preset) with SmolLM2 writing every token."""
    from experiments import real_text

    cfg = printed(real_text.write_configs("vanilla", 1, tmp_path / "partners", partner_alone=True), capsys, "test")
    ev = by_class(cfg["trainer"]["callbacks"])["WikiEvaluation"]
    assert cfg["model"]["preset"] == "small" and ev["partner"] == "smollm2" and ev["modes"] == ["never", "always"]


def test_real_text_report_orders_methods_and_quotes_a_bio(tmp_path):
    from experiments.real_text import report

    for run, leak in (("partners", 0.5), ("lacy-s1", 0.0), ("vanilla-s1", 0.25)):
        (tmp_path / run).mkdir()
        rows = {"slm": {"year_leakage": leak}, "slm_alone": {"ne_precision": 0.5, "named_entities": 4}}
        (tmp_path / run / "wiki_eval.json").write_text(json.dumps(rows))
    bios = {"slm_alone": [{"title": "Ann Lee", "text": " was a [nurse]."}], "partner_budget": []}
    (tmp_path / "partners" / "wiki_eval_bios.json").write_text(json.dumps(bios))
    lines = report(tmp_path).read_text().splitlines()
    table = [line.split(" | ")[0] for line in lines if line.startswith("| ") and "slm_alone" in line]
    assert table == ["| vanilla-s1", "| lacy-s1", "| partners"]  # METHODS order, references last
    assert "| vanilla-s1 | 0.250 | slm_alone | 0.500 | 4 |" in "\n".join(lines)
    assert "- **partners** (slm_alone): Ann Lee was a [nurse]." in lines


def test_real_text_report_shows_nothing_scored_as_na(tmp_path):
    from experiments.real_text import report

    (tmp_path / "lacy-s1").mkdir()
    rows = {"slm": {"year_leakage": None}, "slm_alone": {"ne_precision": None, "named_entities": 0, "factscore": None}}
    (tmp_path / "lacy-s1" / "wiki_eval.json").write_text(json.dumps(rows))
    assert "| lacy-s1 | n/a | slm_alone | n/a | 0 |  | n/a |" in report(tmp_path).read_text()


def test_training_scalars_join_a_resumed_fit(tmp_path):
    """A fit resumed into a second Lightning version continues the same curve: last and mean over both."""
    from torch.utils.tensorboard import SummaryWriter

    from experiments.report import training_scalars

    for version, steps in ((0, (10, 20)), (1, (30,))):
        w = SummaryWriter(str(tmp_path / "lightning_logs" / f"version_{version}"))
        for step in steps:
            w.add_scalar("train/gradient_tokens", step * 100, step)
            w.add_scalar("train/calls_per_fact", step / 100, step)
        w.close()
    got = training_scalars(tmp_path)
    assert got["train/gradient_tokens"] == 3000 and got["train/calls_per_fact"] == pytest.approx(0.2)


def test_flag_recall_of_the_oracle_is_one_for_every_relation():
    import torch

    from baselines.kb_oracle import KBOracleAnnotator
    from experiments.flag_recall import first_token_loss, flag_recall
    from lacy.worlds.fact_masks import PlacementDocs
    from lacy.model.gpt2 import build_slm
    from lacy.data.tokenizer import train_bpe
    from lacy.worlds.closed_world import ClosedWorld

    w = ClosedWorld(people=12, max_docs=3, val_docs=6)
    tok = train_bpe(w.bpe_documents(), 600)
    res = flag_recall(w, tok, {"oracle": KBOracleAnnotator(key="fact")}, docs=6)["oracle"]
    assert res.pop("_precision") == 1.0 and set(res) <= set(w.kb().attributes) and set(res.values()) == {1.0}
    torch.manual_seed(0)
    docs = PlacementDocs.build(w.kb(), tok, [(p.name, d) for p, d in w.val_documents()])
    loss = first_token_loss(build_slm("micro", len(tok), 256).eval(), docs)
    assert set(loss) == {r for rel in docs.relations for r in rel} and all(0 < v < 20 for v in loss.values())


def test_claim_sources_split_partner_and_slm_claims():
    """A bio where the partner wrote the field after "studied" and the SLM wrote a field value in a city slot."""
    from experiments.claim_sources import claim_sources
    from lacy.inference.cascade import Generation
    from lacy.data.tokenizer import train_bpe
    from lacy.worlds.closed_world import ClosedWorld

    w = ClosedWorld(people=12, max_docs=3, val_docs=6)
    tok = train_bpe(w.bpe_documents(), 600)
    a = w.people[0]
    other = next(f for f in sorted({p.facts["field"] for p in w.people}) if f != a.facts["field"])
    parts = [(" studied", False), (f" {a.facts['field']}", True), (f". {a.name} has an office in", False),
             (f" {other}", False), (".", False)]
    tokens, from_partner = [], []
    for text, partner in parts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens += ids
        from_partner += [partner] * len(ids)
    g = Generation(a.name, tok.decode(tokens), tokens, from_partner, [])
    by_context, slm_values = claim_sources([g], [{"entity": a.name}], w.kb(), tok, "field")
    assert by_context == {("partner", f"{a.name.split()[-1]} studied", True): 1, ("SLM", "office in", False): 1}
    assert slm_values == {(other, False): 1}


@pytest.mark.slow
def test_runner_fits_tests_caches_and_tests_a_model_trained_elsewhere(bios_path, tmp_path):
    """The study's unit of work through the real `main.py`: fit + test once, cached after; `checkpoint=` tests
    a model trained in another folder without fitting."""
    from experiments.runner import fit_and_test, last_checkpoint

    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(yaml.safe_dump({
        "data": {"corpus": {"class_path": "lacy.data.corpus.JsonlCorpus", "init_args": {"path": str(bios_path)}},
                 "bpe_vocab_size": 300, "block_size": 32, "batch_size": 4, "val_fraction": 0.1,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"preset": "micro"},
        "trainer": {"max_steps": 100, "limit_val_batches": 1, "limit_test_batches": 1}}))
    configs = ["configs/vanilla.yaml", str(overlay)]
    run = tmp_path / "run"
    run.mkdir()
    assert fit_and_test(run, configs, "timing.json").startswith("run: done")
    assert (run / "fit.done").exists() and last_checkpoint(run).name == "last.ckpt"
    assert fit_and_test(run, configs, "timing.json") == "run: cached"
    ref = tmp_path / "reference"
    ref.mkdir()
    assert fit_and_test(ref, configs, "timing.json", checkpoint=last_checkpoint(run)).startswith("reference: done")
    assert not (ref / "fit.done").exists() and not (ref / "lightning_logs").exists()
    assert list((ref / "test" / "lightning_logs").glob("version_0/events.out.tfevents*"))


def test_report_leaves_out_what_was_not_scored(tmp_path):
    """A run whose bios made no claim (factscore null) counts as no value in the mean, the sweep and the plots."""
    for seed, fs in ((1, None), (2, 0.7)):
        (tmp_path / f"lacy-s{seed}").mkdir()
        res = {"slm": {"leakage": 0.2, "leakage_1": 0.0}, "slm_alone": {"factscore": None, "call_rate": 0.0},
               "trained_budget": {"factscore": fs, "call_rate": 0.21},
               "trained_budget@0.4": {"factscore": 0.5, "call_rate": 0.38}}
        (tmp_path / f"lacy-s{seed}" / "kb_eval.json").write_text(json.dumps(res))
    text = report(tmp_path).read_text()
    assert "| lacy | 2 | 0.700 |" in text  # the other seed's value alone, not (0 + 0.7) / 2
    assert "| lacy | 0.500 (0.38) |" in text  # the sweep: seed 1's unscored rows have no point
    assert (tmp_path / "factscore_vs_leakage.png").exists()


def test_fact_flags_gold_words_drop_repeats():
    from experiments.fact_flags import gold_words

    text = "Ann Lee met Ann in Paris."
    offsets, fact = gold_words(text, [(0, 7), (12, 15), (19, 24)])
    assert [text[a:b] for a, b in offsets] == ["Ann", "Lee", "met", "Ann", "in", "Paris"]
    assert fact.tolist() == [True, True, False, False, False, True]  # the second "Ann" can be copied


@pytest.mark.slow
def test_fact_flags_measure_a_labelled_file_and_a_world_folder(tmp_path, capsys):
    from experiments.fact_flags import main, measure, read_source
    from lacy.annotators.spacy_facts import SpacyFactAnnotator
    from lacy.worlds.kb import Attribute, Entity, KnowledgeBase

    labelled = tmp_path / "labels.jsonl"
    text = "She was a physicist and a chemist."
    labelled.write_text(json.dumps({"split": "test", "topic": "People", "text": text,
                                    "facts": [[10, 19, "fact"], [26, 33, "fact"]]}) + "\n"
                        + json.dumps({"split": "dev", "topic": "Arts", "text": "x", "facts": []}) + "\n")
    docs = read_source(labelled, "test")
    assert docs == [(text, [(10, 19), (26, 33)])] == read_source(labelled, topic="People")
    assert read_source(labelled, topic="!People") == [("x", [])] and len(read_source(labelled)) == 2
    assert read_source(labelled, "dev,test") == [*docs, ("x", [])] and read_source(labelled, "test2,test3") == []
    only_physicist = SpacyFactAnnotator(entity_labels=[], pos_tags=[], keywords=["physicist"], relation_nouns=False,
                                        coordinated_values=False)  # on, it would add "chemist" (listed with it)
    got = measure(only_physicist, docs)
    assert (got["precision"], got["recall"], got["facts"], got["flagged"], got["words"]) == (1.0, 0.5, 2, 1, 7)

    world = tmp_path / "world"
    world.mkdir()
    KnowledgeBase({"instrument": Attribute(["plays the"])},
                  {"Ann Lee": Entity("Ann Lee", ["Ann Lee"], {"instrument": "cello"})}).save(world / "kb.json")
    rows = [{"entity": "Ann Lee", "text": "Ann Lee plays the cello. Ann Lee was happy."},  # facts from the KB checker
            {"entity": "Ann Lee", "text": "She plays the cello.", "facts": [[14, 19, "instrument"]]}]
    (world / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = read_source(world)
    assert docs[0][1] == [(18, 23), (0, 7), (25, 32)] and docs[1][1] == [(14, 19)]
    got = measure(SpacyFactAnnotator(), docs)
    assert (got["facts"], got["flagged"], got["precision"], got["recall"]) == (4, 4, 1.0, 1.0)  # Ann Lee cello, cello
    main([str(labelled), "--split", "test"])
    table = capsys.readouterr().out
    assert f"| {labelled} (test) | 1 | 2 / 7 | before (entities, PROPN/NUM, keywords) | 1.000 | 1.000 |" in table


def test_plain_generate_counts_call_tokens_when_let_through(tmp_path, capsys):
    """experiments.plain_generate lets <CALL> through the export's suppression: a model whose <CALL> is the top
    token everywhere writes only <CALL> (share 1); the same export with a vocabulary whose <CALL> row is turned
    away from every hidden state never writes it (share 0)."""
    from experiments.plain_generate import call_share
    from lacy.io.export import export_hf, tokenizer_files
    from lacy.data.tokenizer import train_bpe
    from tests.helpers import make_bios
    from tests.helpers import call_saturated_model

    tok = train_bpe(make_bios(60), 300)
    model = call_saturated_model(len(tok))
    export_hf(model, tokenizer_files(tok), tmp_path / "always")
    got = call_share(tmp_path / "always", ["Anna Novak", "Bo Dahl was"], max_new_tokens=6)
    assert got["call_share"] == 1.0 and got["first_call"] == 1.0 and got["example"].startswith("Anna Novak<CALL>")
    with torch.no_grad():
        model.transformer.wte.weight[-1] *= -1  # <CALL> now has the lowest logit everywhere
    export_hf(model, tokenizer_files(tok), tmp_path / "never")
    assert call_share(tmp_path / "never", ["Anna Novak"], max_new_tokens=6)["call_share"] == 0.0
    # a real-text run folder (--wiki): its newest export, the held-out people's "<name> was" prompts
    from experiments.plain_generate import main

    run = tmp_path / "run"
    export_hf(model, tokenizer_files(tok), run / "lightning_logs" / "version_0" / "hf")
    capsys.readouterr()
    main([str(run), "--wiki", "--prompts", "2", "--max-new-tokens", "3"])
    got = json.loads(capsys.readouterr().out)
    assert got["run"] == str(run) and got["call_share"] == 0.0 and " was" in got["example"]
    with pytest.raises(UsageError, match="no Hugging Face export"):
        main([str(tmp_path / "nothing"), "--wiki"])


def test_popularity_rule_calls_the_highest_loss_facts_per_bucket():
    """experiments.popularity: per bucket, the mean loss at its fact tokens (as lacy.eval.kb_eval computes it) and
    the share the rule calls: the rate x targets fact tokens of highest loss; all facts when the rate allows."""
    import numpy as np

    from experiments.popularity import by_popularity
    from lacy.worlds.fact_masks import PlacementDocs
    from lacy.eval.kb_metrics import _target_losses
    from lacy.model.gpt2 import build_slm

    torch.manual_seed(0)
    model = build_slm("micro", 50, 32).eval()
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 49, 20) for _ in range(3)]
    fact = [np.arange(20) % 3 == 0 for _ in range(3)]  # 7 fact tokens a document
    docs = PlacementDocs(ids, fact, [f & False for f in fact], [1, 12, 1], [{} for _ in ids])
    with torch.no_grad():
        losses = [_target_losses(model, i)[1].numpy() for i in ids]
    got = by_popularity(model, docs, rate=1.0)  # k = every fact
    assert {b: v["rule"] for b, v in got.items()} == {"1": 1.0, "10+": 1.0}
    assert got["1"]["tokens"] == 14 and got["10+"]["tokens"] == 7  # fact[t] flags target t: 19 targets a doc
    assert np.isclose(got["10+"]["loss"], losses[1][fact[1][:19]].mean())
    one = by_popularity(model, docs, rate=1 / 57)  # k = round(57 / 57) = 1: the single highest-loss fact
    top = max(range(3), key=lambda d: losses[d][fact[d][:19]].max())
    assert one["10+" if top == 1 else "1"]["rule"] > 0 and sum(v["rule"] * v["tokens"] for v in one.values()) == 1


@pytest.mark.parametrize("module", ["experiments.plain_generate", "experiments.popularity"])
def test_run_tools_refuse_a_run_without_an_export_before_any_work(module, tmp_path, capsys):
    """Every run folder is checked first: one line naming the folder and the fix, exit 2."""
    import importlib

    from lacy.errors import entry_point

    (tmp_path / "lacy-s1").mkdir()
    with pytest.raises(SystemExit) as done:
        entry_point(lambda: importlib.import_module(module).main([str(tmp_path / "lacy-s1")]))()
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith(f"lacy: error: {tmp_path / 'lacy-s1'}: no Hugging Face export")


def test_call_words_masks_line_up_with_the_targets_call_placement_scores():
    """experiments/call_words.py: an oracle whose <CALL> logit is high exactly where the next token is a
    hand-labelled fact word (by position) chooses only fact words at the fact share (precision 1, recall 1): the masks are
    aligned with the targets, not shifted by the EOS that opens each sentence."""
    from types import SimpleNamespace

    from experiments.call_words import masks
    from lacy.data.tokenizer import train_bpe
    from lacy.eval.kb_metrics import call_placement

    rows = [{"text": "Ann Lee was born in Paris in 1950.", "facts": [[0, 7, "fact"], [20, 25, "fact"], [29, 33, "fact"]]},
            {"text": "She studied law at Leiden.", "facts": [[12, 15, "fact"], [19, 25, "fact"]]}]
    tok = train_bpe([r["text"] for r in rows] * 3, 280)
    docs = masks(tok, rows)
    def labels(row):  # by hand: a token is a fact word when its characters overlap a labelled span
        offsets = tok(row["text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [any(a < e and s < b for s, e, _ in row["facts"]) for a, b in offsets]

    hand = iter(labels(r) for r in rows)

    class Oracle(torch.nn.Module):  # knows each sentence's labels, in the order call_placement reads them
        config = SimpleNamespace(max_position_embeddings=64)

        def forward(self, input_ids):  # position t predicts token t+1: its <CALL> logit is high before a fact word
            logits = torch.zeros(*input_ids.shape, len(tok))
            logits[0, :-1, -1] = torch.where(torch.as_tensor(next(hand)), 5.0, -5.0)
            return SimpleNamespace(logits=logits)

    share = float(np.concatenate(docs["hand"].fact).mean())
    res = call_placement(Oracle(), docs["hand"], rate=share, score="call")
    assert res["placement_precision"] == 1.0 and res["placement_recall"] == 1.0
    assert res["fact_token_share"] == pytest.approx(share)
    assert np.concatenate(docs["spacy"].fact).any()  # spaCy flags some of these words (Paris, 1950, Leiden)


def test_pretrained_real_text_report_pairs_rows_bio_by_bio(tmp_path):
    """Two models' rows written by hand; per-bio NE precision (spaCy): Ada 3/5 vs 1/2, Otto 1/3 in both."""
    from experiments.pretrained_real_text import report
    from lacy.eval.factscore import KnowledgeSource

    ks = KnowledgeSource.build([("Ada Brandt", "Ada Brandt was a French physicist. She was born in Lyon in 1931. "
                                 "She taught at Leeds."), ("Otto Voss", "Otto Voss designed the Ghent library.")],
                               tmp_path / "ks.sqlite")
    otto = {"title": "Otto Voss", "text": " was born in 1950 in [Ghent], Belgium."}
    bios = {"vanilla": [{"title": "Ada Brandt", "text": " was a French physicist born in 1931 in Lyon. She moved to "
                                                        "Madrid in 1975."}, otto],
            "lacy": [{"title": "Ada Brandt", "text": " taught in [Leeds] and lived in Madrid."}, otto]}
    for model, rows in bios.items():
        (tmp_path / model).mkdir()
        (tmp_path / model / "wiki_eval_bios.json").write_text(json.dumps({"slm_alone": rows}))
        (tmp_path / model / "wiki_eval.json").write_text(json.dumps({
            "slm": {"year_leakage": 0.0, "year_probes": 2, "people": 2},
            "slm_alone": {"call_rate": 0.0, "ne_precision": 0.5, "named_entities": 2, "ne_recall": None}}))
    text = report(tmp_path, str(ks.path)).read_text()
    # rescored from the bios (the call rate from wiki_eval.json). Pages: Ada's entities French, Lyon, 1931, Leeds
    # (a year, a place: Leeds), Otto's none. Vanilla: NEs French 1931 Lyon | Ghent of 8 found, recall 3 of Ada's 4,
    # years 1931 of 1931, 1975 (Otto's page states none), places Lyon of Lyon, Madrid, partner word Ghent on the page
    assert "| vanilla | 0.000 (2) | slm_alone | 0.000 | 0.500 (8) | 0.750 (4) | 0.500 (2) | 0.500 (2) | n/a (0) | " \
           "1.000 (1) |  |" in text
    # LaCy: Leeds | Ghent of Leeds, Madrid | 1950, Ghent, Belgium; recall Leeds of 4; no year; Leeds of Leeds, Madrid
    assert "| lacy | 0.000 (2) | slm_alone | 0.000 | 0.400 (5) | 0.250 (4) | n/a (0) | 0.500 (2) | n/a (0) | " \
           "1.000 (2) |  |" in text
    # (1/2 + 1/3) / 2 - (3/5 + 1/3) / 2 = -0.05; resampling 2 people: both Ada -0.1 ... both Otto 0
    assert "| lacy slm_alone | vanilla slm_alone | 2 | -0.050 | [-0.100, +0.000] |" in text
    assert "Bios of the 2 held-out people" in text
