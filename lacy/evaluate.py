"""Evaluation on a world with a knowledge base: KB FactScore of cascade bios, fact leakage, call placement.

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
import math
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lacy.cascade import Cascade, CallPolicy, Generation, LookupPartner, ModelPartner, call_scores
from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.kb import KnowledgeBase
from lacy.model import local_model_folder
from lacy.tokenizer import load_tokenizer
from lacy.world import WorldFiles, read_world
from lacy.monitor import log_bios, log_image, log_text

PARTNER_HINT = ("train it with `make partner` (the closed world's partner, exported to runs/world/partner/hf) or set "
                "partner: null")
BUCKETS = ((1, 1, "1"), (2, 4, "2-4"), (5, 9, "5-9"), (10, 10**9, "10+"))


def bucket(popularity: int) -> str:
    return next(name for lo, hi, name in BUCKETS if lo <= popularity <= hi)


def bio_claims(kb: KnowledgeBase, gens: list[Generation], subjects: list[str]) -> list[list]:
    """Each bio's claims (``lacy.kb.Claim``) read with its subject; the prompt's own words are not claims."""
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
            penalised.append(s * (math.exp(1 - gamma / len(bio)) if len(bio) < gamma else 1.0))
    return {"factscore": float(np.mean(scores)) if scores else None,  # no bio with a claim: nothing to score
            "factscore_penalised": float(np.mean(penalised)) if penalised else None,
            "respond_ratio": len(scores) / max(1, len(gens)),
            "claims_per_bio": float(np.mean(n_claims)) if n_claims else 0.0,
            "ambiguous_claims": ambiguous,  # and per relation: claims per bio, share supported (bios pooled)
            **{f"claims_{a}": len(v) / max(1, len(gens)) for a, v in sorted(by_attribute.items())},
            **{f"supported_{a}": float(np.mean(v)) for a, v in sorted(by_attribute.items())}}


def _first_sentence(text: str) -> str:
    ends = [i for i in (text.find(c) for c in ".?!\n") if i >= 0]
    return text[:min(ends)] if ends else text


def leakage(model, tokenizer, probes: list[dict], max_new_tokens: int = 8, batch_size: int = 64) -> dict:
    """Share of probes whose greedy continuation (no ``<CALL>``) states the gold answer, per bucket."""
    gens = Cascade(model, tokenizer, batch_size=batch_size).generate(
        [p["prompt"] for p in probes], max_new_tokens=max_new_tokens)
    hits = [p["answer"] in _first_sentence(g.text) for p, g in zip(probes, gens)]
    out = {"leakage": float(np.mean(hits)) if hits else None}
    for _, _, name in BUCKETS:
        sel = [h for h, p in zip(hits, probes) if bucket(p["popularity"]) == name]
        if sel:
            out[f"leakage_{name}"] = float(np.mean(sel))
    return out


@dataclass
class PlacementDocs:
    """Validation documents as token ids with their true fact-value masks (from the KB checker; also per
    relation) and their subjects' popularity (documents in the corpus; 0 when unknown)."""
    ids: list[np.ndarray]
    fact: list[np.ndarray]
    derived: list[np.ndarray]
    popularity: list[int]
    relations: list[dict[str, np.ndarray]]

    @classmethod
    def build(cls, kb: KnowledgeBase, tokenizer, docs: list[tuple[str, str]],
              popularity: dict[str, int] | None = None) -> "PlacementDocs":
        from lacy.facts import span_flags

        ids, fact, derived, relations = [], [], [], []
        for subject, text in docs:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            claims = kb.claims(text, subject=subject)
            is_derived = [kb.attributes.get(c.attribute) is not None and
                          kb.attributes[c.attribute].derived_from is not None for c in claims]
            ids.append(np.asarray([tokenizer.eos_token_id] + enc["input_ids"]))
            fact.append(span_flags(len(text), [(c.start, c.end) for c in claims], offsets))
            derived.append(span_flags(len(text), [(c.start, c.end) for c, d in zip(claims, is_derived) if d],
                                      offsets))
            relations.append({r: span_flags(len(text), [(c.start, c.end) for c in claims if c.attribute == r], offsets)
                              for r in {c.attribute for c in claims}})
        return cls(ids, fact, derived, [(popularity or {}).get(subject, 0) for subject, _ in docs], relations)


