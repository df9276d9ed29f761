import os
from pathlib import Path

import numpy as np
import pytest

from lacy.annotators.spacy_facts import SpacyFactAnnotator, subword_flags
from lacy.errors import UsageError
from lacy.data.tokenizer import train_bpe

TEXT = "Marie Curie was born in Warsaw in 1867. Curie studied physics and became a famous physicist."


@pytest.fixture(scope="module")
def annotator():
    return SpacyFactAnnotator()


def flagged_words(ann, text):
    doc = ann.nlp(text)
    return [t.text for t, f in zip(doc, ann.token_flags(doc)) if f]


def test_rules_flag_entities_numbers_keywords_and_skip_repeats(annotator):
    words = flagged_words(annotator, TEXT)
    assert {"Marie", "Curie", "Warsaw", "1867", "physics", "physicist"} <= set(words)
    assert words.count("Curie") == 1  # the second "Curie" can be copied from context
    assert not {"was", "born", "studied"} & set(words)


def test_each_rule_is_a_switch(annotator):
    only_keywords = SpacyFactAnnotator(entity_labels=[], pos_tags=[], relation_nouns=False, coordinated_values=False,
                                       title_words=False)
    assert only_keywords.needed_components() == set()
    assert flagged_words(only_keywords, TEXT) == ["physics", "physicist"]
    only_relations = SpacyFactAnnotator(entity_labels=[], pos_tags=[], keywords=[])
    assert {"parser", "tagger"} <= only_relations.needed_components() and "ner" not in only_relations.nlp.pipe_names
    assert flagged_words(only_relations, TEXT) == ["physics", "famous", "physicist"]  # "famous": a known false flag
    no_tracking = SpacyFactAnnotator(occurrence_tracking=False)
    assert flagged_words(no_tracking, TEXT).count("Curie") == 2
    for other in (no_tracking, SpacyFactAnnotator(ner_sentences=False), SpacyFactAnnotator(relation_nouns=False),
                  SpacyFactAnnotator(trim_entities=False)):
        assert annotator.fingerprint() != other.fingerprint()


@pytest.mark.parametrize("text, values", [
    ("Yo-Yo Ma plays the cello.", ["cello"]),  # an instrument: the object of a verb whose subject is a name
    ("She played tennis.", ["tennis"]),  # a sport, after a pronoun subject
    ("Bellis perennis is a species of daisy.", ["daisy"]),  # a species: the container's "of" object
    ("It is a type of sword.", ["sword"]),
    ("The Toyota Corolla is a compact car.", ["compact", "car"]),  # a product and its classifying modifier
    ("He worked as a carpenter in Lyon.", ["carpenter"]),  # the object of "as"
    ("Ann Lee, a violinist, joined the orchestra.", ["violinist", "orchestra"]),  # an appositive
    ("She was a jazz trumpeter and composer.", ["jazz", "trumpeter", "composer"]),  # modifier, conjunct
    ("He was one of the founders.", ["founders"]),
    ("He was the leader of the party.", ["party"]),  # a bare noun with an "of" object is a container
    ("She is the most famous potter of her generation.", ["potter"]),  # "most famous": a judgement
    ("The method uses the properties of carbon.", []),  # the subject is neither a name nor a pronoun
])
def test_relation_nouns_complete_a_relation_in_any_domain(annotator, text, values):
    from lacy.annotators.spacy_facts import relation_values

    doc = annotator.nlp(text)
    assert [t.text for t, f in zip(doc, relation_values(doc)) if f] == values
    assert set(values) <= set(flagged_words(annotator, text))


