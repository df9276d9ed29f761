"""Any causal LM as the SLM: Llama-style and GPT-NeoX from scratch, and continued pretraining of a pretrained model
written by the test itself (tied and untied heads, a padded vocabulary), through fit, resume, export and reload."""
import copy

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from baselines import LossOnly, Vanilla
from lacy.data.datamodule import CorpusDataModule
from lacy.data.tokenizer import EOS_TOKEN
from lacy.errors import UsageError
from lacy.io.export import ExportHF, export_checkpoint
from lacy.model.call_token import CALL_TOKEN
from lacy.model.loading import model_source
from lacy.model.slm import build_slm, check_hostable, decoder_layer, flops_per_token, with_call_row
from lacy.train.module import CallLM
from tests.helpers import fit, make_bios

LLAMA = {"family": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}
NEOX = {"family": "gpt_neox", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4}


def pretrained_folder(path, tied: bool, pad_to: int = 1):
    """A 'pretrained' Llama-style model and its own tokenizer (a byte-level BPE without <CALL>), saved as a
    Hugging Face folder; its vocabulary rows padded up to a multiple of ``pad_to``."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder, bpe.post_processor = decoders.ByteLevel(), processors.ByteLevel(trim_offsets=True)
    bpe.train_from_iterator(make_bios(120), trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS_TOKEN],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN)
    rows = -(-len(tok) // pad_to) * pad_to
    torch.manual_seed(1)
    keys = {k: v for k, v in LLAMA.items() if k != "family"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", vocab_size=rows, max_position_embeddings=64,
                                                                  tie_word_embeddings=tied, **keys))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, len(tok)


@pytest.mark.parametrize("architecture", [LLAMA, NEOX], ids=["llama", "gpt_neox"])
def test_a_family_from_scratch_fits_resumes_exports_and_reloads(architecture, data_kwargs, tmp_path):
    kw = {"architecture": architecture}
    trainer, module = fit(data_kwargs, tmp_path, [LossOnly(call_rate=0.1), ExportHF(str(tmp_path / "hf"))], max_steps=4,
                          model_kw=kw, enable_checkpointing=True)
    assert type(module.model).__name__ == {"llama": "LlamaForCausalLM", "gpt_neox": "GPTNeoXForCausalLM"}[
        architecture["family"]]
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    trainer2, resumed = fit(data_kwargs, tmp_path / "again", [LossOnly(call_rate=0.1)], max_steps=6, ckpt_path=str(ckpt),
                            model_kw=kw)
    assert resumed.global_step == 6
    out = export_checkpoint(ckpt, tmp_path / "exported")
    again = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(again).__name__ == type(module.model).__name__ and tok.convert_ids_to_tokens(len(tok) - 1) == CALL_TOKEN
    ids = torch.tensor([tok("Anna Novak was born in", add_special_tokens=False)["input_ids"]])
    state = {k[len("model."):]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
             if k.startswith("model.")}
    module.model.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, module.model.eval()(input_ids=ids).logits)
        written = again.generate(ids, max_new_tokens=8, do_sample=False)
    assert (written[:, ids.shape[1]:] != len(tok) - 1).all()  # the export's generation_config suppresses <CALL>
    plain = export_checkpoint(ckpt, tmp_path / "plain", call=False)
    with torch.no_grad():  # --no-call drops the row: its distribution is p_noCALL
        full = again(input_ids=ids).logits
        assert torch.allclose(AutoModelForCausalLM.from_pretrained(plain)(input_ids=ids).logits, full[..., :-1])


def test_flops_and_the_decoder_layer_come_from_the_config():
    llama = build_slm(301, 32, architecture=LLAMA)
    c = llama.config  # untied head: 6 x every parameter but the token embedding, + attention
    matmul = sum(p.numel() for p in llama.parameters()) - llama.get_input_embeddings().weight.numel()
    assert flops_per_token(llama) == 6 * matmul + 12 * c.num_hidden_layers * c.hidden_size * 32
    assert decoder_layer(llama).__name__ == "LlamaDecoderLayer"
    gpt2 = build_slm(301, 32, preset="micro")  # tied: the head counted once; the position embedding is no matmul
    matmul = sum(p.numel() for p in gpt2.parameters()) - gpt2.transformer.wpe.weight.numel()
    assert flops_per_token(gpt2) == 6 * matmul + 12 * 2 * 32 * 32 and decoder_layer(gpt2).__name__ == "GPT2Block"


@pytest.mark.parametrize("tied, pad_to", [(True, 1), (False, 1), (True, 64), (False, 64)],
                         ids=["tied", "untied", "tied-padded", "untied-padded"])
def test_step_zero_p_nocall_is_the_pretrained_distribution_and_the_call_row_starts_at_the_mean(tmp_path, tied,
                                                                                              pad_to):
    folder, tokens = pretrained_folder(tmp_path / "pre", tied, pad_to)
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(0, tokens, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = torch.log_softmax(base(input_ids=ids).logits[..., :tokens], -1)  # over the tokenizer's tokens
    hosted = CallLM(vocab_size=tokens + 1, block_size=64, pretrained=str(folder)).model.eval()
    assert hosted.get_input_embeddings().weight.shape[0] == tokens + 1  # padded rows dropped, <CALL> appended
    with torch.no_grad():
        logits = hosted(input_ids=ids).logits
        assert torch.equal(torch.log_softmax(logits[..., :-1], -1), reference)
        emb, head = base.get_input_embeddings().weight[:tokens], base.get_output_embeddings().weight[:tokens]
        assert torch.allclose(hosted.get_input_embeddings().weight[-1], emb.mean(0))
        assert torch.allclose(hosted.get_output_embeddings().weight[-1], (emb if tied else head).mean(0))
    assert (hosted.get_output_embeddings().weight is hosted.get_input_embeddings().weight) == tied


def test_continued_pretraining_of_a_pretrained_folder_with_its_own_tokenizer(tmp_path, bios_path):
    from lacy.data.corpus import JsonlCorpus

    folder, tokens = pretrained_folder(tmp_path / "pre", tied=False, pad_to=64)
    data = dict(corpus=JsonlCorpus(str(bios_path)), tokenizer=str(folder), block_size=32, batch_size=4,
                val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    assert CorpusDataModule(**data).vocab_size == tokens + 1  # its own tokens, then <CALL>
    trainer, module = fit(data, tmp_path, [Vanilla(), ExportHF(str(tmp_path / "hf"))], max_steps=3,
                          model_kw={"pretrained": str(folder)})
    assert trainer.global_step == 3 and module.hparams.pretrained == str(folder)
    with pytest.raises(UsageError, match="set data.tokenizer to the same source as model.pretrained"):
        fit({**data, "tokenizer": None, "bpe_vocab_size": 300}, tmp_path / "bpe", [Vanilla()], max_steps=1,
            model_kw={"pretrained": str(folder)})


def test_sources_lacy_cannot_host_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="is not a local folder.*write hf:NAME"):
        build_slm(301, 32, pretrained="HuggingFaceTB/SmolLM2-135M")  # a hub name without hf: is never looked up
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is not a model folder"):
        build_slm(301, 32, pretrained=str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="both set"):
        build_slm(301, 32, architecture=LLAMA, pretrained=str(tmp_path))
    with pytest.raises(UsageError, match="family 'no_such_family'"):
        build_slm(301, 32, architecture={"family": "no_such_family"})
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "model.gguf").write_bytes(b"GGUF this is not a model")
    with pytest.raises(UsageError, match="model.gguf.*cannot read"):
        from lacy.model.loading import load_model

        load_model(model_source(str(tmp_path / "gguf"), "model.pretrained", "", gguf_file="model.gguf"))
    model = build_slm(301, 32, architecture=LLAMA)
    model.get_output_embeddings = lambda: None  # a family whose head is not a plain linear layer
    with pytest.raises(UsageError, match="not a plain linear layer"):
        check_hostable(model, "model.pretrained x")
    with pytest.raises(UsageError, match="not a plain linear layer"):
        with_call_row(copy.deepcopy(model), 302, "model.pretrained x")


def test_the_gpt2_preset_is_unchanged_by_the_family_code(data_kwargs, tmp_path):
    """The paper's default: a preset builds the same GPT-2, with the same weights for a seed, as gpt2.build_slm."""
    from lacy.model import gpt2

    L.seed_everything(3)
    a = CallLM(preset="micro", vocab_size=301, block_size=32).model
    L.seed_everything(3)
    b = gpt2.build_slm("micro", 301, 32)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_cascade_hosts_any_family_with_token_or_text_hand_over(tmp_path, bios_path):
    """A Llama-style SLM writes, and calls a partner with its own tokenizer (text hand-over) or the SLM's (tokens)."""
    from lacy.data.corpus import JsonlCorpus
    from lacy.inference.cascade import CallPolicy, Cascade
    from lacy.inference.partners import ModelPartner, TextPartner, load_partner, partner_for

    data = CorpusDataModule(corpus=JsonlCorpus(str(bios_path)), bpe_vocab_size=300, block_size=32,
                            cache_dir=str(tmp_path / "cache"))
    data.prepare()
    slm = build_slm(data.vocab_size, 32, architecture=LLAMA).eval()
    folder, _ = pretrained_folder(tmp_path / "pre", tied=True)
    other = partner_for(*load_partner(str(folder)), data.tokenizer)
    same = tmp_path / "same"
    build_slm(data.vocab_size, 32, architecture=NEOX).save_pretrained(same)
    data.tokenizer.save_pretrained(same)
    assert isinstance(other, TextPartner) and isinstance(partner_for(*load_partner(str(same)), data.tokenizer), ModelPartner)
    for partner in (other, partner_for(*load_partner(str(same)), data.tokenizer)):
        cascade = Cascade(slm, data.tokenizer, partner, CallPolicy("always"))
        gens = cascade.generate(["Anna Novak", "Boris Okafor was born in"], max_new_tokens=6)
        assert len(gens) == 2 and cascade.stats.calls > 0 and all(any(g.from_partner) for g in gens)


