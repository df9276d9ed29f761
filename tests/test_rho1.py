from types import SimpleNamespace

import numpy as np
import pytest
import torch

from baselines.rho1 import Rho1, rho1_select
from lacy.data import CorpusDataModule, PackedBlocks
from lacy.model import build_slm
from lacy.module import CallLM
from lacy.objective import TokenLosses


def test_lowest_excess_loss_is_delegated():
    loss = torch.tensor([[3.0, 1.0, 2.0, 9.0]])
    ref = torch.tensor([[0.5, 1.5, 2.5, 0.0]])  # excess: 2.5, -0.5, -0.5, 9 (padding)
    valid = torch.tensor([[True, True, True, False]])
    assert rho1_select(loss, ref, valid, 1).tolist() == [[False, True, False, False]]  # tie: earlier first
    assert rho1_select(loss, ref, valid, 2).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("with_call_row", [True, False])
def test_online_and_precomputed_reference_select_the_same(data_kwargs, tmp_path, with_call_row):
    dm = CorpusDataModule(**data_kwargs)
    dm.setup()
    vocab = dm.vocab_size if with_call_row else dm.vocab_size - 1
    torch.manual_seed(0)
    build_slm("micro", vocab, dm.block_size).save_pretrained(tmp_path / "ref")
    slm = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size)
    strategy = Rho1(reference=str(tmp_path / "ref"), call_rate=0.2)
    strategy.setup(SimpleNamespace(global_rank=0, world_size=1), slm, "fit")

    # precomputed: one offline pass over the packed blocks, stored as a side array aligned with the stream
    plain = dm.dataset("train")
    stream = np.zeros(len(plain.ids), dtype=np.float32)
    for k in range(len(plain)):
        item = {key: v.unsqueeze(0) for key, v in plain[k].items()}
        s = k * dm.block_size + 1
        values = strategy.reference_loss(item)[0].numpy()
        stream[s:s + dm.block_size] = values[:len(stream[s:s + dm.block_size])]
    pre = PackedBlocks(plain.ids, {"ref_loss": stream}, dm.block_size, plain.pad_id)

    for k in (0, 5, len(plain) - 1):  # the last block is padded
        online = {key: v.unsqueeze(0) for key, v in plain[k].items()}
        strategy.on_train_batch_start(None, slm, online, k)
        offline = {key: v.unsqueeze(0) for key, v in pre[k].items()}
        valid = online["labels"] >= 0
        assert torch.allclose(online["ref_loss"] * valid, offline["ref_loss"] * valid, atol=1e-5)
        target = torch.rand(valid.shape) * valid
        losses = TokenLosses(target, torch.zeros_like(target), torch.zeros_like(target), valid)
        assert torch.equal(strategy.select(online, losses, 0), strategy.select(offline, losses, 0))


def test_reference_with_another_tokenizer_is_refused(data_kwargs, tmp_path):
    build_slm("micro", 999, 32).save_pretrained(tmp_path / "ref")
    slm = CallLM(preset="micro", vocab_size=301, block_size=32)
    with pytest.raises(ValueError, match="same tokenizer"):
        Rho1(reference=str(tmp_path / "ref")).setup(SimpleNamespace(global_rank=0, world_size=1), slm, "fit")