@pytest.mark.parametrize("rule, text, off, on", [
    ("of_values", "She was an American actress of film.", ["American", "actress"], ["American", "actress", "film"]),
    ("of_values", "The top of the hill is green.", [], []),  # "top" is no value: nor is its "of" object
    ("compound_nouns", "He sits in the strings section.", [], ["strings"]),
    ("compound_nouns", "He sits in the large section.", [], []),  # an adjective is not a compound noun
    ("participle_values", "They were a band formed in Birmingham.", [], ["band"]),
    ("participle_values", "It is the position that there are no gods.", ["gods"], ["gods"]),  # still a container
    ("defined_subjects", "Korean mythology is the group of myths.", ["myths"], ["Korean", "mythology", "myths"]),
    ("defined_subjects", "The instrument of Ann Lee is the flute.", ["flute"], ["flute"]),  # a relation noun
    ("quantity_units", "The island covers 113,729 km2.", [], ["km2"]),
    ("quantity_units", "He was born in the year 1957.", [], []),  # a number after a noun names it
    ("entity_modifiers", "He conquered southern India.", [], ["southern"]),
    ("entity_modifiers", "He conquered more remote Siberia.", [], []),  # degree-marked: a judgement
    ("demonstratives", "Those were busy seasons for him.", ["busy", "seasons"], []),
    ("demonstratives", "She was a busy teacher.", ["busy", "teacher"], ["busy", "teacher"]),
    ("rare_arguments", "The organ injects venom into its prey.", [], ["organ", "venom"]),  # "its prey": possessed
    ("rare_arguments", "The puppeteer speaks in a recorded soundtrack.", [], ["puppeteer", "recorded", "soundtrack"]),
    ("rare_arguments", "She has painted landscapes since childhood.", ["landscapes"], ["landscapes"]),  # time
    ("rare_arguments", "He is remembered for his asceticism.", [], []),  # a pronoun's: a relation of him
    ("rare_arguments", "These pamphlets were printed.", [], []),  # after a demonstrative
    ("rare_arguments", "He played a role in the movement.", ["role"], ["role"]),  # "movement" is not rare
])
def test_item7_rules_each_add_or_remove_only_their_values(annotator, rule, text, off, on):
    from lacy.annotators.spacy_facts import relation_values

    doc = annotator.nlp(text)
    assert [t.text for t, f in zip(doc, relation_values(doc)) if f] == off
    assert [t.text for t, f in zip(doc, relation_values(doc, [rule])) if f] == on


@pytest.mark.slow
def test_item7_rules_are_switches_and_off_keeps_the_old_cache_key(annotator):
    from lacy.annotators.spacy_facts import LATER_RULES

    before = dict.fromkeys(LATER_RULES, False)
    old = SpacyFactAnnotator(**before)
    assert old.relation_rules == [] and not old.trim_dates
    text = "He studied under Ann Lee for years. Those were busy seasons for him."
    assert flagged_words(old, text) == ["Ann", "Lee", "years", "busy", "seasons"]
    assert flagged_words(annotator, text) == ["Ann", "Lee"]
    keys = {annotator.fingerprint(), old.fingerprint()} | {
        SpacyFactAnnotator(**{**before, rule: True}).fingerprint() for rule in before}
    assert len(keys) == len(before) + 2
    # the key from before item 7 (its rules off): hashed exactly as the code before them did
    import hashlib
    import json

    import spacy

    meta = old.nlp.meta
    rules = [meta.get("name"), meta.get("version"), spacy.__version__, sorted(old.entity_labels),
             sorted(old.pos_tags), sorted(old.keywords), True, True, {"relation_nouns": True, "trim_entities": True}]
    assert old.fingerprint() == hashlib.sha256(json.dumps(rules).encode()).hexdigest()[:16]


@pytest.mark.parametrize("switch, text, off, on", [
    ("coordinated_values", "His music extends into rock, funk and hip-hop.", ["music", "funk", "hip", "hop"],
     ["music", "rock", "funk", "hip", "hop"]),  # "rock" is common, but listed with values
    ("coordinated_values", "He toured with Miles Davis and friends.", ["Miles", "Davis"],
     ["Miles", "Davis", "friends"]),
    ("coordinated_values", "He toured with Miles Davis and his friends.", ["Miles", "Davis"], ["Miles", "Davis"]),
    # a pronoun's noun is a relation (as in rare_arguments); a generic noun listed with a name is a known false flag
    ("title_words", "She wrote the novel The Bell Jar in 1963.", ["novel", "Bell", "Jar", "1963"],
     ["novel", "The", "Bell", "Jar", "1963"]),
    ("title_words", "He wrote: The end came in 1990.", ["1990"], ["1990"]),  # a quoted sentence's start
    ("title_words", "DO NOT MIX BLEACH WITH AMMONIA IN LONDON.", ["BLEACH", "AMMONIA", "LONDON"],
     ["BLEACH", "AMMONIA", "LONDON"]),  # upper case: no title word
    ("title_words", "Scientists Find New Species Of Frog In The Amazon", ["Scientists", "New", "Species", "Frog",
                                                                          "Amazon"],
     ["Scientists", "New", "Species", "Frog", "Amazon"]),  # a headline's title case
    ("title_words", "Ingredients\nThe flour must be sifted in Paris.", ["Ingredients", "flour", "Paris"],
     ["Ingredients", "flour", "Paris"]),  # after a line break
])
def test_coordination_and_title_words_each_add_only_their_words(annotator, switch, text, off, on):
    assert flagged_words(SpacyFactAnnotator(**{switch: False}), text) == off
    assert flagged_words(annotator, text) == on


