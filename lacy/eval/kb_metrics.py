"""The metrics of a world with a knowledge base: KB FactScore of cascade bios, fact leakage, call placement.

- **FactScore (KB-verified)**: each bio's claims (``KnowledgeBase.claims``) verified exactly; score =
  supported / claims, averaged over bios with >= 1 claim; FActScore's length penalty multiplies a bio's score
  by exp(1 - gamma / claims) when it has fewer than gamma claims; respond ratio = share of bios with a claim.
  Nothing to score is no score, not 0: with no bio making a claim the FactScore is None (JSON null, "n/a" in
  the table, no TensorBoard scalar); so is any rate or mean over an empty set (e.g. call precision without calls).
- **Fact leakage** (method.md section 6): ``<CALL>`` can never be chosen, greedy continuation of each probe up
  to the first sentence end; leakage = share that contains the gold answer, overall and per popularity bucket.
- **Call placement**: on validation documents (teacher forcing), the top ``rate`` of positions by call score
  against the true fact-value tokens (precision, recall; recall split into derived and non-derived facts);
  and for the cascade's own calls, the share that wrote fact-value tokens.
"""
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from lacy.eval.report import length_penalty
from lacy.inference.cascade import CallPolicy, Cascade, Generation, call_scores
from lacy.errors import UsageError
from lacy.io.marker import read_marker, write_output
from lacy.train.objective import token_losses
from lacy.worlds.fact_masks import PlacementDocs
from lacy.worlds.kb import KnowledgeBase

log = logging.getLogger(__name__)

BUCKETS = ((1, 1, "1"), (2, 4, "2-4"), (5, 9, "5-9"), (10, 10**9, "10+"))


def bucket(popularity: int) -> str:
    return next(name for lo, hi, name in BUCKETS if lo <= popularity <= hi)


def bio_claims(kb: KnowledgeBase, gens: list[Generation], subjects: list[str]) -> list[list]:
    """Each bio's claims (``lacy.worlds.kb.Claim``) read with its subject; the prompt's own words are not claims."""
    return [[c for c in kb.claims(g.prompt + g.text, subject=subject) if c.start >= len(g.prompt)]
            for g, subject in zip(gens, subjects)]


def bio_scores(subjects: list[str], claims: list[list]) -> list[dict]:
    """Per bio (``claims``: :func:`bio_claims`): ``factscore`` (share of its claims supported; None without a claim,
    left out of FActScore's mean) and ``claims``: what a paired comparison of two models on the same prompts needs
    (experiments/stats.py)."""
    return [{"entity": subject, "claims": len(cl), "factscore": sum(c.supported for c in cl) / len(cl) if cl else None}
            for subject, cl in zip(subjects, claims)]


def kb_factscore(kb: KnowledgeBase, gens: list[Generation], subjects: list[str], gamma: int = 10,
                 claims: list[list] | None = None) -> dict:
    """KB FActScore of the bios (``claims``: their :func:`bio_claims`, when already read)."""
    scores, penalised, n_claims, ambiguous, by_attribute = [], [], [], 0, {}
    for bio in (bio_claims(kb, gens, subjects) if claims is None else claims):
        n_claims.append(len(bio))
        ambiguous += sum(c.ambiguous for c in bio)
        for c in bio:
            by_attribute.setdefault(c.attribute, []).append(c.supported)
        if bio:
            s = sum(c.supported for c in bio) / len(bio)
            scores.append(s)
            penalised.append(s * length_penalty(len(bio), gamma))
    return {"factscore": float(np.mean(scores)) if scores else None,  # no bio with a claim: nothing to score
            "factscore_penalised": float(np.mean(penalised)) if penalised else None,
            "respond_ratio": len(scores) / max(1, len(gens)),
            "claims_per_bio": float(np.mean(n_claims)) if n_claims else 0.0,
            "ambiguous_claims": ambiguous,  # and per relation: claims per bio, share supported (bios pooled)
            # the relation most claims are of: a comparison it carries says little about the methods (issue 30)
            "top_relation": max(by_attribute, key=lambda a: len(by_attribute[a])) if by_attribute else None,
            "top_relation_share": (max(map(len, by_attribute.values())) / sum(map(len, by_attribute.values()))
                                   if by_attribute else None),
            **{f"claims_{a}": len(v) / max(1, len(gens)) for a, v in sorted(by_attribute.items())},
            **{f"supported_{a}": float(np.mean(v)) for a, v in sorted(by_attribute.items())}}


