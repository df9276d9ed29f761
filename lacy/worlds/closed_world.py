"""A closed world of invented people whose every fact is known: the CPU-scale benchmark for LaCy.

The paper measures on Wikipedia with GPT-4-class judges; here the truth is exact. ``ClosedWorld`` is a
corpus (usable from YAML like any other) generated deterministically from a seed, plus the files an
evaluation needs: a knowledge base (``lacy.worlds.kb`` format), bio prompts and leakage probes.

What makes it a fair test of *where* a small model should call (design.md, "Lessons"):
- popularity is long-tailed (Zipf over rank, see ``docs_for_rank``): popular facts are learnable by a small
  model, the long tail (most people, one document) is not;
- **derived** facts (nationality from the birth city, employer city from the employer, profession from the
  field) always follow their source in a document, so a model can predict them from context: LaCy's loss
  signal should keep those, a pure fact detector delegates them;
- knowledge is extractable, not only memorised (Allen-Zhu & Li, Physics of LMs 3.1): the full name is the
  subject of every fact sentence, names tokenize the same at document start and mid-text (prefix-space BPE),
  ``rounds`` renders every person's documents again with fresh paraphrases (one round per epoch for a
  partner that reads more), and ``qa_fraction`` of the people also get question-answer documents;
- many high-loss tokens are harmless: >= 5 paraphrases per fact, shuffled sentence order, and filler
  sentences with free word choice (pronouns live there, never in fact sentences).

    python -m lacy.world --out runs/world      # writes kb.json, prompts.jsonl, probes.jsonl, train/val.jsonl

``lacy.worlds.folder.read_world(folder)`` reads and validates such a folder, whoever wrote it (docs/world.md).
"""
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lacy.data.corpus import Corpus
from lacy.errors import UsageError
from lacy.io.atomic import atomic_file
from lacy.io.marker import check_replaceable, write_marker
from lacy.worlds.kb import Attribute, Entity, KnowledgeBase

FIRST = """Alma Bruno Cyra Dario Elin Fabian Greta Hugo Ilse Jonas Kaia Lorenz Mirela Niko Odile Pavel Quinta Rafael
Sanne Tobias Ulla Viktor Wanda Xaver Yara Zeno Ada Basil Celia Dmitri Edda Felix Gisela Hektor Ines Janek Kira Lucian
Maren Nestor Oona Piet Rhea Silas Thea Urban Vera Wim Zora Anselm Britta Cosmo Dagny Emrik Frida Gideon Hilde Ivar Juno
Kasimir Liv Magnus Nora Otto Petra Quirin Runa Stellan Tilda""".split()
LAST = """Abend Brandt Corvin Dalberg Eckhart Falkner Grell Hollis Ingram Jessen Kestrel Lindqvist Morrow Nyberg Oakes
Pell Quist Rennick Solberg Thorne Ulrich Vance Wexler Yates Zander Ashby Blythe Crane Dunmore Ellery Fenwick Garrow
Halloran Ives Jardine Kellner Lowry Marsh Norland Orme Prentice Radley Sterling Tamsin Underhill Voss Whitlow Yardley
Auden Beck Colby Drake Eames Frost Gale Hart Keane Lyle Moss Nash""".split()
CITIES = {  # city -> country's nationality adjective
    "Lyon": "French", "Nantes": "French", "Lille": "French", "Porto": "Portuguese", "Braga": "Portuguese",
    "Leeds": "British", "Bristol": "British", "Cork": "Irish", "Galway": "Irish", "Bergen": "Norwegian",
    "Tromso": "Norwegian", "Utrecht": "Dutch", "Leiden": "Dutch", "Ghent": "Belgian", "Bruges": "Belgian",
    "Bologna": "Italian", "Turin": "Italian", "Seville": "Spanish", "Bilbao": "Spanish", "Krakow": "Polish",
    "Gdansk": "Polish", "Brno": "Czech", "Graz": "Austrian", "Basel": "Swiss", "Aarhus": "Danish",
    "Uppsala": "Swedish", "Tartu": "Estonian", "Kaunas": "Lithuanian", "Debrecen": "Hungarian", "Ljubljana": "Slovenian",
}
FIELDS = {  # field of study -> profession (the article is part of the value: "a" vs "an" would leak it)
    "physics": "a physicist", "chemistry": "a chemist", "biology": "a biologist", "mathematics": "a mathematician",
    "economics": "an economist", "history": "a historian", "law": "a lawyer", "architecture": "an architect",
    "music": "a musician", "philosophy": "a philosopher", "geology": "a geologist", "linguistics": "a linguist",
    "astronomy": "an astronomer", "botany": "a botanist", "statistics": "a statistician", "pharmacy": "a pharmacist",
}
UNIVERSITIES = """Halvard University|Morland College|Ostrava Institute|Kerrigan University|Wyndham College|Aldous
University|Brightwater Institute|Castellan University|Denholm College|Everly University|Fairhaven Institute|Greyfield
University|Hawthorne College|Iverson University|Juniper Institute|Kingsmere University|Lockridge College|Marlow
University|Northgate Institute|Oakhurst University""".replace("\n", " ").split("|")
EMPLOYERS = {  # employer -> its city
    "Norvik Labs": "Bergen", "Amberline": "Leeds", "Caldera Systems": "Lyon", "Tessell": "Porto",
    "Helix Forge": "Utrecht", "Quillon": "Bologna", "Brightmoor": "Cork", "Vantor": "Seville", "Kestrel Works": "Brno",
    "Orbis Foods": "Graz", "Lumen Rail": "Basel", "Marrow Bank": "Krakow", "Pinecrest": "Aarhus", "Solvane": "Uppsala",
    "Driftwood Press": "Ghent", "Ironleaf": "Turin", "Calloway Energy": "Nantes", "Nimbus Air": "Leiden",
    "Harbor Mutual": "Galway", "Zephyr Motors": "Bilbao",
}
WORLD_MARKER = "lacy_world.json"  # in a folder ClosedWorld.write wrote: the files it may replace
MONTHS = "January February March April May June July August September October November December".split()

