"""The retrieval partner (the paper's appendix C.4 "RAG" partner; on real text, the analogue of the closed world's
lookup partner): a partner LM that writes from the subject's own page.

At a call on a row it takes the row's subject (its prompt: the person's title, as ``lacy.WikiEvaluation``
writes prompts), retrieves up to ``passages`` passages of that subject's page from the knowledge source (the
FActScore sqlite FTS5 index, BM25 against the sentence being written: the text after its last ".", "?", "!" or
line break, so an abbreviation shortens it; shown in the page's order) and continues
the text with them before it. Prompt format [ours]:

    <passage> <passage> ...
    <blank line>
    <the text so far>

The text so far opens with the subject's name, as the page does, so the partner continues a second bio of the
same person right after the page: the layout a small LM continues by copying, with no instruction to follow.
Hand-over is by text (:class:`TextPartner`: the partner's own tokenizer, the piece re-tokenised for the SLM);
its KV cache is kept while the passages shown stay the same. Retrievals are cached per (subject, query words).
A subject without a page writes with no passage (the plain text partner) and is counted in ``no_passage``.
"""
import re

from lacy.inference.partners import TextPartner

_WORD = re.compile(r"\w+")


class RetrievalPartner(TextPartner):
    """Args:
        model, tokenizer: the partner LM and its own tokenizer.
        slm_tokenizer: the SLM's tokenizer.
        source: the knowledge source (``lacy.eval.factscore.KnowledgeSource``: ``page(title)``,
            ``retrieve(title, query, k, page_order)``).
        piece, max_piece_tokens: as :class:`TextPartner`.
        passages: passages shown per call (the summaries' passages are 3 sentences).

    After generating: ``no_passage`` (subjects without a page) and ``shown`` (subject -> every passage shown
    at its calls: what the partner's words can be checked against).
    """

    def __init__(self, model, tokenizer, slm_tokenizer, source, piece: str = "word", max_piece_tokens: int = 8,
                 passages: int = 3):
        self.source, self.passages = source, passages
        self.no_passage: set[str] = set()
        self.shown: dict[str, list[str]] = {}  # subject -> every passage shown in its rows
        self._retrieved: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        super().__init__(model, tokenizer, slm_tokenizer, piece, max_piece_tokens)

    def reset(self, prompts: list[str]) -> None:
        super().reset(prompts)
        self.subjects = [p.strip() for p in prompts]

    def retrieve(self, subject: str, sentence: str) -> list[str]:
        """The passages shown for ``sentence`` of ``subject``'s text ([] without a page), cached."""
        key = (subject, tuple(sorted({w.lower() for w in _WORD.findall(sentence)})))
        if key not in self._retrieved:
            has_page = self.source.page(subject) is not None
            self._retrieved[key] = (self.source.retrieve(subject, sentence, self.passages, page_order=True)
                                    if has_page else [])
            if not has_page:
                self.no_passage.add(subject)
        return self._retrieved[key]

    def prompt(self, row: int, text: str) -> str:
        sentence = text[max(text.rfind(c) for c in ".?!\n") + 1:]
        found = self.retrieve(self.subjects[row], sentence)
        shown = self.shown.setdefault(self.subjects[row], [])
        shown += [p for p in found if p not in shown]
        return " ".join(found) + "\n\n" + text if found else text

