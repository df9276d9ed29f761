import importlib.util
import json
import random
from pathlib import Path

import pytest

from lacy.inference.cascade import Generation
from lacy.errors import UsageError
from lacy.worlds.kb import Attribute, Entity, KnowledgeBase


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
    with pytest.raises(UsageError, match="lacy-kb/1"):
        KnowledgeBase.load(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "lacy-kb/1", "attributes": {"city": {"relation_words": []}},
                                                   "entities": {"X": {"attributes": {"age": "3"}}}}))
    with pytest.raises(UsageError, match="undeclared attribute"):
        KnowledgeBase.load(tmp_path / "bad.json")


def lab_file(tmp_path, edit=None):
    """A valid KB file (indent 1, as ``save`` writes it), optionally edited before writing."""
    data = {"format": "lacy-kb/1",
            "attributes": {"city": {"relation_words": ["grew up in"]},
                           "advisor": {"relation_words": ["student of"], "kind": "entity", "probe": "{name} was a student of"},
                           "birth_year": {"relation_words": ["born"], "pattern": r"\d{4}"}},
            "entities": {"Rosa Imhof": {"attributes": {"city": "Lund", "advisor": "Teo Brandauer", "birth_year": "1948"}},
                         "Teo Brandauer": {"popularity": 2, "attributes": {"city": "Graz", "birth_year": "1931"}}}}
    if edit:
        edit(data)
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["entities"]["Teo Brandauer"]["attributes"].update(city=None),
     r"kb.json:34: entities\['Teo Brandauer'\].attributes.city: is None; a value must be a non-empty string"),
    (lambda d: d["entities"]["Rosa Imhof"]["attributes"].update(advisor="Nobody Known"),
     r"kb.json:27: entities\['Rosa Imhof'\].attributes.advisor: 'Nobody Known' is not an entity"),
    (lambda d: d["attributes"]["birth_year"].update(pattern="(\\d"),
     r"kb.json:\d+: attributes\['birth_year'\].pattern: is not a regular expression"),
    (lambda d: d["attributes"]["city"].update(kind="place"), r"attributes\['city'\].kind: is 'place'; use one of"),
    (lambda d: d["attributes"]["city"].update(probe="grew up in"), r"\.probe: must contain \{name\}"),
    (lambda d: d["attributes"]["city"].update(relation_words="grew up in"), r"relation_words: must be a list"),
    (lambda d: d["entities"]["Teo Brandauer"].update(popularity="many"), r"popularity: is 'many'"),
    (lambda d: d["attributes"]["city"].update(derived_from="country"), r"derived_from: 'country' is not a declared"),
])
def test_malformed_kb_names_file_line_and_field(tmp_path, edit, message):
    with pytest.raises(UsageError, match=message):
        KnowledgeBase.load(lab_file(tmp_path, edit))


def test_a_repeated_entity_or_a_shared_alias_is_one_line(tmp_path):
    """Issue 29: a duplicate entity key dropped the first definition; an alias of two entities made all-true
    documents score 0.974. Both are refused at load, naming the file, line and key."""
    path = lab_file(tmp_path)
    text = path.read_text()
    start = text.index(' "Teo Brandauer": {')
    block = text[start:text.index("\n  }", start) + 4]
    path.write_text(text.replace(block, block + "," + block.replace("Graz", "Linz"), 1))
    twice = path.read_text()
    second = twice.index('"Teo Brandauer": {', twice.index('"Teo Brandauer": {') + 1)
    line = twice[:second].count("\n") + 1  # the line of the second definition
    with pytest.raises(UsageError, match=rf"kb.json:{line}: the key 'Teo Brandauer' is written twice in one object"):
        KnowledgeBase.load(path)
    shared = lambda d: d["entities"]["Teo Brandauer"].update(aliases=["Teo Brandauer", "Rosa Imhof"])
    with pytest.raises(UsageError, match=r"entities\['Teo Brandauer'\].aliases: 'Rosa Imhof' is also an alias of "
                                         r"'Rosa Imhof'; a name must mean one entity"):
        KnowledgeBase.load(lab_file(tmp_path, shared))


