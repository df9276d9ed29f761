"""Offline per-token annotation of a tokenized corpus: resumable, sharded, cached (the command).

The annotator interfaces and the runner live in lacy/data/annotation.py (the DataModule runs them too). The
runner writes each finished chunk atomically and skips finished chunks on a re-run, so a killed run resumes where
it stopped. ``--shard i --num-shards n`` lets n machines each do every n-th chunk over a shared folder; any later
run assembles the chunks.

Command (builds only the data section of a training config, parsed as main.py parses it, so the cache key
matches; no GPU needed):

    python -m lacy.annotate --config configs/lacy.yaml [--config overlay.yaml] [--shard 0 --num-shards 4] [--prepare-only]
"""
import argparse
import time

from lacy.cli import data_from_configs
from lacy.data.annotation import annotate_split
from lacy.errors import ArgumentParser, entry_point


def main(argv=None) -> None:
    """Annotate the corpus of a training config, or one shard of it."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, action="append",
                        help="the training YAML (its data section is used); repeat for overlays, as with main.py")
    parser.add_argument("--shard", type=int, default=0, help="this machine's shard index, 0-based")
    parser.add_argument("--num-shards", type=int, default=1, help="number of machines splitting the corpus")
    parser.add_argument("--prepare-only", action="store_true",
                        help="tokenize (and train the BPE) into cache_dir, then stop: run once before the shards")
    args = parser.parse_args(argv)
    if not 0 <= args.shard < args.num_shards:
        parser.error(f"--shard {args.shard} must be in [0, --num-shards={args.num_shards})")
    data = data_from_configs(args.config)
    root = data.prepare()
    print(f"tokenized corpus: {root}")
    if args.prepare_only:
        return
    for ann in data.annotators:
        for split in ("train", "val"):
            t0 = time.perf_counter()
            arr = annotate_split(ann, root, split, data.block_size, args.shard, args.num_shards)
            state = "complete" if arr is not None else "shard done; other shards pending"
            print(f"{ann.name} {split}: {state} ({time.perf_counter() - t0:.1f}s)"
                  + (f", mean value {arr.mean():.4f} over {len(arr)} tokens" if arr is not None else ""))
        if ann.stats():
            counts = ", ".join(f"{k} {v}" for k, v in ann.stats().items())
            print(f"{ann.name}, documents annotated by this run: {counts}")


if __name__ == "__main__":
    entry_point(main)()
