"""The two export forms: with <CALL> (suppressed in plain generate()) and without it (exactly p_noCALL)."""
import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from baselines import LossOnly
from lacy.data import CorpusDataModule
from lacy.export import ExportHF, export_checkpoint, export_hf, tokenizer_files
from lacy.model import build_slm
from lacy.module import CallLM
from lacy.objective import token_losses
from lacy.tokenizer import CALL_TOKEN, train_bpe
from tests.conftest import make_bios

TEXT = "Anna Novak was born in Paris in 1950."


def call_saturated_model(vocab_size: int):
    """A real GPT-2 whose p(<CALL>) is ~1 at every position, as CALL-trained models are (issue 18): ln_f maps
    every hidden state to one vector b, and the tied <CALL> row points along b."""
    torch.manual_seed(0)
    model = build_slm("micro", vocab_size, 64).eval()
    with torch.no_grad():
        b = torch.randn(model.config.n_embd)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(b)
        model.transformer.wte.weight[-1] = 20 * b / b.norm()
    return model


@pytest.fixture(scope="module")
def tok():
    return train_bpe(make_bios(60), 300)


def test_generate_on_the_call_export_writes_no_call(tok, tmp_path):
    export_hf(call_saturated_model(len(tok)), tokenizer_files(tok), tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    call_id = loaded.convert_tokens_to_ids(CALL_TOKEN)
    enc = loaded(TEXT, return_tensors="pt")
    with torch.no_grad():
        assert torch.softmax(model(**enc).logits, -1)[0, :, call_id].min() > 0.99  # the situation
        plain = model.generate(**enc, max_new_tokens=20, do_sample=False)[0, enc["input_ids"].shape[1]:]
        let_through = model.generate(**enc, max_new_tokens=20, do_sample=False, suppress_tokens=[])
    assert len(plain) > 0 and call_id not in plain.tolist()
    assert let_through[0, enc["input_ids"].shape[1]:].tolist() == [call_id] * 20  # the README's way back


def test_no_call_export_is_exactly_p_nocall(tok, tmp_path):
    slm = call_saturated_model(len(tok))
    export_hf(slm, tokenizer_files(tok), tmp_path / "plain", call=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    plain_tok = AutoTokenizer.from_pretrained(tmp_path / "plain")
    assert CALL_TOKEN not in plain_tok.get_vocab()
    assert len(plain_tok) == model.config.vocab_size == len(tok) - 1
    assert model.config.model_type == "gpt2" and model.lm_head.weight is model.transformer.wte.weight
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert plain_tok(TEXT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    assert CALL_TOKEN not in plain_tok.convert_ids_to_tokens(plain_tok(f"x {CALL_TOKEN}")["input_ids"])
    with torch.no_grad():
        full, cut = slm(ids).logits, model(ids).logits
    p_nocall = torch.log_softmax(full[..., :-1], -1)
    assert torch.allclose(torch.log_softmax(cut, -1), p_nocall, atol=1e-5)
    # and its cross-entropy is the objective's no-call loss at every position
    labels = torch.cat([ids[:, 1:], torch.full((1, 1), -100)], 1)
    target = token_losses(full, labels).target[0, :-1]
    ce = torch.nn.functional.cross_entropy(cut[0, :-1], ids[0, 1:], reduction="none")
    assert torch.allclose(ce, target, atol=1e-5)
    assert slm.config.vocab_size == len(tok)  # the source model is untouched


def test_no_call_from_a_checkpoint_and_from_the_callback(data_kwargs, tmp_path):
    L.seed_everything(0)
    dm = CorpusDataModule(**data_kwargs)
    module = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size, warmup_steps=1)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[LossOnly(), ckpt, ExportHF(dirpath=str(tmp_path / "hf"), no_call=True)])
    trainer.fit(module, dm)
    ids = torch.tensor([dm.tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        want = torch.log_softmax(module.model.eval()(ids).logits[..., :-1], -1)
    for folder in (tmp_path / "hf_no_call", export_checkpoint(tmp_path / "c" / "last.ckpt", tmp_path / "x", call=False)):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert CALL_TOKEN not in AutoTokenizer.from_pretrained(folder).get_vocab()
        with torch.no_grad():
            assert torch.allclose(torch.log_softmax(model(ids).logits, -1), want, atol=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").convert_tokens_to_ids(CALL_TOKEN) == dm.vocab_size - 1
