"""A knowledge base file and the exact claim checker built on it (FactScore without a judge model).

File format (JSON, ``"format": "lacy-kb/1"``; every field in docs/world.md), generic so any world written in
it can be evaluated::

    {"format": "lacy-kb/1",
     "attributes": {"birth_city": {"relation_words": ["born in", ...],   # words that express the relation
                                   "derived_from": null,               # attribute it follows from, if any
                                   "probe": "{name} was born in",      # leakage probe form (optional)
                                   "pattern": null,                    # regex for open-class values (dates)
                                   "kind": "text"}, ...},              # "entity": the value is an entity's name
     "entities": {"Alma Brandt": {"aliases": ["Alma Brandt"], "popularity": 3,
                                  "attributes": {"birth_city": "Lyon", ...}}, ...}}

Claims are read from text with the KB alone (values, aliases, relation words), never with a generator's
templates. Rules (text, not a parse: fast and the same on every machine):

- **who a claim is about**: sentences are cut into clauses (at ``;`` and at ``, and|but|while|whereas``). A
  clause's claims belong to the entity named in it that *opens* it: the first name that no relation word
  precedes in the clause and that does not follow a preposition (``of``, ``with``, ``to`` ...), except the
  possessor in "the <relation word> of <name>" ("The birthplace of Bo Dahl is ..."). A name that is the object
  of a relation ("a student of Bo Dahl", "worked with Bo Dahl") never takes over. A clause no name opens
  (pronouns: "She works at Acme") belongs to the last entity that opened one, else to the bio's ``subject``
  (None: the first entity the text names). A relative clause (``, who|whose|whom ...``) is about the name just
  before it ("trained under Bo Dahl, who was born in 1930") and leaves the sentence's owner as it was;
- **a value** is any string that is some entity's value of some attribute, or matches an attribute's pattern;
  overlapping candidates resolve to the leftmost, then longest. Its candidate attributes are every attribute
  that has the value for some entity **and** every attribute whose pattern it matches;
- **relation words** bind with content: a relation word made only of function words (``of``, ``in``, ``the``
  ...: :data:`FUNCTION_WORDS`) never binds a value on its own (``KnowledgeBase.load`` warns, one line per
  attribute), and a relation word inside a longer one of another attribute ("of" in "pupil of") is not read;
- **entity-valued relations** (``kind: entity``: advisor, spouse, teacher): a name is such a value when the
  relation word nearest before it in its clause is one of that relation's words ("student of Bo Dahl",
  "a pupil of Bo Dahl", "Under the guidance of Bo Dahl"). The possessor rule (above) needs "the" (and up to
  two words) before the relation word, no preposition before that, and no name opening the clause first ("The
  teacher of Bo Dahl was Mara Voss", "Who was the teacher of Bo Dahl?": about Bo Dahl); after an opener, "Ann
  was the teacher of Bo Dahl" is no claim (the relation word does not say which way round it reads);
- the attribute is the one the value can belong to if only one can; else the candidate whose relation word
  ends nearest before the value in the sentence (after it, if none precedes);
- **ambiguous** (several candidates, no relation word): the claim is supported when the value is the
  entity's true value for any candidate attribute, and it is flagged ``ambiguous`` (reported as a count).

Limits of reading text without a parse: a name after a verb that is no relation word ("she met Bo Dahl in
1971") opens its clause, and a pronoun that refers to someone other than the last opener is read as the opener.

Bad files raise :class:`lacy.errors.UsageError` naming the file, line and field (``KnowledgeBase.load``).
"""
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lacy.data.corpus import read_utf8
from lacy.errors import UsageError
from lacy.io.atomic import write_atomic
from lacy.io.unique_keys import DuplicateKey, loads_json

