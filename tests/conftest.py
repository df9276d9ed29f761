"""Shared fixtures: a small real corpus of biographies written to a temporary jsonl file (helpers: tests/helpers.py)."""
import json

import pytest

from tests.helpers import make_bios


@pytest.fixture
def bios_path(tmp_path):
    path = tmp_path / "bios.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in make_bios(120)) + "\n")
    return path


@pytest.fixture
def data_kwargs(bios_path, tmp_path):
    """CorpusDataModule arguments for a seconds-fast run."""
    from lacy.data.corpus import JsonlCorpus

    return dict(corpus=JsonlCorpus(str(bios_path)), bpe_vocab_size=300, block_size=32, batch_size=4,
                val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
