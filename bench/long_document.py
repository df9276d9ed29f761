"""Peak memory of the spaCy fact annotator on one long document (issue 29: memory bounded by the piece).

A document of ``--mb`` MB (the Wikipedia summaries joined by blank lines, repeated) is annotated in a fresh
process per variant, one after the other, and each process reports its peak resident memory:

- ``annotator``: ``SpacyFactAnnotator.annotate`` as lacy runs it (a spaCy batch holds at most ``piece_chars``
  characters, one piece at the least);
- ``shared batch`` (before the fix): the same pieces through one ``nlp.pipe`` with ``batch_size`` 64, so all the
  pieces of the document are parsed together.

Both give the same flags (checked). Prints peak RSS, seconds and the ratio.

    python bench/long_document.py [--mb 3.47] [--piece-chars 1000000]
"""
import argparse
import hashlib
import json
import re
import resource
import subprocess
import sys
import time

import numpy as np

from lacy.annotators.spacy_facts import SpacyFactAnnotator, flagged_spans, split_text
from lacy.annotators.spans import span_flags
from lacy.data.corpus import WikiSummaries


def document(mb: float) -> str:
    docs, text = list(WikiSummaries().documents()), ""
    while len(text) < mb * 1e6:
        text += "\n\n".join(docs) + "\n\n"
    return text[:int(mb * 1e6)]


def child(variant: str, mb: float, piece_chars: int | None) -> None:
    text = document(mb)
    offsets = np.array([m.span() for m in re.finditer(r"\w+", text)], dtype=np.int64).reshape(-1, 2)
    ann = SpacyFactAnnotator(piece_chars=piece_chars)
    t0 = time.perf_counter()
    if variant == "annotator":
        flags = ann.annotate([text], [offsets])[0]
    else:
        cuts = split_text(text, piece_chars or ann.nlp.max_length)
        spans = []
        for (start, _), doc in zip(cuts, ann.nlp.pipe((text[a:b] for a, b in cuts), batch_size=64)):
            spans += flagged_spans(doc, ann.token_flags(doc), shift=start)
        flags = span_flags(len(text), spans, offsets)
    seconds = time.perf_counter() - t0
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_gib": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 2**20, "pieces": len(split_text(text, piece_chars or ann.nlp.max_length)),
        "flags_digest": hashlib.sha256(np.packbits(flags).tobytes()).hexdigest(), "flagged": int(flags.sum())}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=3.47)
    p.add_argument("--piece-chars", type=int, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.mb, args.piece_chars)
    rows = []
    for variant in ("annotator", "shared batch"):
        cmd = [sys.executable, __file__, "--child", variant, "--mb", str(args.mb)]
        cmd += ["--piece-chars", str(args.piece_chars)] if args.piece_chars else []
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    for r in rows:
        print(f"{r['variant']:>13}: {r['pieces']} pieces, peak {r['peak_gib']:.2f} GiB, {r['seconds']:.0f} s, "
              f"{r['flagged']} flagged words")
    same = rows[0]["flags_digest"] == rows[1]["flags_digest"] and rows[0]["flagged"] == rows[1]["flagged"]
    print(f"peak memory ratio annotator / shared batch: {rows[0]['peak_gib'] / rows[1]['peak_gib']:.2f}; "
          f"same flags: {same}")


if __name__ == "__main__":
    main()
