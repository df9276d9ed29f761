"""Which facts does each fact signal flag, and where do trained models call? Per KB relation, the share of its
value tokens that spaCy's default rules (LaCy's C_spaCy) and the KB oracle flag on the closed world's validation
documents (and the share of flags on fact values); with ``--models``, the same share for each model's own call
mask (its top 15% positions by call score, teacher-forced). A relation the signal misses cannot be delegated by
LaCy at any budget; a relation it flags but the model does not call on was not learned as a call.

    python -m experiments.flag_recall [--docs 200] [--models runs/study/lacy-s1 ...] [--out runs/study/flag_recall.md]
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from baselines.kb_oracle import KBOracleAnnotator
from experiments.runner import latest_export
from lacy.errors import ArgumentParser, entry_point
from lacy.worlds.fact_masks import PlacementDocs
from lacy.eval.kb_metrics import _target_losses, call_placement
from lacy.annotators.spacy_facts import SpacyFactAnnotator
from lacy.annotators.spans import span_flags
from lacy.data.tokenizer import train_bpe
from lacy.io.marker import write_output
from lacy.worlds.closed_world import ClosedWorld


def flag_recall(world: ClosedWorld, tokenizer, annotators: dict, docs: int) -> dict[str, dict[str, float]]:
    """signal -> {relation: recall of its value tokens, "_precision": share of flags on fact values}."""
    kb, val = world.kb(), list(world.val_documents())[:docs]
    texts = [d for _, d in val]
    encs = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    offsets = [np.asarray(e["offset_mapping"], dtype=np.int64).reshape(-1, 2) for e in encs]
    values = []  # per document: relation -> value-token mask
    for (person, text), off in zip(val, offsets):
        by_rel: dict[str, list] = {}
        for c in kb.claims(text, subject=person.name):
            by_rel.setdefault(c.attribute, []).append((c.start, c.end))
        values.append({r: span_flags(len(text), spans, off) for r, spans in by_rel.items()})
    out = {}
    for name, ann in annotators.items():
        ann.bind(world)
        flags = ann.annotate(texts, offsets)
        hit, total, on_fact, flagged = {}, {}, 0, 0
        for f, vals in zip(flags, values):
            f = np.asarray(f, dtype=bool)
            any_fact = np.zeros_like(f)
            for r, m in vals.items():
                hit[r] = hit.get(r, 0) + int((f & m).sum())
                total[r] = total.get(r, 0) + int(m.sum())
                any_fact |= m
            on_fact += int((f & any_fact).sum())
            flagged += int(f.sum())
        out[name] = {r: hit[r] / total[r] for r in sorted(total)} | {"_precision": on_fact / max(1, flagged)}
    return out


@torch.no_grad()
def first_token_loss(model, docs: PlacementDocs) -> dict[str, float]:
    """Per relation, the model's mean loss (without <CALL>) at the first token of each value: what LaCy's
    in-batch loss ranking sees; derived facts are cheap once their source is written."""
    losses: dict[str, list[float]] = {}
    for ids, rel in zip(docs.ids, docs.relations):
        loss = _target_losses(model, ids)[1].numpy()  # loss[t]: of value token t (ids has a leading eos)
        for r, mask in rel.items():
            m = mask[:len(loss)]
            losses.setdefault(r, []).extend(loss[m & ~np.concatenate([[False], m[:-1]])].tolist())
    return {r: float(np.mean(v)) for r, v in losses.items()}


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--bpe-vocab-size", type=int, default=2048)  # configs/world/slm.yaml
    p.add_argument("--models", nargs="*", default=[], help="study run folders whose call masks to measure too")
    p.add_argument("--out", default="runs/study/flag_recall.md")
    args = p.parse_args(argv)
    world = ClosedWorld()
    tok = train_bpe(world.bpe_documents(), args.bpe_vocab_size)
    res = flag_recall(world, tok, {"spaCy (default rules)": SpacyFactAnnotator(n_process=1),
                                   "KB oracle": KBOracleAnnotator(key="fact")}, args.docs)
    val = [(p.name, d) for p, d in list(world.val_documents())[:args.docs]]
    for folder in args.models:  # a study run folder: its newest HF export; Vanilla calls where it is unsure
        from transformers import AutoModelForCausalLM, AutoTokenizer

        export = latest_export(Path(folder))
        model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True).eval()
        docs = PlacementDocs.build(world.kb(), AutoTokenizer.from_pretrained(export), val)
        score = "uncertainty" if Path(folder).name.startswith("vanilla") else "call"
        with torch.no_grad():
            got = call_placement(model, docs, 0.15, score)
        res[f"{Path(folder).name} calls ({score})"] = {
            k.removeprefix("placement_recall_"): v for k, v in got.items() if k.removeprefix("placement_recall_")
            in world.kb().attributes} | {"_precision": got["placement_precision"]}
        res[f"{Path(folder).name} loss at a value's first token (nats)"] = first_token_loss(model, docs)
    rels = sorted({r for v in res.values() for r in v if not r.startswith("_")})
    lines = ["| signal | " + " | ".join(rels) + " | precision |", "|---" * (len(rels) + 2) + "|"]
    for name, v in res.items():
        lines.append(f"| {name} | " + " | ".join(f"{v.get(r, 0):.3f}" for r in rels) +
                     (f" | {v['_precision']:.3f} |" if "_precision" in v else " | |"))
    text = (f"Share of each relation's value tokens flagged by each signal / called by each model ({args.docs} "
            "validation documents; precision: share of flags or calls on fact values):\n\n" + "\n".join(lines))
    write_output(args.out, text + "\n", "--out")
    print(text)


if __name__ == "__main__":
    entry_point(main)()
