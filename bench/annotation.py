"""Fact annotation throughput on the real Wikipedia summaries, flag identity, and flagged fraction per rule.

Compares, on the same documents: spaCy's full en_core_web_sm pipeline (what a naive annotator runs) vs the
reduced pipeline our annotator loads (only the components its rules need), per process, and the reduced
pipeline with --n-process processes, a parser-free variant and the rules before issue 15's later rounds. Flags
must equal the full pipeline's with the same rules. Tokens are GPT-2 BPE tokens (offline).
The paper's cost, 152 CPU-core hours per 1B tokens, is 1,827 tokens/s on one core.

    python bench/annotation.py [--docs 2000] [--n-process 2]      # --docs 0: the whole corpus
"""
import argparse
import time
from pathlib import Path

import numpy as np
import spacy

from lacy.data.corpus import WikiSummaries
from lacy.annotators.spacy_facts import SpacyFactAnnotator, subword_flags
from lacy.data.tokenizer import gpt2_folder, load_tokenizer

PAPER_TOKENS_PER_S = 1e9 / (152 * 3600)


def flags_with(nlp, ann, texts, offsets, n_process=1):
    t0 = time.perf_counter()
    out = [subword_flags(doc, ann.token_flags(doc), off)
           for doc, off in zip(nlp.pipe(texts, batch_size=64, n_process=n_process), offsets)]
    return out, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=2000, help="documents (first N in title order); 0 = all 10,033")
    p.add_argument("--n-process", type=int, default=2)
    args = p.parse_args()
    texts = list(WikiSummaries().documents())
    texts = texts[:args.docs] if args.docs else texts
    tok = load_tokenizer(gpt2_folder(Path(".cache/lacy/gpt2")))
    encs = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    offsets = [np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2) for e in encs]
    n_tokens, n_words = sum(len(o) for o in offsets), sum(len(t.split()) for t in texts)
    ann = SpacyFactAnnotator()
    full = spacy.load(ann.spacy_model)
    print(f"{len(texts)} documents, {n_words} words, {n_tokens} GPT-2 tokens; spaCy {spacy.__version__}, "
          f"{ann.spacy_model} {full.meta['version']}")
    print(f"full pipeline: {full.pipe_names}; ours: {ann.nlp.pipe_names}")

    # the parser-free variant: ner_sentences off, and the rules that read the parse off too (else it stays)
    fast = SpacyFactAnnotator(ner_sentences=False, relation_nouns=False, coordinated_values=False, title_words=False)
    # issue 15's later rules (rare nouns, lists, title words) off: what they cost in time
    earlier = SpacyFactAnnotator(rare_arguments=False, coordinated_values=False, title_words=False)
    print(f"parser-free variant: {fast.nlp.pipe_names}")
    ref, t_full = flags_with(full, ann, texts, offsets)
    refs = {id(ann): ref, id(fast): flags_with(full, fast, texts, offsets)[0],  # each against its own rules
            id(earlier): flags_with(full, earlier, texts, offsets)[0]}  # on the full pipeline
    runs = [("full pipeline, 1 process", t_full, 1, ref, ref)]
    for name, a, procs in [("ours, 1 process", ann, 1), (f"ours, {args.n_process} processes", ann, args.n_process),
                           ("ours, no parser-based rules/NER", fast, 1), ("ours, before the later rules", earlier, 1)]:
        flags, t = flags_with(a.nlp, a, texts, offsets, n_process=procs)
        runs.append((name, t, procs, flags, refs[id(a)]))
    n_flagged = sum(int(f.sum()) for f in ref)
    print(f"{'run':<30}{'words/s':>9}{'tokens/s':>10}{'x paper/core':>14}{'flags differing':>17}{'docs differing':>16}")
    for name, t, procs, flags, same_rules in runs:  # flags against the full pipeline with the same rules
        diff_tokens = sum(int((a != b).sum()) for a, b in zip(same_rules, flags))
        diff_docs = sum(not np.array_equal(a, b) for a, b in zip(same_rules, flags))
        print(f"{name:<30}{n_words / t:>9.0f}{n_tokens / t:>10.0f}{n_tokens / t / procs / PAPER_TOKENS_PER_S:>14.2f}"
              f"{diff_tokens:>17}{diff_docs:>16}")
    print(f"{n_flagged} tokens flagged by the full pipeline; scaling to {args.n_process} processes: "
          f"{runs[1][1] / runs[2][1]:.2f}x; time of the later rules (default / before them, 1 process): "
          f"{runs[1][1] / runs[4][1]:.3f}")

    # Flagged fraction per rule (GPT-2 tokens), each rule alone and combined, with/without occurrence tracking.
    rules = {}
    for doc, off in zip(ann.nlp.pipe(texts, batch_size=64, n_process=args.n_process), offsets):
        r = ann.rule_flags(doc)
        union = np.any([f for k, f in r.items() if k != "repeat"], axis=0)
        for k, f in [*((k, f) for k, f in r.items() if k != "repeat"), ("any rule", union),
                     ("any rule, no repeats (default)", union & ~r["repeat"])]:
            rules.setdefault(k, []).append(subword_flags(doc, f, off))
    print("flagged fraction of tokens (paper: 25% on Wikipedia):")
    for k, fl in rules.items():
        print(f"  {k:<32}{np.concatenate(fl).mean():.3f}")


if __name__ == "__main__":
    main()
