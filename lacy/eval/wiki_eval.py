"""``python main.py test`` on real text: cascade bios of Wikipedia people, scored against the person's page with no
judge (lacy/eval/page_scores.py: named entities, years, places, the partner's word support; always), by
birth-year leakage (always) and by FActScore (lacy/eval/factscore.py, when a judge is given)."""
import json
from pathlib import Path

import lightning as L

from lacy.annotators.spacy_facts import default_spacy_model
from lacy.data.corpus import WikiSummaries
from lacy.errors import UsageError
from lacy.eval.factscore import KnowledgeSource, factscore
from lacy.eval.kb_metrics import leakage
from lacy.eval.page_scores import page_scores, word_support, year_probes
from lacy.eval.report import call_score, check_outputs, report, spread
from lacy.inference.cascade import CallPolicy, Cascade
from lacy.inference.partners import PARTNER_HINT, load_partner, partner_for
from lacy.inference.retrieval import RetrievalPartner
from lacy.io.marker import write_output
from lacy.io.monitor import log_bios
from lacy.model.loading import model_source

COLUMNS = ["ne_precision", "ne_recall", "year_precision", "place_precision", "birth_year_accuracy",
           "partner_page_support", "partner_passage_support", "year_leakage", "call_rate", "factscore", "init_score",
           "respond_ratio"]
PEOPLE = ("all", "held_out")


