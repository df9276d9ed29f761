"""Selection strategies the paper compares LaCy with (method.md section 4)."""
from baselines.loss_only import LossOnly
from baselines.random_calls import RandomCalls
from baselines.spacy_only import SpacyOnly
from baselines.vanilla import Vanilla

__all__ = ["LossOnly", "RandomCalls", "SpacyOnly", "Vanilla"]
