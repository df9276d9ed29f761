import pytest
import spacy

from lacy.annotators.spacy_facts import default_spacy_model
from lacy.eval.factscore import KnowledgeSource
from lacy.eval.page_scores import ne_precision, page_scores, word_support, year_probes

PAGES = [("Ada Brandt", "Ada Brandt was a French physicist. She was born in Lyon in 1931. She taught at Leeds. "
                        "She won the Halvard Prize. She retired in 1990. She wrote four books."),
         ("Otto Voss", "Otto Voss was a Dutch architect. He designed the Ghent library.")]


@pytest.fixture(scope="module")
def nlp():
    return spacy.load(default_spacy_model())


@pytest.fixture
def source(tmp_path):
    return KnowledgeSource.build(PAGES, tmp_path / "ks.sqlite", sentences_per_passage=2)


def test_ne_precision_and_year_probes(source, nlp):
    res = ne_precision(["Ada Brandt taught in Leeds and lived in Madrid."], ["Ada Brandt"], source, nlp)
    assert res == {"ne_precision": 0.5, "named_entities": 2}  # Leeds found, Madrid not; her own name skipped
    assert ne_precision(["it was fine"], ["Ada Brandt"], source, spacy.blank("en")) == {
        "ne_precision": None, "named_entities": 0}  # no NER: no named entity to check
    recs = [{"title": "A. J. P. Taylor", "description": "English historian (1906–1990)"},
            {"title": "Someone", "description": "Singer (born 1975)"}, {"title": "ABBA", "description": "pop group"}]
    assert year_probes(recs) == [
        {"entity": "A. J. P. Taylor", "prompt": "A. J. P. Taylor was born in", "answer": "1906"},
        {"entity": "Someone", "prompt": "Someone was born in", "answer": "1975"}]


def test_page_scores_by_hand(source, nlp):
    """spaCy (en_core_web_sm) reads Ada's page as French, Lyon, 1931, Leeds, the Halvard Prize, 1990 (+ her name,
    "four": left out) and Otto's as Dutch; the bios' entities: French, 1931, Lyon, Madrid, 1975 | 1950, Ghent,
    Belgium."""
    bios = [" was a French physicist born in 1931 in Lyon. She moved to Madrid in 1975.",
            " was born in 1950 in Ghent, Belgium.", " lived in Paris."]
    described = {"Ada Brandt": "French physicist (1931–2004)", "Otto Voss": "Dutch architect (1901–1977)"}
    res = page_scores(bios, ["Ada Brandt", "Otto Voss", "Nobody"], source, nlp, described)
    assert res == {
        "ne_precision": 4 / 8, "named_entities": 8,      # French 1931 Lyon | Ghent found; Madrid 1975 | 1950 Belgium not
        "ne_recall": 3 / 7, "page_entities": 7,          # Ada's 6: French, Lyon, 1931 named; Otto's Dutch not
        "year_precision": 1 / 3, "years": 3,             # 1931 (page), 1975 (no), 1950 (Otto's years: 1901, 1977)
        "place_precision": 1 / 2, "places": 2,           # Lyon yes, Madrid no; Otto's page names no place: unscored
        "birth_year_accuracy": 1 / 2, "birth_years": 2,  # "born in 1931" right, "born in 1950" wrong (1901)
        "no_page": 1}                                    # Nobody: counted, nothing scored
    empty = page_scores(["."], ["Nobody"], source, nlp)
    assert empty["ne_precision"] is empty["year_precision"] is empty["birth_year_accuracy"] is None


def test_word_support_counts_content_words_found_in_the_reference(nlp):
    stop = nlp.Defaults.stop_words
    res = word_support([["Lyon in 1931", "the best"], ["Ghent"]], ["She was born in Lyon in 1931.", ""], stop)
    assert res == {"word_support": 2 / 4, "content_words": 4}  # lyon, 1931 found; best, ghent not; in, the: stop
    assert word_support([["the"]], ["the"], stop) == {"word_support": None, "content_words": 0}
    assert word_support([["Lyonnais"]], ["Lyon"], stop)["word_support"] == 0.0  # whole words, not substrings


def test_birth_years_and_whole_words_are_read_narrowly():
    from lacy.eval.page_scores import birth_year, contains, stated_birth_year

    assert [birth_year(d) for d in ("English historian (1906–1990)", "Singer (born 1975)",
                                    "President of the United States (2017–2021; since 2025)",  # terms, not a life
                                    "Ancient Greek philosopher (341–270 BC)", "pop group")] == ["1906", "1975", None,
                                                                                                None, None]
    assert stated_birth_year(" was born in 1931 in Lyon.") == "1931"
    assert stated_birth_year(" (1931 – 2004) was a physicist.") == "1931"  # the bracket after the name
    assert stated_birth_year(" was born in Lyon and died in Paris in 1990.") is None  # "died" ends the window
    assert stated_birth_year(" released Thriller (1982). He was born in 1958.") == "1958"  # a bracket later: not one
    assert stated_birth_year(" was born in Lyon, France, in 1931.") is None  # a comma ends the clause: missed, not misread
    assert contains("Ghent, Belgium", "ghent") and not contains("famous", "us") and not contains("the 1950s", "1950")
    assert contains("Saint-Denis (Paris)", "Saint-Denis") and not contains("Romeo", "Rome")