def test_truncated_kb_names_the_line(tmp_path):
    path = lab_file(tmp_path)
    text = path.read_text()
    path.write_text(text[:len(text) // 2])
    with pytest.raises(UsageError, match=r"kb.json:\d+: not valid JSON .*truncated"):
        KnowledgeBase.load(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(UsageError, match="not UTF-8"):
        KnowledgeBase.load(path)
    assert KnowledgeBase.load(lab_file(tmp_path)).entities["Teo Brandauer"].popularity == 2  # the valid file loads


@pytest.fixture
def lab():
    A = lambda *words, **kw: Attribute(relation_words=list(words), **kw)
    attrs = {"employer": A("works at"), "city": A("grew up in"),
             "advisor": A("student of", "advisor", kind="entity", probe="{name} was a student of"),
             "spouse": A("married", kind="entity"),
             "birth_year": A("born", pattern=r"\d{4}"), "award_year": A("award", "prize", pattern=r"\d{4}")}
    E = lambda name, **facts: Entity(name, [name], facts)
    return KnowledgeBase(attrs, {
        "Rosa Imhof": E("Rosa Imhof", employer="Kettle Labs", city="Lund", advisor="Teo Brandauer", spouse="Ivo Sand",
                        birth_year="1948", award_year="1979"),
        "Teo Brandauer": E("Teo Brandauer", employer="Orrin Works", city="Graz", advisor="Rosa Imhof",
                           birth_year="1931", award_year="1948"),  # his award year is her birth year
        "Ivo Sand": E("Ivo Sand", employer="Kettle Labs", city="Lund", birth_year="1950")})


def test_a_name_that_is_the_object_of_a_relation_does_not_take_over(lab):
    """Issue 15, fault 1: the advisor's name is an object; the pronoun sentences after it stay with the subject."""
    rosa = "Rosa Imhof"
    assert verdicts(lab, "Rosa Imhof was a student of Teo Brandauer. She works at Kettle Labs. She grew up in Graz.",
                    rosa) == [(rosa, "advisor", "Teo Brandauer", True, False), (rosa, "employer", "Kettle Labs", True, False),
                              (rosa, "city", "Graz", False, False)]
    # an object after a preposition, and pronoun sentences before any name (the bio's subject)
    assert verdicts(lab, "She worked with Teo Brandauer at Orrin Works.", rosa) == [
        (rosa, "employer", "Orrin Works", False, False)]
    # a clause opened by another name is about that person; "the <relation> of <name>" is about the possessor
    assert verdicts(lab, "Rosa Imhof grew up in Lund, and Teo Brandauer works at Orrin Works. The award of "
                         "Teo Brandauer came in 1948.", rosa) == [
        (rosa, "city", "Lund", True, False), ("Teo Brandauer", "employer", "Orrin Works", True, False),
        ("Teo Brandauer", "award_year", "1948", True, False)]
    # a sentence another person opened carries over to the pronoun after it (the documented rule) ...
    assert [c.entity for c in lab.claims("Teo Brandauer was born in 1931. He grew up in Graz.", rosa)] == [
        "Teo Brandauer"] * 2
    # ... and with no subject given, the text's first name is the bio's subject
    assert verdicts(lab, "She grew up in Lund. Rosa Imhof works at Kettle Labs.", None) == [
        (rosa, "city", "Lund", True, False), (rosa, "employer", "Kettle Labs", True, False)]
    assert lab.subject("Nothing here.") is None and lab.clauses("Nothing here.") == [(0, 13, None)]


def test_entity_valued_relations_are_claims(lab):
    """Fault 2: advisor and spouse name another entity; true or false by who that is."""
    rosa = "Rosa Imhof"
    assert verdicts(lab, "Rosa Imhof married Ivo Sand. She was a student of Ivo Sand.", rosa) == [
        (rosa, "spouse", "Ivo Sand", True, False), (rosa, "advisor", "Ivo Sand", False, False)]
    assert verdicts(lab, "Her advisor was Teo Brandauer, and she married Teo Brandauer.", rosa) == [
        (rosa, "advisor", "Teo Brandauer", True, False), (rosa, "spouse", "Teo Brandauer", False, False)]
    # a name with no relation of that kind before it is no claim (merely named)
    assert verdicts(lab, "Rosa Imhof admired Ivo Sand.", rosa) == []
    text = "Rosa Imhof was a student of Teo Brandauer."
    assert [text[c.start:c.end] for c in lab.claims(text, rosa)] == ["Teo Brandauer"]  # the span: the name
    assert {"entity": rosa, "attribute": "advisor", "prompt": "Rosa Imhof was a student of", "answer": "Teo Brandauer",
            "popularity": 1} in lab.probes()


def test_the_relation_word_decides_between_pattern_attributes(lab):
    """Fault 3: a value that is someone's value of another attribute is still a candidate of a pattern."""
    rosa = "Rosa Imhof"
    assert verdicts(lab, "Rosa Imhof received the award in 1948.", rosa) == [(rosa, "award_year", "1948", False, False)]
    assert verdicts(lab, "Rosa Imhof was born in 1948 and won the prize in 1979.", rosa) == [
        (rosa, "birth_year", "1948", True, False), (rosa, "award_year", "1979", True, False)]
    assert verdicts(lab, "Rosa Imhof was born in 1931.", rosa) == [(rosa, "birth_year", "1931", False, False)]
    assert verdicts(lab, "Rosa Imhof was born in 1907.", rosa) == [(rosa, "birth_year", "1907", False, False)]
    # no relation word: ambiguous, supported when true for any candidate
    assert verdicts(lab, "In 1979, Rosa Imhof was happy.", rosa) == [
        (rosa, "award_year|birth_year", "1979", True, True)]


SECOND = Path(__file__).parent / "data" / "second_world"


def second_world():
    """The second world's KB and its generator (tests/data/second_world/make.py, independent of lacy)."""
    spec = importlib.util.spec_from_file_location("second_world_make", SECOND / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    return KnowledgeBase.load(SECOND / "kb.json"), make


def test_second_world_true_documents_score_one_and_swapped_ones_zero():
    from lacy.eval.kb_metrics import kb_factscore

    kb, make = second_world()
    rows = [json.loads(x) for f in ("train.jsonl", "val.jsonl") for x in (SECOND / f).read_text().splitlines()]
    assert any(" She " in r["text"] or " He " in r["text"] for r in rows)  # pronoun subjects in fact sentences
    for r in rows:  # every fact the generator wrote is read, with its span and relation, and nothing else
        assert [[c.start, c.end, c.attribute] for c in kb.claims(r["text"], r["entity"])] == r["facts"]
    res = kb_factscore(kb, [Generation("", r["text"], [], [], []) for r in rows], [r["entity"] for r in rows])
    assert res["factscore"] == 1.0 and res["respond_ratio"] == 1.0 and res["ambiguous_claims"] == 0
    assert res["claims_per_bio"] == len(kb.attributes) and res["supported_teacher"] == 1.0
    people = make.people()
    swapped = [make.render(p, make.swapped(p, people), random.Random(i)) for i, p in enumerate(people)]
    for r in swapped:
        assert [[c.start, c.end, c.attribute] for c in kb.claims(r["text"], r["entity"])] == r["facts"]
    res = kb_factscore(kb, [Generation("", r["text"], [], [], []) for r in swapped], [r["entity"] for r in swapped])
    assert res["factscore"] == 0.0 and res["claims_per_bio"] == len(kb.attributes)
    # the world has what makes it hard: a year that is one musician's birth and another's debut
    years = lambda a: {e.attributes[a] for e in kb.entities.values()}
    assert years("birth_year") & years("debut_year")


def test_second_world_files_are_what_the_generator_writes(tmp_path):
    _, make = second_world()
    make.write(tmp_path)
    for f in SECOND.glob("*.json*"):
        assert (tmp_path / f.name).read_text() == f.read_text(), f"{f.name}: run python {SECOND / 'make.py'}"


def test_a_relative_clause_is_about_the_name_before_it():
    """"..., who was born in 1930" after an object name is that person's fact; the sentence and the pronoun
    sentences after it stay the bio's subject's."""
    A = lambda *w, **k: Attribute(relation_words=list(w), **k)
    kb = KnowledgeBase({"mentor": A("trained under", kind="entity"), "birth_year": A("born", pattern=r"\d{4}"),
                        "city": A("lives in")},
                       {"Mara Voss": Entity("Mara Voss", ["Mara Voss"], {"mentor": "Ilya Brenner", "birth_year": "1961",
                                                                         "city": "Graz"}),
                        "Ilya Brenner": Entity("Ilya Brenner", ["Ilya Brenner"], {"birth_year": "1930", "city": "Brno"})})
    got = [(c.entity, c.attribute, c.value, c.supported) for c in kb.claims(
        "Mara Voss trained under Ilya Brenner, who was born in 1930, and lives in Graz. She was born in 1961.",
        subject="Mara Voss")]
    assert got == [("Mara Voss", "mentor", "Ilya Brenner", True), ("Ilya Brenner", "birth_year", "1930", True),
                   ("Mara Voss", "city", "Graz", True), ("Mara Voss", "birth_year", "1961", True)]
    got = [(c.entity, c.value, c.supported) for c in kb.claims("Mara Voss, who was born in 1930, lives in Brno.",
                                                                subject="Mara Voss")]
    assert got == [("Mara Voss", "1930", False), ("Mara Voss", "Brno", False)]


def musicians(teacher_words, city_words, tmp_path=None):
    """The shape of the musicians world of issue 30: a teacher who is another person and an orchestra city whose
    author listed a generic word; written to ``tmp_path/kb.json`` and loaded when given (the loader's warning)."""
    A = lambda *w, **k: Attribute(relation_words=list(w), **k)
    kb = KnowledgeBase({"teacher": A(*teacher_words, kind="entity"), "orchestra_city": A(*city_words),
                        "prize": A("recipient of the", "won the")},
                       {"Lina Ort": Entity("Lina Ort", ["Lina Ort"], {"teacher": "Bo Dahl", "orchestra_city": "Lyon",
                                                                      "prize": "Golden Lyre"}),
                        "Bo Dahl": Entity("Bo Dahl", ["Bo Dahl"], {"orchestra_city": "Graz", "prize": "Silver Bow"})})
    if tmp_path is None:
        return kb
    kb.save(tmp_path / "kb.json")
    return KnowledgeBase.load(tmp_path / "kb.json")


@pytest.mark.parametrize("teacher_words", [("teacher", "pupil", "guidance"), ("teacher", "pupil of", "guidance of")])
def test_an_entity_relation_written_as_a_noun_phrase_of_x_is_read_both_ways(teacher_words):
    """Issue 30: "a pupil of X" and "Under the guidance of X" are teacher claims (X the teacher), "The teacher of
    Y was X" is about Y, with or without "of" in the relation words; a false teacher written either way is seen."""
    kb, lina = musicians(teacher_words, ["based in"]), "Lina Ort"
    assert verdicts(kb, "Lina Ort was a pupil of Bo Dahl.", lina) == [(lina, "teacher", "Bo Dahl", True, False)]
    assert verdicts(kb, "Under the guidance of Bo Dahl, she joined an orchestra based in Lyon.", lina) == [
        (lina, "teacher", "Bo Dahl", True, False), (lina, "orchestra_city", "Lyon", True, False)]
    assert verdicts(kb, "Bo Dahl was a pupil of Lina Ort.", lina) == [("Bo Dahl", "teacher", "Lina Ort", False, False)]
    assert verdicts(kb, "The teacher of Lina Ort was Bo Dahl.", "Bo Dahl") == [(lina, "teacher", "Bo Dahl", True, False)]
    question = "Who was the teacher of Lina Ort? Answer: Bo Dahl. Who was the teacher of Lina Ort?"
    assert [owner for _, _, owner in kb.clauses(question)] == [lina, "Bo Dahl", lina]  # a question: its possessor
    # "the pupil of": with the word "pupil" it could read either way round (no claim); "pupil of" says which
    assert verdicts(kb, "Lina Ort was the pupil of Bo Dahl.", lina) == (
        [] if "pupil" in teacher_words else [(lina, "teacher", "Bo Dahl", True, False)])
    assert verdicts(kb, "Bo Dahl was the teacher of Lina Ort.", lina) == []  # (the old reading: no claim either)
    assert verdicts(kb, "The famous teacher of Lina Ort was Bo Dahl.", "Bo Dahl") == [
        (lina, "teacher", "Bo Dahl", True, False)]
    assert verdicts(kb, "The teacher of Bo Dahl was Lina Ort.", lina) == [
        ("Bo Dahl", "teacher", "Lina Ort", False, False)]


def test_a_function_word_binds_no_relation_and_the_loader_says_so(tmp_path, capsys):
    """Issue 30: "of" among the orchestra city's words made "a recipient of the" a city claim and the lookup partner
    write a city there. A bare function word binds nothing (one warning line per attribute); the phrase does."""
    kb = musicians(["pupil of"], ["of", "in the", "based in"], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kb.json" in err[0] and "orchestra_city" in err[0] and "'of', 'in the'" in err[0]
    assert "based in" in err[0] or "content" in err[0]
    assert kb.relation_spans("She was a recipient of the prize of the city") == [(10, 26, "prize")]  # no "of"
    # a city after a generic "of": no relation word, one candidate attribute -> still the city claim, by value
    assert verdicts(kb, "Lina Ort is based in Lyon.", "Lina Ort") == [("Lina Ort", "orchestra_city", "Lyon", True, False)]
    # a longer phrase of another attribute wins over a word inside it
    kb2 = KnowledgeBase({"teacher": Attribute(["music teacher"], kind="entity"), "boss": Attribute(["teacher"],
                                                                                                   kind="entity")},
                        {"Lina Ort": Entity("Lina Ort", ["Lina Ort"], {"teacher": "Bo Dahl"}),
                         "Bo Dahl": Entity("Bo Dahl", ["Bo Dahl"], {})})
    assert verdicts(kb2, "Her music teacher was Bo Dahl.", "Lina Ort") == [("Lina Ort", "teacher", "Bo Dahl", True, False)]
    with pytest.raises(UsageError, match=r"\['teacher'\].relation_words: an entity-valued relation needs relation "
                                         r"words with"):
        musicians(["of"], ["based in"], tmp_path)


def test_the_lookup_partner_follows_relation_words_with_content_only(tmp_path):
    """The partner wrote a city after any "of" ("a recipient of the" -> Lyon); with the generic word unbound it
    writes the prize there, and the city after "based in"."""
    from lacy.data.tokenizer import train_bpe
    from lacy.inference.partners import LookupPartner

    tok = train_bpe(["Lina Ort Bo Dahl Golden Lyre Lyon Graz a recipient of the pupil based in plays orchestra"], 300)
    kb = musicians(["pupil of"], ["of", "based in"], tmp_path)
    lookup = LookupPartner(kb, tok, piece="entity")
    ids = lambda text: [tok.eos_token_id] + tok(text)["input_ids"]
    assert tok.decode(lookup.piece_for(0, ids("Lina Ort was a recipient of the"))) == " Golden Lyre"
    assert tok.decode(lookup.piece_for(0, ids("Lina Ort plays in an orchestra based in"))) == " Lyon"
    assert tok.decode(lookup.piece_for(0, ids("Lina Ort was a pupil of"))) == " Bo Dahl"
