import lightning as L
import numpy as np
import pytest
import torch

from baselines import LossOnly, RandomCalls, Vanilla
from lacy.io.checkpoints import AtomicCheckpointIO
from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.io.export import ExportHF
from lacy.train.module import CallLM
from lacy.train.guards import NonFiniteLossError
from tests.helpers import fit


class Record(L.Callback):
    def __init__(self):
        self.losses, self.calls = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


class DieAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")




@pytest.mark.parametrize("strategies, match", [([], "none"), ([Vanilla(), LossOnly()], "Vanilla")])
def test_zero_or_two_strategies_refuse_to_train(data_kwargs, tmp_path, strategies, match):
    with pytest.raises(ValueError, match=f"exactly one selection strategy.*{match}"):
        fit(data_kwargs, tmp_path, strategies)


def test_training_reduces_loss_and_realises_the_call_rate(data_kwargs, tmp_path):
    rec = Record()
    trainer, model = fit(data_kwargs, tmp_path, [RandomCalls(call_rate=0.2), rec], max_steps=25, lr=1e-2)
    assert rec.losses[-1] < rec.losses[0] - 1.0
    m = trainer.callback_metrics
    assert abs(m["train/call_rate"].item() - 0.2) < 1 / 128  # exact up to rounding of 4 x 32 targets
    assert model.tokens_seen.item() == 25 * 4 * 32
    assert model.gradient_tokens.item() == 25 * 4 * 32 - 25 * round(0.2 * 128)


def test_full_softmax_objective_keeps_call_unlikely_where_it_is_not_the_target(data_kwargs, tmp_path):
    """Issue 14 item 4: under the paper's objective p(<CALL>) only rises; the [ours] "full" form trains it down
    at the 80% of targets that are not calls (same seed, data and calls)."""
    means = {}
    for form in ("renormalised", "full"):
        _, model = fit(data_kwargs, tmp_path / form, [RandomCalls(call_rate=0.2)], max_steps=40, lr=1e-2,
                       model_kw={"noncall_softmax": form})
        dm = CorpusDataModule(**data_kwargs)
        dm.setup("validate")
        batch = next(iter(dm.val_dataloader()))
        with torch.no_grad():
            p_call = torch.softmax(model(batch["input_ids"]), -1)[..., -1]
        means[form] = p_call[batch["labels"] != -100].mean().item()
    # random calls cannot be predicted: the full softmax settles near their 20% share, the paper's form climbs on
    assert means["renormalised"] > 0.5 and means["full"] < 0.35, means


def test_fig5_rule_overlap_of_a_whole_batch_mask_is_the_call_rate(data_kwargs, tmp_path):
    """With the model's own mask covering every target, the rule's calls are exactly the call-rate share of it."""
    dm = CorpusDataModule(**data_kwargs)
    model = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size, fig5_call_rate=1.0)
    trainer = L.Trainer(callbacks=[RandomCalls(call_rate=0.25)], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=2, default_root_dir=tmp_path)
    m = trainer.validate(model, dm)[0]
    assert m["val/call_rate"] > 0.2 and m["val/fig5_rule_overlap"] == pytest.approx(m["val/call_rate"])


def test_resume_continues_the_same_loss_curve(data_kwargs, tmp_path):
    whole = Record()
    fit(data_kwargs, tmp_path / "a", [RandomCalls(), whole], max_steps=8)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=4, save_last=True)
    first = Record()
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(data_kwargs, tmp_path / "b", [RandomCalls(), first, ckpt, DieAt(5)], max_steps=8)
    second = Record()
    fit(data_kwargs, tmp_path / "b", [RandomCalls(), second], max_steps=8, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert len(second.losses) == 4
    assert second.losses == pytest.approx(whole.losses[4:], abs=1e-5)
    assert first.losses[:4] == pytest.approx(whole.losses[:4], abs=1e-6)


def test_non_finite_loss_stops_with_the_step(data_kwargs, tmp_path):
    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    module.model.lm_head.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="at step 2.*No checkpoint was saved before it"):
        fit(data_kwargs, tmp_path, [Vanilla(), Poison()])


