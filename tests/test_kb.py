import json

import pytest

from lacy.errors import UsageError
from lacy.kb import Attribute, Entity, KnowledgeBase


@pytest.fixture
def kb():
    attrs = {
        "birth_city": Attribute(["born in", "native of"], probe="{name} was born in"),
        "employer_city": Attribute(["works in", "office in"]),
        "nationality": Attribute(["citizenship"], derived_from="birth_city"),
        "birth_date": Attribute(["born on"], pattern=r"\d{1,2} (?:March|May) \d{4}"),
        "field": Attribute(["studied"]),
    }
    ents = {"Ada Brandt": Entity("Ada Brandt", ["Ada Brandt"], {"birth_city": "Lyon", "employer_city": "Porto",
                                                                  "nationality": "French", "birth_date": "3 May 1950",
                                                                  "field": "physics"}, 5),
            "Otto Voss": Entity("Otto Voss", ["Otto Voss", "Dr. Voss"], {"birth_city": "Porto",
                                                                         "employer_city": "Lyon", "field": "law"}, 1)}
    return KnowledgeBase(attrs, ents)


def verdicts(kb, text, subject="Ada Brandt"):
    return [(c.entity, c.attribute, c.value, c.supported, c.ambiguous) for c in kb.claims(text, subject)]


def test_true_and_false_claims(kb):
    assert verdicts(kb, "Ada Brandt was born in Lyon. Ada Brandt studied law.") == [
        ("Ada Brandt", "birth_city", "Lyon", True, False), ("Ada Brandt", "field", "law", False, False)]


def test_paraphrase_not_in_the_relation_words(kb):
    # "hails from" is nowhere in the KB: a city could be birth or employer city -> the ambiguous rule
    assert verdicts(kb, "Ada Brandt hails from Porto.") == [
        ("Ada Brandt", "birth_city|employer_city", "Porto", True, True)]
    assert verdicts(kb, "Ada Brandt hails from Tartu.") == []  # not a value the KB knows
    # a value only one attribute can take needs no relation word
    assert verdicts(kb, "Everyone knows that Ada Brandt loved physics.") == [
        ("Ada Brandt", "field", "physics", True, False)]


def test_relation_word_picks_the_attribute(kb):
    assert verdicts(kb, "Ada Brandt has an office in Lyon.") == [
        ("Ada Brandt", "employer_city", "Lyon", False, False)]
    assert verdicts(kb, "Ada Brandt is a native of Lyon and works in Porto.") == [
        ("Ada Brandt", "birth_city", "Lyon", True, False), ("Ada Brandt", "employer_city", "Porto", True, False)]


def test_claims_about_another_person_are_checked_against_that_person(kb):
    text = "Ada Brandt was born in Lyon. Dr. Voss studied law. Otto Voss was born in Lyon. The city is old."
    assert verdicts(kb, text) == [("Ada Brandt", "birth_city", "Lyon", True, False),
                                  ("Otto Voss", "field", "law", True, False),
                                  ("Otto Voss", "birth_city", "Lyon", False, False)]


def test_subject_carries_over_and_no_claim(kb):
    assert verdicts(kb, "She liked long walks. It was a quiet time.") == []
    assert verdicts(kb, "Otto Voss was kind. The family studied law.") == [("Otto Voss", "field", "law", True, False)]
    assert verdicts(kb, "Lyon is far.", subject=None) == []  # nobody to attribute it to


def test_pattern_catches_values_nobody_has(kb):
    assert verdicts(kb, "Ada Brandt was born on 3 May 1950.") == [
        ("Ada Brandt", "birth_date", "3 May 1950", True, False)]
    assert verdicts(kb, "Ada Brandt was born on 4 March 1961.") == [
        ("Ada Brandt", "birth_date", "4 March 1961", False, False)]


def test_spans_point_at_the_values(kb):
    text = "Ada Brandt was born in Lyon. Ada Brandt holds French citizenship."
    assert [text[c.start:c.end] for c in kb.claims(text, "Ada Brandt")] == ["Lyon", "French"]


def test_round_trip_and_probes(kb, tmp_path):
    kb.save(tmp_path / "kb.json")
    back = KnowledgeBase.load(tmp_path / "kb.json")
    assert back.attributes == kb.attributes and back.entities == kb.entities
    assert {"entity": "Otto Voss", "attribute": "birth_city", "prompt": "Otto Voss was born in", "answer": "Porto",
            "popularity": 1} in back.probes()
    assert len(back.probes()) == 2  # only birth_city has a probe form


def test_bad_files_say_what_to_fix(tmp_path):
    with pytest.raises(UsageError, match="python -m lacy.world"):
        KnowledgeBase.load(tmp_path / "nope.json")
    (tmp_path / "old.json").write_text(json.dumps({"format": "other", "attributes": {}, "entities": {}}))
    with pytest.raises(ValueError, match="lacy-kb/1"):
        KnowledgeBase.load(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "lacy-kb/1", "attributes": {},
                                                   "entities": {"X": {"attributes": {"age": "3"}}}}))
    with pytest.raises(ValueError, match="undeclared attributes"):
        KnowledgeBase.load(tmp_path / "bad.json")
