"""LLM-judge annotation cost and output validity on real Wikipedia summaries, per backend.

    python bench/judge.py [--docs 16] [--endpoint http://127.0.0.1:8000/v1 --model NAME]

Default backend: SmolLM2-135M-Instruct (offline, greedy). Prints documents/s, GPT-2 tokens/s, the share
of answers that break the strict span format, and the flagged fraction. The paper: 233 A100-hours per 1B tokens.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from baselines.llm_judge import HFJudge, JudgeAnnotator, OpenAIJudge
from lacy.data.corpus import WikiSummaries
from lacy.data.tokenizer import gpt2_folder, load_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--endpoint", default=None, help="an OpenAI-compatible base URL instead of the local model")
    p.add_argument("--model", default=None, help="model name for --endpoint")
    args = p.parse_args()
    texts = [r["extract"] for r in WikiSummaries(topic="People").records()[:args.docs]]
    tok = load_tokenizer(gpt2_folder(Path(".cache/lacy/gpt2")))
    offsets = [np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2)
               for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    if args.endpoint:
        judge = OpenAIJudge(args.endpoint, args.model, cache=tempfile.mktemp(suffix=".sqlite"))
        name = f"endpoint {args.model}"
    else:
        judge = HFJudge("smollm2", batch_size=args.batch_size)
        judge.answer(["warm-up"])  # loading is not annotation cost
        name = "SmolLM2-135M-Instruct Q4_1 (local, greedy)"
    ann = JudgeAnnotator(judge)
    t0 = time.perf_counter()
    flags = ann.annotate(texts, offsets)
    dt = time.perf_counter() - t0
    n_tokens = sum(len(o) for o in offsets)
    print(f"{name}: {len(texts)} biographies, {n_tokens} GPT-2 tokens in {dt:.1f}s = {len(texts) / dt:.2f} docs/s, "
          f"{n_tokens / dt:.0f} tokens/s; answers breaking the span format: {ann.unparseable}/{ann.answers}; "
          f"flagged tokens: {np.concatenate(flags).mean():.3f}")


if __name__ == "__main__":
    main()