def _first_sentence(text: str) -> str:
    ends = [i for i in (text.find(c) for c in ".?!\n") if i >= 0]
    return text[:min(ends)] if ends else text


def leakage(model, tokenizer, probes: list[dict], max_new_tokens: int = 8, batch_size: int = 64,
            kb: KnowledgeBase | None = None) -> dict:
    """Share of probes whose greedy continuation (no ``<CALL>``) states the gold answer, per bucket; with ``kb``
    also its chance baseline (:func:`leakage_baseline`)."""
    gens = Cascade(model, tokenizer, batch_size=batch_size).generate(
        [p["prompt"] for p in probes], max_new_tokens=max_new_tokens)
    texts = [_first_sentence(g.text) for g in gens]
    hits = [p["answer"] in t for p, t in zip(probes, texts)]
    out = {"leakage": float(np.mean(hits)) if hits else None}
    for _, _, name in BUCKETS:
        sel = [h for h, p in zip(hits, probes) if bucket(p["popularity"]) == name]
        if sel:
            out[f"leakage_{name}"] = float(np.mean(sel))
    return out | (leakage_baseline(kb, probes, texts, hits) if kb is not None else {})


def leakage_baseline(kb: KnowledgeBase, probes: list[dict], texts: list[str], hits: list[bool]) -> dict:
    """What a leakage figure is to be read against (issue 30: an SLM writing one birth town for 113 of 115
    people "leaks" whenever that town is right, and one writing no value scores 0). Per relation (probes with
    an ``attribute``): ``leakage_<rel>``; ``leakage_chance_<rel>``, the leakage of always writing the relation's
    most frequent answer among the probes; ``answered_<rel>``, the share of continuations (first sentence)
    stating any value the relation has in the KB (for an entity-valued one, any entity's name). Overall
    ``leakage_chance`` and ``answered``, probes pooled. Leakage above chance is what the SLM stores."""
    by_rel: dict[str, list[int]] = {}
    for i, p in enumerate(probes):
        if p.get("attribute") in kb.attributes:
            by_rel.setdefault(p["attribute"], []).append(i)
    out, chance, answered = {}, {}, {}
    for rel, idx in sorted(by_rel.items()):
        answers = [probes[i]["answer"] for i in idx]
        top = max(set(answers), key=lambda v: (answers.count(v), v))
        if kb.attributes[rel].kind == "entity":
            values = {al for e in kb.entities.values() for al in e.aliases}
        else:
            values = {e.attributes[rel] for e in kb.entities.values() if rel in e.attributes}
        pattern = kb.index["full_patterns"].get(rel)
        for i in idx:
            chance[i] = probes[i]["answer"] == top
            answered[i] = any(v in texts[i] for v in values) or bool(
                pattern and kb.index["patterns"][rel].search(texts[i]))
        out[f"leakage_{rel}"] = float(np.mean([hits[i] for i in idx]))
        out[f"leakage_chance_{rel}"] = float(np.mean([chance[i] for i in idx]))
        out[f"answered_{rel}"] = float(np.mean([answered[i] for i in idx]))
    if chance:
        out["leakage_chance"] = float(np.mean(list(chance.values())))
        out["answered"] = float(np.mean(list(answered.values())))
    return out


