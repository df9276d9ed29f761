"""LaCy: which tokens a small LM should learn and which it should delegate via <CALL> (arXiv 2602.12005)."""
import importlib

_WHERE = {"CallStrategy": "lacy.strategy", "ExportHF": "lacy.export", "LaCy": "lacy.lacy_strategy",
          "SpacyFactAnnotator": "lacy.facts", "TokenBudget": "lacy.budget", "WikiSummaries": "lacy.corpus",
          "JsonlCorpus": "lacy.corpus", "TextCorpus": "lacy.corpus", "ClosedWorld": "lacy.world",
          "KBEvaluation": "lacy.evaluate", "WikiEvaluation": "lacy.factscore", "NLUEvaluation": "lacy.nlu",
          "AtomicCheckpointIO": "lacy.checkpoint_io"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """``lacy.LaCy`` etc. (the configs' class paths), imported on first use: ``python -m lacy.<module>`` then
    runs a module the package has not imported yet (no runpy warning, no second copy of it)."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'lacy' has no attribute {name!r}")
