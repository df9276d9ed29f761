"""Who wrote a relation's claims in a study run's cascade bios, after which words, and were they true?
Splits a per-relation score (e.g. fields of study) into partner-written and SLM-written claims, so a low
score can be traced to the calls or to what the SLM writes where it does not call.

    python -m experiments.claim_sources runs/study/lacy-s1 --relation field [--every 2] [--rate 0.22]
"""
import argparse
from collections import Counter
from pathlib import Path

from experiments.runner import latest_export
from lacy.errors import ArgumentParser, entry_point
from lacy.worlds.closed_world import ClosedWorld


def claim_sources(gens, prompts, kb, tokenizer, relation: str) -> tuple[Counter, Counter]:
    """(written by, the two words before the value, supported) -> count; and (SLM-written value, supported)."""
    by_context, slm_values = Counter(), Counter()
    for g, p in zip(gens, prompts):
        text, spans = g.token_spans(tokenizer)
        for c in kb.claims(text, subject=p["entity"]):
            if c.attribute != relation or c.start < len(g.prompt):
                continue
            first = next(i for i, (a, b) in enumerate(spans) if a < c.end and c.start < b)
            writer = "partner" if g.from_partner[first] else "SLM"
            before = " ".join(text[:c.start].split(".")[-1].split()[-2:])
            by_context[writer, before, c.supported] += 1
            if writer == "SLM":
                slm_values[c.value, c.supported] += 1
    return by_context, slm_values


def main(argv=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.closed_world import STUDIES
    from lacy.inference.cascade import CallPolicy, Cascade
    from lacy.inference.partners import ModelPartner

    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a study run folder (its newest HF export is the SLM)")
    p.add_argument("--relation", default="field")
    p.add_argument("--every", type=int, default=2, help="every n-th person of the world's prompts")
    p.add_argument("--rate", type=float, default=0.22)
    args = p.parse_args(argv)
    world = ClosedWorld()  # the study's world: same seed and people (configs/world/slm.yaml)
    export = latest_export(Path(args.run))
    slm, tok = AutoModelForCausalLM.from_pretrained(export).eval(), AutoTokenizer.from_pretrained(export)
    partner = ModelPartner(AutoModelForCausalLM.from_pretrained(STUDIES["default"]["partner"]).eval(), tok, "word")
    score = "uncertainty" if Path(args.run).name.startswith("vanilla") else "call"
    prompts = world.prompts()[::args.every]
    gens = Cascade(slm, tok, partner, CallPolicy("budget", rate=args.rate, score=score)).generate(
        [q["prompt"] for q in prompts], 96)
    by_context, slm_values = claim_sources(gens, prompts, world.kb(), tok, args.relation)
    for writer in ("partner", "SLM"):
        n = sum(v for k, v in by_context.items() if k[0] == writer)
        ok = sum(v for k, v in by_context.items() if k[0] == writer and k[2])
        print(f"{args.relation} claims written by the {writer}: {n}, supported {ok}")
    print("SLM-written claims by the two words before them (words, supported): " + ", ".join(
        f"{k[1]!r} {k[2]}: {v}" for k, v in by_context.most_common() if k[0] == "SLM"))
    print("SLM-written values (value, supported): " + ", ".join(f"{k}: {v}" for k, v in slm_values.most_common()))


if __name__ == "__main__":
    entry_point(main)()