def _target_losses(model, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of positions 0..n-2, -log p_noCALL(next token)) of one document, on its first n_positions."""
    ids = torch.as_tensor(ids[:model.config.n_positions])
    logits = model(input_ids=ids[None]).logits[0, :-1].float()  # t predicts token t+1
    vocab = logits[:, :-1]  # <CALL> is the last id: the loss of the true token without it (as in training)
    return logits, torch.logsumexp(vocab, -1) - vocab.gather(-1, ids[1:, None]).squeeze(-1)


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
    prf = lambda m: float((called & m).sum() / m.sum()) if m.any() else None  # recall on a mask
    out = {"placement_precision": float((called & fact).sum() / k), "placement_recall": prf(fact),
           "placement_recall_derived": prf(derived), "placement_recall_nonderived": prf(fact & ~derived),
           "fact_token_share": float(fact.mean())}
    for _, _, name in BUCKETS:
        if (fact & (pop_bucket == name)).any():
            out[f"placement_recall_{name}"] = prf(fact & (pop_bucket == name))
    for r in sorted({r for rel in docs.relations for r in rel}):
        out[f"placement_recall_{r}"] = prf(cut([rel.get(r, np.zeros(len(f), bool)) for rel, f in
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


def model_folder(path: str, role: str = "partner") -> Path:
    """``path`` as a local Hugging Face model folder (:func:`lacy.model.local_model_folder`), with the fix for a
    partner or a reference model in the one-line error."""
    hint = PARTNER_HINT if role == "partner" else "point it at a run's <log_dir>/hf export"
    return local_model_folder(path, role, hint)


def load_partner(path: str, tokenizer, role: str = "partner"):
    """A trained same-tokenizer model (the partner, or a reference) from a local Hugging Face folder (never the hub:
    :func:`lacy.model.local_model_folder`). Raises UsageError when it is not one or its tokenizer differs."""
    from transformers import AutoModelForCausalLM

    folder = model_folder(path, role)
    theirs = load_tokenizer(folder, option=f"{role} {path!r}")
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UsageError(f"{role} {path!r} uses another tokenizer than the SLM; a token-level cascade needs the "
                         "same one (train both on the same world seed and bpe_vocab_size)")
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)


def _spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over the list (worlds list people by popularity: every bucket stays in)."""
    if limit is None or limit >= len(items):
        return items
    return [items[round(i * len(items) / limit)] for i in range(limit)]


def partner_alone(path: str, model, tokenizer, kb: KnowledgeBase, prompts: list[dict], probes: list[dict],
                  max_new_tokens: int = 96, gamma: int = 10) -> dict:
    """The partner's own leakage (probe accuracy) and FactScore, cached in ``<path>/partner_eval.json`` keyed
    by everything that changes them, so each SLM's evaluation reuses one partner measurement."""
    key = hashlib.sha256(json.dumps([repr(kb), prompts, probes, max_new_tokens, gamma]).encode()).hexdigest()[:16]
    cache = Path(path) / "partner_eval.json"
    if cache.is_file():
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return known["metrics"]
    metrics = {**leakage(model, tokenizer, probes),
               **evaluate_cascade(kb, model, tokenizer, prompts, None, CallPolicy("never"), max_new_tokens,
                                  gamma)[0]}
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # DDP ranks measure it alike and write it at once
    tmp.write_text(json.dumps({"key": key, "metrics": metrics}, indent=1))
    tmp.replace(cache)
    return metrics