def test_a_warm_start_continues_a_vanilla_runs_export_with_lacy(data_kwargs, tmp_path):
    """Issue 27's warm start: LaCy continued from a Vanilla run's export (``model.pretrained`` and ``data.tokenizer``
    the export folder). The export already has <CALL> as its last id: the tokenizer keeps it (nothing appended),
    the rows keep their weights but the <CALL> row, initialised anew (Vanilla never trained it)."""
    from baselines import RandomCalls
    from lacy.io.checkpoints import AtomicCheckpointIO
    from lacy.io.export import ExportHF
    from tests.helpers import fit

    fit(data_kwargs, tmp_path, [Vanilla(), ExportHF(str(tmp_path / "vanilla"))], max_steps=2)
    dm = CorpusDataModule(**dict(data_kwargs, tokenizer=str(tmp_path / "vanilla")))
    assert dm.vocab_size == 301  # the export's tokenizer, <CALL> included, not appended twice
    warm = CallLM(vocab_size=dm.vocab_size, block_size=dm.block_size, pretrained=str(tmp_path / "vanilla"))
    vanilla = AutoModelForCausalLM.from_pretrained(tmp_path / "vanilla")
    emb = warm.model.get_input_embeddings().weight
    assert torch.equal(emb[:-1], vanilla.get_input_embeddings().weight[:-1])
    assert torch.allclose(emb[-1], vanilla.get_input_embeddings().weight[:-1].mean(0))
    trainer = L.Trainer(max_steps=2, callbacks=[RandomCalls()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(warm, dm)
    assert trainer.global_step == 2
