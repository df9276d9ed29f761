"""The real-text test of continued-pretrained SLMs (issue 26): the table of ``experiments/pretrained.sh realtext``.

Each model (base SmolLM2-135M-Instruct, Vanilla- and LaCy-continued) wrote bios of the people whose summaries its
data held out, alone and in the cascade with SmolLM2 as a plain partner and as a retrieval partner
(configs/eval/wiki_retrieval.yaml). The table pools each row's scores against the page (lacy/eval/page_scores.py),
recomputed here from the saved bios with the current scorer (so rows scored by different lacy versions compare;
the call rate, the leakage and the share of partner words in the passages shown come from wiki_eval.json);
the paired lines compare two rows on the same people (in the same order): the difference of the rows' mean
per-bio NE precision (each over its bios with a named entity) with a bootstrap interval over the people (experiments/stats.py; one continued-pretraining seed, so
the interval carries only which people were asked about).

    python -m experiments.pretrained_real_text [--folder runs/pretrained/realtext]   # -> <folder>/results.md
"""
import argparse
import json
import re
from pathlib import Path

import spacy

from experiments.stats import paired_difference
from lacy.annotators.spacy_facts import default_spacy_model
from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.eval.factscore import KnowledgeSource
from lacy.data.corpus import WikiSummaries
from lacy.eval.page_scores import ne_precision, page_scores, word_support

MODELS = ("base", "vanilla", "lacy", "lacy_full")  # lacy_full: LaCy under model.noncall_softmax: full
COLUMNS = [("call_rate", None, "call rate"), ("ne_precision", "named_entities", "NE precision (NEs)"),
           ("ne_recall", "page_entities", "NE recall (page NEs)"), ("year_precision", "years", "year precision (years)"),
           ("place_precision", "places", "place precision (places)"),
           ("birth_year_accuracy", "birth_years", "birth year right (stated)"),
           ("partner_page_support", "partner_words", "partner words on the page (words)"),
           ("partner_passage_support", None, "partner words in its passages")]
# (A, B) pairs: the same row across models, and what retrieval adds within a model
PAIRS = ([((m, r), ("vanilla", r)) for m in ("lacy", "lacy_full") for r in ("slm_alone", "smollm2_budget",
                                                                            "rag_smollm2_budget")]
         + [((m, "rag_smollm2_budget"), (m, "smollm2_budget")) for m in MODELS])


def plain_text(marked: str) -> str:
    """A bio as written, from its marked form (partner pieces in [brackets]; a bracket the text itself wrote
    is dropped too, which can only change a bio that wrote one)."""
    return marked.replace("[", "").replace("]", "")


def partner_pieces(marked: str) -> list[str]:
    """The partner's pieces of a marked bio (the text in [brackets])."""
    return re.findall(r"\[([^\[\]]*)\]", marked)


def rescored(bios: list[dict], source, nlp, descriptions: dict[str, str]) -> dict:
    """A row's page scores and partner words on the page, from its bios (``{"title", "text"}``, marked)."""
    titles = [b["title"] for b in bios]
    out = page_scores([plain_text(b["text"]) for b in bios], titles, source, nlp, descriptions)
    pieces = [partner_pieces(b["text"]) for b in bios]
    if any(pieces):
        on_page = word_support(pieces, [source.page(t) or "" for t in titles], nlp.Defaults.stop_words)
        out.update(partner_page_support=on_page["word_support"], partner_words=on_page["content_words"])
    return out


def per_bio_ne_precision(bios: list[dict], source, nlp) -> list[float | None]:
    """Each bio's NE precision against its person's page (None: no named entity)."""
    return [ne_precision([plain_text(b["text"])], [b["title"]], source, nlp)["ne_precision"] for b in bios]


def _cell(m: dict, key: str, count: str | None) -> str:
    v = m.get(key)
    if key not in m:
        return ""
    text = "n/a" if v is None else f"{v:.3f}"
    return f"{text} ({m[count]})" if count and count in m else text


def report(folder: Path, knowledge_source: str = ".cache/lacy/wiki_knowledge.sqlite") -> Path:
    """``<folder>/results.md``: one line per model and row, then the paired lines; returns its path."""
    runs = {m: folder / m for m in MODELS if (folder / m / "wiki_eval.json").is_file()}
    if not runs:
        raise UsageError(f"{folder}: no <model>/wiki_eval.json; run experiments/pretrained.sh realtext first")
    for m, d in runs.items():
        if not (d / "wiki_eval_bios.json").is_file():
            raise UsageError(f"{d}: wiki_eval.json without wiki_eval_bios.json (an interrupted test?); delete the "
                             f"folder and run experiments/pretrained.sh realtext {m} again")
    res = {m: json.loads((d / "wiki_eval.json").read_text()) for m, d in runs.items()}
    nlp, source = spacy.load(default_spacy_model(), exclude=["lemmatizer"]), KnowledgeSource(knowledge_source)
    bios = {m: json.loads((d / "wiki_eval_bios.json").read_text()) for m, d in runs.items()}
    descriptions = {r["title"]: r.get("description") or "" for r in WikiSummaries(topic="People").records()}
    lines = ["| model | year leakage (probes) | row | " + " | ".join(h for _, _, h in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for m, r in res.items():
        slm = r["slm"]
        leak = "n/a" if slm.get("year_leakage") is None else f"{slm['year_leakage']:.3f} ({slm['year_probes']})"
        for row, saved in r.items():
            if row != "slm":
                kept = {k: saved[k] for k in ("call_rate", "partner_passage_support") if k in saved}
                metrics = {**rescored(bios[m][row], source, nlp, descriptions), **kept}
                lines.append(f"| {m} | {leak} | {row} | " + " | ".join(_cell(metrics, k, c) for k, c, _ in COLUMNS)
                             + " |")
    scores: dict[tuple[str, str], list] = {}
    paired = ["| A | B | people | A - B: mean per-bio NE precision | 95% interval (people) |", "|---|---|---|---|---|"]
    for a, b in PAIRS:
        if not all(m in bios and row in bios[m] for m, row in (a, b)):
            continue
        for key in (a, b):
            if key not in scores:
                scores[key] = per_bio_ne_precision(bios[key[0]][key[1]], source, nlp)
        if [x["title"] for x in bios[a[0]][a[1]]] != [x["title"] for x in bios[b[0]][b[1]]]:
            raise UsageError(f"{folder}: {a} and {b} wrote bios of different people; rerun both")
        d = paired_difference({1: (scores[a], scores[b])})
        paired.append(f"| {' '.join(a)} | {' '.join(b)} | {len(scores[a])} | {d['mean']:+.3f} | "
                      f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    people = next(iter(res.values()))["slm"].get("people", "?")
    path = folder / "results.md"
    path.write_text(f"Bios of the {people} held-out people, 64 tokens, greedy; partner SmolLM2-135M-Instruct, plain "
                    "(`smollm2`) and with the person's passages (`rag_smollm2`); `_budget` = 22% of the tokens, "
                    "`@r` = the sweep's budgets. Pooled over the bios; n/a: nothing to score.\n\n" + "\n".join(lines)
                    + "\n\nPaired over the same people (each row's mean NE precision over its bios with a named entity; "
                    "the interval resamples the people):\n\n"
                    + "\n".join(paired) + "\n")
    print(path.read_text())
    return path


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="runs/pretrained/realtext")
    p.add_argument("--knowledge-source", default=".cache/lacy/wiki_knowledge.sqlite")
    args = p.parse_args(argv)
    report(Path(args.folder), args.knowledge_source)


if __name__ == "__main__":
    entry_point(main)()