FORMAT = "lacy-kb/1"
KINDS = ("text", "entity")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_END = re.compile(r";\s*|,\s+(?:and|but|while|whereas)\s+|(?P<relative>,\s+(?=(?:who|whose|whom)\s))")
# Words that carry no relation of their own: a relation word made only of these binds nothing ("of" would make
# every "a recipient of the ..." a claim of that relation)
FUNCTION_WORDS = frozenset("a an the of in at on to by for from with as into onto about and or than its his her "
                           "their is was".split())
# "the <relation word>" not after a preposition: with "of <name>" after it, the possessor is whom it is about
_DEFINITE = re.compile(r"\bthe\s+(?:[^\W\d_]+\s+){0,2}$", re.IGNORECASE)  # "the (famous) teacher"
# a name right after one of these is an object ("worked with Bo Dahl"), never the clause's owner
_OBJECT_MARKER = re.compile(r"\b(?:of|with|to|by|from|under|for|and|or|about|alongside|than|like|beside|"
                            r"besides|between|among|against|at|in|on|into|as)\s+$", re.IGNORECASE)


@dataclass
class Attribute:
    relation_words: list[str]
    derived_from: str | None = None
    probe: str | None = None
    pattern: str | None = None
    kind: str = "text"  # "entity": the value is the name of another entity of the KB (advisor, spouse)


def function_word_only(word: str) -> bool:
    """True for a relation word made only of :data:`FUNCTION_WORDS` ("of", "in the"), which binds no value."""
    return all(w in FUNCTION_WORDS for w in word.lower().split())


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


def _line(raw: str, *keys: str) -> int:
    """Line of ``keys`` (a path of JSON object keys, searched in order) in the file's text; best effort."""
    pos = 0
    for k in keys:
        at = raw.find(json.dumps(k, ensure_ascii=False), pos)
        if at < 0:
            break
        pos = at
    return raw.count("\n", 0, pos) + 1