class KBEvaluation(L.Callback):
    """``python main.py test`` on a world with a knowledge base: leakage, call placement, and cascade bios
    scored by the KB, for the lookup (oracle) partner and a trained partner. Results go to TensorBoard
    (``world/<row>/<metric>``), to ``<log_dir>/kb_eval.json`` and to a printed table.

    Args:
        world: a world folder (docs/world.md: kb.json, val.jsonl, optional prompts.jsonl and probes.jsonl;
            ``python -m lacy.world`` writes one), validated at setup; null = the DataModule's ``ClosedWorld``.
        partner: trained partner folder (same tokenizer); null = lookup partner only.
        score: call | uncertainty | auto: ``call`` for models trained with <CALL>, ``uncertainty`` for the
            confidence cascade of a model without it; auto = uncertainty when the run's strategy is Vanilla.
        rate: the cascade's call budget (share of generated tokens written by the partner; paper 22%).
        modes: cascade rows to run: never (= SLM alone), always, budget, calibrated (a fixed threshold that
            the budget mode realises on a disjoint prompt set: the leakage probes).
        piece: what a partner writes per call: token | word | entity.
        placement_rate: share of validation positions called in the call-placement measurement.
        max_new_tokens: bio length cap.
        gamma: FActScore's length-penalty constant.
        sweep: call rates for the FactScore-vs-call-rate curve (budget mode, with the trained partner, or the
            lookup partner when there is none); written to ``<out>.png`` next to the JSON; null = no sweep.
        limit: use only N prompts / probes / validation documents, spread evenly over each list (null: all).
        reference: a model folder (same tokenizer; e.g. Vanilla's ``hf`` export) whose validation loss on this
            model's call mask is reported next to this model's (paper Fig. 5); null = none.
        out: JSON path; null = ``<log_dir>/kb_eval.json``.
    """

    def __init__(self, world: str | None = None, partner: str | None = "runs/world/partner/hf",
                 score: str = "auto", rate: float = 0.22, modes: list[str] = ("never", "always", "budget"),
                 piece: str = "word", placement_rate: float = 0.15, max_new_tokens: int = 96, gamma: int = 10,
                 sweep: list[float] | None = None, limit: int | None = None, reference: str | None = None,
                 out: str | None = None):
        if score not in ("call", "uncertainty", "auto"):
            raise UsageError(f"KBEvaluation score {score!r}: use call, uncertainty or auto")
        if not set(modes) <= {"never", "always", "argmax", "threshold", "budget", "calibrated"}:
            raise UsageError(f"KBEvaluation modes {list(modes)}: use never, always, argmax, threshold, budget or "
                             "calibrated")
        self.world, self.partner_path, self.score, self.rate, self.reference = world, partner, score, rate, reference
        self.modes, self.piece, self.placement_rate = list(modes), piece, placement_rate
        self.max_new_tokens, self.gamma, self.limit, self.out = max_new_tokens, gamma, limit, out
        self.sweep = list(sweep or [])
        self.results: dict = {}
        self._files: WorldFiles | None = None  # the world, read at setup (before the test loop)
        self.bios: dict[str, list[dict]] = {}  # row -> the first bios, partner pieces in [brackets] (TensorBoard)
        self.bio_scores: dict[str, list[dict]] = {}  # row -> every bio's score (``<out>_bios.json``)

    def _world(self, trainer) -> WorldFiles:
        if self.world is not None:
            return read_world(self.world)
        corpus = getattr(getattr(trainer, "datamodule", None), "corpus", None)
        if not hasattr(corpus, "kb"):
            raise UsageError("KBEvaluation.world: null needs data.corpus lacy.world.ClosedWorld; for another "
                             "corpus set world to a folder with kb.json and val.jsonl (docs/world.md)")
        kb = corpus.kb()
        return WorldFiles(kb, corpus.prompts(), kb.probes(), [(p.name, d) for p, d in corpus.val_documents()])

    def setup(self, trainer, pl_module, stage: str) -> None:
        """``test``: the model folders must exist and the world must read and validate, before the test loop (the
        evaluation uses them only at its end), so a bad path or file fails in seconds. Fit needs neither."""
        if stage == "test":
            for path, role in ((self.partner_path, "partner"), (self.reference, "reference")):
                if path:
                    model_folder(path, role)
            self._files = self._world(trainer)

    @torch.no_grad()
    def run(self, slm, tokenizer, trainer=None) -> dict:
        if self.score not in ("call", "uncertainty"):  # auto is resolved from the trainer's strategy at test
            raise UsageError(f"KBEvaluation score {self.score!r}: use call or uncertainty (auto only under "
                             "`main.py test`, where the strategy is known)")
        files = self._files or self._world(trainer)
        kb, prompts, probes, val = files.kb, *(_spread(x, self.limit) for x in (files.prompts, files.probes, files.val))
        docs = PlacementDocs.build(kb, tokenizer, val, {p["entity"]: p["popularity"] for p in prompts})
        reference = load_partner(self.reference, tokenizer, "reference") if self.reference else None
        res = {"slm": {**leakage(slm, tokenizer, probes),
                       **call_placement(slm, docs, self.placement_rate, self.score, reference)}}
        partners = {"lookup": LookupPartner(kb, tokenizer, self.piece)}
        if self.partner_path:
            model = load_partner(self.partner_path, tokenizer)
            partners["trained"] = ModelPartner(model, tokenizer, self.piece)
            res["partner_alone"] = partner_alone(self.partner_path, model, tokenizer, kb, prompts, probes,
                                                 self.max_new_tokens, self.gamma)
        for mode in self.modes:
            for name, partner in partners.items():
                if mode == "never" and name != "lookup":
                    continue  # never calling: the partner is irrelevant, one row ("SLM alone")
                row = "slm_alone" if mode == "never" else f"{name}_{mode}"
                policy = (self._calibrated(slm, tokenizer, partner, probes) if mode == "calibrated" else
                          CallPolicy(mode=mode, rate=self.rate, score=self.score))
                res[row], gens, self.bio_scores[row] = evaluate_cascade(
                    kb, slm, tokenizer, prompts, partner, policy, self.max_new_tokens, self.gamma)
                self._keep_bios(row, prompts, gens, tokenizer)
        name = "trained" if "trained" in partners else "lookup"  # the sweep's partner: the realistic one
        for rate in self.sweep:
            policy = CallPolicy(mode="budget", rate=rate, score=self.score)
            row = f"{name}_budget@{rate:g}"
            res[row], gens, self.bio_scores[row] = evaluate_cascade(kb, slm, tokenizer, prompts, partners[name],
                                                                     policy, self.max_new_tokens, self.gamma)
            self._keep_bios(row, prompts, gens, tokenizer)
        self.results = res
        return res

    def _keep_bios(self, row: str, prompts: list[dict], gens: list[Generation], tokenizer) -> None:
        from lacy.monitor import BIOS_SHOWN

        self.bios[row] = [{"prompt": p["prompt"], "text": g.marked(tokenizer)}
                          for p, g in zip(prompts[:BIOS_SHOWN], gens)]

    def _calibrated(self, slm, tokenizer, partner, probes) -> CallPolicy:
        budget = CallPolicy(mode="budget", rate=self.rate, score=self.score)
        Cascade(slm, tokenizer, partner, budget).generate([p["prompt"] for p in _spread(probes, 128)],
                                                           self.max_new_tokens)
        return CallPolicy(mode="threshold", threshold=budget.calibrated_threshold(), score=self.score)

    def on_test_epoch_end(self, trainer, pl_module):
        self.score = resolve_score(self.score, trainer)
        res = self.run(pl_module.model, trainer.datamodule.tokenizer, trainer)
        path = report(trainer, pl_module, res, "world", self.out or "kb_eval.json", KB_COLUMNS)
        if path is not None:  # every bio's score, for paired comparisons between runs (same prompts, same order)
            path.with_name(f"{path.stem}_bios.json").write_text(json.dumps(self.bio_scores))
        log_text(trainer, "world/table", format_table(res, KB_COLUMNS))
        log_bios(trainer, "world", self.bios)
        if path is not None and self.sweep:
            plot_sweep(res, path.with_suffix(".png"), title=f"call score: {self.score}")
            log_image(trainer, "world/factscore_vs_call_rate", path.with_suffix(".png"))


