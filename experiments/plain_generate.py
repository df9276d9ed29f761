"""Does plain ``generate()`` write text when ``<CALL>`` is let through? (issue 14, item 4)

A model's export suppresses ``<CALL>`` in its ``generation_config.json`` (lacy/export.py), so plain generation
writes the SLM's own text whatever the objective. This asks what a user who lets ``<CALL>`` through
(``generate(..., suppress_tokens=[])``, the paper's Fig. 1 reading: write ``<CALL>`` where it is the top token)
gets from each run's export: greedy bios from the first ``--prompts`` bio prompts of the run's world (the
fit's saved config), and the share of generated tokens that are ``<CALL>`` and of bios whose first new token is
one. Under the paper's objective ``<CALL>`` is never trained down, so the share is expected near 1; under
``model.noncall_softmax: full`` it should be near the call rate.

    python -m experiments.plain_generate runs/study-dense/lacy-s1 runs/study-dense/lacy_full-s1 [--prompts 50]
    python -m experiments.plain_generate runs/pretrained/lacy --wiki     # real text: "<person> was", held-out people
"""
import argparse
import json
from pathlib import Path

import torch

from experiments.runner import latest_export, trained_world
from lacy.errors import ArgumentParser, UsageError, entry_point


def call_share(export: Path, prompts: list[str], max_new_tokens: int = 40) -> dict:
    """Greedy continuations of ``prompts`` with ``<CALL>`` allowed: ``call_share`` (share of generated tokens that
    are ``<CALL>``), ``first_call`` (share of prompts whose first new token is ``<CALL>``) and one example."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(export), AutoModelForCausalLM.from_pretrained(export).eval()
    call_id = tok.convert_tokens_to_ids("<CALL>")
    if call_id is None or call_id == tok.unk_token_id:
        raise UsageError(f"{export}: no <CALL> token (a --no-call export or a model never trained to call)")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok([tok.bos_token + p if tok.bos_token else p for p in prompts], return_tensors="pt", padding=True,
              add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                             do_sample=False, suppress_tokens=[], pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    return {"call_share": float((new == call_id).float().mean()), "first_call": float((new[:, 0] == call_id)
            .float().mean()), "example": prompts[0] + tok.decode(new[0], skip_special_tokens=False)}


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of experiments.closed_world (their configs name the world)")
    p.add_argument("--prompts", type=int, default=50, help="bio prompts, from the world's first (most popular)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--wiki", action="store_true", help="runs on real text: prompts '<person> was' for the people of "
                                                      "the held-out hand-labelled sentences (experiments/call_words.py)")
    args = p.parse_args(argv)
    if args.wiki:
        from experiments.call_words import DATA, HELD_OUT  # here: only the real-text prompts need them

        people = dict.fromkeys(r["source"] for r in map(json.loads, DATA.read_text().splitlines())
                               if r["split"] in HELD_OUT and r["topic"] == "People")
        prompts = [f"{name} was" for name in list(people)[:args.prompts]]
        runs = [(run, latest_export(Path(run)), None) for run in args.runs]
        missing = next((run for run, export, _ in runs if export is None), None)
        if missing:
            raise UsageError(f"{missing}: no Hugging Face export (lightning_logs/version_*/hf); fit the run first")
    else:
        runs = [(run, *trained_world(Path(run))) for run in args.runs]  # every run checked before any generation
    for run, export, world in runs:
        asked = prompts if world is None else [q["prompt"] for q in world.prompts()[:args.prompts]]
        print(json.dumps({"run": str(run), **call_share(export, asked, args.max_new_tokens)}), flush=True)


if __name__ == "__main__":
    entry_point(main)()
