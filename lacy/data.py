"""Documents -> tokens -> packed blocks with per-token side arrays, as a LightningDataModule.

Tokens of all documents form one stream (each document followed by EOS). A block is a window of
``block_size + 1`` tokens with stride ``block_size``: inputs are its first ``block_size`` tokens and
labels the last ``block_size``, so every token is a target exactly once. Side arrays (fact flags,
reference losses, judge labels: whatever an annotator writes) are aligned with the stream and are
sliced like the labels, so batch[name][b, t] describes the target labels[b, t]. A strategy that needs a
new signal adds an annotator; the loader never changes.

Everything derived from the corpus is cached under ``cache_dir`` keyed by a hash of its inputs.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lacy.annotate import Annotator, annotate_split
from lacy.corpus import Corpus, WikiSummaries
from lacy.errors import UsageError
from lacy.objective import IGNORE_INDEX
from lacy.tokenizer import gpt2_folder, load_tokenizer, train_bpe

CACHE_VERSION = "2"  # bump when the on-disk format changes


def stable_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_dir(final: Path, write) -> Path:
    """Build a directory in a temporary sibling and rename it into place: a killed run leaves no half cache."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        write(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.exists():  # a real failure, not a concurrent writer that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class TokenizedSplit:
    """One split on disk: memory-mapped token ids and character offsets, and the documents' texts.

    Files: ``ids.bin`` (int32, documents each followed by EOS), ``offsets.bin`` (int32 pairs: character
    offsets into the document; (0, 0) for EOS), ``doc_starts.npy`` (document d's tokens are
    ``doc_starts[d] : doc_starts[d+1] - 1``), ``texts.jsonl`` + ``text_index.npy`` (byte offsets of its lines).
    Nothing is read into memory until used, so a corpus of billions of tokens costs no RAM to open.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        n = json.loads((self.path / "meta.json").read_text())["tokens"]
        self.ids = self._map("ids.bin", (n,))
        self.offsets = self._map("offsets.bin", (n, 2))
        self.doc_starts = np.load(self.path / "doc_starts.npy")
        self.text_index = np.load(self.path / "text_index.npy")

    def _map(self, name: str, shape: tuple) -> np.ndarray:
        if shape[0] == 0:
            return np.zeros(shape, dtype=np.int32)
        return np.memmap(self.path / name, dtype=np.int32, mode="r", shape=shape)

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts) - 1

    def texts(self, docs: range) -> list[str]:
        """The texts of a contiguous range of documents, in one read."""
        if len(docs) == 0:
            return []
        with open(self.path / "texts.jsonl", "rb") as f:
            f.seek(int(self.text_index[docs.start]))
            raw = f.read(int(self.text_index[docs.stop] - self.text_index[docs.start]))
        return [json.loads(line) for line in raw.splitlines()]

    def doc_slice(self, d: int) -> slice:
        return slice(int(self.doc_starts[d]), int(self.doc_starts[d + 1]) - 1)


class SplitWriter:
    """Appends tokenized documents to a split's files (see :class:`TokenizedSplit`), batch by batch."""

    def __init__(self, path: Path, tokenizer):
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.tokenizer = path, tokenizer
        self.files = [open(path / name, "wb") for name in ("ids.bin", "offsets.bin", "texts.jsonl")]
        self.starts, self.text_index = [0], [0]

    def add(self, texts: list[str]) -> None:
        f_ids, f_off, f_txt = self.files
        eos = self.tokenizer.eos_token_id
        for text, enc in zip(texts, self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)):
            np.asarray(enc.ids + [eos], dtype=np.int32).tofile(f_ids)
            np.asarray(enc.offsets + [(0, 0)], dtype=np.int32).reshape(-1, 2).tofile(f_off)
            self.starts.append(self.starts[-1] + len(enc.ids) + 1)
            line = (json.dumps(text) + "\n").encode()
            f_txt.write(line)
            self.text_index.append(self.text_index[-1] + len(line))

    def close(self) -> None:
        for f in self.files:
            f.close()
        np.save(self.path / "doc_starts.npy", np.asarray(self.starts, dtype=np.int64))
        np.save(self.path / "text_index.npy", np.asarray(self.text_index, dtype=np.int64))
        (self.path / "meta.json").write_text(json.dumps({"tokens": self.starts[-1], "docs": len(self.starts) - 1}))


