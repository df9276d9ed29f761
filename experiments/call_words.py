"""Where does a model trained on real text put ``<CALL>``? (issue 25, item 5)

On the hand-labelled fact words of held-out Wikipedia sentences (experiments/data/wiki_fact_words.jsonl, the
splits no rule was designed on: test, test2, test3, test4), each model's top ``--rate`` of target positions by
call score (teacher-forced, every sentence alone after the tokenizer's EOS, as documents are packed in training),
pooled over the sentences, scored against two masks: the hand labels (what a person calls a fact) and spaCy's
flags with LaCy's default rules (what LaCy was trained to delegate). A LaCy model scores by its ``<CALL>``
log-odds, a Vanilla model by its uncertainty (the confidence cascade's score), at the same share.
Precision = share of the chosen positions on the mask (chance: the mask's share of targets, ``fact_token_share``),
recall = share of the mask chosen.

    python -m experiments.call_words runs/pretrained/lacy runs/pretrained/vanilla [--rate 0.15] [--out FILE]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from experiments.runner import latest_export
from lacy.annotators.spacy_facts import SpacyFactAnnotator
from lacy.annotators.spans import span_flags
from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.eval.kb_metrics import call_placement
from lacy.io.marker import write_output
from lacy.worlds.fact_masks import PlacementDocs

DATA = Path(__file__).parent / "data" / "wiki_fact_words.jsonl"
HELD_OUT = ("test", "test2", "test3", "test4")


def masks(tokenizer, rows: list[dict]) -> dict[str, PlacementDocs]:
    """{"hand": ..., "spacy": ...}: the sentences as token ids after EOS with each mask over their targets."""
    encs = [tokenizer(r["text"], add_special_tokens=False, return_offsets_mapping=True) for r in rows]
    offsets = [np.asarray(e["offset_mapping"], dtype=np.int64).reshape(-1, 2) for e in encs]
    ids = [np.asarray([tokenizer.eos_token_id] + e["input_ids"]) for e in encs]
    hand = [span_flags(len(r["text"]), [(a, b) for a, b, _ in r["facts"]], off) for r, off in zip(rows, offsets)]
    spacy = SpacyFactAnnotator().annotate([r["text"] for r in rows], offsets)
    docs = lambda fact: PlacementDocs(ids, [np.asarray(f, bool) for f in fact], [np.zeros(len(f), bool) for f in fact],
                                      [0] * len(rows), [{} for _ in rows])
    return {"hand": docs(hand), "spacy": docs(spacy)}


def placement(run: Path, rows: list[dict], rate: float) -> dict:
    """A run folder's export scored on both masks: ``<mask>_<metric>`` for precision, recall, fact_token_share."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = latest_export(run)  # main checks every run has one before any work
    config = (export.parent / "config.yaml").read_text()
    score = "uncertainty" if "baselines.Vanilla" in config else "call"
    tok, model = AutoTokenizer.from_pretrained(export), AutoModelForCausalLM.from_pretrained(export).eval()
    out = {"run": str(run), "score": score, "sentences": len(rows), "rate": rate}
    for name, docs in masks(tok, rows).items():
        res = call_placement(model, docs, rate, score)
        out |= {f"{name}_{k}": res[k] for k in ("placement_precision", "placement_recall", "fact_token_share")}
    return out


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders with an HF export (lightning_logs/version_*/hf)")
    p.add_argument("--rate", type=float, default=0.15, help="share of target positions called (LaCy's budget)")
    p.add_argument("--splits", nargs="+", default=list(HELD_OUT), help="splits of wiki_fact_words.jsonl")
    p.add_argument("--out", default=None, help="JSON lines, one per run (default: print only)")
    args = p.parse_args(argv)
    if not 0 < args.rate < 1:
        raise UsageError(f"--rate {args.rate}: give a share between 0 and 1, e.g. 0.15")
    rows = [r for r in map(json.loads, DATA.read_text().splitlines()) if r["split"] in args.splits]
    if not rows:
        raise UsageError(f"--splits {' '.join(args.splits)}: no sentence of {DATA} is in them; use {' '.join(HELD_OUT)}")
    missing = [r for r in args.runs if latest_export(Path(r)) is None]
    if missing:
        raise UsageError(f"{missing[0]}: no Hugging Face export (lightning_logs/version_*/hf); fit the run first")
    lines = []
    with torch.no_grad():
        for run in args.runs:
            lines.append(json.dumps(placement(Path(run), rows, args.rate)))
            print(lines[-1], flush=True)
    if args.out:
        write_output(args.out, "\n".join(lines) + "\n", "--out")


if __name__ == "__main__":
    entry_point(main)()