@pytest.mark.slow
def test_rare_arguments_threshold_is_the_zipf_frequency_and_enters_the_cache_key(annotator):
    from lacy.annotators.spacy_facts import relation_values, zipf

    assert zipf("role") > 5.0 > zipf("movement") > 4.8 > zipf("soundtrack") > 0 == zipf("qzxv")
    doc = annotator.nlp("He played a role in the movement.")
    assert [t.text for t, f in zip(doc, relation_values(doc, ["rare_arguments"], 5.0)) if f] == ["role", "movement"]
    keys = {SpacyFactAnnotator(rare_zipf=z).fingerprint() for z in (4.8, 5.0)}
    keys |= {SpacyFactAnnotator(rare_arguments=False, rare_zipf=z).fingerprint() for z in (4.8, 5.0)}
    keys |= {SpacyFactAnnotator(rare_arguments=False, coordinated_values=False, rare_zipf=z).fingerprint()
             for z in (4.8, 5.0)}
    assert len(keys) == 5  # the threshold counts while a rule that reads it is on (coordinated_values does too)
    no_parse = SpacyFactAnnotator(relation_nouns=False, ner_sentences=False)  # the new rules still get the parse
    assert {"parser", "tagger"} <= no_parse.needed_components()
    assert flagged_words(no_parse, "He moved to Paris. The Beatles split in 1970.") == ["Paris", "Beatles", "1970"]


def test_trimmed_dates_leave_out_their_relation_words(annotator):
    untrimmed = SpacyFactAnnotator(trim_dates=False)
    for text, dropped in [("He studied under Ann Lee for years.", {"years"}),
                          ("He was born in the year 1957.", {"year"}), ("She died at the age of 33.", {"age", "of"})]:
        assert dropped <= set(flagged_words(untrimmed, text)) and not dropped & set(flagged_words(annotator, text))
    for text, kept in [("It grew in the 19th century.", ["19th", "century"]),
                       ("He led it for two decades.", ["two", "decades"])]:
        assert flagged_words(annotator, text) == kept  # a number before the noun: a value


def test_trimmed_entities_leave_out_their_function_words(annotator):
    untrimmed = SpacyFactAnnotator(trim_entities=False)
    for text, dropped in [("He moved to the United States in 1990.", "the"),
                          ("The city has over 1.3 million residents.", "over"),
                          ("Fidel Castro's army won.", "'s"), ("He was one of the founders.", "one")]:
        assert dropped in flagged_words(untrimmed, text) and dropped not in flagged_words(annotator, text)


def test_subword_projection_ignores_whitespace_and_flags_every_piece():
    class Tok:  # the two attributes subword_flags reads from a spaCy token
        def __init__(self, text, idx):
            self.text, self.idx = text, idx

    class Doc(list):
        text = "I met Ann Lee."

    doc = Doc([Tok("I", 0), Tok("met", 2), Tok("Ann", 6), Tok("Lee", 10), Tok(".", 13)])
    flags = np.array([False, False, True, True, False])
    # byte-level BPE style offsets with leading spaces; " A" + "nn" split a word; a bare space token
    offsets = np.array([[0, 1], [1, 5], [5, 7], [7, 9], [9, 10], [10, 13], [13, 14]])
    assert subword_flags(doc, flags, offsets).tolist() == [False, False, True, True, False, True, False]