class PackedBlocks(Dataset):
    """Fixed-length blocks over a token stream; the last block is padded (labels IGNORE_INDEX)."""

    def __init__(self, ids: np.ndarray, side: dict[str, np.ndarray], block_size: int, pad_id: int):
        self.ids, self.side, self.block_size, self.pad_id = ids, side, block_size, pad_id
        self.n = max(0, -(-(len(ids) - 1) // block_size))

    def __len__(self) -> int:
        return self.n

    def _window(self, arr: np.ndarray, start: int, stop: int, fill) -> torch.Tensor:
        piece = arr[start:stop]
        if len(piece) < self.block_size:
            piece = np.concatenate([piece, np.full(self.block_size - len(piece), fill, dtype=arr.dtype)])
        return torch.from_numpy(np.array(piece))  # a copy: the stream is a read-only memory map

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s, T = k * self.block_size, self.block_size
        item = {
            "input_ids": self._window(self.ids, s, s + T, self.pad_id).long(),
            "labels": self._window(self.ids, s + 1, s + T + 1, IGNORE_INDEX).long(),
        }
        for name, arr in self.side.items():
            item[name] = self._window(arr, s + 1, s + T + 1, 0)
        return item


class ResumableSampler(Sampler[int]):
    """An endless, reproducible stream of block indices, resumed from the trainer's position.

    Data epoch e visits all blocks in the permutation seeded by (seed, e). Each ``__iter__`` starts at
    ``position()`` (blocks this rank has consumed, derived from the restored ``global_step``), so a
    resumed run sees exactly the batches an uninterrupted run would. Rank r of w takes every w-th block.
    """

    def __init__(self, num_blocks: int, seed: int, position, rank: int = 0, world: int = 1):
        self.num_blocks, self.seed, self.position, self.rank, self.world = num_blocks, seed, position, rank, world

    def __len__(self) -> int:
        return self.num_blocks // self.world

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)

    def __iter__(self):
        start = self.position()
        epoch, perm = -1, None
        for i in range(start, start + len(self)):
            g = i * self.world + self.rank
            if g // self.num_blocks != epoch:
                epoch = g // self.num_blocks
                perm = self._perm(epoch)
            yield int(perm[g % self.num_blocks])


class ResumableDataLoader(DataLoader):
    """Tells Lightning the loader resumes mid-epoch: its position is derived from the restored global_step."""

    def state_dict(self) -> dict:
        return {"position": self.sampler.position()}

    def load_state_dict(self, state: dict) -> None:
        pass  # nothing to restore: position() reads the trainer's restored global_step


class CorpusDataModule(L.LightningDataModule):
    """Tokenized, packed, annotated corpus.

    Args:
        corpus: document source (default: the offline Wikipedia summaries).
        tokenizer: null trains a byte-level BPE on the training split (cached); ``gpt2`` is the offline GPT-2
            BPE (50,257 + <CALL>); anything else is a local HF tokenizer folder.
        bpe_vocab_size: vocabulary of the trained BPE, before ``<CALL>``.
        block_size: tokens per training sequence (the model's context).
        batch_size: sequences per micro-batch, per device.
        val_fraction: fraction of documents held out for validation (split by a seeded permutation); ignored
            when the corpus defines its own split (``Corpus.held_out``, e.g. the closed world).
        seed: split and data-order seed.
        cache_dir: where tokenized data, tokenizers and side arrays are cached.
        num_workers: DataLoader worker processes.
        annotators: offline per-token annotators whose arrays travel with the tokens (e.g. fact flags).
    """

    def __init__(self, corpus: Corpus | None = None, tokenizer: str | None = None, bpe_vocab_size: int = 8192,
                 block_size: int = 256, batch_size: int = 8, val_fraction: float = 0.02, seed: int = 1234,
                 cache_dir: str = ".cache/lacy", num_workers: int = 0, annotators: list[Annotator] | None = None):
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise UsageError(f"data.val_fraction={val_fraction} must be in [0, 1)")
        self.corpus = corpus if corpus is not None else WikiSummaries()
        self.tokenizer_path, self.bpe_vocab_size = tokenizer, bpe_vocab_size
        self.block_size, self.batch_size, self.val_fraction, self.seed = block_size, batch_size, val_fraction, seed
        self.cache_dir, self.num_workers = Path(cache_dir), num_workers
        self.annotators = list(annotators or [])
        for ann in self.annotators:
            ann.bind(corpus)
        self._prepared: Path | None = None
        self._corpus_digest: tuple[str, int] | None = None
        self.tokenizer = None
        self.splits: dict[str, TokenizedSplit] = {}
        self.side: dict[str, dict[str, np.ndarray]] = {}

    # -- building the cache ---------------------------------------------------------------------------
    def _digest(self) -> tuple[str, int]:
        """The corpus' content hash and document count; memoised on disk by file metadata, so a process
        start (every DDP rank, every annotation shard) does not re-read a billion-token corpus."""
        if self._corpus_digest is None:
            key, memo = self.corpus.stat_key(), self.cache_dir / "digests.jsonl"
            known = {}
            if key is not None and memo.exists():
                known = {r["key"]: r for r in map(json.loads, memo.read_text().splitlines()) if r}
            if key in known:
                self._corpus_digest = (known[key]["digest"], known[key]["docs"])
            else:
                self._corpus_digest = self.corpus.digest()
                if key is not None:
                    memo.parent.mkdir(parents=True, exist_ok=True)
                    with open(memo, "a") as f:  # one short line per write: appends from several processes are safe
                        f.write(json.dumps({"key": key, "digest": self._corpus_digest[0],
                                            "docs": self._corpus_digest[1]}) + "\n")
        return self._corpus_digest

    def _is_val(self) -> np.ndarray:
        """Which documents are held out: the corpus' own split if it has one, else the first
        round(val_fraction x n) (at least 1) of a seeded permutation."""
        n = self._digest()[1]
        own = self.corpus.held_out()
        if own is not None:
            if len(own) != n or all(own) or not any(own):
                raise ValueError(f"{type(self.corpus).__name__}.held_out() must mark {n} documents with both "
                                 "splits non-empty")
            return np.asarray(own, dtype=bool)
        if n == 0:
            raise UsageError(f"corpus {type(self.corpus).__name__} has no documents; check data.corpus")
        n_val = 0 if self.val_fraction == 0 else max(1, round(self.val_fraction * n))
        if n - n_val < 1:
            raise UsageError(f"corpus has {n} document(s): too few to hold out data.val_fraction="
                             f"{self.val_fraction}; add documents or set val_fraction: 0")
        is_val = np.zeros(n, dtype=bool)
        is_val[np.random.default_rng(self.seed).permutation(n)[:n_val]] = True
        return is_val

    def cache_key(self) -> str:
        tok = self.tokenizer_path or f"bpe{self.bpe_vocab_size}"
        if tok not in ("gpt2", f"bpe{self.bpe_vocab_size}"):
            tok = str(Path(tok).resolve())
        parts = [CACHE_VERSION, self._digest()[0], tok, self.val_fraction, self.seed]
        # a corpus that chooses its own BPE text or split: both change the cache without changing the content
        bpe = self.corpus.bpe_documents() if self.tokenizer_path is None else None
        if bpe is not None:
            h = hashlib.sha256()
            for doc in bpe:
                h.update(doc.encode("utf-8") + b"\0")
            parts.append(h.hexdigest()[:16])
        own = self.corpus.held_out()
        if own is not None:
            parts.append(hashlib.sha256(np.packbits(np.asarray(own, dtype=bool)).tobytes()).hexdigest()[:16])
        return stable_hash(*parts)

    def prepare(self) -> Path:
        """Tokenizer and tokenized splits, from cache when present. Idempotent; safe across processes.

        Streams the corpus (count + hash, BPE training, tokenization), so its size is bounded by disk, not RAM.
        """
        if self._prepared is None:
            def write(tmp: Path):
                is_val = self._is_val()
                if self.tokenizer_path is None:
                    train_docs = self.corpus.bpe_documents() or (
                        d for d, v in zip(self.corpus.nonempty(), is_val) if not v)
                    tok = train_bpe(train_docs, self.bpe_vocab_size)
                elif self.tokenizer_path == "gpt2":
                    tok = load_tokenizer(gpt2_folder(tmp / "gpt2"))
                else:
                    tok = load_tokenizer(self.tokenizer_path)
                tok.save_pretrained(tmp / "tokenizer")
                writers = [SplitWriter(tmp / "train", tok), SplitWriter(tmp / "val", tok)]
                batch: list[list[str]] = [[], []]
                for doc, v in zip(self.corpus.nonempty(), is_val.tolist()):
                    batch[v].append(doc)
                    if len(batch[v]) == 4096:
                        writers[v].add(batch[v])
                        batch[v] = []
                for w, b in zip(writers, batch):
                    w.add(b)
                    w.close()
            self._prepared = atomic_dir(self.cache_dir / self.cache_key(), write)
            self.tokenizer = load_tokenizer(self._prepared / "tokenizer")
        return self._prepared

    @property
    def vocab_size(self) -> int:
        """Tokenizer ids including ``<CALL>``: linked to ``model.vocab_size`` so it is stated once."""
        self.prepare()
        return len(self.tokenizer)

    def _check_size(self, root: Path) -> None:
        n = json.loads((root / "train" / "meta.json").read_text())["tokens"]
        if n < self.block_size + 1:
            raise UsageError(f"the training split has {n} tokens, fewer than one block (data.block_size + 1 = "
                             f"{self.block_size + 1}); use a larger corpus or a smaller data.block_size")

    def prepare_data(self) -> None:
        root = self.prepare()
        self._check_size(root)  # before any (expensive) annotation
        for ann in self.annotators:
            for split in ("train", "val"):
                annotate_split(ann, root, split, self.block_size)

    def setup(self, stage: str | None = None) -> None:
        root = self.prepare()
        self._check_size(root)
        for split in ("train", "val"):
            self.splits[split] = TokenizedSplit(root / split)
            self.side[split] = {a.name: annotate_split(a, root, split, self.block_size) for a in self.annotators}

    # -- loaders ----------------------------------------------------------------------------------------
    def dataset(self, split: str) -> PackedBlocks:
        return PackedBlocks(self.splits[split].ids, self.side[split], self.block_size, self.tokenizer.eos_token_id)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        per_step = trainer.accumulate_grad_batches * self.batch_size
        data = self.dataset("train")
        sampler = ResumableSampler(len(data), self.seed, lambda: trainer.global_step * per_step,
                                   trainer.global_rank, trainer.world_size)
        if len(sampler) < self.batch_size:
            raise UsageError(f"the training split has {len(data)} blocks, fewer than one batch per device "
                             f"(data.batch_size={self.batch_size} x {trainer.world_size} devices); use a larger "
                             "corpus or smaller data.batch_size / data.block_size")
        return ResumableDataLoader(data, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        if len(self.splits["val"].ids) < 2:
            return []
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers)

    test_dataloader = val_dataloader
