"""Shared fixtures: a small real corpus of biographies written to a temporary jsonl file."""
import json
import random

import pytest

FIRST = ["Anna", "Boris", "Chen", "Dalia", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Julia"]
LAST = ["Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber"]
CITY = ["Paris", "Lagos", "Osaka", "Prague", "Lima", "Oslo"]
FIELD = ["chemistry", "physics", "history", "music"]


def make_bios(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        docs.append(
            f"{name} was born in {rng.choice(CITY)} in {rng.randint(1900, 1999)}. "
            f"{name} studied {rng.choice(FIELD)} at the university and later worked as a teacher. "
            f"In {rng.randint(1920, 2020)}, {name} moved to {rng.choice(CITY)} with a friend.")
    return docs


@pytest.fixture
def bios_path(tmp_path):
    path = tmp_path / "bios.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in make_bios(120)) + "\n")
    return path


@pytest.fixture
def data_kwargs(bios_path, tmp_path):
    """CorpusDataModule arguments for a seconds-fast run."""
    from lacy.corpus import JsonlCorpus

    return dict(corpus=JsonlCorpus(str(bios_path)), bpe_vocab_size=300, block_size=32, batch_size=4,
                val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
