"""``python main.py test`` on a world with a knowledge base: the :class:`KBEvaluation` callback (lacy/eval/kb_metrics.py
has the metrics: KB FactScore of cascade bios, fact leakage, call placement)."""
import json
from pathlib import Path

import lightning as L
import torch

from lacy.data.tokenizer import load_tokenizer
from lacy.errors import UsageError
from lacy.eval.kb_metrics import call_placement, evaluate_cascade, leakage, partner_alone
from lacy.eval.report import call_score, check_outputs, format_table, plot_sweep, report, spread
from lacy.inference.cascade import CallPolicy, Cascade, Generation
from lacy.inference.partners import LookupPartner, ModelPartner
from lacy.io.marker import write_output
from lacy.io.monitor import BIOS_SHOWN, log_bios, log_image, log_text
from lacy.model.loading import load_model, model_source
from lacy.worlds.fact_masks import PlacementDocs
from lacy.worlds.folder import WorldFiles, read_world

PARTNER_HINT = ("train it with `make partner` (the closed world's partner, exported to runs/world/partner/hf) or set "
                "partner: null")
KB_COLUMNS = ["factscore", "factscore_penalised", "respond_ratio", "claims_per_bio", "top_relation_share",
              "call_rate", "cascade_call_precision", "leakage", "leakage_chance", "answered", "placement_precision",
              "placement_recall"]


def model_folder(path: str, role: str = "partner") -> Path:
    """``path`` as a local Hugging Face model folder, with the fix for a partner or a reference model in the
    one-line error (lacy/model/loading.py)."""
    hint = PARTNER_HINT if role == "partner" else "point it at a run's <log_dir>/hf export"
    return Path(model_source(path, role, hint).path)


def load_partner(path: str, tokenizer, role: str = "partner"):
    """A trained same-tokenizer model (the partner, or a reference) from a local Hugging Face folder (never the
    hub). Raises UsageError when it is not one or its tokenizer differs."""
    folder = model_folder(path, role)
    theirs = load_tokenizer(folder, option=f"{role} {path!r}")
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UsageError(f"{role} {path!r} uses another tokenizer than the SLM; a token-level cascade needs the "
                         "same one (train both on the same world seed and bpe_vocab_size)")
    return load_model(model_source(str(folder), role, ""))


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
            raise UsageError("KBEvaluation.world: null needs data.corpus lacy.worlds.closed_world.ClosedWorld; for another "
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
            check_outputs(trainer, self.out or "kb_eval.json", ("_bios.json", ".png"))

    @torch.no_grad()
    def run(self, slm, tokenizer, trainer=None) -> dict:
        if self.score not in ("call", "uncertainty"):  # auto is resolved from the trainer's strategy at test
            raise UsageError(f"KBEvaluation score {self.score!r}: use call or uncertainty (auto only under "
                             "`main.py test`, where the strategy is known)")
        files = self._files or self._world(trainer)
        kb, prompts, probes, val = files.kb, *(spread(x, self.limit) for x in (files.prompts, files.probes, files.val))
        docs = PlacementDocs.build(kb, tokenizer, val, {p["entity"]: p["popularity"] for p in prompts})
        reference = load_partner(self.reference, tokenizer, "reference") if self.reference else None
        res = {"slm": {**leakage(slm, tokenizer, probes, kb=kb),
                       **call_placement(slm, docs, self.placement_rate, self.score, reference)}}
        partners = {"lookup": LookupPartner(kb, tokenizer, self.piece)}
        if self.partner_path:
            model = load_partner(self.partner_path, tokenizer)
            partners["trained"] = ModelPartner(model, tokenizer, self.piece)
            res["partner_alone"] = partner_alone(self.partner_path, model, tokenizer, kb, prompts, probes,
                                                 self.max_new_tokens, self.gamma,
                                                 keep=trainer is None or trainer.is_global_zero)
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
        self.bios[row] = [{"prompt": p["prompt"], "text": g.marked(tokenizer)}
                          for p, g in zip(prompts[:BIOS_SHOWN], gens)]

    def _calibrated(self, slm, tokenizer, partner, probes) -> CallPolicy:
        budget = CallPolicy(mode="budget", rate=self.rate, score=self.score)
        Cascade(slm, tokenizer, partner, budget).generate([p["prompt"] for p in spread(probes, 128)],
                                                           self.max_new_tokens)
        return CallPolicy(mode="threshold", threshold=budget.calibrated_threshold(), score=self.score)

    def on_test_epoch_end(self, trainer, pl_module):
        self.score = call_score(self.score, pl_module)
        res = self.run(pl_module.model, trainer.datamodule.tokenizer, trainer)
        path = report(trainer, pl_module, res, "world", self.out or "kb_eval.json", KB_COLUMNS)
        if path is not None:  # every bio's score, for paired comparisons between runs (same prompts, same order)
            write_output(path.with_name(f"{path.stem}_bios.json"), json.dumps(self.bio_scores), "KBEvaluation out")
        log_text(trainer, "world/table", format_table(res, KB_COLUMNS))
        log_bios(trainer, "world", self.bios)
        if path is not None and self.sweep:
            plot_sweep(res, path.with_suffix(".png"), title=f"call score: {self.score}")
            log_image(trainer, "world/factscore_vs_call_rate", path.with_suffix(".png"))


