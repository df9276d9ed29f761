"""Where the offline judge's time goes: SmolLM2-135M-Instruct's prompt and answer tokens, and what was tried.

    python bench/judge_profile.py [--threads 1] [--skip-batching]

Prints, for random token ids: the prefill rate (batch 16 x 200 tokens) and the time of one decoding step with a
200-token KV cache at batch 16 and 64, with sdpa and with eager attention, and one step with a static cache;
then transformers' ``generate`` against its continuous batching (``generate_batch``) on the 16 shortest of 64
biography prompts (96 new tokens at most), with the answers' lengths and whether both wrote the same answers.
docs/benchmarks.md, "LLM judge annotation", reads these figures.
"""
import argparse
import time

import torch
from transformers import DynamicCache, GenerationConfig, StaticCache

from baselines.llm_judge import PROMPT, HFJudge
from lacy.data.corpus import WikiSummaries


def seconds(run) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def decoding(model, batch: int, context: int, cache) -> tuple[float, float]:
    """(prefill seconds, seconds a decoding step) for ``batch`` rows of ``context`` random tokens."""
    x = torch.randint(0, 40000, (batch, context))
    prefill = seconds(lambda: model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1))
    y = torch.randint(0, 40000, (batch, 1))

    def steps(n, start):
        for p in range(start, start + n):
            model(input_ids=y, past_key_values=cache, use_cache=True, logits_to_keep=1,
                  cache_position=torch.tensor([p]))

    steps(2, context)  # warm-up
    return prefill, seconds(lambda: steps(6, context + 2)) / 6


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-batching", action="store_true", help="leave out generate against generate_batch")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    judge = HFJudge("smollm2")
    judge._load()
    model, tok = judge._model, judge._tok
    for attention in ("sdpa", "eager"):
        model.set_attn_implementation(attention)
        for batch in (16, 64):
            prefill, step = decoding(model, batch, 200, DynamicCache())
            print(f"{attention}, batch {batch}: prefill {batch * 200 / prefill:.0f} tokens/s, a decoding step "
                  f"{step:.3f} s ({step / batch * 1e3:.1f} ms an answer token)", flush=True)
    model.set_attn_implementation("sdpa")
    _, step = decoding(model, 16, 200, StaticCache(config=model.config, max_cache_len=300))
    print(f"static cache, batch 16: a decoding step {step:.3f} s")
    if args.skip_batching:
        return
    texts = [r["extract"] for r in WikiSummaries(topic="People").records()[:64]]
    ids = sorted((judge._encode(PROMPT.format(text=t)) for t in texts), key=len)[:16]
    config = GenerationConfig(do_sample=False, max_new_tokens=96, eos_token_id=judge._eos(),
                              pad_token_id=tok.pad_token_id)
    enc = tok.pad({"input_ids": ids}, return_tensors="pt")
    out = {}
    t = seconds(lambda: out.update(gen=model.generate(**enc, generation_config=config)))
    plain = tok.batch_decode(out["gen"][:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    t_batch = seconds(lambda: out.update(cb=model.generate_batch(inputs=ids, generation_config=config)))
    batched = [tok.decode(r.generated_tokens, skip_special_tokens=True) for r in out["cb"].values()]
    lengths = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in plain]
    print(f"16 prompts: generate {t:.1f} s, generate_batch {t_batch:.1f} s; answer lengths {min(lengths)}-"
          f"{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.0f}; same answers: "
          f"{sorted(batched) == sorted(plain)}")


if __name__ == "__main__":
    main()