# Fact sentences: the first template of each attribute is its probe form (the text up to the value).
TEMPLATES = {
    "birth_date": ["{n} was born on {v}.", "{n} came into the world on {v}.", "The birthday of {n} is {v}.",
                   "{n} has a date of birth of {v}.", "Records show that {n} was born on {v}."],
    "birth_city": ["{n} was born in {v}.", "{n} was born in the city of {v}.", "{n} is a native of {v}.",
                   "The birthplace of {n} is {v}.", "{n} spent a childhood in {v}, the city of birth."],
    "nationality": ["{n} holds {v} citizenship.", "{n} has {v} nationality.", "By nationality, {n} is {v}.",
                    "{n} travels on {v} papers.", "The nationality of {n} is {v}."],
    "university": ["{n} graduated from {v}.", "{n} attended {v}.", "{n} earned a degree at {v}.",
                   "{n} was a student at {v}.", "The alma mater of {n} is {v}."],
    "field": ["{n} studied {v}.", "{n} majored in {v}.", "At university, {n} focused on {v}.",
              "The subject that {n} studied was {v}.", "{n} chose to study {v}."],
    "profession": ["{n} works as {v}.", "{n} has a career as {v}.", "{n} is employed as {v}.",
                   "By profession, {n} is {v}.", "{n} earns a living as {v}."],
    "employer": ["{n} works for {v}.", "{n} is employed by {v}.", "{n} joined the staff of {v}.",
                 "The employer of {n} is {v}.", "{n} took a job at {v}."],
    "employer_city": ["{n} works in {v}.", "{n} has an office in {v}.", "{n} commutes to work in {v}.",
                      "The workplace of {n} is in {v}.", "Each morning, {n} goes to work in {v}."],
}
# The words that express each relation (written into the KB: the extractor reads them, not the templates).
RELATION_WORDS = {
    "birth_date": ["born on", "came into the world on", "birthday", "date of birth"],
    "birth_city": ["born in", "native of", "birthplace", "childhood in"],
    "nationality": ["citizenship", "nationality", "papers"],
    "university": ["graduated from", "attended", "degree at", "student at", "alma mater"],
    "field": ["studied", "majored in", "focused on", "study"],
    "profession": ["works as", "career as", "employed as", "profession", "living as"],
    "employer": ["works for", "employed by", "staff of", "employer", "job at"],
    "employer_city": ["works in", "office in", "work in", "workplace"],
}
QUESTIONS = {
    "birth_date": "When was {n} born?", "birth_city": "Where was {n} born?", "nationality": "What is the "
    "nationality of {n}?", "university": "Which university did {n} attend?", "field": "What did {n} study?",
    "profession": "What is the profession of {n}?", "employer": "Who is the employer of {n}?",
    "employer_city": "In which city does {n} work?",
}
DERIVED_FROM = {"nationality": "birth_city", "profession": "field", "employer_city": "employer"}
# An entity-valued relation (``ClosedWorld(mentor=True)``): the value is another person of the world, as
# Wikipedia's doctoral advisors and teachers are. Every template keeps the subject first, the mentor as object.
MENTOR = {
    "templates": ["{n} was a student of {v}.", "{n} trained under {v}.", "{n} was taught by {v}.",
                  "{n} learned the trade from {v}.", "{n} was mentored by {v}."],
    "relation_words": ["student of", "trained under", "taught by", "learned the trade from", "mentored by"],
    "question": "Who was the mentor of {n}?",
}
# Compound sentences (``ClosedWorld(compound=...)``): one subject for several facts, as in Wikipedia's lead
# sentences; a derived fact still follows its source, and each value has its relation word (or is unique).
COMPOUND = {
    ("birth_city", "birth_date", "nationality"): [
        "{n} was born in {birth_city} on {birth_date} and holds {nationality} citizenship.",
        "{n} was born in {birth_city} on {birth_date} and has {nationality} nationality.",
        "{n} is a native of {birth_city}, born on {birth_date}, with {nationality} papers."],
    ("field", "university", "profession"): [
        "{n} studied {field} at {university} and works as {profession}.",
        "{n} majored in {field} at {university} and has a career as {profession}.",
        "{n} graduated from {university} in {field} and is employed as {profession}."],
    ("employer", "employer_city"): [
        "{n} works for {employer} at its office in {employer_city}.",
        "{n} is employed by {employer} and works in {employer_city}.",
        "{n} took a job at {employer} and commutes to work in {employer_city}."],
}
FILLER = [  # no facts of the KB; free word choice, so many tokens are high-loss and harmless
    "{P} {liked|enjoyed|loved|preferred} {long walks|quiet evenings|old films|board games|cold mornings|loud songs}.",
    "{Friends|Colleagues|Neighbours|Old classmates} {describe|remember|recall} {p} as {calm|curious|patient|funny|stubborn}.",
    "{It was|That was|Those were} {a busy|a quiet|a happy|an odd|a long} {time|period|chapter|season} for {p}.",
    "{P} {often|rarely|sometimes|once} {wrote|talked|thought} about {the sea|the future|old friends|small towns}.",
]


