"""Offline per-token annotation of a tokenized split: the annotator interfaces and their resumable, sharded runner.

An annotator turns documents (text + subword character offsets) into one value per subword; a block annotator
turns training blocks into one value per target (e.g. a reference model's loss). :func:`annotate_split` cuts a
split into chunks, writes each finished chunk atomically and skips finished chunks on a re-run, so a killed run
resumes where it stopped; ``shard``/``num_shards`` let n machines each do every n-th chunk over a shared folder.
A strategy that needs a new signal adds an annotator; the loader never changes.
"""
import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lacy.data.packing import PackedBlocks
from lacy.data.store import TokenizedSplit
from lacy.io.atomic import atomic_file, atomic_path


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


@contextlib.contextmanager
def claim(path: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created empty) while computing what it names; yields False when
    another process holds it and ``wait`` is off. The kernel drops a dead process's lock: no claim outlives it.
    Two processes on one cache so share its chunks (each computes about half) instead of both computing all."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    # two passes: chunks no other process holds, then (waiting for them) the ones others held: a chunk another
    # process finished is skipped, one whose process died is computed here (its lock went with it)
    left = todo
    for wait in (False, True):
        held = []  # chunks another process was computing
        for i in left:
            chunk = chunk_dir / f"{i:06d}.npy"
            with claim(chunk_dir / f"{i:06d}.claim", wait) as mine:
                if not mine:
                    held.append(i)
                    continue
                if not chunk.exists():  # else another process finished it meanwhile
                    with atomic_file(chunk, suffix=".npy") as f:
                        np.save(f, compute(units[i]))
            if words[0]:
                bar.set_postfix_str(f"{words[0] / (time.perf_counter() - t0):,.0f} words/s")
            bar.update(len(units[i]))
        left = held
    bar.close()
    if any(not (chunk_dir / f"{i:06d}.npy").exists() for i in range(len(units))):
        return None
    # assemble on disk: a billion-token split never has to fit in memory
    with atomic_path(final, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=ann.dtype, shape=data.ids.shape)
        for i, unit in enumerate(units):
            place(arr, unit, np.load(chunk_dir / f"{i:06d}.npy"))
        arr.flush()
        del arr
    return np.load(final, mmap_mode="r")
