"""Selection strategies the paper compares LaCy with (method.md section 4)."""
from baselines.loss_only import LossOnly
from baselines.random_calls import RandomCalls
from baselines.rho1 import Rho1
from baselines.spacy_only import SpacyOnly
from baselines.vanilla import Vanilla

__all__ = ["LossOnly", "RandomCalls", "Rho1", "SpacyOnly", "Vanilla"]
