import pytest
import torch

from lacy.data.tokenizer import train_bpe
from lacy.eval.factscore import KnowledgeSource
from lacy.inference.cascade import CallPolicy, Cascade
from lacy.inference.partners import TextPartner
from lacy.inference.retrieval import RetrievalPartner
from lacy.model.gpt2 import build_slm

PAGES = [("Ada Brandt", "Ada Brandt was a French physicist. She was born in Lyon in 1931. She taught at Leeds. "
                        "She won the Halvard Prize. She retired in 1990. She wrote four books."),
         ("Otto Voss", "Otto Voss was a Dutch architect. He designed the Ghent library.")]
FIRST, SECOND, THIRD = ("Ada Brandt was a French physicist. She was born in Lyon in 1931.",
                        "She taught at Leeds. She won the Halvard Prize.", "She retired in 1990. She wrote four books.")


class CountingSource(KnowledgeSource):
    def __init__(self, path):
        super().__init__(path)
        self.retrievals = 0

    def retrieve(self, *args, **kwargs):
        self.retrievals += 1
        return super().retrieve(*args, **kwargs)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    path = tmp_path_factory.mktemp("ks") / "ks.sqlite"
    KnowledgeSource.build(PAGES, path, sentences_per_passage=2)
    text = " ".join(t for _, t in PAGES)
    slm_tok, tok = train_bpe([text * 3], 300), train_bpe([text[::-1] * 3], 280)  # two vocabularies: text hand-over
    torch.manual_seed(0)
    slm, lm = build_slm("micro", len(slm_tok), 256).eval(), build_slm("micro", len(tok), 256).eval()
    return CountingSource(path), slm_tok, tok, slm, lm


def test_the_subjects_best_passages_are_retrieved_in_page_order_and_cached(parts):
    source, slm_tok, tok, _, lm = parts
    one = RetrievalPartner(lm, tok, slm_tok, source, passages=1)
    assert one.retrieve("Ada Brandt", " She won the") == [SECOND]  # BM25 on the sentence being written
    assert one.retrieve("Ada Brandt", "Ada Brandt was") == [FIRST]
    before = source.retrievals
    assert one.retrieve("Ada Brandt", "she WON the") == [SECOND] and source.retrievals == before  # same words
    two = RetrievalPartner(lm, tok, slm_tok, source, passages=2)
    assert two.retrieve("Ada Brandt", "She retired and won the prize") == [SECOND, THIRD]  # page order
    assert two.retrieve("Otto Voss", "library") == ["Otto Voss was a Dutch architect. He designed the Ghent library."]


def test_the_partner_reads_the_passage_before_the_text_and_writes_into_the_cascade(parts):
    source, slm_tok, tok, slm, lm = parts
    seen = []
    hook = lm.register_forward_pre_hook(lambda m, args, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True)
    try:
        rag = RetrievalPartner(lm, tok, slm_tok, source, piece="token", passages=1)
        gens = Cascade(slm, slm_tok, rag, CallPolicy("always")).generate(["Ada Brandt", "Nobody Known"], 6,
                                                                           stop_at_eos=False)
    finally:
        hook.remove()
    first = next(ids for ids in seen if len(ids) > 1)  # the first prefill: the start token, then the prompt
    passage, text = tok.decode(first[1:]).split("\n\n")  # (byte-level BPE: the decode adds its prefix space)
    assert passage.strip() == FIRST and text.strip() == "Ada Brandt"
    assert all(all(g.from_partner) for g in gens) and all(len(g.tokens) == 6 for g in gens)
    assert rag.no_passage == {"Nobody Known"}  # no page: written with no passage, counted, not an error
    assert rag.shown == {"Ada Brandt": [FIRST], "Nobody Known": []}
    plain = Cascade(slm, slm_tok, TextPartner(lm, tok, slm_tok, piece="token"), CallPolicy("always")).generate(
        ["Ada Brandt", "Nobody Known"], 6, stop_at_eos=False)
    assert plain[1].text == gens[1].text  # without a page it is the plain text partner
    assert plain[0].text != gens[0].text  # with one, the passage changed what the partner wrote
    assert rag.tokens_processed == sum(len(ids) for ids in seen)  # its count is what the LM was fed


def test_wiki_evaluation_rows_of_a_retrieval_partner_on_held_out_people(tmp_path):
    """Real summaries and spaCy, micro models: the held-out people only, one row per budget, every score."""
    from lacy.data.corpus import WikiSummaries
    from lacy.errors import UsageError
    from lacy.eval.wiki_eval import WikiEvaluation

    people = WikiSummaries(topic="People").records()[10:12]
    tok = train_bpe([r["extract"] for r in people] * 3, 300)
    other = train_bpe([r["extract"][::-1] for r in people] * 3, 280)
    build_slm("micro", len(other), 256).save_pretrained(tmp_path / "lm")
    other.save_pretrained(tmp_path / "lm")
    ev = WikiEvaluation(partner=None, retrieval_partner=str(tmp_path / "lm"), people="held_out", sweep=[0.5],
                        limit=None, max_new_tokens=12, knowledge_source=str(tmp_path / "ks.sqlite"))
    res = ev.run(build_slm("micro", len(tok), 256).eval(), tok, "uncertainty",
                 held_out=[r["extract"] for r in people] + ["a document of no person"])
    assert set(res) == {"slm", "slm_alone", "rag_lm_budget", "rag_lm_budget@0.5"}
    assert res["slm"]["people"] == 2 and [b["title"] for b in ev.bios["slm_alone"]] == [r["title"] for r in people]
    rag = res["rag_lm_budget@0.5"]
    assert rag["call_rate"] > res["rag_lm_budget"]["call_rate"] > 0 and rag["no_passage"] == 0
    assert 0.0 <= rag["partner_passage_support"] <= rag["partner_page_support"] <= 1.0  # passages: part of the page
    assert {"ne_recall", "year_precision", "place_precision", "birth_year_accuracy"} <= set(res["slm_alone"])
    assert "partner_page_support" not in res["slm_alone"]  # no partner, no partner words
    with pytest.raises(UsageError, match="held_out: the run's validation split holds no People summary"):
        ev.run(build_slm("micro", len(tok), 256).eval(), tok, "uncertainty", held_out=["no person"])
    with pytest.raises(UsageError, match="people 'train'"):
        WikiEvaluation(people="train")
    with pytest.raises(UsageError, match=r"rate/sweep \[1.5\]"):
        WikiEvaluation(sweep=[0.1, 1.5])


def test_a_text_longer_than_the_partners_context_is_cut_from_the_left(parts):
    """Passages + text can outgrow a partner's context (here 32 positions): its last tokens, counted."""
    source, slm_tok, tok, slm, _ = parts
    torch.manual_seed(1)
    short = build_slm("micro", len(tok), 32).eval()
    rag = RetrievalPartner(short, tok, slm_tok, source, piece="token", passages=3)
    gens = Cascade(slm, slm_tok, rag, CallPolicy("always")).generate(["Ada Brandt"], 8, stop_at_eos=False)
    assert len(gens[0].tokens) == 8 and all(gens[0].from_partner) and rag.contexts_cut == 8