def test_non_finite_loss_names_a_checkpoint_from_before_the_bad_step(data_kwargs, tmp_path):
    """An update that diverges at step 2 is checkpointed (step=2, last.ckpt) before its loss is computed: the
    error names the step-1 checkpoint, and resuming from it trains on past step 2."""

    class Diverge(L.Callback):  # the update leading to step 2 makes the weights non-finite
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    module.model.lm_head.weight.fill_(float("inf"))

    every = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", every_n_train_steps=1, save_top_k=-1,
                                                save_last=True)
    with pytest.raises(NonFiniteLossError, match="at step 2") as err:
        fit(data_kwargs, tmp_path, [Vanilla(), Diverge(), every], max_steps=6)
    assert torch.load(tmp_path / "c" / "last.ckpt")["global_step"] == 2  # what the old message named
    named = str(err.value).split("Last good checkpoint: ")[1].split(" (step")[0]
    assert named == str(tmp_path / "c" / "epoch=0-step=1.ckpt") and "(step 1)" in str(err.value)
    trainer, model = fit(data_kwargs, tmp_path, [Vanilla()], max_steps=4, ckpt_path=named)
    assert trainer.global_step == 4 and all(torch.isfinite(p).all() for p in model.parameters())
    # resuming the diverged last.ckpt fails at step 2 again: the message names its folder's step-1 checkpoint
    with pytest.raises(NonFiniteLossError, match=r"at step 2.*c/epoch=0-step=1.ckpt \(step 1\); resume from it") as err:
        fit(data_kwargs, tmp_path / "again", [Vanilla()], max_steps=4, ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    assert "the checkpoint this run resumed from" in str(err.value)  # it says why last.ckpt failed again
    # the step-1 checkpoint gone too: nothing to resume, and the message says not to pass --ckpt_path
    for p in (tmp_path / "c").glob("epoch=0-step=1*.ckpt"):
        p.unlink()
    with pytest.raises(NonFiniteLossError, match=r"No checkpoint was saved before it \(the checkpoint this run "
                                                 r"resumed from .* already gives it.*without --ckpt_path"):
        fit(data_kwargs, tmp_path / "third", [Vanilla()], max_steps=4, ckpt_path=str(tmp_path / "c" / "last.ckpt"))


def test_checkpoint_with_another_vocabulary_is_refused(data_kwargs, tmp_path):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt], max_steps=2)
    other = dict(data_kwargs, bpe_vocab_size=280)
    with pytest.raises(UsageError, match="vocabulary rows"):
        fit(other, tmp_path, [Vanilla()], max_steps=3, ckpt_path=str(tmp_path / "c" / "last.ckpt"))


def test_checkpoint_with_another_tokenizer_of_the_same_size_is_refused(data_kwargs, tmp_path):
    """Same vocabulary size, other corpus: many ids mean other tokens, so resuming (or evaluating) is refused."""
    import json

    from tests.helpers import make_bios
    from lacy.data.corpus import JsonlCorpus

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt, ExportHF(dirpath=str(tmp_path / "hf"))], max_steps=2)
    other_corpus = tmp_path / "other.jsonl"
    other_corpus.write_text("\n".join(json.dumps({"text": d.upper()}) for d in make_bios(120, seed=7)) + "\n")
    other = dict(data_kwargs, corpus=JsonlCorpus(str(other_corpus)))
    assert CorpusDataModule(**other).vocab_size == CorpusDataModule(**data_kwargs).vocab_size == 301
    with pytest.raises(UsageError, match=r"data.tokenizer: .*last.ckpt was trained with \(\d+ of 301 ids stand for"):
        fit(other, tmp_path, [Vanilla()], max_steps=3, ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    fit(data_kwargs, tmp_path, [Vanilla()], max_steps=3, ckpt_path=str(tmp_path / "c" / "last.ckpt"))  # same: resumes


def test_resume_with_another_architecture_is_refused(data_kwargs, tmp_path):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt], max_steps=2)
    with pytest.raises(UsageError, match="--model.preset: this run asks for 'tiny' but .* trained with 'micro'"):
        fit(data_kwargs, tmp_path, [Vanilla()], max_steps=3, preset="tiny", ckpt_path=str(tmp_path / "c" / "last.ckpt"))


