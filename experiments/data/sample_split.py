"""A fresh held-out split of Wikipedia lead-summary sentences for fact-word labelling (test3, test4, ...).

    python experiments/data/sample_split.py --seed 3117 --split test3 --exclude dev,test,test2 > draws.jsonl
    python experiments/data/sample_split.py --seed 4231 --split test4 --exclude dev,test,test2,test3 > draws.jsonl

prints the draws, one JSON line each (source, topic, split, text; no labels), to be labelled by hand with the
guide (wiki_fact_words.md). The articles of the ``--exclude`` splits of wiki_fact_words.jsonl are left out.
Order of random calls: rng.sample(people, len(people)); one rng.choice per People article (skipping articles
without an eligible sentence, which draw nothing) until 25 are kept; then rng.sample(others, len(others)) and
one rng.choice per other-topic article until 21 are kept. A drawn sentence listed in DROPPED (an obvious
fragment) is discarded and drawing continues with the next article.
"""
import argparse
import json
import random
import re
import sys
from pathlib import Path

from lacy.data.corpus import WikiSummaries

N_PEOPLE, N_OTHER = 25, 21
LABELLED = Path(__file__).with_name("wiki_fact_words.jsonl")
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# (title, sentence start) of drawn sentences judged obvious fragments; filled in after reading the draws.
DROPPED: set[tuple[str, str]] = set()


def balanced(s: str) -> bool:
    depth = 0
    for c in s:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def eligible(s: str) -> bool:
    n = len(s.split())
    return 8 <= n <= 40 and balanced(s) and "[" not in s and "]" not in s and s[:1].isupper()


def sentences(text: str) -> list[str]:
    return [s for s in SPLIT.split(text.strip()) if eligible(s)]


def draw(rng, articles, n, label, split):
    chosen, dropped = [], []
    for r in articles:
        if len(chosen) == n:
            break
        cands = sentences(r["extract"])
        if not cands:
            continue
        s = rng.choice(cands)
        if any(r["title"] == t and s.startswith(p) for t, p in DROPPED):
            dropped.append((r["title"], s))
            continue
        chosen.append({"source": r["title"], "topic": r["topic"], "split": split, "text": s})
    assert len(chosen) == n, (label, len(chosen))
    return chosen, dropped


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--split", required=True, help="the new split's name")
    p.add_argument("--exclude", required=True, help="comma-separated splits whose articles are left out")
    args = p.parse_args()
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    done = {r["source"] for r in rows if r["split"] in args.exclude.split(",")}
    recs = [r for r in WikiSummaries().records() if r.get("extract", "").strip() and r["title"] not in done]
    people = [r for r in recs if r.get("topic") == "People"]
    others = [r for r in recs if r.get("topic") != "People"]
    print(f"excluded {len(done)} labelled sources; {len(people)} People and {len(others)} other articles left",
          file=sys.stderr)
    rng = random.Random(args.seed)
    p, pd = draw(rng, rng.sample(people, len(people)), N_PEOPLE, "People", args.split)
    o, od = draw(rng, rng.sample(others, len(others)), N_OTHER, "other", args.split)
    for t, s in pd + od:
        print("DROPPED", t, "|", s, file=sys.stderr)
    for r in p + o:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
