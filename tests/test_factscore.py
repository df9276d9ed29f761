import json
import re
import sqlite3

import pytest
import spacy

from baselines.llm_judge import OpenAIJudge
from lacy.errors import UsageError
from lacy.eval.factscore import ATOMIC_INSTRUCTION, KnowledgeSource, factscore, is_true, parse_facts
from lacy.eval.page_scores import ne_precision
from tests.helpers import Endpoint

PAGES = [("Ada Brandt", "Ada Brandt was a French physicist. She was born in Lyon in 1931. She taught at Leeds. "
                        "She won the Halvard Prize. She retired in 1990. She wrote four books."),
         ("Otto Voss", "Otto Voss was a Dutch architect. He designed the Ghent library.")]


def reader_model(prompt: str) -> str:
    """The endpoint's 'model': splits a sentence at ' and ', and calls a fact True when all its capitalised
    words and numbers occur in the retrieved context."""
    if prompt.rstrip().endswith("Output:"):
        context, fact = prompt.split("Input: ")[0], prompt.split("Input: ")[1].split(" True or False?")[0]
        words = re.findall(r"\b(?:[A-Z][a-z]+|\d+)\b", fact)
        return "True" if all(w in context for w in words) else "False"
    first, *more = prompt.rsplit(ATOMIC_INSTRUCTION, 1)[1].strip().rstrip(".").split(" and ")
    subject = " ".join(first.split()[:2])
    return "\n".join([f"- {first}."] + [f"- {subject} {p}." for p in more])


@pytest.fixture
def source(tmp_path):
    return KnowledgeSource.build(PAGES, tmp_path / "ks.sqlite", sentences_per_passage=2)


def test_knowledge_source_retrieves_from_the_entitys_page(source, tmp_path):
    assert source.page("Otto Voss").startswith("Otto Voss was") and source.page("Nobody") is None
    assert source.retrieve("Ada Brandt", "Which prize did Halvard win?", k=1) == [
        "She taught at Leeds. She won the Halvard Prize."]
    assert source.retrieve("Ada Brandt", "zzz qqq", k=2)[0].startswith("Ada Brandt was")  # fallback: first passages
    assert all("Ada" not in p for p in source.retrieve("Otto Voss", "Ada Brandt", k=5))  # never another page
    assert not (tmp_path / "ks.tmp").exists()
    with pytest.raises(UsageError, match="KnowledgeSource.build"):
        KnowledgeSource(tmp_path / "missing.sqlite")
    (tmp_path / "notes.sqlite").write_text("my notes, not a database " * 40)
    with pytest.raises(UsageError, match="notes.sqlite' is not one lacy built .*give another path"):
        KnowledgeSource(tmp_path / "notes.sqlite")
    other = sqlite3.connect(tmp_path / "app.sqlite")
    other.execute("CREATE TABLE people (name TEXT)")
    other.commit()
    other.close()
    with pytest.raises(UsageError, match=r"app.sqlite' is not one lacy built \(tables: people\)"):
        KnowledgeSource(tmp_path / "app.sqlite")


def test_parsers():
    assert parse_facts("- A is B.\n- C was born in 1931.\n* x\n") == ["A is B.", "C was born in 1931."]
    assert parse_facts(f"- A is B.\n{ATOMIC_INSTRUCTION}more\n- C is D.") == ["A is B."]


def test_verdicts_are_read_as_factscore_reads_them():
    # one of "true" / "false" (substrings, any case): that one
    assert is_true("True") and is_true("true, because") and is_true("It is TRUE.") and is_true("untrue")
    assert not is_true("False") and not is_true("This is false, I cannot say") and not is_true("falsehood")
    # both: the later first occurrence wins
    assert is_true("False. Actually true.") and is_true("Not false: true")
    assert not is_true("True? No, false.") and not is_true("true or false: false")
    # neither: supported unless a negation word appears (punctuation stripped, whole words only)
    assert is_true("") and is_true("Yes.") and is_true("She was born in Lyon.") and is_true("nothing known")
    assert not is_true("Not.") and not is_true("I cannot tell") and not is_true("It is unknown!")
    assert not is_true("No information given") and not is_true("Information: none")
    assert is_true("A notable, information-theoretic result")  # words: "notable", "informationtheoretic"
    assert not is_true("Missing information.")


def test_factscore_through_a_real_endpoint(source, tmp_path):
    endpoint = Endpoint(reader_model)
    try:
        judge = OpenAIJudge(endpoint.url, "reader", cache=str(tmp_path / "c.sqlite"), backoff=0.01)
        gens = ["Ada Brandt was born in Lyon and taught at Leeds. She was born in Paris.",  # 3 facts, 2 true
                "Otto Voss was a Dutch architect.",                                         # 1 fact, true
                "Zed Null was a painter.",                                                 # not in the source
                "Hm."]                                                                     # no facts
        scores, results = factscore(gens, ["Ada Brandt", "Otto Voss", "Zed Null", "Otto Voss"], source, judge,
                                    k=2, gamma=10)
        assert [r.status for r in results] == ["scored", "scored", "not_in_knowledge_source", "no_facts"]
        assert results[0].facts == ["Ada Brandt was born in Lyon.", "Ada Brandt taught at Leeds.",
                                    "She was born in Paris."]
        assert results[0].supported == [True, True, False]
        assert scores["init_score"] == pytest.approx((2 / 3 + 1) / 2)
        assert scores["factscore"] == pytest.approx((2 / 3 * 2.718281828 ** (1 - 10 / 3) + 2.718281828 ** -9) / 2)
        assert scores["respond_ratio"] == pytest.approx(2 / 3) and scores["not_in_knowledge_source"] == 1
        n = len(endpoint.requests)
        factscore(gens, ["Ada Brandt", "Otto Voss", "Zed Null", "Otto Voss"], source, judge, k=2)
        assert len(endpoint.requests) == n  # deterministic and cached: a re-run sends nothing
    finally:
        endpoint.close()


