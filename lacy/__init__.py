"""LaCy: which tokens a small LM should learn and which it should delegate via <CALL> (arXiv 2602.12005).

The parts (README "How the code is organised"): ``train/`` (the LightningModule, the objective, budgets),
``selection/`` (the strategies' base and the LaCy rule), ``model/`` (the SLM, the ``<CALL>`` row, the one loader),
``data/`` (corpus -> tokens -> packed blocks with side arrays), ``annotators/`` (spaCy fact flags),
``inference/`` (the cascade and its partners), ``eval/`` (KB world, Wikipedia FActScore, NLU), ``worlds/`` (the
closed world and its checker), ``io/`` (atomic writes, checkpoints, export, TensorBoard). The modules at this level
are the commands: ``main.py`` (``cli``), ``python -m lacy.annotate|export|evaluate|world|nlu``.
"""
import importlib

from lacy import _legacy

# the classes a config names, as ``lacy.<Name>`` (imported on first use, so ``python -m lacy.<command>`` runs a
# module the package has not imported yet: no runpy warning, no second copy of it)
_WHERE = {"CallStrategy": "lacy.selection.strategy", "LaCy": "lacy.selection.lacy_rule",
          "TokenBudget": "lacy.train.budget", "CallLM": "lacy.train.module",
          "CorpusDataModule": "lacy.data.datamodule", "WikiSummaries": "lacy.data.corpus",
          "JsonlCorpus": "lacy.data.corpus", "TextCorpus": "lacy.data.corpus",
          "SpacyFactAnnotator": "lacy.annotators.spacy_facts", "ClosedWorld": "lacy.worlds.closed_world",
          "KBEvaluation": "lacy.eval.kb_eval", "WikiEvaluation": "lacy.eval.wiki_eval",
          "NLUEvaluation": "lacy.eval.nlu", "ExportHF": "lacy.io.export", "AtomicCheckpointIO": "lacy.io.checkpoints",
          "ModelCheckpoint": "lacy.io.checkpoints"}
__all__ = sorted(_WHERE)

_legacy.install()


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'lacy' has no attribute {name!r}")
