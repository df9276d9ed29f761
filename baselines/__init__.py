"""Selection strategies the paper compares LaCy with (method.md section 4)."""
from baselines.kb_oracle import KBOracleAnnotator
from baselines.llm_judge import HFJudge, JudgeAnnotator, LLMJudge, OpenAIJudge
from baselines.loss_only import LossOnly
from baselines.random_calls import RandomCalls
from baselines.rho1 import ReferenceLoss, Rho1
from baselines.spacy_only import SpacyOnly
from baselines.spacy_ref import SpacyRef
from baselines.vanilla import Vanilla

__all__ = ["HFJudge", "JudgeAnnotator", "KBOracleAnnotator", "LLMJudge", "LossOnly", "OpenAIJudge", "RandomCalls", "ReferenceLoss", "Rho1",
           "SpacyOnly", "SpacyRef", "Vanilla"]