class WikiEvaluation(L.Callback):
    """``python main.py test`` on real text: cascade bios of Wikipedia people, scored by NE precision and year
    leakage (cheap, always) and FActScore (when a judge is given). Results: TensorBoard ``wiki/<row>/...``,
    ``<log_dir>/wiki_eval.json`` and a printed table.

    Args:
        partner: smollm2 | a local HF folder (same tokenizer: token hand-over; other: text) | hf:NAME (the hub,
            asked for explicitly) | a list of them
            (one cascade row each, ``<name>_budget``; a folder named ``hf`` is named after its parent) | null
            (SLM only).
        retrieval_partner: the same kinds of source, each the LM of a retrieval partner that writes from the
            person's page (lacy/inference/retrieval.py; rows ``rag_<name>_budget``) | null.
        passages: passages of the page a retrieval partner is shown per call.
        score: call | uncertainty | auto (uncertainty for Vanilla).
        rate: cascade budget (share of tokens from the partner).
        sweep: further budgets, one row per partner and rate (``<name>_budget@<rate>``).
        modes: rows: never (``slm_alone``), budget (``<name>_budget``), always (``<name>_alone``: the partner
            writes every token, the cascade's ceiling).
        piece: token | word | entity.
        topic: summaries topic whose titles are the prompts.
        people: all (every person of the topic: the people the SLM was trained on, as the paper's FActScore
            entities are) | held_out (only those whose summary the run's data held out for validation: the
            people a continued-pretrained SLM never read in its continued pretraining) [ours].
        limit: number of people (spread over the list); null: all.
        max_new_tokens: bio length cap.
        judge: a ``baselines.llm_judge`` backend for FActScore (null: the scores without a judge only).
        judge_limit: FActScore on this many of the bios (spread over them; a CPU judge is slow); null: all.
        k: passages retrieved per fact.
        gamma: length-penalty constant.
        knowledge_source: sqlite path (built from the summaries when missing).
        out: JSON path; null = ``<log_dir>/wiki_eval.json``. The bios, partner pieces in [brackets], go next
            to it (``<stem>_bios.json``): the numbers of a weak SLM need reading its text.
    """

    def __init__(self, partner: str | list[str] | None = "smollm2", retrieval_partner: str | list[str] | None = None,
                 passages: int = 3, score: str = "auto", rate: float = 0.22, sweep: list[float] = (),
                 modes: list[str] = ("never", "budget"), piece: str = "word", topic: str = "People",
                 people: str = "all", limit: int | None = 64, max_new_tokens: int = 64, judge=None,
                 judge_limit: int | None = None, k: int = 5, gamma: int = 10,
                 knowledge_source: str = ".cache/lacy/wiki_knowledge.sqlite", out: str | None = None):
        listed = lambda x: [x] if isinstance(x, str) else list(x or [])
        self.partners, self.retrieval_partners = listed(partner), listed(retrieval_partner)
        self.score, self.rate, self.sweep, self.piece, self.topic = score, rate, list(sweep), piece, topic
        self.modes, self.people, self.passages = list(modes), people, passages
        if not set(self.modes) <= {"never", "budget", "always"}:
            raise UsageError(f"WikiEvaluation modes {self.modes}: use never, budget, always")
        if score not in ("call", "uncertainty", "auto"):
            raise UsageError(f"WikiEvaluation score {score!r}: use call, uncertainty or auto")
        if people not in PEOPLE:
            raise UsageError(f"WikiEvaluation people {people!r}: use {' or '.join(PEOPLE)}")
        if passages < 1:
            raise UsageError(f"WikiEvaluation passages={passages}: at least 1 passage per call")
        bad = [r for r in [rate, *self.sweep] if not 0.0 <= r <= 1.0]
        if bad:
            raise UsageError(f"WikiEvaluation rate/sweep {bad}: a budget is a share of the tokens, in [0, 1]")
        self.limit, self.max_new_tokens, self.judge, self.k, self.gamma = limit, max_new_tokens, judge, k, gamma
        self.judge_limit = judge_limit
        self.ks_path, self.out = knowledge_source, out
        self.results: dict = {}
        self.bios: dict[str, list[dict]] = {}  # row -> [{title, text}]

    def _people(self, records: list[dict], held_out: list[str] | None) -> list[dict]:
        """The topic's people the rows write about: all, or those whose summary is a held-out document."""
        if self.people == "held_out":
            kept = set(held_out or ())
            records = [r for r in records if (r.get("extract") or "").strip() in kept]
            if not records:
                raise UsageError(f"WikiEvaluation people: held_out: the run's validation split holds no {self.topic} "
                                 "summary (data.corpus must be lacy.WikiSummaries, data.val_fraction above 0)")
        return spread(records, self.limit)

    def run(self, slm, tokenizer, score: str, held_out: list[str] | None = None) -> dict:
        """Every row's scores (and ``self.bios``). ``held_out``: the documents the run held out (people:
        held_out picks the people whose summary is one of them)."""
        records = WikiSummaries(topic=self.topic).records()
        ks = (KnowledgeSource(self.ks_path) if Path(self.ks_path).is_file() else
              KnowledgeSource.build([(r["title"], r["extract"]) for r in records], self.ks_path))
        people = self._people(records, held_out)
        titles = [r["title"] for r in people]
        descriptions = {r["title"]: r.get("description") or "" for r in people}
        import spacy  # here: spaCy's import costs seconds and only a test needs it

        nlp = spacy.load(default_spacy_model(), exclude=["lemmatizer"])
        probes = [dict(p, popularity=1) for p in year_probes(people)]
        res = {"slm": {"year_leakage": leakage(slm, tokenizer, probes)["leakage"] if probes else None,
                       "year_probes": len(probes), "people": len(people)}}
        rows = {"slm_alone": (lambda: None, CallPolicy("never"))} if "never" in self.modes else {}
        loaded = {p: load_partner(p) for p in dict.fromkeys(self.partners + self.retrieval_partners)}  # once each
        # a fresh partner per row (its counters and the passages it showed are that row's), on the loaded model
        named = [(self._name(p), lambda lm=loaded[p]: partner_for(*lm, tokenizer, self.piece)) for p in self.partners]
        named += [("rag_" + self._name(p), lambda lm=loaded[p]: RetrievalPartner(
            *lm, tokenizer, ks, self.piece, passages=self.passages)) for p in self.retrieval_partners]
        for name, make in named:
            for mode in ("budget", "always"):
                if mode in self.modes:
                    rows[f"{name}_{'alone' if mode == 'always' else mode}"] = (
                        make, CallPolicy(mode, rate=self.rate, score=score))
            for rate in self.sweep:
                rows[f"{name}_budget@{rate:g}"] = (make, CallPolicy("budget", rate=rate, score=score))
        for row, (make, policy) in rows.items():
            partner = make()
            casc = Cascade(slm, tokenizer, partner, policy)
            gens = casc.generate(titles, self.max_new_tokens)
            texts = [g.text for g in gens]
            self.bios[row] = [{"title": t, "text": g.marked(tokenizer)} for t, g in zip(titles, gens)]
            metrics = {**page_scores(texts, titles, ks, nlp, descriptions), "call_rate": casc.stats.call_rate}
            if partner is not None:  # what the partner wrote: from the page? from the passages it was shown?
                pieces = [g.partner_texts(tokenizer) for g in gens]
                stop = nlp.Defaults.stop_words
                on_page = word_support(pieces, [ks.page(t) or "" for t in titles], stop)
                metrics.update(partner_page_support=on_page["word_support"], partner_words=on_page["content_words"])
                if isinstance(partner, RetrievalPartner):
                    shown = word_support(pieces, [" ".join(partner.shown.get(t, [])) for t in titles], stop)
                    metrics.update(partner_passage_support=shown["word_support"], no_passage=len(partner.no_passage))
                    if partner.no_passage:
                        print(f"WikiEvaluation {row}: {len(partner.no_passage)} of {len(titles)} people have no page in "
                              f"{self.ks_path} (their calls were written with no passage)")
            if self.judge is not None:
                judged = spread(list(zip(titles, texts)), self.judge_limit)
                fs, _ = factscore([t + g for t, g in judged], [t for t, _ in judged], ks, self.judge, self.k,
                                  self.gamma)
                metrics.update(fs, judged_bios=len(judged))
            res[row] = metrics
        self.results = res
        return res

    @staticmethod
    def _name(path: str) -> str:
        return Path(path).parent.name if Path(path).name == "hf" else Path(path).name

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Before the test loop: every partner must be there (the evaluation loads them only at its end)."""
        if stage == "test":
            check_outputs(trainer, self.out or "wiki_eval.json", ("_bios.json",))
            for path in self.partners + self.retrieval_partners:
                model_source(path, "partner", PARTNER_HINT, hub_allowed=True)
            if self.people == "held_out":  # the people must be there before the test loop, not after it
                if not hasattr(trainer.datamodule, "held_out_documents"):
                    raise UsageError("WikiEvaluation people: held_out needs the run's data module "
                                     "(lacy.CorpusDataModule) to know its validation documents")
                self._people(WikiSummaries(topic=self.topic).records(), trainer.datamodule.held_out_documents())

    def on_test_epoch_end(self, trainer, pl_module):
        held_out = trainer.datamodule.held_out_documents() if self.people == "held_out" else None
        res = self.run(pl_module.model, trainer.datamodule.tokenizer, call_score(self.score, pl_module), held_out)
        path = report(trainer, pl_module, res, "wiki", self.out or "wiki_eval.json", COLUMNS)
        if path is not None:
            write_output(path.with_name(f"{path.stem}_bios.json"), json.dumps(self.bios, indent=1),
                         "WikiEvaluation out")
        log_bios(trainer, "wiki", self.bios)
