import numpy as np
import pytest

from lacy.facts import SpacyFactAnnotator, subword_flags
from lacy.tokenizer import train_bpe

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
    assert not {"was", "born", "studied", "famous"} & set(words)


def test_each_rule_is_a_switch(annotator):
    only_keywords = SpacyFactAnnotator(entity_labels=[], pos_tags=[])
    assert only_keywords.needed_components() == set()
    assert flagged_words(only_keywords, TEXT) == ["physics", "physicist"]
    no_tracking = SpacyFactAnnotator(occurrence_tracking=False)
    assert flagged_words(no_tracking, TEXT).count("Curie") == 2
    assert annotator.fingerprint() != no_tracking.fingerprint()
    assert annotator.fingerprint() != SpacyFactAnnotator(ner_sentences=False).fingerprint()


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
    assert "parser" not in SpacyFactAnnotator(ner_sentences=False).nlp.pipe_names
    texts = [TEXT, "The Treaty of Versailles was signed on 28 June 1919 by 32 nations.",
             "Ada Lovelace, an English mathematician, worked with Charles Babbage in London."]
    for text in texts:
        assert annotator.token_flags(full(text)).tolist() == annotator.token_flags(annotator.nlp(text)).tolist()
