"""Offline per-token annotation of a tokenized corpus: resumable, sharded, cached (the command).

An annotator turns documents (text + subword character offsets) into one value per subword; a block
annotator turns training blocks into one value per target (e.g. a reference model's loss). The interfaces
and the runner live in lacy/data.py (the DataModule runs them too; this module only depends on it). The
runner cuts a split into chunks, writes each finished chunk atomically, and skips finished chunks on a re-run,
so a killed run resumes where it stopped. ``--shard i --num-shards n`` lets n machines each do every
n-th chunk over a shared folder; any later run assembles the chunks.

Command (reads only the data section of a training config, so the cache key matches; no GPU needed):

    python -m lacy.annotate --config configs/lacy.yaml [--config overlay.yaml] [--shard 0 --num-shards 4] [--prepare-only]
"""
import time
from pathlib import Path

from lacy.data import Annotator, BlockAnnotator, CorpusDataModule, annotate_split

from lacy.errors import ArgumentParser, UsageError, entry_point

__all__ = ["Annotator", "BlockAnnotator", "annotate_split", "data_from_configs", "main"]  # the interfaces, also importable from here


def _merge(base: dict, over: dict) -> dict:
    """An overlay's data section over the base's, as the CLI does: nested keys merge, lists and values replace,
    and a different ``class_path`` replaces the whole object (its init_args belong to the other class)."""
    out = dict(base)
    for k, v in over.items():
        same_class = isinstance(v, dict) and isinstance(out.get(k), dict) and v.get("class_path") in (
            None, out[k].get("class_path"))
        out[k] = _merge(out[k], v) if same_class else v
    return out


def data_from_configs(configs: list[str]) -> CorpusDataModule:
    """The DataModule a training config (and its overlays, in order) describes: their ``data`` sections merged as
    ``main.py`` merges them; nothing is tokenized yet. UsageError for a missing file or a bad data section."""
    import argparse

    import yaml
    from jsonargparse import ArgumentParser

    section: dict = {}
    for path in configs:
        if not Path(path).is_file():
            raise UsageError(f"--config {path}: no such file; give a training YAML, e.g. configs/lacy.yaml")
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            raise UsageError(f"--config {where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {path}: a YAML mapping (data:, model:, trainer:) was expected")
        section = _merge(section, loaded.get("data") or {})
    data_parser = ArgumentParser(exit_on_error=False)
    data_parser.add_class_arguments(CorpusDataModule, "data")
    try:
        parsed = data_parser.parse_object({"data": section})
    except argparse.ArgumentError as e:
        raise UsageError(f"--config {' '.join(configs)}: {e}") from e
    return data_parser.instantiate_classes(parsed).data


def main(argv=None) -> None:
    """Annotate the corpus of a training config, or one shard of it."""
    import argparse

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
