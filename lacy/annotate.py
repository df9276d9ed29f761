"""Offline per-token annotation of a tokenized corpus: resumable, sharded, cached.

An annotator turns documents (text + subword character offsets) into one value per subword. The runner
cuts a split into chunks of documents, writes each finished chunk atomically, and skips finished chunks
on a re-run, so a killed run resumes where it stopped. ``--shard i --num-shards n`` lets n machines
each do every n-th chunk over a shared folder; any later run assembles the chunks.

Command (same config as training, so the cache key matches):

    python -m lacy.annotate --config configs/lacy.yaml [--shard 0 --num-shards 4] [--prepare-only]
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm


class Annotator:
    """Base class. ``name`` is the batch key the values travel under."""

    name: str = "side"
    dtype = np.float32
    chunk_docs: int = 500  # documents per resumable unit

    def fingerprint(self) -> str:
        """Hash of everything that changes the values (model, version, rules)."""
        raise NotImplementedError

    def annotate(self, texts: list[str], offsets: list[np.ndarray]) -> list[np.ndarray]:
        """One array per document, one value per subword (``offsets[d]`` is (n_d, 2) char offsets)."""
        raise NotImplementedError


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def annotate_split(ann: Annotator, root: Path, split: str, shard: int = 0, num_shards: int = 1,
                   progress: bool = True) -> np.ndarray | None:
    """The annotator's array for ``root/split``, aligned with its token ids; computes missing chunks.

    Returns None when this shard is done but other shards' chunks are still missing.
    """
    from lacy.data import TokenizedSplit

    out = Path(root) / "side" / f"{ann.name}-{ann.fingerprint()}"
    final = out / f"{split}.npy"
    if final.exists():
        return np.load(final, mmap_mode="r")
    data = TokenizedSplit(Path(root) / split)
    chunks = [range(s, min(s + ann.chunk_docs, data.n_docs)) for s in range(0, data.n_docs, ann.chunk_docs)]
    chunk_dir = out / f"{split}-chunks-of-{ann.chunk_docs}"  # a different chunk size never mixes with these
    chunk_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(shard, len(chunks), num_shards) if not (chunk_dir / f"{i:06d}.npy").exists()]
    n_words = lambda texts: sum(len(t.split()) for t in texts)  # noqa: E731
    bar = tqdm(total=len(todo), unit="chunk", disable=not progress or not todo, file=sys.stderr,
               desc=f"annotating {ann.name} ({split}, {len(todo)} of {len(chunks)} chunks left)")
    words, t0 = 0, time.perf_counter()
    for i in todo:
        texts = data.texts(chunks[i])
        values = ann.annotate(texts, [data.offsets[data.doc_slice(d)] for d in chunks[i]])
        for d, v in zip(chunks[i], values):
            n = data.doc_slice(d).stop - data.doc_slice(d).start
            if len(v) != n:
                raise RuntimeError(f"{type(ann).__name__} returned {len(v)} values for a {split} document of {n} tokens")
        flat = np.concatenate(values).astype(ann.dtype) if values else np.zeros(0, ann.dtype)
        _save_atomic(chunk_dir / f"{i:06d}.npy", flat)
        words += n_words(texts)
        bar.set_postfix_str(f"{words / (time.perf_counter() - t0):,.0f} words/s")
        bar.update()
    bar.close()
    if any(not (chunk_dir / f"{i:06d}.npy").exists() for i in range(len(chunks))):
        return None
    # assemble on disk: a billion-token split never has to fit in memory
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{split}-", suffix=".npy")
    os.close(fd)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=ann.dtype, shape=data.ids.shape)
    for i, docs in enumerate(chunks):
        a, b = int(data.doc_starts[docs.start]), int(data.doc_starts[docs.stop])
        is_eos = np.zeros(b - a, dtype=bool)
        is_eos[data.doc_starts[docs.start + 1:docs.stop + 1] - 1 - a] = True
        region = np.zeros(b - a, dtype=ann.dtype)
        region[~is_eos] = np.load(chunk_dir / f"{i:06d}.npy")
        arr[a:b] = region
    arr.flush()
    del arr
    os.replace(tmp, final)
    return np.load(final, mmap_mode="r")


def main(argv=None) -> None:
    """Annotate the corpus of a training config, or one shard of it."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the training YAML (its data section is used)")
    parser.add_argument("--shard", type=int, default=0, help="this machine's shard index, 0-based")
    parser.add_argument("--num-shards", type=int, default=1, help="number of machines splitting the corpus")
    parser.add_argument("--prepare-only", action="store_true",
                        help="tokenize (and train the BPE) into cache_dir, then stop: run once before the shards")
    args = parser.parse_args(argv)
    if not 0 <= args.shard < args.num_shards:
        parser.error(f"--shard {args.shard} must be in [0, --num-shards={args.num_shards})")
    from lacy.cli import cli_main

    data = cli_main(["--config", args.config], run=False).datamodule
    root = data.prepare()
    print(f"tokenized corpus: {root}")
    if args.prepare_only:
        return
    for ann in data.annotators:
        for split in ("train", "val"):
            t0 = time.perf_counter()
            arr = annotate_split(ann, root, split, args.shard, args.num_shards)
            state = "complete" if arr is not None else "shard done; other shards pending"
            print(f"{ann.name} {split}: {state} ({time.perf_counter() - t0:.1f}s)"
                  + (f", mean value {arr.mean():.4f} over {len(arr)} tokens" if arr is not None else ""))


if __name__ == "__main__":
    main()