def test_alignment_on_real_tokenizer_multi_piece_and_non_ascii(annotator):
    text = "Zoë Łukasiewicz founded Übermensch Labs in Zürich in 2003."
    tok = train_bpe([text], vocab_size=270)  # tiny vocab: most words split into several pieces
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    flags = annotator.annotate([text], [np.array(enc.offsets)])[0]
    assert len(flags) == len(enc.ids)
    for (a, b), f in zip(enc.offsets, flags):
        piece = text[a:b].strip()
        if piece and any(piece in w for w in ["Zürich", "2003"]):
            assert f, f"piece {piece!r} of a fact word is not flagged"
        if piece in ("in", "founded", "."):
            assert not f


def test_empty_document(annotator):
    assert annotator.annotate([""], [np.zeros((0, 2), dtype=np.int32)])[0].tolist() == []


def test_reduced_pipeline_gives_the_full_pipelines_flags(annotator):
    import spacy

    full = spacy.load(annotator.spacy_model)
    assert "lemmatizer" in full.pipe_names and "lemmatizer" not in annotator.nlp.pipe_names
    assert "parser" not in SpacyFactAnnotator(ner_sentences=False, relation_nouns=False, coordinated_values=False,
                                              title_words=False).nlp.pipe_names
    texts = [TEXT, "The Treaty of Versailles was signed on 28 June 1919 by 32 nations.",
             "Ada Lovelace, an English mathematician, worked with Charles Babbage in London."]
    for text in texts:
        assert annotator.token_flags(full(text)).tolist() == annotator.token_flags(annotator.nlp(text)).tolist()


def test_split_text_cuts_at_the_strongest_boundary_within_the_limit():
    from lacy.annotators.spacy_facts import split_text

    text = "One two. Three four.\n\nFive six. Seven."
    #       0         1         2          3
    #       0123456789012345678901 2 3456789012345678
    assert split_text(text, 100) == [(0, len(text))]
    assert split_text("", 5) == [(0, 0)]
    assert split_text(text, 30) == [(0, 22), (22, len(text))]  # the blank line, not the later sentence end
    assert split_text(text, 20) == [(0, 9), (9, 22), (22, len(text))]  # no blank line in 20: the sentence end
    assert split_text("ab cdefgh", 5) == [(0, 3), (3, 8), (8, 9)]  # a space; then a word longer than the limit
    for limit in (3, 7, 11, 20):
        cuts = split_text(text, limit)
        assert all(0 < b - a <= limit for a, b in cuts) and "".join(text[a:b] for a, b in cuts) == text


def word_offsets(text):
    import re

    return np.array([m.span() for m in re.finditer(r"\w+", text)], dtype=np.int64).reshape(-1, 2)


def test_document_over_max_length_equals_its_pieces_annotated_alone():
    from lacy.annotators.spacy_facts import split_text

    ann = SpacyFactAnnotator()
    paragraphs = [TEXT, "Ada Lovelace, an English mathematician, worked with Charles Babbage in London.",
                  "The Treaty of Versailles was signed on 28 June 1919 by 32 nations. Curie was a physicist."]
    text = "\n\n".join(paragraphs * 3)
    ann.nlp.max_length = 250  # spaCy's E088 limit, lowered to keep the test fast
    cuts = split_text(text, 250)
    assert len(cuts) > 2 and all(b - a <= 250 for a, b in cuts)
    with pytest.raises(ValueError, match="E088"):
        ann.nlp(text)
    offsets = word_offsets(text)
    flags = ann.annotate([text], [offsets])[0]
    alone = [ann.annotate([text[a:b]], [word_offsets(text[a:b])])[0] for a, b in cuts]
    assert flags.tolist() == np.concatenate(alone).tolist()
    words = [text[a:b] for a, b in offsets]
    assert sum(w == "Curie" and f for w, f in zip(words, flags)) == len(cuts)  # tracked per piece


