"""The ideal fact judge for a world with a knowledge base: it flags exactly the true fact-value spans.

The judge backend next to a local model and an endpoint, and the ceiling row of the result tables
(docs/results.md: "llm_judge (KB oracle judge)", "lacy, true fact mask (oracle)"): the LLM-judge strategy
(``key: judge``) or LaCy (``key: fact``) trained on the KB's own fact mask instead of an LLM's or spaCy's.
Label results that use it as an oracle. The spans come from the same KB checker that scores FactScore
(``lacy.worlds.kb``), so the mask is what the evaluation counts as a fact.
"""
import hashlib
from pathlib import Path

import numpy as np

from lacy.data.annotation import Annotator
from lacy.errors import UsageError
from lacy.annotators.spans import span_flags
import lacy.worlds.kb as kb_module
from lacy.worlds.kb import KnowledgeBase


class KBOracleAnnotator(Annotator):
    """Per-subword flags of the KB's fact values (batch key ``key``).

    Args:
        kb: knowledge-base file (``lacy.worlds.kb`` format); null = the corpus' own (``ClosedWorld.kb()``).
        key: the batch key: ``judge`` (for LLMJudge, the oracle judge) or ``fact`` (LaCy with the true mask).
        chunk_docs: documents per resumable chunk.
    """

    dtype = np.bool_

    def __init__(self, kb: str | None = None, key: str = "judge", chunk_docs: int = 2000):
        self.kb_path, self.name, self.chunk_docs = kb, key, chunk_docs
        self.kb = KnowledgeBase.load(kb) if kb else None

    def bind(self, corpus) -> None:
        if self.kb is None:
            if not hasattr(corpus, "kb"):
                raise UsageError(f"KBOracleAnnotator: data.corpus {type(corpus).__name__} has no knowledge base; "
                                 "set the annotator's kb to a kb.json file (python -m lacy.world writes one)")
            self.kb = corpus.kb()

    def fingerprint(self) -> str:
        if self.kb is None:
            raise UsageError("KBOracleAnnotator has no knowledge base yet: give kb or use it in a DataModule")
        blob = Path(self.kb_path).read_bytes() if self.kb_path else repr(self.kb).encode()
        # the checker's rules are part of the flags: cached flags from an older lacy/kb.py are not reused
        return hashlib.sha256(blob + Path(kb_module.__file__).read_bytes()).hexdigest()[:16]

    def annotate(self, texts, offsets):
        """Each document's claims about its subject (a biography opens with it: the first entity it names,
        ``KnowledgeBase.subject``), pronoun sentences included, and about anyone else it names."""
        return [span_flags(len(t), [(c.start, c.end) for c in self.kb.claims(t, subject=self.kb.subject(t))], off)
                for t, off in zip(texts, offsets)]
