import json

import numpy as np
import pytest
import torch

from lacy.data.corpus import JsonlCorpus, TextCorpus, WikiSummaries
from lacy.data.datamodule import CorpusDataModule
from lacy.data.packing import PackedBlocks, ResumableSampler
from lacy.data.store import SplitWriter
from lacy.errors import UsageError
from lacy.train.objective import IGNORE_INDEX
from lacy.data.tokenizer import check_call_token, load_tokenizer, train_bpe
from tests.helpers import make_bios


def test_blocks_align_side_arrays_with_labels_and_pad_the_tail():
    ids = np.arange(10, dtype=np.int32)
    side = {"fact": (np.arange(10) % 3 == 0), "ref": np.arange(10, dtype=np.float32) * 0.5}
    ds = PackedBlocks(ids, side, block_size=4, pad_id=99)
    assert len(ds) == 3  # targets 1..9 in blocks of 4
    b0, b2 = ds[0], ds[2]
    assert b0["input_ids"].tolist() == [0, 1, 2, 3] and b0["labels"].tolist() == [1, 2, 3, 4]
    assert b0["fact"].tolist() == [False, False, True, False]  # flags of the targets 1, 2, 3, 4
    assert b0["ref"].tolist() == [0.5, 1.0, 1.5, 2.0]
    assert b2["input_ids"].tolist() == [8, 9, 99, 99]
    assert b2["labels"].tolist() == [9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    # every token but the first is a target exactly once
    targets = torch.cat([ds[k]["labels"] for k in range(len(ds))])
    assert targets[targets >= 0].tolist() == list(range(1, 10))


def test_sampler_resumes_from_position_and_shards_ranks():
    pos = {"n": 0}
    s = ResumableSampler(10, seed=7, position=lambda: pos["n"])
    first = list(s) + list(s.__class__(10, 7, lambda: 10))  # two data epochs, uninterrupted
    pos["n"] = 13
    assert list(s)[:7] == first[13:20]  # resumed mid-epoch 2 at the same place
    assert sorted(first[:10]) == list(range(10)) and first[:10] != first[10:]  # a fresh permutation per epoch
    r0 = list(ResumableSampler(10, 7, lambda: 0, rank=0, world=2))
    r1 = list(ResumableSampler(10, 7, lambda: 0, rank=1, world=2))
    assert sorted(r0 + r1) == list(range(10))


def test_datamodule_splits_deterministically_and_caches_by_content(data_kwargs, bios_path):
    a = CorpusDataModule(**data_kwargs)
    a.setup()
    b = CorpusDataModule(**data_kwargs)
    b.setup()
    assert np.array_equal(a.splits["train"].ids, b.splits["train"].ids)
    val = a.splits["val"]
    assert val.texts(range(val.n_docs)) == b.splits["val"].texts(range(12)) and val.n_docs == 12
    assert a.vocab_size == 301 and a.tokenizer.convert_ids_to_tokens(300) == "<CALL>"
    assert a.held_out_documents() == val.texts(range(val.n_docs))  # what the evaluation's held-out people read
    key = a.cache_key()
    memo = a.cache_dir / "digests.jsonl"
    assert memo.read_text().count("\n") == 1  # the second module read the memo, not the corpus
    bios_path.write_text(bios_path.read_text() + json.dumps({"text": "A new document."}) + "\n")
    assert CorpusDataModule(**data_kwargs).cache_key() != key  # an edited file is hashed again
    assert memo.read_text().count("\n") == 2


def test_offsets_point_at_the_token_text(data_kwargs):
    dm = CorpusDataModule(**data_kwargs)
    dm.setup()
    split = dm.splits["train"]
    (text,), sl = split.texts(range(1)), split.doc_slice(0)
    pieces = [text[a:b] for a, b in split.offsets[sl]]
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_bad_corpora_give_clear_errors(tmp_path, data_kwargs):
    with pytest.raises(UsageError, match="data.corpus.init_args.path: corpus file .*missing.jsonl' does not exist"):
        JsonlCorpus(str(tmp_path / "missing.jsonl"))
    (tmp_path / "zero.jsonl").write_bytes(b"")
    with pytest.raises(UsageError, match="data.corpus.init_args.path: corpus file .*zero.jsonl' is empty"):
        JsonlCorpus(str(tmp_path / "zero.jsonl"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    kw = dict(data_kwargs, corpus=TextCorpus(str(empty)))
    with pytest.raises(UsageError, match="data.corpus: TextCorpus file .*empty.txt' has no documents"):
        CorpusDataModule(**kw).setup()
    short = tmp_path / "short.txt"
    short.write_text("One short document.\n\nAnother one.\n\nAnd a third.")
    with pytest.raises(UsageError, match="data.block_size=32: the training split has .* fewer than one block"):
        CorpusDataModule(**dict(data_kwargs, corpus=TextCorpus(str(short)), val_fraction=0.0)).setup()
    with pytest.raises(UsageError, match="data.val_fraction=0.5: TextCorpus file .*one.txt' has 1 document"):
        one = tmp_path / "one.txt"
        one.write_text("One document.")
        CorpusDataModule(**dict(data_kwargs, corpus=TextCorpus(str(one)), val_fraction=0.5)).setup()
    with pytest.raises(UsageError, match=r"data.val_fraction=1.0: must be in \[0, 1\)"):
        CorpusDataModule(**dict(data_kwargs, val_fraction=1.0))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json}\n')
    with pytest.raises(UsageError, match="broken.jsonl:2: not valid JSON"):
        list(JsonlCorpus(str(broken)).documents())


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_a_corpus_that_is_not_utf8_names_file_and_line(tmp_path, data_kwargs, kind):
    """Issue 17.2: `UnicodeDecodeError ... position 2739`: no path, and the offset was the read buffer's."""
    docs = make_bios(300) + ["Zo\u00eb Dupr\u00e9 was born in Montr\u00e9al."] + make_bios(5)
    lines = [json.dumps({"text": d}, ensure_ascii=False) for d in docs] if kind == "jsonl" else [
        d + "\n" for d in docs]
    path = tmp_path / f"latin1.{kind}"
    path.write_bytes("\n".join(lines).encode("latin1"))  # a Latin-1 file: bytes 0xeb, 0xe9 are not UTF-8
    line = 301 if kind == "jsonl" else 601  # text: documents are separated by blank lines
    column = len('{"text": "Zo') + 1 if kind == "jsonl" else 3
    corpus = (JsonlCorpus if kind == "jsonl" else TextCorpus)(str(path))
    match = rf"latin1.{kind}:{line}: not UTF-8 \(byte 0xeb, byte {column} of the line\); re-encode the file as UTF-8"
    with pytest.raises(UsageError, match=match):
        list(corpus.documents())
    with pytest.raises(UsageError, match=match):  # before any tokenizing
        CorpusDataModule(**dict(data_kwargs, corpus=corpus)).prepare()
    path.write_bytes("\n".join(lines).encode("utf-8"))
    assert list(corpus.documents())[300] == docs[300]


def test_text_never_becomes_a_control_token_through_tokenizing_packing_and_a_fit(tmp_path, data_kwargs):
    """Issue 16.9: a document holding the characters `<CALL>` was encoded as the <CALL> id (then `fit` died)."""
    import lightning as L

    from baselines import RandomCalls
    from lacy.train.module import CallLM

    special = ["Anna wrote <CALL> and <|endoftext|> in her notes.", "<CALL>", "<|endoftext|><CALL>", "a<CALL>b"]
    docs = make_bios(100) + special * 5
    path = tmp_path / "special.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    dm = CorpusDataModule(**dict(data_kwargs, corpus=JsonlCorpus(str(path))))
    dm.setup()
    tok = dm.tokenizer
    call, eos = check_call_token(tok), tok.eos_token_id
    assert set(tok.all_special_ids) == {call, eos}
    seen = 0
    for split in dm.splits.values():
        ids = np.asarray(split.ids)
        assert call not in ids and np.flatnonzero(ids == eos).tolist() == (split.doc_starts[1:] - 1).tolist()
        for d, text in enumerate(split.texts(range(split.n_docs))):
            assert tok.decode(ids[split.doc_slice(d)]).strip() == text  # the text, character for character
            seen += text in special
        blocks = dm.dataset("train" if split is dm.splits["train"] else "val")
        assert all(call not in blocks[k]["labels"] for k in range(len(blocks)))
    assert seen == 20
    for text in special:  # prompts and knowledge-base values go through the same tokenizer
        assert not set(tok(text, add_special_tokens=False)["input_ids"]) & {call, eos}
    L.seed_everything(0)
    model = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size, lr=3e-3, warmup_steps=1)
    trainer = L.Trainer(max_steps=3, callbacks=[RandomCalls(call_rate=0.2)], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert trainer.global_step == 3 and model.tokens_seen.item() == 3 * 4 * 32


@pytest.mark.parametrize("source", ["trained", "saved", "gpt2", "exported"])
def test_every_tokenizer_lacy_uses_keeps_text_apart_from_special_tokens(tmp_path, source):
    from transformers import AutoTokenizer

    from lacy.data.tokenizer import gpt2_folder

    tok = train_bpe(make_bios(20), vocab_size=300)
    if source == "saved":
        tok.save_pretrained(tmp_path / "tok")
        tok = load_tokenizer(tmp_path / "tok")
    elif source == "gpt2":
        tok = load_tokenizer(gpt2_folder(tmp_path / "gpt2"))
    elif source == "exported":  # the flag is saved with the tokenizer: a plain AutoTokenizer keeps it
        tok.save_pretrained(tmp_path / "tok")
        tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "Anna <CALL> wrote <|endoftext|> twice<CALL>"
    ids = tok(text, add_special_tokens=False, return_offsets_mapping=True)["input_ids"]
    assert not set(ids) & set(tok.all_special_ids) and tok.decode(ids).strip() == text
    assert tok.backend_tokenizer.encode_batch([text], add_special_tokens=False)[0].ids == ids


def test_split_writer_refuses_a_tokenizer_whose_special_token_text_can_produce(tmp_path):
    tok = train_bpe(make_bios(20), vocab_size=300)
    piece = tok.convert_ids_to_tokens(tok(" was", add_special_tokens=False)["input_ids"])[0]  # an ordinary token
    tok.add_special_tokens({"eos_token": piece})  # ... that this tokenizer also names its EOS
    writer = SplitWriter(tmp_path / "train", tok)
    writer.add(["Anna is here."])
    with pytest.raises(UsageError, match=f"text of document 2 of train to its special token '{piece}'"):
        writer.add(["Anna was born in Paris."])


def test_wikipedia_summaries_are_read_offline():
    people = WikiSummaries(topic="People").records()
    assert len(people) == 1828 and all(r["topic"] == "People" for r in people)


def test_offline_gpt2_tokenizer_with_call(data_kwargs):
    dm = CorpusDataModule(**dict(data_kwargs, tokenizer="gpt2"))
    assert dm.vocab_size == 50258 and dm.tokenizer.convert_ids_to_tokens(50257) == "<CALL>"
    assert dm.tokenizer("Hello world")["input_ids"] == [15496, 995]  # GPT-2's own ids


def test_tokenizer_folder_errors(tmp_path, data_kwargs):
    from tokenizers import Tokenizer, models

    with pytest.raises(UsageError, match="data.tokenizer: tokenizer folder .*nope' does not exist"):
        load_tokenizer(tmp_path / "nope")
    export = tmp_path / "export"  # issue 17.4: an exported model's config.json alone trained with 2 ids
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UsageError, match=r"export' holds no tokenizer files \(has \['config.json'\]; needs "
                                         "tokenizer.json or vocab.json \\+ merges.txt"):
        CorpusDataModule(**dict(data_kwargs, tokenizer=str(export))).prepare()
    Tokenizer(models.BPE()).save(str(export / "tokenizer.json"))  # a file, but no vocabulary
    with pytest.raises(UsageError, match="export' has 0 ordinary tokens, fewer than 100"):
        load_tokenizer(export)
    with pytest.raises(UsageError, match="data.bpe_vocab_size=100: a byte-level BPE has at least 257 ids"):
        CorpusDataModule(**dict(data_kwargs, bpe_vocab_size=100))
    tok = train_bpe(["some text to learn from"], vocab_size=280)
    tok.add_tokens(["<late>"])  # a token after <CALL> would shift the model's call row
    with pytest.raises(ValueError, match="must be the last id"):
        check_call_token(tok)


def test_a_batch_larger_than_the_training_split_names_the_option(data_kwargs):
    import lightning as L

    from baselines import RandomCalls
    from lacy.train.module import CallLM

    dm = CorpusDataModule(**dict(data_kwargs, batch_size=1000))
    model = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size)
    trainer = L.Trainer(max_steps=1, callbacks=[RandomCalls()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(UsageError, match=r"data.batch_size=1000: the training split has \d+ blocks, fewer than one "
                                         r"batch per device \(1 devices\)"):
        trainer.fit(model, dm)


def test_annotators_are_bound_to_the_corpus_the_datamodule_uses_also_the_default_one():
    """Binding the ``corpus`` argument gave annotators None when the default corpus (Wikipedia summaries) was used."""
    from lacy.data.annotation import Annotator
    from lacy.data.corpus import WikiSummaries

    class Recorder(Annotator):
        def bind(self, corpus):
            self.bound = corpus

    ann = Recorder()
    data = CorpusDataModule(annotators=[ann])
    assert isinstance(data.corpus, WikiSummaries) and ann.bound is data.corpus


def test_a_byte_order_mark_is_read_as_the_encoding_marker_and_a_lone_surrogate_is_one_line(tmp_path):
    """Windows editors start UTF-8 files with a BOM (every JSON reader accepts it); JSON can escape a lone
    surrogate, which no UTF-8 text holds: named with its file and line, not a UnicodeEncodeError from the tokenizer."""
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"text": "Anna Novak was born in Paris."}\n{"text": "Boris Okafor."}\n')
    assert list(JsonlCorpus(str(bom)).documents()) == ["Anna Novak was born in Paris.", "Boris Okafor."]
    text = tmp_path / "bom.txt"
    text.write_bytes(b"\xef\xbb\xbfFirst document.\n\nSecond one.\n")
    assert list(TextCorpus(str(text)).documents())[0] == "First document."
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"text": "fine"}\n{"text": "broken \\ud800 here"}\n')
    with pytest.raises(UsageError, match=r"lone.jsonl:2: field 'text' holds a lone surrogate"):
        list(JsonlCorpus(str(lone)).documents())


def test_a_torn_line_in_the_digest_memo_is_recomputed_not_an_error(data_kwargs, tmp_path):
    """A full disk or a kill can cut the memo's last append short: later runs on that cache must still start."""
    first = CorpusDataModule(**data_kwargs)
    digest = first._digest()
    memo = tmp_path / "cache" / "digests.jsonl"
    memo.write_text(memo.read_text() + '{"key": ["torn", 12')
    again = CorpusDataModule(**data_kwargs)
    assert again._digest() == digest and again.cache_key() == first.cache_key()


def test_a_tokenizer_folder_whose_call_token_is_not_last_is_named_with_its_option(tmp_path):
    from lacy.data.tokenizer import load_tokenizer, train_bpe
    from tests.helpers import make_bios

    tok = train_bpe(make_bios(40), 300)
    tok.add_tokens(["<after>"])  # a token after <CALL>: it would take the model's call row
    tok.save_pretrained(tmp_path / "tok")
    with pytest.raises(UsageError, match=r"data.tokenizer '.*tok': <CALL> has id \d+ but must be the last id.*lacy "
                                         r"appends it"):
        load_tokenizer(tmp_path / "tok")