def test_lr_given_on_resume_applies(data_kwargs, tmp_path):
    """The checkpoint's optimizer and schedule state carry lr 3e-3; the resumed run asks for 1e-3. Step 4 of 6
    (warm-up 2, cosine to 0.1 x lr): factor 0.1 + 0.9 x 0.5 x (1 + cos(pi x (4 - 2) / (6 - 2))) = 0.55."""

    class LrAt(L.Callback):
        seen = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # the first resumed step
            groups = trainer.optimizers[0].param_groups
            self.seen = self.seen or [(g["lr"], g["initial_lr"], g["weight_decay"]) for g in groups]

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt], max_steps=4)
    assert torch.load(tmp_path / "c" / "last.ckpt")["lr_schedulers"][0]["base_lrs"] == [3e-3, 3e-3]
    probe = LrAt()
    trainer, _ = fit(data_kwargs, tmp_path, [Vanilla(), probe], max_steps=6, lr=1e-3,
                     ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    assert probe.seen == [pytest.approx((1e-3 * 0.55, 1e-3, 0.1)), pytest.approx((1e-3 * 0.55, 1e-3, 0.0))]
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == pytest.approx([1e-3 * 0.1] * 2)  # end: floor


def test_export_loads_with_plain_transformers(data_kwargs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lacy.io.export import export_checkpoint

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    _, model = fit(data_kwargs, tmp_path, [LossOnly(), ckpt, ExportHF(dirpath=str(tmp_path / "hf"))], max_steps=3)
    for folder in (tmp_path / "hf", export_checkpoint(tmp_path / "c" / "last.ckpt", tmp_path / "from_ckpt")):
        hf = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        call_id = tok.convert_tokens_to_ids("<CALL>")
        assert call_id == len(tok) - 1 == hf.config.vocab_size - 1
        assert tok.decode([call_id]) == "<CALL>"
        ids = torch.tensor([tok("Anna Novak was born in Paris")["input_ids"]])
        with torch.no_grad():
            assert torch.allclose(hf(ids).logits, model.model.eval()(ids).logits, atol=1e-5)


def test_token_budget_sets_steps_and_accumulation(data_kwargs, tmp_path):
    from lacy.train.budget import TokenBudget

    # 8 sequences per step = 2 micro-batches of 4; 15% calls leave 128 - 19 = 109 gradient tokens per micro-batch
    budget = TokenBudget(max_tokens=2000, global_batch_size=8, count="gradient")
    trainer, model = fit(data_kwargs, tmp_path, [RandomCalls(call_rate=0.15), budget], max_steps=-1)
    assert trainer.accumulate_grad_batches == 2
    assert trainer.global_step == 10  # ceil(2000 / (2 x 109))
    assert model.gradient_tokens.item() == 10 * 2 * 109
    with pytest.raises(ValueError, match="not a multiple"):
        fit(data_kwargs, tmp_path, [Vanilla(), TokenBudget(global_batch_size=6)], max_steps=2)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError, match="killed mid-save"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_lacy_warns_when_the_budget_reaches_the_fact_rate(data_kwargs, tmp_path):
    from lacy.data.annotation import Annotator
    from lacy.selection.lacy_rule import LaCy

    class EveryFifth(Annotator):  # 20% of tokens are "facts"
        name, dtype = "fact", bool

        def fingerprint(self):
            return "every-fifth"

        def annotate(self, texts, offsets):
            return [np.arange(len(o)) % 5 == 0 for o in offsets]

    kw = dict(data_kwargs, annotators=[EveryFifth()])
    with pytest.warns(UserWarning, match="none is learned"):
        fit(kw, tmp_path, [LaCy(call_rate=0.3)], max_steps=1)
    trainer, _ = fit(kw, tmp_path, [LaCy(call_rate=0.1)], max_steps=3)
    assert trainer.callback_metrics["train/call_rate"].item() == pytest.approx(round(0.1 * 128) / 128)


@pytest.mark.parametrize("option, value, match", [
    ("betas", (float("nan"), 0.95), r"model.betas=\[nan, 0.95\]: must be two numbers in \[0, 1\)"),
    ("weight_decay", float("inf"), "model.weight_decay=inf: must be a finite number >= 0"),
    ("lr", float("nan"), "model.lr=nan: must be a finite number > 0"),
    ("peak_tflops", -1.0, "model.peak_tflops=-1.0"), ("min_lr_ratio", float("nan"), "model.min_lr_ratio=nan")])
def test_a_non_finite_or_out_of_range_option_is_named_at_construction(option, value, match):
    """Before any work, and naming the option that is wrong (an infinite weight decay was blamed on the lr)."""
    with pytest.raises(UsageError, match=match):
        CallLM(vocab_size=301, block_size=32, preset="micro", **{option: value})
