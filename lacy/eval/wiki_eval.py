"""``python main.py test`` on real text: cascade bios of Wikipedia people, scored by named-entity precision and
birth-year leakage (always) and FActScore (lacy/eval/factscore.py, when a judge is given)."""
import json
from pathlib import Path

import lightning as L

from lacy.annotators.spacy_facts import default_spacy_model
from lacy.data.corpus import WikiSummaries
from lacy.errors import UsageError
from lacy.eval.factscore import KnowledgeSource, factscore, ne_precision, year_probes
from lacy.eval.kb_metrics import leakage
from lacy.eval.report import call_score, report, spread
from lacy.inference.cascade import CallPolicy, Cascade
from lacy.inference.partners import partner_from
from lacy.io.atomic import write_atomic
from lacy.io.monitor import log_bios
from lacy.model.loading import model_source

PARTNER_HINT = "give smollm2 or a local Hugging Face model folder"


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
        records = WikiSummaries(topic=self.topic).records()
        ks = (KnowledgeSource(self.ks_path) if Path(self.ks_path).is_file() else
              KnowledgeSource.build([(r["title"], r["extract"]) for r in records], self.ks_path))
        people = spread(records, self.limit)
        titles = [r["title"] for r in people]
        import spacy  # here: spaCy's import costs seconds and only a test needs it

        nlp = spacy.load(default_spacy_model(), exclude=["lemmatizer"])
        probes = [dict(p, popularity=1) for p in year_probes(people)]
        res = {"slm": {"year_leakage": leakage(slm, tokenizer, probes)["leakage"] if probes else None,
                       "year_probes": len(probes)}}
        rows = {"slm_alone": (None, CallPolicy("never"))} if "never" in self.modes else {}
        for path in self.partners:
            name = Path(path).parent.name if Path(path).name == "hf" else Path(path).name
            partner = partner_from(path, tokenizer, self.piece)
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
                judged = spread(list(zip(titles, texts)), self.judge_limit)
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
                model_source(path, "partner", PARTNER_HINT, hub_allowed=True)

    def on_test_epoch_end(self, trainer, pl_module):
        res = self.run(pl_module.model, trainer.datamodule.tokenizer, call_score(self.score, pl_module))
        path = report(trainer, pl_module, res, "wiki", self.out or "wiki_eval.json",
                      ["ne_precision", "year_leakage", "call_rate", "factscore", "init_score", "respond_ratio"])
        if path is not None:
            write_atomic(path.with_name(f"{path.stem}_bios.json"), json.dumps(self.bios, indent=1))
        log_bios(trainer, "wiki", self.bios)
