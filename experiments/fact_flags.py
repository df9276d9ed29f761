"""Word-level precision and recall of the spaCy fact flags (lacy/annotators/spacy_facts.py) against hand labels or a world's KB.

A source is either a labelled JSONL file (one document a line: ``text`` and ``facts``, a list of
``[start, end, label]`` character spans; e.g. experiments/data/wiki_fact_words.jsonl, labelled by the guide
next to it) or a world folder in the ``lacy-kb/1`` format (docs/world.md): its ``val.jsonl`` documents, the
facts their ``facts`` spans where given, else the KB checker's claims, plus every mention of an entity name
or alias of ``kb.json`` (names are facts under the guide). Words are ``\\w+`` runs; a word is a fact when it
overlaps a fact span and its exact text did not occur earlier in the document (it could be copied: the
guide's rule, the same as occurrence tracking's); a word is flagged when the annotator flags a character of
it (the same projection as for subwords). Each rule set of ``RULES`` is measured on each source:

    python -m experiments.fact_flags [experiments/data/wiki_fact_words.jsonl] [tests/data/second_world]
        [experiments/data/second_world_fact_words.jsonl]
        [--split test | --split dev,test,test2,test3] [--topic People | --topic '!People'] [--show]
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np

from lacy.errors import ArgumentParser, entry_point
from lacy.annotators.spacy_facts import LATER_RULES, SpacyFactAnnotator
from lacy.annotators.spans import span_flags

WORD = re.compile(r"\w+")
ITEM7 = dict.fromkeys(LATER_RULES, False)  # issue 15, item 7's rules, all off
# rule sets compared: the flags before each step, each rule of item 7 alone on the step before it, the default
# (all of them) and the default without the keyword list or without each rule of item 7's later rounds
RULES = {"before (entities, PROPN/NUM, keywords)": dict(relation_nouns=False, trim_entities=False, **ITEM7),
         "+ trimmed entities": dict(relation_nouns=False, **ITEM7), "+ relation nouns": ITEM7,
         **{f"+ relation nouns + {rule}": {**ITEM7, rule: True} for rule in ITEM7},
         "default (all of item 7)": {}, "default without keywords": dict(keywords=[]),
         **{f"default without {rule}": {rule: False} for rule in ("rare_arguments", "coordinated_values",
                                                                  "title_words")}}


def read_source(path: str | Path, split: str | None = None,
                topic: str | None = None) -> list[tuple[str, list[tuple[int, int]]]]:
    """(text, fact character spans) per document of a labelled JSONL file or a world folder; a labelled file's
    rows can be chosen by ``split`` and by ``topic`` ("!People": every topic but People)."""
    path = Path(path)
    if path.is_dir():
        return _world_documents(path)
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if _wanted(row.get("split"), split) and _wanted(row.get("topic"), topic):
                docs.append((row["text"], [(int(a), int(b)) for a, b, *_ in row["facts"]]))
    return docs


def _wanted(value: str | None, want: str | None) -> bool:
    """``want``: None (any), "a,b" (one of them) or "!a" (anything but a)."""
    return want is None or (value != want[1:] if want.startswith("!") else value in want.split(","))


def _world_documents(folder: Path) -> list[tuple[str, list[tuple[int, int]]]]:
    from lacy.worlds.kb import KnowledgeBase

    kb_file = folder / "kb.json"
    names = [n for name, e in json.loads(kb_file.read_text(encoding="utf-8"))["entities"].items()
             for n in [name, *e.get("aliases", [])]]
    name_re = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(set(names), key=len, reverse=True))) + r")\b")
    kb, docs = None, []
    for line in (folder / "val.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        text = row["text"]
        if "facts" in row:
            spans = [(int(a), int(b)) for a, b, *_ in row["facts"]]
        else:
            kb = kb or KnowledgeBase.load(kb_file)
            spans = [(c.start, c.end) for c in kb.claims(text, subject=row.get("entity"))]
        docs.append((text, spans + [m.span() for m in name_re.finditer(text)]))
    return docs


def gold_words(text: str, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) character offsets of the words of ``text`` and which of them are facts (see the module doc)."""
    words = [m for m in WORD.finditer(text)]
    offsets = np.array([m.span() for m in words], dtype=np.int64).reshape(-1, 2)
    fact = span_flags(len(text), spans, offsets)
    seen = set()
    for i, m in enumerate(words):
        fact[i] &= m.group() not in seen
        seen.add(m.group())
    return offsets, fact


def measure(annotator, docs) -> dict:
    """Word-level ``precision``, ``recall`` and counts of ``annotator``'s flags on (text, fact spans) docs."""
    words = [gold_words(text, spans) for text, spans in docs]
    flags = annotator.annotate([text for text, _ in docs], [off for off, _ in words])
    gold = np.concatenate([g for _, g in words])
    pred = np.concatenate(flags).astype(bool)
    tp = int((gold & pred).sum())
    return {"precision": tp / max(1, int(pred.sum())), "recall": tp / max(1, int(gold.sum())),
            "words": len(gold), "facts": int(gold.sum()), "flagged": int(pred.sum()), "flags": flags,
            "gold": [g for _, g in words], "offsets": [off for off, _ in words]}


def show(text: str, offsets: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> str:
    """The text with missed facts as [word], false flags as {word}, correct flags as word*."""
    out, pos = [], 0
    for (a, b), g, p in zip(offsets, gold, pred):
        w = text[a:b]
        out.append(text[pos:a] + (f"{w}*" if g and p else f"[{w}]" if g else f"{{{w}}}" if p else w))
        pos = b
    return "".join(out) + text[pos:]


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", default=["experiments/data/wiki_fact_words.jsonl"],
                   help="labelled JSONL files and/or world folders")
    p.add_argument("--split", default=None, help="only rows with this `split` (labelled files: dev, test, test2, "
                   "test3, test4; comma-separated: any of them)")
    p.add_argument("--topic", default=None, help="only rows with this `topic`; !TOPIC: all but it")
    p.add_argument("--show", action="store_true", help="print each document: [missed] {false flag} hit*")
    args = p.parse_args(argv)
    annotators = {name: SpacyFactAnnotator(**kw) for name, kw in RULES.items()}
    lines = ["| source | documents | fact words / words | rules | precision | recall |", "|---" * 6 + "|"]
    for source in args.sources:
        docs = read_source(source, args.split, args.topic)
        rows = ", ".join(x for x in (args.split, args.topic) if x)
        for name, ann in annotators.items():
            r = measure(ann, docs)
            lines.append(f"| {source}{f' ({rows})' if rows else ''} | {len(docs)} | {r['facts']} / "
                         f"{r['words']} | {name} | {r['precision']:.3f} | {r['recall']:.3f} |")
            if args.show:
                print(f"## {source}: {name}")
                for (text, _), off, g, f in zip(docs, r["offsets"], r["gold"], r["flags"]):
                    print(show(text, off, g, np.asarray(f, dtype=bool)))
    print("\n".join(lines))


if __name__ == "__main__":
    entry_point(main)()
