"""Documents -> tokens -> packed blocks with per-token side arrays, as a LightningDataModule.

The corpus is tokenized once into ``cache_dir`` (lacy/data/store.py), annotated by the configured annotators
(lacy/data/annotation.py: resumable, sharded, cached; ``python -m lacy.annotate`` runs them ahead of training) and
served as packed blocks in a resumable order (lacy/data/packing.py).
"""
import hashlib
import json
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from lacy.data.annotation import Annotator, annotate_split
from lacy.data.corpus import Corpus, WikiSummaries
from lacy.data.packing import PackedBlocks, ResumableDataLoader, ResumableSampler
from lacy.data.store import CACHE_VERSION, SplitWriter, TokenizedSplit, stable_hash
from lacy.data.tokenizer import EOS_TOKEN, MIN_BPE_VOCAB, gpt2_folder, load_tokenizer, train_bpe
from lacy.errors import UsageError
from lacy.io.atomic import atomic_dir
from lacy.io.marker import own_cache
from lacy.model.loading import HUB_PREFIX, SMOLLM2, materialise, model_source


def _json_or_none(line: str):
    """A memo line, or None for a torn one (a write a full disk or a kill cut short): the digest is recomputed."""
    try:
        return json.loads(line)
    except ValueError:
        return None


class CorpusDataModule(L.LightningDataModule):
    """Tokenized, packed, annotated corpus.

    Args:
        corpus: document source (default: the offline Wikipedia summaries).
        tokenizer: null trains a byte-level BPE on the training split (cached); ``gpt2`` is the offline GPT-2
            BPE (50,257 + <CALL>); ``smollm2`` / ``hf:NAME`` a pretrained model's own tokenizer (the one
            ``model.pretrained`` continues); anything else is a local HF tokenizer folder.
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
            ann.bind(self.corpus)  # the default corpus too (binding the argument gave None)
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
            own_cache(self.cache_dir)  # the first use of the cache: a user's folder is refused before any write
            key, memo = self.corpus.stat_key(), self.cache_dir / "digests.jsonl"
            known = {}
            if key is not None and memo.exists():
                known = {r["key"]: r for r in map(_json_or_none, memo.read_text(errors="replace").splitlines())
                         if isinstance(r, dict) and {"key", "digest", "docs"} <= r.keys()}
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
            tok = str(self._tokenizer_folder().resolve())
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

    def _tokenizer_folder(self) -> Path:
        """``data.tokenizer`` as a local folder: a pretrained model's own tokenizer (``smollm2``, ``hf:NAME``: the
        folder lacy/model/loading.py materialises, the same the model is read from) or the folder given."""
        if self.tokenizer_path == SMOLLM2 or self.tokenizer_path.startswith(HUB_PREFIX):
            source = model_source(self.tokenizer_path, "data.tokenizer", "", hub_allowed=True)
            return Path(materialise(source, self.cache_dir).path)
        return Path(self.tokenizer_path)

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
                    tok = load_tokenizer(self._tokenizer_folder())
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

    def held_out_documents(self) -> list[str]:
        """The documents of the validation split, as the corpus gives them (what the SLM is never trained on)."""
        return [d for d, v in zip(self.corpus.nonempty(), self._is_val().tolist()) if v]

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

    # -- resume: the data position -------------------------------------------------------------------------
    def position_meaning(self, trainer) -> dict:
        """What a resumed fit's data position (``global_step`` x accumulation x batch size blocks into the seeded
        order of the cached training blocks, per device) means; stored in every checkpoint."""
        data = self._prepared.name if self._prepared is not None else self.cache_key()  # the cache folder's name
        return {"data": data, "data.block_size": self.block_size, "data.batch_size": self.batch_size,
                "trainer.accumulate_grad_batches": trainer.accumulate_grad_batches, "devices": trainer.world_size}

    def check_resume(self, stored: dict | None, path, trainer, early: bool = False) -> None:
        """UsageError when a checkpoint's data position (its :meth:`position_meaning`) would mean other data in this
        run: resuming with another batch size skipped or repeated blocks. Checkpoints without it pass. ``early``
        (before the fit's setup, where lacy.TokenBudget may still set the accumulation): accumulation unchecked."""
        meaning = (stored or {}).get("data_position")
        if not meaning:
            return
        now = self.position_meaning(trainer)
        for key, was in meaning.items():
            if early and key == "trainer.accumulate_grad_batches":
                continue
            if key in now and now[key] != was:
                what = ("the corpus, tokenizer, data.seed or data.val_fraction changed" if key == "data" else
                        f"{key} {was} (checkpoint) -> {now[key]} (this run)")
                raise UsageError(f"resuming {path}: {what}, so its data position means other data; resume with the "
                                 "checkpoint's settings, or drop --ckpt_path to start a new run")

    def state_dict(self) -> dict:
        return {"data_position": self.position_meaning(self.trainer)} if self.trainer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.trainer is not None and self.trainer.state.fn == "fit":
            self.check_resume(state, getattr(self.trainer, "ckpt_path", None) or "the checkpoint", self.trainer)

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