def _fill(template: str, rng: random.Random, pronoun: tuple[str, str]) -> str:
    out, rest = [], template.replace("{P}", pronoun[0]).replace("{p}", pronoun[1])
    while "{" in rest:
        pre, _, tail = rest.partition("{")
        options, _, rest = tail.partition("}")
        out += [pre, rng.choice(options.split("|"))]
    return "".join(out + [rest])


@dataclass
class Person:
    name: str
    facts: dict[str, str]
    docs: int  # documents per round: the person's popularity
    pronoun: tuple[str, str]
    qa: bool   # also gets question-answer documents


class ClosedWorld(Corpus):
    """Biographies of invented people, with a knowledge base of every true fact.

    Args:
        people: number of people (names are unique).
        seed: everything (facts, popularity, paraphrases) follows from it.
        max_docs: documents per round for the most popular people.
        zipf: popularity exponent (see ``docs_for_rank``).
        head: share of people with ``max_docs`` documents.
        min_docs: documents per round for everyone at least (1 for an SLM's world; a partner that "read more"
            sees the long tail more often). Facts, names and the tokenizer do not depend on it.
        rounds: renderings of the whole world, each with fresh paraphrases (a partner that "read more" gets more).
        qa_fraction: share of people who also get one question-answer document per round.
        filler: filler sentences per document.
        val_docs: held-out documents, fresh paraphrases of seen people (round-robin over popularity ranks).
        mentor: add ``mentor``, an entity-valued relation: another person of the world (kind ``entity`` in the KB).
        pronoun_facts: share of a biography's fact sentences after its first whose subject is the person's
            pronoun ("She studied physics."), as in Wikipedia; 0 keeps the full name in every fact sentence.
        compound: probability that each group of ``COMPOUND`` is one sentence ("She was born in Lyon on 5 May
            1950 and holds French citizenship.") instead of one sentence per fact.
        The dense world (configs/world/dense.yaml) uses ``filler: 0``, ``mentor``, ``pronoun_facts`` and
        ``compound`` to put fact values on more tokens than any call budget (docs/world.md, "The dense world"). With the
        defaults the world is the one every earlier result used, draw for draw.
    """

    def __init__(self, people: int = 300, seed: int = 0, max_docs: int = 16, zipf: float = 1.0, head: float = 0.05,
                 min_docs: int = 1, rounds: int = 1, qa_fraction: float = 0.5, filler: int = 2, val_docs: int = 200,
                 mentor: bool = False, pronoun_facts: float = 0.0, compound: float = 0.0):
        if people > len(FIRST) * len(LAST):
            raise UsageError(f"ClosedWorld(people={people}): at most {len(FIRST) * len(LAST)} unique names")
        if rounds < 1 or max_docs < 1 or people < 1 or min_docs < 1:
            raise UsageError("ClosedWorld: people, max_docs, min_docs and rounds must be >= 1")
        if not (0.0 <= pronoun_facts <= 1.0 and 0.0 <= compound <= 1.0):
            raise UsageError(f"ClosedWorld(pronoun_facts={pronoun_facts}, compound={compound}): shares in [0, 1]")
        if mentor and people < 2:
            raise UsageError("ClosedWorld(mentor=True) needs at least 2 people")
        self.n_people, self.seed, self.max_docs, self.zipf, self.head = people, seed, max_docs, zipf, head
        self.min_docs = min_docs
        self.rounds, self.qa_fraction, self.filler, self.val_docs = rounds, qa_fraction, filler, val_docs
        self.mentor, self.pronoun_facts, self.compound = mentor, pronoun_facts, compound
        self.templates = dict(TEMPLATES, **({"mentor": MENTOR["templates"]} if mentor else {}))
        self.people = self._make_people()

    def _make_people(self) -> list[Person]:
        rng = random.Random(f"world-{self.seed}")
        names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], self.n_people)
        cities, fields = sorted(CITIES), sorted(FIELDS)
        people = []
        for rank, name in enumerate(names, 1):  # names are in random order, so rank is independent of facts
            city, field, employer = rng.choice(cities), rng.choice(fields), rng.choice(sorted(EMPLOYERS))
            facts = {"birth_date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1930, 1999)}",
                     "birth_city": city, "nationality": CITIES[city], "university": rng.choice(UNIVERSITIES),
                     "field": field, "profession": FIELDS[field], "employer": employer,
                     "employer_city": EMPLOYERS[employer]}
            docs = self.docs_for_rank(rank)
            people.append(Person(name, facts, docs, rng.choice([("She", "her"), ("He", "him")]),
                                 rng.random() < self.qa_fraction))
        if self.mentor:  # its own stream, so every other fact equals the world without mentors
            rng = random.Random(f"world-{self.seed}-mentor")
            for i, p in enumerate(people):
                p.facts["mentor"] = people[rng.choice([j for j in range(len(people)) if j != i])].name
        return people

    def docs_for_rank(self, rank: int) -> int:
        """Documents per round for the person of popularity rank ``rank`` (1 = most popular): ``max_docs`` for
        the top ``head`` share, then falling as rank^-zipf, at least 1. Defaults (300 people): 25 people with 10-16
        documents (15 with 16), 28 with 5-9, 107 with 2-4, 140 with one."""
        top = max(1.0, self.head * self.n_people)
        return int(min(self.max_docs, max(1, round(self.max_docs * (rank / top) ** -self.zipf))))

    def reads(self, person: Person) -> int:
        """Documents per round this corpus renders for the person (its popularity, raised to ``min_docs``)."""
        return max(person.docs, self.min_docs)

    # -- documents ---------------------------------------------------------------------------------------
    def render(self, person: Person, rng: random.Random) -> str:
        """One biography: every fact once, derived facts after their source, fillers anywhere."""
        groups = [g for g in COMPOUND if rng.random() < self.compound] if self.compound else []
        grouped = {a for g in groups for a in g}
        order = [a for a in self.templates if a not in grouped]
        rng.shuffle(order)
        for derived, source in DERIVED_FROM.items():  # move each derived fact right after a random later slot
            if derived in grouped:
                continue
            order.remove(derived)
            at = rng.randint(order.index(source) + 1, len(order))
            order.insert(at, derived)
        sentences = [rng.choice(self.templates[a]).format(n=person.name, v=person.facts[a]) for a in order]
        for g in groups:
            at = rng.randint(0, len(sentences))  # drawn before the template, as the measured dense world was
            sentences.insert(at, rng.choice(COMPOUND[g]).format(n=person.name, **person.facts))
        if self.pronoun_facts:  # a pronoun subject never opens the bio: the reader must know who "she" is
            sentences[1:] = [person.pronoun[0] + s[len(person.name):]
                             if s.startswith(person.name + " ") and rng.random() < self.pronoun_facts else s
                             for s in sentences[1:]]
        for _ in range(self.filler):
            sentences.insert(rng.randint(1, len(sentences)), _fill(rng.choice(FILLER), rng, person.pronoun))
        return " ".join(sentences)

    def render_qa(self, person: Person, rng: random.Random) -> str:
        attrs = list(self.templates)
        rng.shuffle(attrs)
        questions = dict(QUESTIONS, mentor=MENTOR["question"])
        return " ".join(f"Question: {questions[a].format(n=person.name)} Answer: {person.facts[a]}." for a in attrs)

    def _rng(self, *key) -> random.Random:
        return random.Random("-".join(map(str, (self.seed,) + key)))

    def train_documents(self) -> Iterator[tuple[Person, str]]:
        for r in range(self.rounds):
            for i, p in enumerate(self.people):
                for j in range(self.reads(p)):
                    yield p, self.render(p, self._rng("doc", r, i, j))
                if p.qa:
                    yield p, self.render_qa(p, self._rng("qa", r, i))

    def val_documents(self) -> Iterator[tuple[Person, str]]:
        order = self._rng("val-order").sample(range(len(self.people)), len(self.people))
        for k in range(self.val_docs):
            i = order[k % len(order)]
            yield self.people[i], self.render(self.people[i], self._rng("val", k))

    def documents(self) -> Iterator[str]:
        for _, d in self.train_documents():
            yield d
        for _, d in self.val_documents():
            yield d

    def held_out(self) -> list[bool]:
        n_train = self.rounds * sum(self.reads(p) + p.qa for p in self.people)
        return [False] * n_train + [True] * self.val_docs

    def stat_key(self) -> str:
        return json.dumps([type(self).__name__, self.n_people, self.seed, self.max_docs, self.zipf, self.head,
                           self.min_docs, self.rounds,
                           self.qa_fraction, self.filler, self.val_docs, self.mentor, self.pronoun_facts,
                           self.compound, _source_digest()])

    def bpe_documents(self) -> Iterator[str]:
        """What the BPE is trained on: one biography and one question-answer document per person, so worlds
        that differ only in how much they render (rounds, popularity, min_docs: a partner that read more)
        share one tokenizer, and a same-tokenizer cascade works."""
        for i, p in enumerate(self.people):
            yield self.render(p, self._rng("bpe", i))
            yield self.render_qa(p, self._rng("bpe-qa", i))

    # -- evaluation files -----------------------------------------------------------------------------------
    def kb(self) -> KnowledgeBase:
        words = dict(RELATION_WORDS, mentor=MENTOR["relation_words"])
        attrs = {a: Attribute(relation_words=words[a], derived_from=DERIVED_FROM.get(a),
                              probe=self.templates[a][0].split("{v}")[0].replace("{n}", "{name}").rstrip(),
                              kind="entity" if a == "mentor" else "text")
                 for a in self.templates}
        attrs["birth_date"].pattern = r"\d{1,2} (?:" + "|".join(MONTHS) + r") \d{4}"
        entities = {p.name: Entity(p.name, [p.name], dict(p.facts), p.docs) for p in self.people}
        return KnowledgeBase(attrs, entities)

    def prompts(self) -> list[dict]:
        """Bio prompts, FActScore's "Tell me a bio of" for a base model: the name at a document start."""
        return [{"entity": p.name, "prompt": p.name, "popularity": p.docs} for p in self.people]

    def write(self, out: str | Path) -> Path:
        """The world as files (docs/world.md) in ``out``: new, empty, or a world folder lacy wrote (its marker,
        ``lacy_world.json``, lists the files); anything else is refused (UsageError), never overwritten."""
        out = Path(out)
        check_replaceable(out, WORLD_MARKER)
        out.mkdir(parents=True, exist_ok=True)
        files = ["kb.json", "prompts.jsonl", "probes.jsonl", "train.jsonl", "val.jsonl"]
        write_marker(out, files, WORLD_MARKER, complete=False)  # first: a write that stops halfway is still lacy's
        self.kb().save(out / "kb.json")
        _write_jsonl(out / "prompts.jsonl", self.prompts())
        _write_jsonl(out / "probes.jsonl", self.kb().probes())
        _write_jsonl(out / "train.jsonl", ({"text": d} for _, d in self.train_documents()))
        _write_jsonl(out / "val.jsonl", ({"entity": p.name, "text": d} for p, d in self.val_documents()))
        write_marker(out, files, WORLD_MARKER)  # complete: with each file's digest (an edit later is the user's)
        return out


def _write_jsonl(path: Path, rows) -> None:
    with atomic_file(path) as f:  # whole or not at all (a full disk leaves the previous file)
        for r in rows:
            f.write((json.dumps(r) + "\n").encode("utf-8"))


def _source_digest() -> str:
    """The generator's own source is part of the cache key: editing a template changes the corpus."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