def test_a_refused_prompt_is_left_out_not_a_crash(source, tmp_path):
    """Issue 16.5 on real text: the judge refuses (HTTP 400) one sentence's atomic-fact prompt and one fact's
    verification. That sentence gives no facts, that fact gets no verdict; both are counted, the rest is scored."""
    def model(prompt):
        if "Leeds" in prompt and prompt.rstrip().endswith("Output:"):
            return 400  # the verification of "taught at Leeds"
        if "Paris" in prompt:
            return 413  # the atomic-fact prompt of the sentence about Paris
        return reader_model(prompt)

    endpoint = Endpoint(model)
    try:
        judge = OpenAIJudge(endpoint.url, "reader", cache=str(tmp_path / "c.sqlite"), backoff=0.01)
        scores, results = factscore(["Ada Brandt was born in Lyon and taught at Leeds. She was born in Paris."],
                                    ["Ada Brandt"], source, judge, k=2)
    finally:
        endpoint.close()
    assert results[0].facts == ["Ada Brandt was born in Lyon."] and results[0].supported == [True]
    assert scores["refused_prompts"] == 2 and scores["init_score"] == 1.0


def test_factscore_with_nothing_to_score_is_no_score(source, tmp_path):
    """Every generation too short or without an atomic fact: no score (None, JSON null), not 0; respond ratio 0.
    The same for NE precision of text without named entities."""
    endpoint = Endpoint(lambda prompt: "")  # a judge that finds no atomic fact in any sentence
    try:
        judge = OpenAIJudge(endpoint.url, "silent", cache=str(tmp_path / "c.sqlite"), backoff=0.01)
        scores, results = factscore(["Hm.", "I would rather not say anything."], ["Ada Brandt", "Otto Voss"],
                                    source, judge)
    finally:
        endpoint.close()
    assert len(endpoint.requests) == 1 and [r.status for r in results] == ["no_facts", "no_facts"]
    assert scores["factscore"] is scores["init_score"] is scores["facts_per_response"] is None
    assert scores["respond_ratio"] == 0.0
    assert json.loads(json.dumps(scores, allow_nan=False))["factscore"] is None
    nlp = spacy.blank("en")  # no NER: no named entity to check
    assert ne_precision(["it was fine"], ["Ada Brandt"], source, nlp) == {"ne_precision": None, "named_entities": 0}


def test_wiki_evaluation_runs_the_cascade_with_a_text_partner(tmp_path):
    """Real summaries, a micro SLM and a micro partner with another tokenizer (text hand-over), a judge
    behind a real local endpoint."""
    from lacy.eval.wiki_eval import WikiEvaluation
    from lacy.model.gpt2 import build_slm
    from lacy.data.tokenizer import train_bpe

    tok = train_bpe(["Alan Taylor was an English historian born in 1906 in Birkdale. " * 5], 300)
    other = train_bpe(["a different vocabulary for the partner, born in 1906. " * 5], 280)
    build_slm("micro", len(other), 256).save_pretrained(tmp_path / "partner")
    other.save_pretrained(tmp_path / "partner")
    slm = build_slm("micro", len(tok), 256).eval()
    endpoint = Endpoint(reader_model)
    try:
        judge = OpenAIJudge(endpoint.url, "reader", cache=str(tmp_path / "c.sqlite"), backoff=0.01)
        ev = WikiEvaluation(partner=[str(tmp_path / "partner"), str(tmp_path / "same" / "hf")], limit=3,
                            modes=["never", "budget", "always"], max_new_tokens=12, judge=judge, judge_limit=2,
                            knowledge_source=str(tmp_path / "ks.sqlite"))
        build_slm("micro", len(tok), 256).save_pretrained(tmp_path / "same" / "hf")  # the SLM's tokenizer: tokens
        tok.save_pretrained(tmp_path / "same" / "hf")
        res = ev.run(slm, tok, "uncertainty")
    finally:
        endpoint.close()
    assert set(res) == {"slm", "slm_alone", "partner_budget", "same_budget", "partner_alone", "same_alone"}
    assert res["partner_alone"]["call_rate"] == res["same_alone"]["call_rate"] == 1.0
    assert res["same_budget"]["judged_bios"] == 2 and res["same_budget"]["call_rate"] > 0
    assert res["slm_alone"]["call_rate"] == 0.0 and res["partner_budget"]["call_rate"] > 0  # 36 tokens: coarse
    assert {"ne_precision", "factscore", "init_score", "respond_ratio"} <= set(res["partner_budget"])
    assert 0.0 <= res["slm"]["year_leakage"] <= 1.0
    assert [b["title"] for b in ev.bios["same_budget"]] == [b["title"] for b in ev.bios["slm_alone"]]
    assert not any("[" in b["text"] for b in ev.bios["slm_alone"])
    assert any("[" in b["text"] for b in ev.bios["same_budget"])  # partner pieces marked
    with pytest.raises(ValueError, match="modes"):
        WikiEvaluation(modes=["calibrated"])
    assert KnowledgeSource(tmp_path / "ks.sqlite").page("A. J. P. Taylor").startswith("Alan John Percivale Taylor")