def _read_json(path: Path, what: str) -> tuple[object, str]:
    """(parsed JSON, raw text) of a file, or a ``UsageError`` naming the file and line of what is wrong."""
    if not path.is_file():
        raise UsageError(f"{path}: {what} does not exist; write a world with `python -m lacy.world --out DIR` "
                         "or fix the path (format: docs/world.md)")
    raw = read_utf8(path)  # a byte that is not UTF-8: UsageError naming the line
    try:
        return loads_json(raw), raw
    except DuplicateKey as e:
        at = [m.start() for m in re.finditer(re.escape(json.dumps(e.key, ensure_ascii=False)) + r"\s*:", raw)]
        where = f"{path}:{raw.count(chr(10), 0, at[1]) + 1}" if len(at) == 2 else str(path)
        raise UsageError(f"{where}: the key {e.key!r} is written twice in one object; JSON readers keep the last "
                         "and drop the first silently: keep one (format: docs/world.md)") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}); the file may be "
                         "truncated: write it again (format: docs/world.md)") from None


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
        write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "KnowledgeBase":
        """Read and validate a ``lacy-kb/1`` file. Raises ``UsageError("<file>:<line>: <field>: ...")`` for a
        missing, non-UTF-8, truncated or malformed file (a null value, an undeclared attribute, a bad regex)."""
        path = Path(path)
        data, raw = _read_json(path, "knowledge base")

        def bad(keys: tuple, problem: str):
            where = keys[0] + "".join(f"[{k!r}]" if i == 1 else f".{k}" for i, k in enumerate(keys[1:], 1))
            raise UsageError(f"{path}:{_line(raw, *keys)}: {where}: {problem} (format: docs/world.md)")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else data
            bad(("format",), f"is {got!r}, not {FORMAT!r}; write the file in the {FORMAT} format")
        for key in ("attributes", "entities"):
            if not isinstance(data.get(key), dict) or not data[key]:
                bad((key,), "must be a non-empty JSON object")
        attrs = {}
        for name, a in data["attributes"].items():
            if not isinstance(a, dict):
                bad(("attributes", name), "must be an object with relation_words (and optional fields)")
            unknown = set(a) - {"relation_words", "derived_from", "probe", "pattern", "kind"}
            if unknown:
                bad(("attributes", name, sorted(unknown)[0]), "unknown field; use relation_words, derived_from, "
                                                              "probe, pattern, kind")
            words = a.get("relation_words")
            if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
                bad(("attributes", name, "relation_words"), "must be a list of non-empty strings")
            for opt in ("derived_from", "probe", "pattern"):
                if a.get(opt) is not None and not isinstance(a[opt], str):
                    bad(("attributes", name, opt), "must be a string or null")
            if a.get("derived_from") is not None and a["derived_from"] not in data["attributes"]:
                bad(("attributes", name, "derived_from"), f"{a['derived_from']!r} is not a declared attribute")
            if a.get("probe") is not None and "{name}" not in a["probe"]:
                bad(("attributes", name, "probe"), "must contain {name} (e.g. \"{name} was born in\")")
            if a.get("pattern") is not None:
                try:
                    re.compile(a["pattern"])
                except re.error as e:
                    bad(("attributes", name, "pattern"), f"is not a regular expression ({e})")
            if a.get("kind", "text") not in KINDS:
                bad(("attributes", name, "kind"), f"is {a['kind']!r}; use one of {KINDS}")
            generic = [w for w in words if function_word_only(w)]
            if a.get("kind") == "entity" and len(generic) == len(words):
                bad(("attributes", name, "relation_words"), "an entity-valued relation needs relation words with "
                                                            "content (e.g. \"pupil of\"), not only function words")
            if generic:
                print(f"lacy: {path}:{_line(raw, 'attributes', name, 'relation_words')}: attributes[{name!r}]"
                      f".relation_words: {', '.join(map(repr, generic))} only function words, which bind no value; "
                      "write a phrase with content (e.g. \"based in\")", file=sys.stderr)
            attrs[name] = Attribute(**a)
        ents = {}
        for name, e in data["entities"].items():
            if not isinstance(e, dict) or not isinstance(e.get("attributes"), dict):
                bad(("entities", name), "must be an object with an attributes object")
            aliases = e.get("aliases") or [name]
            if not isinstance(aliases, list) or not all(isinstance(x, str) and x.strip() for x in aliases):
                bad(("entities", name, "aliases"), "must be a list of non-empty strings")
            pop = e.get("popularity", 1)
            if not isinstance(pop, int) or isinstance(pop, bool) or pop < 0:
                bad(("entities", name, "popularity"), f"is {pop!r}; use a whole number >= 0 (documents read)")
            for a, v in e["attributes"].items():
                if a not in attrs:
                    bad(("entities", name, "attributes", a), "undeclared attribute; declare it under attributes")
                if not isinstance(v, str) or not v.strip():
                    bad(("entities", name, "attributes", a), f"is {v!r}; a value must be a non-empty string "
                                                             "(leave the attribute out when it is unknown)")
                if attrs[a].kind == "entity" and v not in data["entities"]:
                    bad(("entities", name, "attributes", a), f"{v!r} is not an entity of this file (an entity-"
                                                             "valued relation names an entity by its key)")
            ents[name] = Entity(name, aliases, dict(e["attributes"]), pop)
        owner: dict[str, str] = {}
        for name, e in ents.items():
            for alias in e.aliases:
                if owner.setdefault(alias, name) != name:  # the checker could not tell whom the name means
                    bad(("entities", name, "aliases"), f"{alias!r} is also an alias of {owner[alias]!r}; a name "
                                                       "must mean one entity: give it to one of them")
        return cls(attrs, ents)

    # -- derived views ------------------------------------------------------------------------------------
    def probes(self) -> list[dict]:
        """Leakage probes: a sentence start that a true fact completes (``<name> was born in`` -> city; for an
        entity-valued relation the answer is the other entity's name)."""
        return [{"entity": e.name, "attribute": a, "prompt": self.attributes[a].probe.format(name=e.name),
                 "answer": v, "popularity": e.popularity}
                for e in self.entities.values() for a, v in e.attributes.items() if self.attributes[a].probe]

    def _build_index(self) -> dict:
        values: dict[str, set[str]] = {}
        for e in self.entities.values():
            for a, v in e.attributes.items():
                if self.attributes[a].kind == "text":
                    values.setdefault(v, set()).add(a)
        alias = {al: e.name for e in self.entities.values() for al in e.aliases}
        alt = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        bounded = lambda body: re.compile(r"\b(?:" + body + r")\b")
        patterns = {a: bounded(at.pattern) for a, at in self.attributes.items() if at.pattern}
        content = {a: [w for w in at.relation_words if not function_word_only(w)]  # a bare "of" binds nothing
                   for a, at in self.attributes.items()}
        relation = {a: re.compile(r"\b(?:" + alt(words) + r")\b", re.IGNORECASE)
                    for a, words in content.items() if words}
        return {"values": values, "alias": alias, "names": bounded(alt(alias)),
                "value_re": [bounded(alt(values))] if values else [], "patterns": patterns,
                "full_patterns": {a: re.compile(at.pattern) for a, at in self.attributes.items() if at.pattern},
                "relation": relation, "entity_attrs": [a for a, at in self.attributes.items() if at.kind == "entity"]}

    @property
    def index(self) -> dict:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    # -- the checker --------------------------------------------------------------------------------------
    def _sentences(self, text: str) -> list[tuple[int, int]]:
        name_spans = [(m.start(), m.end()) for m in self.index["names"].finditer(text)]
        cuts = [m.end() for m in _SENTENCE_END.finditer(text)  # a name like "Dr. Voss" is never cut
                if not any(a < m.start() < b for a, b in name_spans)]
        return list(zip([0] + cuts, cuts + [len(text)]))

    def relation_spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, attribute) of every relation word in ``text``, by position; a match inside a longer one
        ("teacher" in "music teacher" of another attribute) is left out: the longer phrase is the relation."""
        found = sorted(((m.start(), m.end(), a) for a, rx in self.index["relation"].items()
                        for m in rx.finditer(text)), key=lambda x: (x[0], -x[1]))
        inside = lambda w, o: o[0] <= w[0] and w[1] <= o[1] and o[1] - o[0] > w[1] - w[0]
        return [w for w in found if not any(inside(w, o) for o in found)]

    def _read_clause(self, clause: str) -> tuple[str | None, list[tuple[int, int, str, str]]]:
        """(the entity that opens the clause or None, [(start, end, entity, entity-valued attribute)] of the
        names that are values of an entity-valued relation), positions within the clause."""
        ix, opener, values = self.index, None, []
        words = self.relation_spans(clause)
        for m in ix["names"].finditer(clause):
            before = [w for w in words if w[1] <= m.start()]
            # "The birthplace of Bo Dahl", "What is the profession of Bo Dahl": the possessor, whom the clause is
            # about. After a name opened the clause, "Ann was the teacher of Bo Dahl" could go either way round
            # (teacher / pupil of), so it is no claim; "a pupil of Bo Dahl", "Under the guidance of Bo Dahl": a value
            possessor = unread = False
            if before and re.fullmatch(r"\s+of\s+", clause[before[-1][1]:m.start()]):
                head = _DEFINITE.search(clause[:before[-1][0]])
                if head is not None and not _OBJECT_MARKER.search(clause[:head.start()]):
                    possessor, unread = opener is None, opener is not None
            if unread:
                continue
            if not possessor and before and before[-1][2] in ix["entity_attrs"]:
                values.append((m.start(), m.end(), ix["alias"][m.group()], before[-1][2]))
                continue
            if opener is None and (possessor or not before and not _OBJECT_MARKER.search(clause[:m.start()])):
                opener = ix["alias"][m.group()]
        return opener, values

    def _clauses(self, text: str, subject: str | None):
        """(sentence start, sentence end, clause start, clause end, owner, entity values) per clause."""
        current = self.subject(text) if subject is None else subject
        for s, e in self._sentences(text):
            found = list(_CLAUSE_END.finditer(text[s:e]))
            cuts, relative = [s + m.end() for m in found], [False] + [m.group("relative") is not None for m in found]
            for (a, b), rel in zip(zip([s] + cuts, cuts + [e]), relative):
                opener, values = self._read_clause(text[a:b])
                if rel:  # ", who ...": about the name just before it; the sentence's owner stays who it was
                    named = list(self.index["names"].finditer(text, s, a))
                    yield s, e, a, b, (self.index["alias"][named[-1].group()] if named else current), values
                    continue
                current = opener or current
                yield s, e, a, b, current, values

    def subject(self, text: str) -> str | None:
        """Whom a document is about when nobody says: the first entity it names (a biography opens with its
        subject, as a bio prompt does); None when it names nobody."""
        first = self.index["names"].search(text)
        return self.index["alias"][first.group()] if first else None

    def clauses(self, text: str, subject: str | None = None) -> list[tuple[int, int, str | None]]:
        """(start, end, owner) of each clause of ``text``: whom its claims are about (the module's rules).
        ``subject``: whom the text is about (the bio's subject); None = the first entity the text names."""
        return [(a, b, owner) for _, _, a, b, owner, _ in self._clauses(text, subject)]

    def claims(self, text: str, subject: str | None = None) -> list[Claim]:
        """Atomic (entity, attribute, value) claims in ``text``, each verified against the KB; ``start:end``
        is the value's character span. ``subject`` as in ``clauses``."""
        ix, out = self.index, []
        for sentence_start, sentence_end, a, b, owner, entity_values in self._clauses(text, subject):
            if owner is None:
                continue
            clause, sentence = text[a:b], text[sentence_start:sentence_end]
            names = [(m.start(), m.end()) for m in ix["names"].finditer(clause)]
            found = [(s, e, attr, entity) for s, e, entity, attr in entity_values]
            spans = sorted({(m.start(), m.end()) for rx in ix["value_re"] + list(ix["patterns"].values())
                            for m in rx.finditer(clause)}, key=lambda x: (x[0], -x[1]))
            last = -1
            for s, e in spans:  # leftmost, then longest; a name is never a text value
                if s >= last and not any(ns < e and s < ne for ns, ne in names):
                    found.append((s, e, None, None))
                    last = e
            for s, e, attr, entity in sorted(found, key=lambda x: x[0]):
                if attr is not None:  # an entity-valued relation: true when it names the right entity
                    truth = self.entities[owner].attributes.get(attr)
                    claim = Claim(owner, attr, clause[s:e], 0, 0, truth == entity)
                else:
                    claim = self._verdict(owner, clause[s:e], sentence, a - sentence_start + s)
                claim.start, claim.end = a + s, a + e
                out.append(claim)
        return out

    def _verdict(self, entity: str, value: str, sentence: str, at: int) -> Claim:
        ix = self.index
        candidates = set(ix["values"].get(value, ()))
        candidates |= {a for a, rx in ix["full_patterns"].items() if rx.fullmatch(value)}
        attribute, ambiguous = self._relation(sorted(candidates), sentence, at)
        truth = self.entities[entity].attributes
        if attribute is None:
            return Claim(entity, "|".join(sorted(candidates)), value, 0, 0,
                         any(truth.get(a) == value for a in candidates), ambiguous=True)
        return Claim(entity, attribute, value, 0, 0, truth.get(attribute) == value, ambiguous)

    def _relation(self, candidates: list[str], sentence: str, at: int) -> tuple[str | None, bool]:
        if len(candidates) == 1:
            return candidates[0], False
        best = None  # (distance, attribute): relation word ending before the value wins; then after it
        for start, end, a in self.relation_spans(sentence):
            if a in candidates:
                d = at - end if end <= at else 10**6 + start - at
                if best is None or d < best[0]:
                    best = (d, a)
        return (best[1], False) if best else (None, True)