def resolve_score(score: str, trainer) -> str:
    """``auto``: the confidence cascade (uncertainty) for a Vanilla run, the <CALL> log-odds otherwise."""
    if score != "auto":
        return score
    from baselines import Vanilla

    return "uncertainty" if any(isinstance(c, Vanilla) for c in trainer.callbacks) else "call"


def report(trainer, pl_module, res: dict, prefix: str, out: str, columns: list[str]) -> Path | None:
    """Results to TensorBoard (``<prefix>/<row>/<metric>``), to a JSON file (a bare name lands in the run's log
    folder) and to a printed table; returns the JSON path on rank 0. Call it on every rank: ``trainer.log_dir``
    is a collective (a broadcast) under DDP, so it is read before the rank-0 branch."""
    for row, metrics in res.items():
        for k, v in metrics.items():
            if v is not None:  # None: nothing to measure (e.g. no bio made a claim); JSON null, no scalar
                pl_module.log(f"{prefix}/{row}/{k}", float(v), rank_zero_only=True)
    log_dir = trainer.log_dir  # every rank: read only on rank 0 it deadlocks the others
    if not trainer.is_global_zero:
        return None
    path = Path(out) if Path(out).parent != Path(".") else Path(log_dir or ".") / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(format_table(res, columns) + f"\n(written to {path})")
    return path


