"""``python -m lacy.world``: write a closed world's files and print its fact share (lacy/worlds/closed_world.py).

    python -m lacy.world --out runs/world      # writes kb.json, prompts.jsonl, probes.jsonl, train/val.jsonl
    python -m lacy.world --config configs/lacy.yaml --config configs/world/dense.yaml   # the world a config trains on
"""
import argparse

from lacy.errors import ArgumentParser, entry_point
from lacy.worlds.closed_world import ClosedWorld
from lacy.worlds.fact_masks import fact_share


def main(argv=None):
    """Write a closed world's files (--out) and print its fact-value share of validation tokens."""
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write kb.json, prompts.jsonl, probes.jsonl, train.jsonl, val.jsonl here")
    p.add_argument("--config", action="append",
                   help="take the world from a training config's data.corpus (repeat for overlays, as with main.py: "
                        "--config configs/lacy.yaml --config configs/world/dense.yaml); else --people/--seed/--rounds")
    p.add_argument("--people", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    if args.config:
        from lacy.cli import world_from_configs  # here: the CLI (Lightning, torch) costs seconds; --out needs none

        world, vocab = world_from_configs(args.config)
    else:
        world, vocab = ClosedWorld(people=args.people, seed=args.seed, rounds=args.rounds), 2048
    if args.out:
        print(world.write(args.out))
    print(f"fact-value tokens: {fact_share(world, vocab):.1%} of validation targets ({world.n_people} people, "
          f"{world.val_docs} documents, BPE {vocab}, attributes: {', '.join(world.templates)})")


if __name__ == "__main__":
    entry_point(main)()
