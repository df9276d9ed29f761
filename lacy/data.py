"""Documents -> tokens -> packed blocks with per-token side arrays, as a LightningDataModule.

Tokens of all documents form one stream (each document followed by EOS). A block is a window of
``block_size + 1`` tokens with stride ``block_size``: inputs are its first ``block_size`` tokens and
labels the last ``block_size``, so every token is a target exactly once. Side arrays (fact flags,
reference losses, judge labels: whatever an annotator writes) are aligned with the stream and are
sliced like the labels, so batch[name][b, t] describes the target labels[b, t]. A strategy that needs a
new signal adds an annotator (:class:`Annotator`, run by :func:`annotate_split`: resumable, sharded,
cached); the loader never changes. ``python -m lacy.annotate`` runs the annotators ahead of training.

Everything derived from the corpus is cached under ``cache_dir`` keyed by a hash of its inputs.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from lacy.corpus import Corpus, WikiSummaries
from lacy.errors import UsageError
from lacy.objective import IGNORE_INDEX
from lacy.tokenizer import EOS_TOKEN, MIN_BPE_VOCAB, gpt2_folder, load_tokenizer, train_bpe

CACHE_VERSION = "3"  # bump when the on-disk format changes (3: text never encodes to a special id)


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
        self.special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int32)
        self.files = [open(path / name, "wb") for name in ("ids.bin", "offsets.bin", "texts.jsonl")]
        self.starts, self.text_index = [0], [0]

    def add(self, texts: list[str]) -> None:
        f_ids, f_off, f_txt = self.files
        eos = self.tokenizer.eos_token_id
        encs = self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        self._check_text_only(encs)
        for text, enc in zip(texts, encs):
            np.asarray(enc.ids + [eos], dtype=np.int32).tofile(f_ids)
            np.asarray(enc.offsets + [(0, 0)], dtype=np.int32).reshape(-1, 2).tofile(f_off)
            self.starts.append(self.starts[-1] + len(enc.ids) + 1)
            line = (json.dumps(text) + "\n").encode()
            f_txt.write(line)
            self.text_index.append(self.text_index[-1] + len(line))

    def _check_text_only(self, encs) -> None:
        """No text may produce a special id (EOS, ``<CALL>``, ...): lacy's tokenizers encode special tokens written
        in text as characters; a tokenizer whose ordinary encoding still reaches one is refused."""
        lengths = [len(e.ids) for e in encs]
        hit = np.isin(np.fromiter((i for e in encs for i in e.ids), dtype=np.int32, count=sum(lengths)), self.special)
        if hit.any():
            first = int(np.argmax(hit))
            doc = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
            bad = self.tokenizer.convert_ids_to_tokens(int(encs[doc].ids[first - sum(lengths[:doc])]))
            raise UsageError(f"data.tokenizer: the tokenizer encodes text of document {len(self.starts) + doc} of "
                             f"{self.path.name} to its special token {bad!r}: text could pose as a control token; "
                             "use a tokenizer whose special tokens no text can produce")

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


class Annotator:
    """Per-document annotator. ``name`` is the batch key the values travel under."""

    name: str = "side"
    dtype = np.float32
    chunk_docs: int = 500  # documents per resumable unit

    def fingerprint(self) -> str:
        """Hash of everything that changes the values (model, version, rules)."""
        raise NotImplementedError

    def bind(self, corpus) -> None:
        """Sees the corpus before annotating (e.g. the closed world's knowledge base); most ignore it."""

    def annotate(self, texts: list[str], offsets: list[np.ndarray]) -> list[np.ndarray]:
        """One array per document, one value per subword (``offsets[d]`` is (n_d, 2) char offsets)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Counts over the documents this process annotated (e.g. a judge's refused documents), which
        ``python -m lacy.annotate`` prints; chunks finished by an earlier run are not recounted."""
        return {}


class BlockAnnotator(Annotator):
    """Annotator whose value for a target depends on the training block around it (e.g. a reference model's
    loss given the same context the SLM sees), so it runs over the packed blocks, not over documents."""

    chunk_blocks: int = 64  # blocks per resumable unit

    def annotate_blocks(self, batch: dict) -> np.ndarray:
        """(B, T) values for a batch of blocks (``input_ids``, ``labels`` as the DataModule yields them)."""
        raise NotImplementedError


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def annotate_split(ann: Annotator, root: Path, split: str, block_size: int | None = None, shard: int = 0,
                   num_shards: int = 1, progress: bool = True) -> np.ndarray | None:
    """The annotator's array for ``root/split``, aligned with its token ids; computes missing chunks.

    Returns None when this shard is done but other shards' chunks are still missing.
    """
    data = TokenizedSplit(Path(root) / split)
    words = [0]  # words annotated so far, for the progress bar
    if isinstance(ann, BlockAnnotator):
        if block_size is None:
            raise ValueError(f"{type(ann).__name__} annotates training blocks: pass the data's block_size")
        blocks = PackedBlocks(data.ids, {}, block_size, pad_id=0)
        units = [range(s, min(s + ann.chunk_blocks, len(blocks))) for s in range(0, len(blocks), ann.chunk_blocks)]
        out = Path(root) / "side" / f"{ann.name}-{ann.fingerprint()}-block{block_size}"

        def compute(unit: range) -> np.ndarray:
            batch = {k: torch.stack([blocks[b][k] for b in unit]) for k in ("input_ids", "labels")}
            return np.asarray(ann.annotate_blocks(batch), dtype=ann.dtype).reshape(-1)

        def place(arr: np.ndarray, unit: range, flat: np.ndarray) -> None:
            for j, b in enumerate(unit):
                a = b * block_size + 1
                n = min(block_size, len(arr) - a)
                arr[a:a + n] = flat[j * block_size:j * block_size + n]
        unit_name = "blocks"
    else:
        units = [range(s, min(s + ann.chunk_docs, data.n_docs)) for s in range(0, data.n_docs, ann.chunk_docs)]
        out = Path(root) / "side" / f"{ann.name}-{ann.fingerprint()}"

        def compute(unit: range) -> np.ndarray:
            texts = data.texts(unit)
            words[0] += sum(len(t.split()) for t in texts)
            values = ann.annotate(texts, [data.offsets[data.doc_slice(d)] for d in unit])
            for d, v in zip(unit, values):
                n = data.doc_slice(d).stop - data.doc_slice(d).start
                if len(v) != n:
                    raise RuntimeError(f"{type(ann).__name__} returned {len(v)} values for a {split} document "
                                       f"of {n} tokens")
            return np.concatenate(values).astype(ann.dtype) if values else np.zeros(0, ann.dtype)

        def place(arr: np.ndarray, unit: range, flat: np.ndarray) -> None:
            a, b = int(data.doc_starts[unit.start]), int(data.doc_starts[unit.stop])
            is_eos = np.zeros(b - a, dtype=bool)
            is_eos[data.doc_starts[unit.start + 1:unit.stop + 1] - 1 - a] = True
            region = np.zeros(b - a, dtype=ann.dtype)
            region[~is_eos] = flat
            arr[a:b] = region
        unit_name = "docs"
    final = out / f"{split}.npy"
    if final.exists():
        return np.load(final, mmap_mode="r")
    # the chunk size is in the folder name: a run with another chunk size never mixes with these chunks
    chunk_dir = out / f"{split}-chunks-of-{len(units[0]) if units else 0}-{unit_name}"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(shard, len(units), num_shards) if not (chunk_dir / f"{i:06d}.npy").exists()]
    bar = tqdm(total=sum(len(units[i]) for i in todo), unit=unit_name[:-1], disable=not progress or not todo,
               file=sys.stderr, desc=f"annotating {ann.name} ({split}, {len(todo)} of {len(units)} chunks left)")
    t0 = time.perf_counter()
    for i in todo:
        _save_atomic(chunk_dir / f"{i:06d}.npy", compute(units[i]))
        if words[0]:
            bar.set_postfix_str(f"{words[0] / (time.perf_counter() - t0):,.0f} words/s")
        bar.update(len(units[i]))
    bar.close()
    if any(not (chunk_dir / f"{i:06d}.npy").exists() for i in range(len(units))):
        return None
    # assemble on disk: a billion-token split never has to fit in memory
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{split}-", suffix=".npy")
    os.close(fd)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=ann.dtype, shape=data.ids.shape)
    for i, unit in enumerate(units):
        place(arr, unit, np.load(chunk_dir / f"{i:06d}.npy"))
    arr.flush()
    del arr
    os.replace(tmp, final)
    return np.load(final, mmap_mode="r")


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
            raise UsageError(f"data.val_fraction={val_fraction}: must be in [0, 1); e.g. 0.02")
        for option, value in (("block_size", block_size), ("batch_size", batch_size)):
            if value < 1:
                raise UsageError(f"data.{option}={value}: must be a whole number >= 1 (tokens per block / blocks per "
                                 "batch), e.g. 256 / 8")
        if num_workers < 0:
            raise UsageError(f"data.num_workers={num_workers}: must be >= 0 (0 = load in the training process)")
        if tokenizer is None and bpe_vocab_size < MIN_BPE_VOCAB:
            raise UsageError(f"data.bpe_vocab_size={bpe_vocab_size}: a byte-level BPE has at least {MIN_BPE_VOCAB} ids "
                             f"(256 bytes + {EOS_TOKEN}); use {MIN_BPE_VOCAB} or more (the default is 8192)")
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
            raise UsageError(f"data.corpus: {self.corpus.describe()} has no documents (only blank ones); give a "
                             "corpus with text")
        n_val = 0 if self.val_fraction == 0 else max(1, round(self.val_fraction * n))
        if n - n_val < 1:
            raise UsageError(f"data.val_fraction={self.val_fraction}: {self.corpus.describe()} has {n} document(s), "
                             "too few to hold some out; add documents or set val_fraction: 0")
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
            raise UsageError(f"data.block_size={self.block_size}: the training split has {n} tokens, fewer than one "
                             f"block (block_size + 1); use a larger corpus or a smaller data.block_size")

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
            raise UsageError(f"data.batch_size={self.batch_size}: the training split has {len(data)} blocks, fewer "
                             f"than one batch per device ({trainer.world_size} devices); use a larger corpus or a "
                             "smaller data.batch_size / data.block_size")
        return ResumableDataLoader(data, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        if len(self.splits["val"].ids) < 2:
            return []
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers)

    test_dataloader = val_dataloader
