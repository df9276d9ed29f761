"""Cascade generation cost, as ratios measured in one run (machines are noisy).

1. Cascade at 0% calls vs the SLM alone with Hugging Face ``generate`` (greedy, same batch, same prompts,
   ``<CALL>`` suppressed): tokens/s ratio (goal >= 0.8).
2. Partner with its incremental KV cache vs re-reading the whole context at every call, at a 22% budget on
   long bios: partner tokens processed and wall-clock ratios (goal >= 3x fewer tokens).

    python bench/cascade.py [--slm runs/world/lacy/.../hf --partner runs/world/partner/hf] [--prompts 64]

Without model folders it builds random models of the world presets (cost does not depend on weights).
"""
import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lacy.inference.cascade import CallPolicy, Cascade

from lacy.inference.partners import ModelPartner
from lacy.model.gpt2 import build_slm
from lacy.data.tokenizer import train_bpe
from lacy.worlds.closed_world import ClosedWorld


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slm", default=None, help="SLM folder (with <CALL>); default: random `tiny`")
    p.add_argument("--partner", default=None, help="partner folder, same tokenizer; default: random `small`")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--bio-tokens", type=int, default=256, help="length of the bios for the partner-cache check")
    p.add_argument("--rate", type=float, default=0.22)
    p.add_argument("--score", default="uncertainty", help="call score (random models: uncertainty)")
    args = p.parse_args(argv)
    world = ClosedWorld()
    if args.slm:
        tok = AutoTokenizer.from_pretrained(args.slm)
        slm = AutoModelForCausalLM.from_pretrained(args.slm).eval()
    else:
        tok = train_bpe(world.bpe_documents(), 2048)
        torch.manual_seed(0)
        slm = build_slm("tiny", len(tok), 512).eval()
    partner = (AutoModelForCausalLM.from_pretrained(args.partner) if args.partner
               else build_slm("small", len(tok), 512)).eval()
    prompts = [q["prompt"] for q in world.prompts()[:args.prompts]]
    print(f"SLM {sum(x.numel() for x in slm.parameters()) / 1e6:.2f}M params, partner "
          f"{sum(x.numel() for x in partner.parameters()) / 1e6:.2f}M, {args.prompts} prompts, batch "
          f"{args.batch_size}, CPU threads {torch.get_num_threads()}")

    # 1. cascade at 0% calls vs HF generate
    ids = [[tok.eos_token_id] + tok(q, add_special_tokens=False)["input_ids"] for q in prompts]
    call_id = len(tok) - 1

    def hf():
        n = 0
        for i in range(0, len(ids), args.batch_size):
            batch = ids[i:i + args.batch_size]
            w = max(map(len, batch))
            inp = torch.tensor([[tok.eos_token_id] * (w - len(x)) + x for x in batch])
            mask = torch.tensor([[0] * (w - len(x)) + [1] * len(x) for x in batch])
            out = slm.generate(input_ids=inp, attention_mask=mask, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.eos_token_id,
                               suppress_tokens=[call_id])
            n += (out.shape[1] - w) * len(batch)
        return n

    def ours():
        gens = Cascade(slm, tok, batch_size=args.batch_size).generate(prompts, args.new_tokens, stop_at_eos=False)
        return sum(len(g.tokens) for g in gens)

    times = {}
    with torch.no_grad():
        for name, fn in (("hf", hf), ("ours", ours)) * 2:  # interleaved, best of two
            t0 = time.perf_counter()
            n = fn()
            times[name] = min(times.get(name, 1e9), (time.perf_counter() - t0) / n)
    print(f"0% calls: HF generate {1 / times['hf']:.0f} tok/s, cascade {1 / times['ours']:.0f} tok/s, "
          f"ratio {times['hf'] / times['ours']:.2f} (goal >= 0.8)")

    # 2. partner incremental prefill vs re-prompting at every call
    res = {}
    for cache in (True, False):
        mp = ModelPartner(partner, tok, piece="word", cache=cache)
        casc = Cascade(slm, tok, mp, CallPolicy("budget", rate=args.rate, score=args.score),
                       batch_size=args.batch_size)
        t0 = time.perf_counter()
        gens = casc.generate(prompts, args.bio_tokens, stop_at_eos=False)
        res[cache] = (mp.tokens_processed, time.perf_counter() - t0, casc.stats.call_rate, gens)
    same = [g.tokens for g in res[True][3]] == [g.tokens for g in res[False][3]]
    print(f"{args.bio_tokens}-token bios at {res[True][2]:.1%} calls: partner tokens processed "
          f"{res[True][0]} (cache) vs {res[False][0]} (re-prompt) = {res[False][0] / res[True][0]:.1f}x fewer "
          f"(goal >= 3x); wall clock {res[False][1] / res[True][1]:.2f}x faster; same text: {same}")


if __name__ == "__main__":
    main()
