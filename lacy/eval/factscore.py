"""FactScore on real text (Min et al. 2023), offline, deterministic and batched, plus two model-free metrics.

Pipeline, as FActScore: each generation is split into sentences, a judge model breaks each sentence into
atomic facts (FActScore's instruction "Please breakdown the following sentence into independent facts:" with
demonstrations in its format; the demonstrations are ours), each fact is verified True/False by the judge
against the top-k BM25 passages of the entity's own page (FActScore's verification prompt), and the score
is the supported share, with the gamma length penalty, the init (unpenalised) score and the respond ratio.
Judges are ``baselines.llm_judge`` backends (local HF model, greedy; OpenAI-compatible endpoint with cache).
An entity missing from the knowledge source gives an explicit ``not_in_knowledge_source`` result.

The knowledge source is a FActScore-style sqlite database (title, passages) with an FTS5 index (BM25).

The scores that need no judge (named-entity precision and recall, years, places, word support) are in
lacy/eval/page_scores.py.
"""
import re
import sqlite3
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lacy.errors import UsageError
from lacy.eval.report import length_penalty
from lacy.io.atomic import atomic_path

ATOMIC_INSTRUCTION = "Please breakdown the following sentence into independent facts: "
ATOMIC_DEMOS = [  # FActScore's format; our own sentences
    ("Marie Curie was a Polish physicist who won two Nobel Prizes.",
     ["Marie Curie was Polish.", "Marie Curie was a physicist.", "Marie Curie won two Nobel Prizes."]),
    ("He was born in 1931 in Lagos and studied law at the University of London.",
     ["He was born in 1931.", "He was born in Lagos.", "He studied law.",
      "He studied at the University of London."]),
]
VERIFY = "Answer the question about {topic} based on the given context.\n\n{context}\n\nInput: {fact} True or False?\nOutput:"
_SENT = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")


def atomic_prompt(sentence: str) -> str:
    demos = "".join(f"{ATOMIC_INSTRUCTION}{s}\n" + "".join(f"- {f}\n" for f in facts) + "\n"
                    for s, facts in ATOMIC_DEMOS)
    return f"{demos}{ATOMIC_INSTRUCTION}{sentence}\n"


def parse_facts(answer: str) -> list[str]:
    """The judge's "- fact" lines (a bare line counts too); a repeated instruction ends the list."""
    facts = []
    for line in answer.splitlines():
        line = line.strip()
        if line.startswith(ATOMIC_INSTRUCTION.strip()[:20]):
            break
        line = line.lstrip("-*• ").strip()
        if len(_WORD.findall(line)) >= 2:
            facts.append(line)
    return facts


NEGATIONS = ("not", "cannot", "unknown", "information")


def is_true(answer: str) -> bool:
    """The judge's verdict read exactly as FActScore reads a generated answer (shmsw25/FActScore,
    factscore/factscorer.py, ``FactScorer._get_score``, the branch "when logits are unavailable"): lower-cased,
    substring search; "true" without "false" -> supported, "false" without "true" -> not; with both, supported
    when the first "true" comes after the first "false" (the later one wins); with neither, supported unless a
    word of the answer, punctuation removed, is one of "not", "cannot", "unknown", "information" (so an empty
    answer counts as supported, as in FActScore: the numbers stay comparable with its published ones)."""
    low = answer.lower()
    t, f = "true" in low, "false" in low
    if t and f:
        return low.index("true") > low.index("false")
    if t or f:
        return t
    return not set(low.translate(str.maketrans("", "", string.punctuation)).split()) & set(NEGATIONS)


