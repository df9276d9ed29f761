import json

import numpy as np
import pytest
import torch

from lacy.corpus import JsonlCorpus, TextCorpus, WikiSummaries
from lacy.data import CorpusDataModule, PackedBlocks, ResumableSampler
from lacy.errors import UsageError
from lacy.objective import IGNORE_INDEX


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
    with pytest.raises(UsageError, match="data.corpus.init_args.path"):
        JsonlCorpus(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    kw = dict(data_kwargs, corpus=TextCorpus(str(empty)))
    with pytest.raises(ValueError, match="no documents"):
        CorpusDataModule(**kw).setup()
    short = tmp_path / "short.txt"
    short.write_text("One short document.\n\nAnother one.\n\nAnd a third.")
    with pytest.raises(ValueError, match="fewer than one block"):
        CorpusDataModule(**dict(data_kwargs, corpus=TextCorpus(str(short)), val_fraction=0.0)).setup()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json}\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        list(JsonlCorpus(str(broken)).documents())


def test_wikipedia_summaries_are_read_offline():
    people = WikiSummaries(topic="People").records()
    assert len(people) == 1828 and all(r["topic"] == "People" for r in people)


def test_offline_gpt2_tokenizer_with_call(data_kwargs):
    dm = CorpusDataModule(**dict(data_kwargs, tokenizer="gpt2"))
    assert dm.vocab_size == 50258 and dm.tokenizer.convert_ids_to_tokens(50257) == "<CALL>"
    assert dm.tokenizer("Hello world")["input_ids"] == [15496, 995]  # GPT-2's own ids


def test_tokenizer_folder_errors(tmp_path):
    from lacy.tokenizer import check_call_token, load_tokenizer, train_bpe

    with pytest.raises(UsageError, match="data.tokenizer"):
        load_tokenizer(tmp_path / "nope")
    tok = train_bpe(["some text to learn from"], vocab_size=280)
    tok.add_tokens(["<late>"])  # a token after <CALL> would shift the model's call row
    with pytest.raises(ValueError, match="must be the last id"):
        check_call_token(tok)
