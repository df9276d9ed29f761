"""Shared fixtures: a small real corpus of biographies written to a temporary jsonl file (helpers: tests/helpers.py).
Under pytest-xdist (`make test` runs 2 workers) each worker gets its share of the cores, for torch and for the
processes a test starts, so the workers do not oversubscribe the machine."""
import json
import os

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # before torch is imported
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(
        os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest  # noqa: E402
import torch  # noqa: E402

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # also where a plugin imported torch first
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tests.helpers import make_bios  # noqa: E402


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