class KnowledgeSource:
    """A sqlite database of pages (title, text) cut into passages, BM25-searchable per page (FTS5)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"knowledge source {str(self.path)!r} does not exist; build it with "
                             "KnowledgeSource.build(records, path) (lacy.eval.factscore)")
        self.db = sqlite3.connect(self.path)
        try:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            tables = {f"none: {err}"}
        if not {"documents", "passages"} <= tables:
            self.db.close()
            raise UsageError(f"knowledge source {str(self.path)!r} is not one lacy built (tables: "
                             f"{', '.join(sorted(tables)) or 'none'}); give another path (lacy builds it there "
                             "when missing)")

    @classmethod
    def build(cls, pages: list[tuple[str, str]], path: str | Path, sentences_per_passage: int = 3):
        """Writes the database atomically (a killed build leaves no half database)."""
        path = Path(path)
        with atomic_path(path, suffix=".sqlite") as tmp:
            cls._write(pages, tmp, sentences_per_passage)
        return cls(path)

    @staticmethod
    def _write(pages: list[tuple[str, str]], tmp: str, sentences_per_passage: int) -> None:
        db = sqlite3.connect(tmp)
        db.execute("CREATE TABLE documents (title TEXT PRIMARY KEY, text TEXT NOT NULL)")
        db.execute("CREATE VIRTUAL TABLE passages USING fts5(title UNINDEXED, text)")
        with db:
            for title, text in pages:
                db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?)", (title, text))
                sents = _SENT.split(text.strip())
                for i in range(0, len(sents), sentences_per_passage):
                    db.execute("INSERT INTO passages VALUES (?, ?)",
                               (title, " ".join(sents[i:i + sentences_per_passage])))
        db.close()

    def page(self, title: str) -> str | None:
        row = self.db.execute("SELECT text FROM documents WHERE title = ?", (title,)).fetchone()
        return row[0] if row else None

    def retrieve(self, title: str, query: str, k: int = 5, page_order: bool = False) -> list[str]:
        """Top-k passages of the entity's page by BM25 against the query (the page's first ones if none match);
        ``page_order``: the chosen passages in the order the page has them (not by score)."""
        words = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
        rows = []
        if words:
            match = " OR ".join(f'"{w}"' for w in sorted(words))
            rows = self.db.execute("SELECT rowid, text FROM passages WHERE passages MATCH ? AND title = ? "
                                   "ORDER BY bm25(passages) LIMIT ?", (match, title, k)).fetchall()
        if not rows:
            rows = self.db.execute("SELECT rowid, text FROM passages WHERE title = ? ORDER BY rowid LIMIT ?",
                                   (title, k)).fetchall()
        return [text for _, text in (sorted(rows) if page_order else rows)]


@dataclass
class FactScoreResult:
    entity: str
    status: str                    # scored | no_facts | not_in_knowledge_source
    facts: list[str]
    supported: list[bool]


def factscore(generations: list[str], entities: list[str], source: KnowledgeSource, judge, k: int = 5,
              gamma: int = 10) -> tuple[dict, list[FactScoreResult]]:
    """FActScore of each generation about its entity; every judge call is batched across generations."""
    results, jobs = [], []
    for gen, ent in zip(generations, entities):
        if source.page(ent) is None:
            results.append(FactScoreResult(ent, "not_in_knowledge_source", [], []))
            continue
        results.append(FactScoreResult(ent, "no_facts", [], []))
        jobs += [(len(results) - 1, s) for s in _SENT.split(gen.strip()) if len(_WORD.findall(s)) >= 3]
    answers = judge.answer([atomic_prompt(s) for _, s in jobs]) if jobs else []
    refused = 0  # a judge may refuse a prompt (None: HTTP 400/413/422): that sentence gives no facts
    for (i, _), ans in zip(jobs, answers):
        refused += ans is None
        results[i].facts += parse_facts(ans) if ans is not None else []
    checks = [(r, f) for r in results for f in r.facts]
    prompts = []
    for r, f in checks:
        context = "\n\n".join(f"Title: {r.entity}\nText: {p}" for p in source.retrieve(r.entity, f, k))
        prompts.append(VERIFY.format(topic=r.entity, context=context, fact=f))
    verdicts = judge.answer(prompts) if prompts else []
    for r in results:
        r.facts = []
    for (r, f), ans in zip(checks, verdicts):  # a refused verification leaves its fact out (neither verdict)
        refused += ans is None
        if ans is not None:
            r.facts.append(f)
            r.supported.append(is_true(ans))
    scored = [r for r in results if r.facts]
    for r in scored:
        r.status = "scored"
    init = [sum(r.supported) / len(r.facts) for r in scored]
    pen = [s * length_penalty(len(r.facts), gamma) for s, r in zip(init, scored)]
    in_source = [r for r in results if r.status != "not_in_knowledge_source"]
    # as FActScore: generations without facts are left out of the mean; none with facts -> no score (None)
    return {"factscore": float(np.mean(pen)) if pen else None, "init_score": float(np.mean(init)) if init else None,
            "respond_ratio": len(scored) / max(1, len(in_source)),
            "facts_per_response": float(np.mean([len(r.facts) for r in scored])) if scored else None,
            "not_in_knowledge_source": len(results) - len(in_source), "refused_prompts": refused}, results