def test_a_spacy_batch_holds_at_most_piece_chars_characters(monkeypatch):
    """Issue 29: memory follows a spaCy batch's characters; a long document's pieces used to share one batch of 64
    (a 3.47 MB document: 12.8 GB). Now a batch holds at most piece_chars characters, one piece at the least;
    the flags are those of each piece annotated alone, and only a set piece_chars enters the cache key."""
    from lacy.annotators.spacy_facts import split_text

    ann = SpacyFactAnnotator(piece_chars=1000)
    text = "\n\n".join([TEXT, "Ada Lovelace, an English mathematician, worked with Charles Babbage in London."] * 12)
    batches, pipe = [], ann.nlp.pipe
    monkeypatch.setattr(ann.nlp, "pipe", lambda stream, **kw: batches.append(kw["batch_size"]) or pipe(stream, **kw))
    texts = ["Bo was a poet.", text, "Al is a cook.", "Ed is a chef."]  # 13-14 characters: 64 fit in 1,000
    flags = ann.annotate(texts, [word_offsets(t) for t in texts])
    cuts = split_text(text, 1000)
    # short | the long one alone, one ~1,000-character piece per batch | the two short ones in one stream
    assert len(cuts) > 2 and batches == [64, 1000 // max(b - a for a, b in cuts), 64] == [64, 1, 64]
    alone = [SpacyFactAnnotator().annotate([text[a:b]], [word_offsets(text[a:b])])[0] for a, b in cuts]
    assert flags[1].tolist() == np.concatenate(alone).tolist()
    assert [f.tolist() for f in flags[::2]] == [f.tolist() for f in SpacyFactAnnotator().annotate(
        texts[::2], [word_offsets(t) for t in texts[::2]])]
    batches.clear()
    ann.annotate(texts[:1] * 3, [word_offsets(texts[0])] * 3)
    assert batches == [64]  # three short documents: one stream, the configured batch
    assert SpacyFactAnnotator(piece_chars=None).fingerprint() == SpacyFactAnnotator().fingerprint() != ann.fingerprint()
    assert SpacyFactAnnotator(piece_chars=2_000_000).fingerprint() == SpacyFactAnnotator().fingerprint()  # = max_length
    with pytest.raises(UsageError, match="piece_chars=10: at least 1000"):
        SpacyFactAnnotator(piece_chars=10)


@pytest.mark.slow
def test_document_over_spacys_real_limit_annotates():
    ann = SpacyFactAnnotator(entity_labels=[], pos_tags=[], relation_nouns=False, coordinated_values=False,
                             title_words=False)  # keywords only: the tokenizer
    assert ann.nlp.max_length == 1_000_000
    filler = "The cat sat on the mat and looked at the garden for a while. " * 200
    text = "She was a physicist.\n\n" + "\n\n".join([filler] * 90) + "\n\nHe was a chemist."
    assert len(text) > 1_000_000
    offsets = word_offsets(text)
    flags = ann.annotate([text], [offsets])[0]
    assert [text[a:b] for (a, b), f in zip(offsets, flags) if f] == ["physicist", "chemist"]


def test_worker_processes_give_the_same_flags(annotator):
    texts = [TEXT, "Ada Lovelace, an English mathematician, worked with Charles Babbage in London."] * 3
    offsets = [word_offsets(t) for t in texts]
    two = SpacyFactAnnotator(n_process=2, batch_size=2)
    assert "lacy_end_with_parent" in two.nlp.pipe_names and two.fingerprint() == annotator.fingerprint()
    assert [f.tolist() for f in two.annotate(texts, offsets)] == [
        f.tolist() for f in annotator.annotate(texts, offsets)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_worker_that_never_got_a_document_ends_with_its_killed_parent(method):
    """EndWithParent watches from a worker's start: spaCy's workers carry it in their pickled arguments
    (spawn, forkserver) or inherit it (fork); here a process object carries it the same way."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import alive

    script = (
        "import functools, multiprocessing as mp, sys, time\n"
        "from lacy.annotators.spacy_facts import EndWithParent\n"
        "if __name__ == '__main__':\n"
        "    component = EndWithParent()\n"
        "    worker = mp.get_context(sys.argv[1]).Process(target=functools.partial(time.sleep, 600))\n"
        "    worker.component = component  # pickled with the process object under spawn / forkserver\n"
        "    worker.start()\n"
        "    print(worker.pid, flush=True)\n"
        "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, method], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[1])
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1)  # the worker is up (spawned ones have unpickled the component)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
            pytest.fail(f"the {method} worker outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
