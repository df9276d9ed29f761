"""The true fact-value tokens of a world's documents, from the KB checker: what call placement is scored against,
and the world's fact share, the quantity every call budget is compared with."""
from dataclasses import dataclass

import numpy as np

from lacy.annotators.spans import span_flags
from lacy.data.tokenizer import train_bpe
from lacy.worlds.kb import KnowledgeBase


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



def fact_share(world, bpe_vocab_size: int = 2048) -> float:
    """Share of the validation documents' target tokens that are fact values (the KB checker's claims, every
    attribute), with the BPE the SLM trains on this world (a ``ClosedWorld``)."""
    tok = train_bpe(world.bpe_documents(), bpe_vocab_size)
    docs = PlacementDocs.build(world.kb(), tok, [(p.name, d) for p, d in world.val_documents()])
    return float(np.concatenate([f[1:] for f in docs.fact]).mean())  # targets: every token but the first (EOS)
