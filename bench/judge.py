"""LLM-judge annotation cost and output validity on real Wikipedia summaries, per backend.

    python bench/judge.py [--docs 32] [--batch-size 16] [--endpoint http://127.0.0.1:8000/v1 --model NAME]

Default backend: SmolLM2-135M-Instruct (offline, greedy), run twice on the same documents in one process: as the
judge ran before (batches in corpus order, every answer to its end, each prompt read whole, transformers'
``generate``: ``by_length``, ``stop_rejected``, ``shared_prefix`` and ``drop_finished`` off, 8 prompts a batch)
and as it runs now (the defaults and ``--batch-size``). Prints each one's documents/s and GPT-2
tokens/s, the speed-up, the share of documents whose flags agree token for token, the answers breaking the
strict span format and the flagged fraction. The paper: 233 A100-hours per 1B tokens.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from baselines.llm_judge import HFJudge, JudgeAnnotator, OpenAIJudge
from lacy.data.corpus import WikiSummaries
from lacy.data.tokenizer import gpt2_folder, load_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16, help="prompts a batch of today's judge")
    p.add_argument("--endpoint", default=None, help="an OpenAI-compatible base URL instead of the local model")
    p.add_argument("--model", default=None, help="model name for --endpoint")
    args = p.parse_args()
    texts = [r["extract"] for r in WikiSummaries(topic="People").records()[:args.docs]]
    tok = load_tokenizer(gpt2_folder(Path(".cache/lacy/gpt2")))
    offsets = [np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2)
               for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    n_tokens = sum(len(o) for o in offsets)
    if args.endpoint:
        judges = {f"endpoint {args.model}": OpenAIJudge(args.endpoint, args.model,
                                                        cache=tempfile.mktemp(suffix=".sqlite"))}
    else:
        judges = {"before (corpus order, 8 a batch, whole answers)":
                  HFJudge("smollm2", batch_size=8, by_length=False, stop_rejected=False, shared_prefix=False,
                          drop_finished=False),
                  f"now (by length, {args.batch_size} a batch, rejected answers stopped, shared prompt head read "
                  "once, finished answers dropped)":
                  HFJudge("smollm2", batch_size=args.batch_size)}
    runs = {}
    for name, judge in judges.items():
        judge.answer(["warm-up"])  # loading is not annotation cost
        ann = JudgeAnnotator(judge)
        t0 = time.perf_counter()
        flags = ann.annotate(texts, offsets)
        dt = time.perf_counter() - t0
        runs[name] = (dt, flags)
        print(f"{name}: {len(texts)} biographies, {n_tokens} GPT-2 tokens in {dt:.1f}s = {len(texts) / dt:.2f} docs/s, "
              f"{n_tokens / dt:.0f} tokens/s; answers breaking the span format: {ann.unparseable}/{ann.answers}; "
              f"flagged tokens: {np.concatenate(flags).mean():.3f}")
    if len(runs) == 2:
        (t_old, old), (t_new, new) = runs.values()
        same = sum(np.array_equal(a, b) for a, b in zip(old, new))
        print(f"speed-up {t_old / t_new:.2f}x (threads: {torch.get_num_threads()}); documents with identical "
              f"flags: {same}/{len(texts)}")

if __name__ == "__main__":
    main()
