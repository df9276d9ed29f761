"""LaCy: which tokens a small LM should learn and which it should delegate via <CALL> (arXiv 2602.12005)."""
from lacy.export import ExportHF
from lacy.facts import SpacyFactAnnotator
from lacy.lacy_strategy import LaCy
from lacy.strategy import CallStrategy

__all__ = ["CallStrategy", "ExportHF", "LaCy", "SpacyFactAnnotator"]
