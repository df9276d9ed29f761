from types import SimpleNamespace

import lightning as L
import pytest
import torch

from baselines.rho1 import ReferenceLoss, Rho1, rho1_select
from baselines.spacy_ref import SpacyRef
from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.model.gpt2 import build_slm
from lacy.train.module import CallLM
from lacy.train.objective import TokenLosses


def test_lowest_excess_loss_is_delegated():
    loss = torch.tensor([[3.0, 1.0, 2.0, 9.0]])
    ref = torch.tensor([[0.5, 1.5, 2.5, 0.0]])  # excess: 2.5, -0.5, -0.5, 9 (padding)
    valid = torch.tensor([[True, True, True, False]])
    assert rho1_select(loss, ref, valid, 1).tolist() == [[False, True, False, False]]  # tie: earlier first
    assert rho1_select(loss, ref, valid, 2).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("with_call_row", [True, False])
def test_online_and_precomputed_reference_select_the_same(data_kwargs, tmp_path, with_call_row):
    plain = CorpusDataModule(**data_kwargs)
    vocab = plain.vocab_size if with_call_row else plain.vocab_size - 1
    torch.manual_seed(0)
    build_slm("micro", vocab, plain.block_size).save_pretrained(tmp_path / "ref")
    plain.setup()
    # precomputed: the offline pass over the same packed blocks, through the annotation runner
    pre = CorpusDataModule(**dict(data_kwargs, annotators=[
        ReferenceLoss(str(tmp_path / "ref"), has_call_row=with_call_row, chunk_blocks=7)]))
    pre.setup()
    slm = CallLM(preset="micro", vocab_size=plain.vocab_size, block_size=plain.block_size)
    online = Rho1(reference=str(tmp_path / "ref"), call_rate=0.2)
    trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False)  # its precision context wraps the pass
    online.setup(trainer, slm, "fit")
    blocks, pre_blocks = plain.dataset("train"), pre.dataset("train")
    for k in (0, 5, len(blocks) - 1):  # the last block is padded
        batch = {key: v.unsqueeze(0) for key, v in blocks[k].items()}
        online.on_train_batch_start(trainer, slm, batch, k)
        offline = {key: v.unsqueeze(0) for key, v in pre_blocks[k].items()}
        valid = batch["labels"] >= 0
        assert torch.allclose(batch["ref_loss"] * valid, offline["ref_loss"] * valid, atol=1e-5)
        for hook in (online.on_validation_batch_start, online.on_test_batch_start):  # `main.py test` selects too
            again = {key: v.unsqueeze(0) for key, v in blocks[k].items()}
            hook(trainer, slm, again, k)
            assert torch.equal(again["ref_loss"], batch["ref_loss"])
        target = torch.rand(valid.shape) * valid
        losses = TokenLosses(target, torch.zeros_like(target), torch.zeros_like(target), valid)
        assert torch.equal(online.select(batch, losses, 0), Rho1(call_rate=0.2).select(offline, losses, 0))


def test_spacy_ref_ranks_facts_by_the_reference_loss():
    ref = torch.tensor([[5.0, 1.0, 4.0, 9.0, 3.0]])
    batch = {"fact": torch.tensor([[True, True, True, False, True]]), "ref_loss": ref}
    valid = torch.ones(1, 5, dtype=torch.bool)
    slm_loss = torch.tensor([[0.0, 9.0, 0.0, 0.0, 0.0]])  # ignored
    losses = TokenLosses(slm_loss, torch.zeros(1, 5), torch.zeros(1, 5), valid)
    assert SpacyRef(call_rate=0.4).select(batch, losses, 0).tolist() == [[True, False, True, False, False]]


def test_missing_reference_folder_says_how_to_make_one(tmp_path):
    slm = CallLM(preset="micro", vocab_size=301, block_size=32)
    with pytest.raises(UsageError, match="make reference"):
        Rho1(reference=str(tmp_path / "nope")).setup(SimpleNamespace(global_rank=0, world_size=1), slm, "fit")


def test_reference_with_another_tokenizer_is_refused(data_kwargs, tmp_path):
    build_slm("micro", 999, 32).save_pretrained(tmp_path / "ref")
    slm = CallLM(preset="micro", vocab_size=301, block_size=32)
    with pytest.raises(ValueError, match="same tokenizer"):
        Rho1(reference=str(tmp_path / "ref")).setup(SimpleNamespace(global_rank=0, world_size=1), slm, "fit")
