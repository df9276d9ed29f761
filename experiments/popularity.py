"""Does LaCy's loss ranking keep the popular people's facts? Per popularity bucket, on a run's world (issue 14.5).

The paper's argument: among flagged facts, the ones a model can learn (popular, seen often) have a lower loss,
so the in-batch top-loss rule delegates the tail and the SLM learns the head. This measures both halves on the
closed world's validation documents with each run's final model, teacher-forced:

- ``loss``: mean loss (-log p_noCALL, nats) at fact-value tokens of people in each bucket;
- ``rule``: the share of those tokens that LaCy's rule would call at ``--rate`` of all targets when the flags
  are the true fact values: the top ``rate x targets`` fact tokens by this model's loss (over the whole
  validation set; training ranks per batch of 8 x 256).

On a model trained without calls (Vanilla) ``rule`` shows what the loss signal *could* separate; on a LaCy
model it shows what the rule picks once delegated facts have had no gradient: a fact called early never gets
easier, so it keeps being called, whatever its popularity.

    python -m experiments.popularity runs/study-dense/vanilla-s1 runs/study-dense/lacy-s1 [--rate 0.15]
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from experiments.runner import trained_world
from lacy.errors import ArgumentParser, entry_point
from lacy.eval.kb_metrics import BUCKETS, _target_losses, bucket
from lacy.worlds.fact_masks import PlacementDocs


@torch.no_grad()
def by_popularity(model, docs: PlacementDocs, rate: float = 0.15) -> dict[str, dict[str, float]]:
    """bucket -> {"loss": mean loss at its fact tokens, "rule": share of them in the rule's call set,
    "tokens": how many}; the rule calls the ``rate x targets`` fact tokens of highest loss."""
    loss, fact, pop = [], [], []
    for ids, f, p in zip(docs.ids, docs.fact, docs.popularity):
        x = _target_losses(model, ids)[1].numpy()
        loss.append(x)
        fact.append(f[:len(x)])
        pop.append(np.full(len(x), bucket(p) if p > 0 else ""))
    loss, fact, pop = np.concatenate(loss), np.concatenate(fact), np.concatenate(pop)
    k = min(int(fact.sum()), round(rate * len(loss)))
    called = np.zeros(len(loss), dtype=bool)
    facts = np.flatnonzero(fact)
    called[facts[np.argsort(-loss[facts], kind="stable")[:k]]] = True
    out = {}
    for _, _, name in BUCKETS:
        m = fact & (pop == name)
        if m.any():
            out[name] = {"loss": float(loss[m].mean()), "rule": float(called[m].mean()), "tokens": int(m.sum())}
    return out


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of experiments.closed_world")
    p.add_argument("--rate", type=float, default=0.15, help="the rule's call rate (LaCy's default 0.15)")
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows, names = [], []
    for run, export, world in [(Path(r), *trained_world(Path(r))) for r in args.runs]:  # all checked first
        tok = AutoTokenizer.from_pretrained(export)
        model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True).eval()
        docs = PlacementDocs.build(world.kb(), tok, [(q.name, d) for q, d in world.val_documents()],
                                   {q.name: q.docs for q in world.people})
        got = by_popularity(model, docs, args.rate)
        names = names or list(got)  # the first run's buckets; a bucket another run lacks is an empty cell
        cell = lambda b, key: f"{got[b][key]:.2f}" if b in got else ""
        rows.append(f"| {run.name} | " + " | ".join(cell(b, "loss") for b in names) + " | " +
                    " | ".join(cell(b, "rule") for b in names) + " |")
    print("| run | " + " | ".join(f"loss {b}" for b in names) + " | " + " | ".join(f"rule {b}" for b in names)
          + " |\n" + "|---" * (1 + 2 * len(names)) + "|\n" + "\n".join(rows))


if __name__ == "__main__":
    entry_point(main)()
