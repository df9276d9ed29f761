"""A knowledge base file and the exact claim checker built on it (FactScore without a judge model).

File format (JSON, ``"format": "lacy-kb/1"``), generic so any world written in it can be evaluated::

    {"format": "lacy-kb/1",
     "attributes": {"birth_city": {"relation_words": ["born in", ...],   # words that express the relation
                                   "derived_from": null,               # attribute it follows from, if any
                                   "probe": "{name} was born in",      # leakage probe form (optional)
                                   "pattern": null}, ...},             # regex for open-class values (dates)
     "entities": {"Alma Brandt": {"aliases": ["Alma Brandt"], "popularity": 3,
                                  "attributes": {"birth_city": "Lyon", ...}}, ...}}

Claims are read from text with the KB alone (values, aliases, relation words), never with a generator's
templates. Rules:
- a sentence's claims belong to the entity named in it (the first alias), else to the last entity named
  before it, else to the prompt's subject;
- a value is any string that is some entity's value of some attribute, or matches an attribute's pattern;
  overlapping candidates resolve to the leftmost, then longest;
- the attribute is the one the value can belong to if only one can; else the candidate whose relation word
  ends nearest before the value in the sentence (after it, if none precedes);
- **ambiguous** (several candidates, no relation word): the claim is supported when the value is the
  entity's true value for any candidate attribute, and it is flagged ``ambiguous`` (reported as a count).
"""
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lacy.errors import UsageError

FORMAT = "lacy-kb/1"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Attribute:
    relation_words: list[str]
    derived_from: str | None = None
    probe: str | None = None
    pattern: str | None = None


@dataclass
class Entity:
    name: str
    aliases: list[str]
    attributes: dict[str, str]
    popularity: int = 1


@dataclass
class Claim:
    entity: str
    attribute: str
    value: str
    start: int  # character span of the value in the text
    end: int
    supported: bool
    ambiguous: bool = False


@dataclass
class KnowledgeBase:
    attributes: dict[str, Attribute]
    entities: dict[str, Entity]
    _index: dict = field(default=None, repr=False, compare=False)

    # -- file ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        data = {"format": FORMAT, "attributes": {k: asdict(a) for k, a in self.attributes.items()},
                "entities": {k: {"aliases": e.aliases, "popularity": e.popularity, "attributes": e.attributes}
                             for k, e in self.entities.items()}}
        Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "KnowledgeBase":
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"knowledge base {str(path)!r} does not exist; write one with "
                             "`python -m lacy.world --out DIR` or fix the path")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise UsageError(f"{path}: format {data.get('format')!r} is not {FORMAT!r} (see lacy/kb.py)")
        try:
            attrs = {k: Attribute(**a) for k, a in data["attributes"].items()}
            ents = {k: Entity(k, e.get("aliases") or [k], e["attributes"], e.get("popularity", 1))
                    for k, e in data["entities"].items()}
        except (KeyError, TypeError) as e:
            raise UsageError(f"{path}: malformed knowledge base ({e}); see the format in lacy/kb.py") from None
        for name, e in ents.items():
            unknown = set(e.attributes) - set(attrs)
            if unknown:
                raise UsageError(f"{path}: entity {name!r} has undeclared attributes {sorted(unknown)}")
        return cls(attrs, ents)

    # -- derived views ------------------------------------------------------------------------------------
    def probes(self) -> list[dict]:
        """Leakage probes: a sentence start that a true fact completes (``<name> was born in`` -> city)."""
        return [{"entity": e.name, "attribute": a, "prompt": self.attributes[a].probe.format(name=e.name),
                 "answer": v, "popularity": e.popularity}
                for e in self.entities.values() for a, v in e.attributes.items() if self.attributes[a].probe]

    def _build_index(self) -> dict:
        values: dict[str, set[str]] = {}
        for e in self.entities.values():
            for a, v in e.attributes.items():
                values.setdefault(v, set()).add(a)
        alias = {al: e.name for e in self.entities.values() for al in e.aliases}
        alt = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        pattern_attr = [a for a, at in self.attributes.items() if at.pattern]
        value_parts = [alt(values)] + [f"(?P<p_{i}>{self.attributes[a].pattern})" for i, a in enumerate(pattern_attr)]
        relation = {a: re.compile(r"\b(?:" + alt(at.relation_words) + r")\b", re.IGNORECASE)
                    for a, at in self.attributes.items() if at.relation_words}
        return {"values": values, "alias": alias, "names": re.compile(r"\b(?:" + alt(alias) + r")\b"),
                "value_re": re.compile(r"\b(?:" + "|".join(value_parts) + r")\b"), "relation": relation,
                "pattern_attr": pattern_attr}

    @property
    def index(self) -> dict:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    # -- the checker --------------------------------------------------------------------------------------
    def claims(self, text: str, subject: str | None = None) -> list[Claim]:
        """Atomic (entity, attribute, value) claims in ``text``, each verified against the KB."""
        ix, out, current = self.index, [], subject
        name_spans = [(m.start(), m.end()) for m in ix["names"].finditer(text)]
        cuts = [m.end() for m in _SENTENCE_END.finditer(text)  # a name like "Dr. Voss" is never cut
                if not any(a < m.start() < b for a, b in name_spans)]
        for start, end in zip([0] + cuts, cuts + [len(text)]):
            sentence = text[start:end]
            names = [(m.start(), m.end(), ix["alias"][m.group()]) for m in ix["names"].finditer(sentence)]
            owner = names[0][2] if names else current
            if names:
                current = names[-1][2]
            for m in ix["value_re"].finditer(sentence):
                if any(a < m.end() and m.start() < b for a, b, _ in names) or owner is None:
                    continue
                claim = self._verdict(owner, m, sentence)
                if claim:
                    claim.start, claim.end = start + m.start(), start + m.end()
                    out.append(claim)
        return out

    def _verdict(self, entity: str, m: re.Match, sentence: str) -> Claim | None:
        ix, value = self.index, m.group()
        candidates = set(ix["values"].get(value, ()))
        for i, a in enumerate(ix["pattern_attr"]):
            if m.groupdict().get(f"p_{i}"):
                candidates.add(a)
        if not candidates:
            return None
        attribute, ambiguous = self._relation(sorted(candidates), sentence, m.start())
        truth = self.entities[entity].attributes
        if attribute is None:
            return Claim(entity, "|".join(sorted(candidates)), value, 0, 0,
                         any(truth.get(a) == value for a in candidates), ambiguous=True)
        return Claim(entity, attribute, value, 0, 0, truth.get(attribute) == value, ambiguous)

    def _relation(self, candidates: list[str], sentence: str, at: int) -> tuple[str | None, bool]:
        if len(candidates) == 1:
            return candidates[0], False
        best = None  # (distance, attribute): relation word ending before the value wins; then after it
        for a in candidates:
            rx = self.index["relation"].get(a)
            for m in rx.finditer(sentence) if rx else ():
                d = at - m.end() if m.end() <= at else 10**6 + m.start() - at
                if best is None or d < best[0]:
                    best = (d, a)
        return (best[1], False) if best else (None, True)