def _target_losses(model, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of positions 0..n-2, -log p_noCALL(next token)) of one document, on its first max_position_embeddings."""
    ids = torch.as_tensor(ids[:model.config.max_position_embeddings])
    logits = model(input_ids=ids[None]).logits[0, :-1].float()  # t predicts token t+1
    return logits, token_losses(logits, ids[1:]).target  # -log p_noCALL, as in training


@torch.no_grad()
def call_placement(model, docs: PlacementDocs, rate: float = 0.15, score: str = "call", reference=None) -> dict:
    """Top ``rate`` of all target positions by call score vs the true fact-value tokens: precision, recall
    (split into derived / non-derived facts, by KB relation and by the subject's popularity bucket), and paper
    Fig. 5: the model's ground-truth loss on its own call mask and off it, next to ``reference``'s (e.g.
    Vanilla's) loss on the same mask. The mask is the top ``rate`` over the whole validation set (training
    ranks per batch)."""
    scores, loss, ref_loss = [], [], []
    for ids in docs.ids:  # a document longer than the context is scored on its first n_positions tokens
        logits, target = _target_losses(model, ids)
        scores.append(call_scores(logits, score).numpy())
        loss.append(target.numpy())
        if reference is not None:
            ref_loss.append(_target_losses(reference, ids)[1].numpy())
    keep = [len(x) for x in scores]
    cut = lambda arrays: np.concatenate([a[:k] for a, k in zip(arrays, keep)])
    s, fact, derived = np.concatenate(scores), cut(docs.fact), cut(docs.derived)
    pop_bucket = np.concatenate([[bucket(p) if p > 0 else ""] * k for p, k in zip(docs.popularity, keep)])
    k = max(1, round(rate * len(s)))
    called = np.zeros(len(s), dtype=bool)
    called[np.argsort(-s, kind="stable")[:k]] = True
    recall = lambda m: float((called & m).sum() / m.sum()) if m.any() else None  # share of a mask called
    out = {"placement_precision": float((called & fact).sum() / k), "placement_recall": recall(fact),
           "placement_recall_derived": recall(derived), "placement_recall_nonderived": recall(fact & ~derived),
           "fact_token_share": float(fact.mean())}
    for _, _, name in BUCKETS:
        if (fact & (pop_bucket == name)).any():
            out[f"placement_recall_{name}"] = recall(fact & (pop_bucket == name))
    for r in sorted({r for rel in docs.relations for r in rel}):
        out[f"placement_recall_{r}"] = recall(cut([rel.get(r, np.zeros(len(f), bool)) for rel, f in
                                                zip(docs.relations, docs.fact)]))
    mean_on = lambda x, m: float(x[m].mean()) if m.any() else None
    for prefix, per_doc in (("fig5", loss), ("fig5_ref", ref_loss)):
        if per_doc:
            x = np.concatenate(per_doc)
            out |= {f"{prefix}_call_loss": mean_on(x, called), f"{prefix}_noncall_loss": mean_on(x, ~called)}
    return out


def cascade_placement(kb: KnowledgeBase, tokenizer, gens: list[Generation], subjects: list[str]) -> dict:
    """Share of the cascade's calls whose first partner token is a fact-value token of the final bio, and
    share of the bios' fact-value tokens the partner wrote (overall and per relation: ``by_partner_<rel>``)."""
    on_fact = calls = fact_tokens = fact_by_partner = 0
    by_relation: dict[str, list[int]] = {}  # relation -> [value tokens, of which the partner wrote]
    for g, subject in zip(gens, subjects):
        text, pos = g.token_spans(tokenizer)
        claims = [c for c in kb.claims(text, subject=subject) if c.start >= len(g.prompt)]
        is_fact = [any(a < c.end and c.start < b for c in claims) for a, b in pos]
        calls += len(g.calls)
        on_fact += sum(is_fact[i] for i in g.calls if i < len(is_fact))
        fact_tokens += sum(is_fact)
        fact_by_partner += sum(f and p for f, p in zip(is_fact, g.from_partner))
        for c in claims:
            inside = [p for (a, b), p in zip(pos, g.from_partner) if a < c.end and c.start < b]
            n = by_relation.setdefault(c.attribute, [0, 0])
            n[0], n[1] = n[0] + len(inside), n[1] + sum(inside)
    return {"cascade_call_precision": on_fact / calls if calls else None,
            "cascade_fact_tokens_by_partner": fact_by_partner / fact_tokens if fact_tokens else None,
            **{f"by_partner_{r}": p / n if n else None for r, (n, p) in sorted(by_relation.items())}}


def evaluate_cascade(kb: KnowledgeBase, slm, tokenizer, prompts: list[dict], partner, policy: CallPolicy,
                     max_new_tokens: int = 96, gamma: int = 10,
                     batch_size: int = 32) -> tuple[dict, list[Generation], list[dict]]:
    """Bios from the cascade, scored by the KB; with the cascade's cost and realised call rate. Returns (metrics,
    generations, every bio's score: :func:`bio_scores`)."""
    cascade = Cascade(slm, tokenizer, partner, policy, batch_size=batch_size)
    gens = cascade.generate([p["prompt"] for p in prompts], max_new_tokens=max_new_tokens)
    subjects = [p["entity"] for p in prompts]
    st = cascade.stats
    by_bucket = {}  # call_rate by the subject's popularity bucket: tokens charged to calls (empty calls too)
    for _, _, name in BUCKETS:
        sel = [g for g, p in zip(gens, prompts) if "popularity" in p and bucket(p["popularity"]) == name]
        if sel:
            by_bucket[f"call_rate_{name}"] = sum(g.spent for g in sel) / max(1, sum(len(g.tokens) for g in sel))
    claims = bio_claims(kb, gens, subjects)  # read once: the mean and the per-bio scores
    return {**kb_factscore(kb, gens, subjects, gamma, claims), **cascade_placement(kb, tokenizer, gens, subjects),
            "call_rate": st.call_rate, **by_bucket, "calls": st.calls, "empty_calls": st.empty_calls,
            "slm_gflops": st.slm_flops / 1e9, "partner_gflops": st.partner_flops / 1e9,
            "partner_tokens_processed": st.partner_tokens_processed}, gens, bio_scores(subjects, claims)


def partner_alone(path: str, model, tokenizer, kb: KnowledgeBase, prompts: list[dict], probes: list[dict],
                  max_new_tokens: int = 96, gamma: int = 10, keep: bool = True) -> dict:
    """The partner's own leakage (probe accuracy) and FactScore, cached in ``<path>/partner_eval.json`` keyed
    by everything that changes them, so each SLM's evaluation reuses one partner measurement. Only a lacy export
    keeps it (recorded in its marker, so a later export may replace the folder); a user's model folder is left
    as it is and the measurement is made again. ``keep`` off: measured, not written (the other DDP ranks)."""
    key = hashlib.sha256(json.dumps(["leakage-baseline", repr(kb), prompts, probes, max_new_tokens, gamma])
                         .encode()).hexdigest()[:16]
    cache = Path(path) / "partner_eval.json"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):  # not lacy's (or torn): measured again; write_output then leaves it as it is
        known = {}
    if isinstance(known, dict) and known.get("key") == key and isinstance(known.get("metrics"), dict):
        return known["metrics"]
    metrics = {**leakage(model, tokenizer, probes, kb=kb),
               **evaluate_cascade(kb, model, tokenizer, prompts, None, CallPolicy("never"), max_new_tokens,
                                  gamma)[0]}
    if not keep:
        return metrics
    if read_marker(Path(path)) is None:  # not a lacy export: lacy writes nothing into a user's model folder
        log.info("%s is not a lacy export: the partner's own scores are not cached there", path)
        return metrics
    try:
        write_output(cache, json.dumps({"key": key, "metrics": metrics}, indent=1), "KBEvaluation partner")
    except UsageError as err:  # a partner_eval.json lacy did not write (or one edited): kept, not replaced
        log.warning("%s; the partner's own scores are not cached", err)
    return metrics