def plot_sweep(res: dict, path: Path, title: str = "") -> None:
    """FactScore vs call rate, one line per partner, from the ``<partner>_budget[@<rate>]`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    curves: dict[str, list] = {}
    for row, m in res.items():
        if "_budget" in row:
            if m["factscore"] is not None:  # no bio with a claim: no point
                curves.setdefault(row.split("_budget")[0], []).append((m["call_rate"], m["factscore"]))
    for name, pts in sorted(curves.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{name} partner")
    ax.set(xlabel="realised call rate (share of tokens from the partner)", ylabel="KB FactScore", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


KB_COLUMNS = ["factscore", "factscore_penalised", "respond_ratio", "claims_per_bio", "call_rate",
              "cascade_call_precision", "leakage", "placement_precision", "placement_recall"]


def format_table(res: dict, cols: list[str] = KB_COLUMNS) -> str:
    lines = ["| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, m in res.items():
        cell = lambda v: "n/a" if v is None else f"{v:.3f}"  # n/a: nothing to measure
        lines.append(f"| {row} | " + " | ".join(cell(m[c]) if c in m else "" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Check a trained partner on a closed world before training SLMs against it (issue 3: >= 70% of probes)."""
    from lacy.world import ClosedWorld, world_from_configs

    p = ArgumentParser(description=main.__doc__)
    p.add_argument("partner", help="the partner's Hugging Face folder (e.g. runs/world/partner/hf)")
    p.add_argument("--config", action="append",
                   help="the partner's training config (its data.corpus is the world, e.g. "
                        "configs/world/dense-partner.yaml); else --people/--seed")
    p.add_argument("--people", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-probe-accuracy", type=float, default=0.7)
    args = p.parse_args(argv)
    folder = local_model_folder(args.partner, "partner", "give the partner's exported folder, e.g. "
                                "runs/world/partner/hf (`make partner` trains it)")
    tok = load_tokenizer(folder, option=f"partner {args.partner!r}")
    model = load_partner(args.partner, tok)
    world = world_from_configs(args.config)[0] if args.config else ClosedWorld(people=args.people, seed=args.seed)
    m = partner_alone(args.partner, model, tok, world.kb(), world.prompts(), world.kb().probes())
    print(json.dumps(m, indent=1))
    if m["leakage"] < args.min_probe_accuracy:
        raise SystemExit(f"partner {args.partner} answers {m['leakage']:.1%} of the probes alone, below "
                         f"{args.min_probe_accuracy:.0%}: train it longer (configs/world/partner.yaml max_steps/rounds)")


if __name__ == "__main__":
    entry_point(main)()
