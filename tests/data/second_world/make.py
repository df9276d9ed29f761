"""The second world: orchestra musicians, written in ``lacy-kb/1`` by this script alone (not by ``lacy.worlds.closed_world``).

Another domain than the default world, with what that world never has: fact sentences whose subject is a
pronoun ("She plays the oboe."), an entity-valued relation (``teacher``: another musician of the world, so a
name stands as the object of a relation: "She was a pupil of Bo Dahl."), two year-valued relations with the
same pattern (``birth_year``, ``debut_year``; one musician's debut year is another's birth year) and
common-noun values (instruments, orchestra sections). Every document row carries the generator's own
fact-value spans: ``"facts": [[start, end, attribute], ...]`` (character offsets into ``text``), the truth the
checker is tested against and what a fact-flag measurement can read directly.

    python tests/data/second_world/make.py     # rewrites the files next to it (deterministic)
"""
import json
import random
from pathlib import Path

FIRST = "Amara Bastien Corinna Desmond Elodie Florian Giselle Henrik Isolde Julian Katya Leopold Margit Nils".split()
LAST = "Aldana Brekke Cavell Dunstan Esterly Ferrand Galloway Hestvik Iliescu Jaskolski Lindell Mercadier".split()
INSTRUMENTS = {"cello": "strings", "viola": "strings", "harp": "strings", "double bass": "strings",
               "oboe": "woodwinds", "bassoon": "woodwinds", "flute": "woodwinds", "clarinet": "woodwinds"}
ORCHESTRAS = ["Halden Philharmonic", "Vesper Chamber Orchestra", "Northsea Symphony", "Calder Opera Orchestra"]
TOWNS = ["Arlen", "Brisa", "Corvo", "Dunmere", "Elsinor", "Fairlee"]

# {S}: the subject as it stands in that sentence (the full name, or a pronoun after the first sentence);
# {n}: always the name. The first template of each attribute is its probe form (up to the value).
TEMPLATES = {
    "birth_year": ["{S} was born in {v}.", "{S} was born in the year {v}.", "Records say {S} was born in {v}."],
    "hometown": ["{S} grew up in {v}.", "{S} was raised in {v}.", "The hometown of {n} is {v}."],
    "teacher": ["{S} was a pupil of {v}.", "{S} studied under {v} for years.", "{S} was taught by {v}.",
                "The teacher of {n} was {v}."],
    "instrument": ["{S} plays the {v}.", "{S} has played the {v} since childhood.", "The instrument of {n} is the {v}."],
    "section": ["{S} sits in the {v} section.", "{S} belongs to the {v} section."],
    "orchestra": ["{S} is a member of the {v}.", "{S} joined the {v}.", "{S} performs with the {v}."],
    "debut_year": ["{S} debuted in {v}.", "{S} gave a first concert in {v}.", "The debut of {n} came in {v}."],
}
RELATION_WORDS = {
    "birth_year": ["born"], "hometown": ["grew up in", "raised in", "hometown"],
    "teacher": ["pupil of", "studied under", "taught by", "teacher"],
    "instrument": ["plays the", "played the", "instrument"], "section": ["section"],
    "orchestra": ["member of", "joined", "performs with"], "debut_year": ["debuted", "debut", "first concert"],
}
PATTERNS = {"birth_year": r"\d{4}", "debut_year": r"\d{4}"}
DERIVED_FROM = {"section": "instrument"}
FILLER = ["{P} liked quiet evenings.", "Colleagues remember {p} as patient.", "{P} often wrote about the sea.",
          "Those were busy seasons for {p}."]


def people(n: int = 14, seed: int = 15) -> list[dict]:
    rng = random.Random(seed)
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], n)
    out = []
    for i, name in enumerate(names):
        instrument = rng.choice(sorted(INSTRUMENTS))
        born = rng.randint(1950, 1975)
        out.append({"name": name, "pronoun": rng.choice([("She", "her"), ("He", "him")]), "popularity": 1 + i % 4,
                    "facts": {"birth_year": str(born), "hometown": rng.choice(TOWNS),
                              "teacher": names[(i + 1 + rng.randrange(n - 1)) % n],
                              "instrument": instrument, "section": INSTRUMENTS[instrument],
                              "orchestra": rng.choice(ORCHESTRAS), "debut_year": str(born + rng.randint(10, 18))}})
    return out


def render(person: dict, facts: dict, rng: random.Random) -> dict:
    """One biography of ``person`` stating ``facts`` (true or not), with the span of every value."""
    order = [a for a in TEMPLATES if a != "section"]
    rng.shuffle(order)
    order.insert(order.index("instrument") + 1, "section")  # the derived fact follows its source
    order.insert(rng.randint(2, len(order)), "filler")
    text, spans = "", []
    for i, attr in enumerate(order):
        if attr == "filler":
            text += rng.choice(FILLER).format(P=person["pronoun"][0], p=person["pronoun"][1]) + " "
            continue
        template = rng.choice(TEMPLATES[attr])
        subject = person["name"] if i == 0 or rng.random() < 0.4 else person["pronoun"][0]
        if not template.startswith("{S}") and subject == person["pronoun"][0]:
            subject = subject.lower()  # "Records say she was born in 1950."
        head, tail = template.split("{v}")
        head = head.format(S=subject, n=person["name"])
        spans.append([len(text) + len(head), len(text) + len(head) + len(facts[attr]), attr])
        text += head + facts[attr] + tail + " "
    return {"entity": person["name"], "text": text.strip(), "facts": spans}


def swapped(person: dict, everyone: list[dict]) -> dict:
    """The person's facts, each replaced by another musician's value that is not the true one."""
    out = {}
    for attr, value in person["facts"].items():
        others = [p["facts"][attr] for p in everyone if p["facts"][attr] not in (value, person["name"])]
        out[attr] = others[len(out) % len(others)]
    return out


def kb(everyone: list[dict]) -> dict:
    attrs = {a: {"relation_words": RELATION_WORDS[a], "derived_from": DERIVED_FROM.get(a),
                 "probe": TEMPLATES[a][0].split("{v}")[0].replace("{S}", "{name}").rstrip(),
                 "pattern": PATTERNS.get(a), "kind": "entity" if a == "teacher" else "text"} for a in TEMPLATES}
    return {"format": "lacy-kb/1", "attributes": attrs,
            "entities": {p["name"]: {"aliases": [p["name"]], "popularity": p["popularity"], "attributes": p["facts"]}
                         for p in everyone}}


def write(out: Path) -> None:
    everyone = people()
    base = kb(everyone)
    (out / "kb.json").write_text(json.dumps(base, indent=1) + "\n")
    rows = lambda name, items: (out / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    rows("prompts.jsonl", ({"entity": p["name"], "prompt": p["name"], "popularity": p["popularity"]}
                           for p in everyone))
    rows("probes.jsonl", ({"entity": p["name"], "attribute": a, "prompt": spec["probe"].format(name=p["name"]),
                           "answer": p["facts"][a], "popularity": p["popularity"]}
                          for p in everyone for a, spec in base["attributes"].items()))
    rows("train.jsonl", (render(p, p["facts"], random.Random(f"train-{k}-{i}"))
                         for k in range(6) for i, p in enumerate(everyone)))
    rows("val.jsonl", (render(p, p["facts"], random.Random(f"val-{i}")) for i, p in enumerate(everyone)))


if __name__ == "__main__":
    write(Path(__file__).parent)
