import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.worlds.kb import KnowledgeBase
from lacy.worlds.fact_masks import fact_share
from lacy.worlds.folder import read_world
from lacy.worlds.closed_world import CITIES, DERIVED_FROM, EMPLOYERS, FIELDS, FILLER, TEMPLATES, ClosedWorld, _fill


def test_generation_is_deterministic():
    a, b = ClosedWorld(people=30, seed=3), ClosedWorld(people=30, seed=3)
    assert list(a.documents()) == list(b.documents())
    assert list(ClosedWorld(people=30, seed=4).documents()) != list(a.documents())
    # more rounds add paraphrases, min_docs lifts the long tail; facts and the tokenizer's text stay the same
    more = ClosedWorld(people=30, seed=3, rounds=3)
    reader = ClosedWorld(people=30, seed=3, min_docs=4)
    assert list(more.bpe_documents()) == list(a.bpe_documents()) == list(reader.bpe_documents())
    assert reader.kb() == a.kb()  # popularity in the KB is the SLM world's; the partner only reads more
    assert all(reader.reads(p) >= 4 for p in reader.people)
    assert sum(1 for _ in reader.train_documents()) == sum(max(p.docs, 4) + p.qa for p in reader.people)
    assert len(list(more.train_documents())) == 3 * len(list(a.train_documents()))
    assert len(set(d for _, d in more.train_documents())) > 2 * len(list(a.train_documents()))  # fresh wording


def test_people_facts_and_popularity():
    w = ClosedWorld(people=300)
    assert len({p.name for p in w.people}) == 300
    docs = [p.docs for p in w.people]
    assert docs == sorted(docs, reverse=True) and docs[0] == 16 and docs[-1] == 1
    assert sum(d == 1 for d in docs) > 100 and sum(d >= 10 for d in docs) >= 15  # long tail, popular head
    for p in w.people:  # derived attributes follow from their sources for everyone
        assert p.facts["nationality"] == CITIES[p.facts["birth_city"]]
        assert p.facts["profession"] == FIELDS[p.facts["field"]]
        assert p.facts["employer_city"] == EMPLOYERS[p.facts["employer"]]
    assert len({p.facts["birth_city"] for p in w.people}) > 20  # facts vary across people


def test_every_fact_once_derived_after_source_and_filler_states_no_fact():
    w = ClosedWorld(people=40, seed=1)
    kb = w.kb()
    for person, doc in list(w.train_documents())[:60]:
        claims = kb.claims(doc, subject=person.name)
        if doc.startswith("Question:"):
            continue
        assert sorted(c.attribute for c in claims) == sorted(TEMPLATES) and all(c.supported for c in claims)
        where = {c.attribute: c.start for c in claims}
        assert all(where[d] > where[s] for d, s in DERIVED_FROM.items())
        for sentence in doc.split(". "):  # pronouns only in filler; fact sentences name the person in full
            assert (person.name in sentence) != (sentence.split()[0] in ("She", "He", "It", "That", "Those",
                                                                         "Friends", "Colleagues", "Neighbours", "Old"))
    rng = __import__("random").Random(0)
    for _ in range(200):
        assert kb.claims(_fill(rng.choice(FILLER), rng, ("She", "her")), subject=w.people[0].name) == []


DENSE = dict(mentor=True, pronoun_facts=0.5, compound=0.8, filler=0)  # configs/world/dense.yaml


def test_the_default_world_is_the_one_earlier_results_used():
    """New knobs off = the world of every earlier result, draw for draw (digest of its text and facts taken
    from the code before the knobs existed), and a mentor changes no other fact."""
    import hashlib

    def digest(w):
        h = hashlib.sha256()
        for d in list(w.documents()) + list(w.bpe_documents()):
            h.update(d.encode())
        h.update(repr(sorted((p.name, sorted(p.facts.items())) for p in w.people)).encode())
        return h.hexdigest()[:16]

    w = ClosedWorld(people=60, rounds=2, seed=3)
    assert digest(w) == "f5bc1a3b4397d425"
    # and the dense world the partner and the study runs were made with (docs/world.md's measured shares)
    assert digest(ClosedWorld(people=60, rounds=2, seed=3, **DENSE)) == "bb8ff96b77540d1f"
    with_mentor = ClosedWorld(people=60, rounds=2, seed=3, mentor=True)
    assert [{k: v for k, v in p.facts.items() if k != "mentor"} for p in with_mentor.people] == \
        [p.facts for p in w.people]


def test_dense_world_every_fact_read_true_and_swapped_false():
    """The dense world (compound sentences, pronoun subjects, an entity-valued mentor): each biography's claims
    are exactly its facts, all true, derived after source; the same text about another person is false."""
    w = ClosedWorld(people=40, seed=1, **DENSE)
    kb = w.kb()
    assert kb.attributes["mentor"].kind == "entity" and kb.attributes["mentor"].probe == "{name} was a student of"
    assert all(p.facts["mentor"] != p.name and p.facts["mentor"] in kb.entities for p in w.people)
    bios = [(p, d) for p, d in w.train_documents() if not d.startswith("Question:")][:60]
    pronoun_subjects = 0
    for person, doc in bios:
        claims = kb.claims(doc, subject=person.name)
        assert sorted(c.attribute for c in claims) == sorted(w.templates) and all(c.supported for c in claims)
        where = {c.attribute: c.start for c in claims}
        assert all(where[d] > where[s] for d, s in DERIVED_FROM.items())
        assert doc.split()[0] not in ("She", "He") and person.name in doc.split(". ")[0]  # who "she" is comes first
        pronoun_subjects += sum(s.split()[0] in ("She", "He") for s in doc.split(". "))
    assert pronoun_subjects > len(bios)  # fact sentences with a pronoun subject are common
    # the same text about another person: a claim is true only where the two happen to share that value
    nxt = dict(zip((p.name for p in w.people), w.people[1:] + w.people[:1]))
    for person, doc in bios[:20]:
        claims = kb.claims(doc.replace(person.name, nxt[person.name].name), subject=nxt[person.name].name)
        assert len(claims) == len(w.templates)
        assert all(c.supported == (nxt[person.name].facts[c.attribute] == person.facts[c.attribute]) for c in claims)
        assert sum(c.supported for c in claims) <= 2


def test_dense_world_fact_share_is_the_papers_regime():
    """Issue 14: fact-value tokens 24-30% of validation targets (docs/world.md: 27.4%; the default world 16.0%),
    above any call budget: what `python -m lacy.world --config ...` prints."""
    shares = {name: fact_share(ClosedWorld(**kw)) for name, kw in (("default", {}), ("dense", DENSE))}
    assert round(shares["default"], 3) == 0.160 and round(shares["dense"], 3) == 0.274, shares


def test_qa_documents_answer_every_attribute():
    w = ClosedWorld(people=20, qa_fraction=1.0)
    qa = [(p, d) for p, d in w.train_documents() if d.startswith("Question:")]
    assert len(qa) == 20
    p, d = qa[0]
    assert all(f"Answer: {v}." in d for v in p.facts.values())


def test_world_files_round_trip(tmp_path):
    w = ClosedWorld(people=25, val_docs=10)
    w.write(tmp_path)
    kb = KnowledgeBase.load(tmp_path / "kb.json")
    assert kb.entities == w.kb().entities and kb.attributes == w.kb().attributes
    probes = [json.loads(x) for x in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert len(probes) == 25 * len(TEMPLATES)
    assert probes[1] == {"entity": w.people[0].name, "attribute": "birth_city",
                         "prompt": f"{w.people[0].name} was born in", "answer": w.people[0].facts["birth_city"],
                         "popularity": w.people[0].docs}
    val = [json.loads(x) for x in (tmp_path / "val.jsonl").read_text().splitlines()]
    assert len(val) == 10 and all(r["entity"] in r["text"] for r in val)


def test_datamodule_uses_the_worlds_own_validation_split(tmp_path):
    w = ClosedWorld(people=30, val_docs=12)
    dm = CorpusDataModule(corpus=w, bpe_vocab_size=500, block_size=64, batch_size=4, cache_dir=str(tmp_path))
    dm.setup()
    val = dm.splits["val"]
    assert val.texts(range(val.n_docs)) == [d for _, d in w.val_documents()]
    assert dm.splits["train"].n_docs == sum(1 for _ in w.train_documents())
    # names tokenize the same at a document start and mid-text (prefix-space BPE): extractable knowledge
    name = w.people[0].name
    assert dm.tokenizer(name)["input_ids"] == dm.tokenizer(" " + name)["input_ids"]


def test_write_never_replaces_what_lacy_did_not_write(tmp_path):
    """Issue 16.1's rule for world folders: a folder with a user's file (or a file in the way) is refused with
    one line; lacy's own world folder is rewritten."""
    w = ClosedWorld(people=4, val_docs=2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kb.json").write_text("my own")
    with pytest.raises(UsageError, match="not written by lacy"):
        w.write(mine)
    assert (mine / "kb.json").read_text() == "my own"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        w.write(tmp_path / "a_file")
    ours = w.write(tmp_path / "ours")
    w.write(ours)  # its own folder: rewritten
    assert read_world(ours).kb == w.kb()
    # issue 29: a file of lacy's world edited by the user is the user's now: refused, kept as edited
    edited = (ours / "kb.json").read_text().replace('"popularity": 1', '"popularity": 7', 1)
    (ours / "kb.json").write_text(edited)
    with pytest.raises(UsageError, match=r"ours: kb.json changed after lacy wrote it"):
        w.write(ours)
    assert (ours / "kb.json").read_text() == edited
    (ours / "kb.json").unlink()  # a file removed: nothing of the user's to lose
    w.write(ours)
    assert read_world(ours).kb == w.kb()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unique names"):
        ClosedWorld(people=10**6)
    with pytest.raises(ValueError, match=">= 1"):
        ClosedWorld(rounds=0)


def test_fact_value_tokens_are_a_minority_of_tokens(tmp_path):
    """The share reported in docs/world.md: fact-value tokens among all tokens of the default world's text."""
    from lacy.worlds.fact_masks import PlacementDocs
    from lacy.data.tokenizer import train_bpe

    w = ClosedWorld(people=60)
    tok = train_bpe(w.bpe_documents(), 2048)
    docs = PlacementDocs.build(w.kb(), tok, [(p.name, d) for p, d in list(w.train_documents())[:80]])
    share = np.concatenate(docs.fact).mean()
    assert 0.1 < share < 0.35


def test_cache_key_follows_the_tokenizer_text(tmp_path, monkeypatch):
    """Same documents, other BPE training text: another cache entry (a stale tokenizer would break the
    same-tokenizer cascade between the SLM and its partner)."""
    w = ClosedWorld(people=10, val_docs=3)
    dm = CorpusDataModule(corpus=w, bpe_vocab_size=300, block_size=64, cache_dir=str(tmp_path))
    key = dm.cache_key()
    monkeypatch.setattr(w, "bpe_documents", lambda: iter(["another text"]))
    assert CorpusDataModule(corpus=w, bpe_vocab_size=300, block_size=64, cache_dir=str(tmp_path)).cache_key() != key


SECOND = Path(__file__).parent / "data" / "second_world"


def test_read_world_round_trip_and_defaults(tmp_path):
    w = ClosedWorld(people=25, val_docs=10)
    w.write(tmp_path)
    files = read_world(tmp_path)
    assert files.kb == w.kb() and files.prompts == w.prompts() and files.probes == w.kb().probes()
    assert files.val == [(p.name, d) for p, d in w.val_documents()]
    (tmp_path / "prompts.jsonl").unlink()
    (tmp_path / "probes.jsonl").unlink()
    files = read_world(tmp_path)  # optional files: one prompt per entity (its name), the KB's probes
    assert files.prompts == w.prompts() and files.probes == w.kb().probes()


def broken_copy(tmp_path, name, edit):
    """The second world with one file's lines edited (``edit(lines) -> lines``)."""
    out = tmp_path / "world"
    shutil.copytree(SECOND, out)
    path = out / name
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    return out


@pytest.mark.parametrize("name, edit, message", [
    ("val.jsonl", lambda rows: rows[:2] + [rows[2][:40]] + rows[3:], r"val.jsonl:3: not valid JSON"),
    ("val.jsonl", lambda rows: [rows[0].replace('"text": "', '"text": null, "t": "')] + rows[1:],
     r"val.jsonl:1: field 'text' is None"),
    ("val.jsonl", lambda rows: [], r"val.jsonl: no documents"),
    ("prompts.jsonl", lambda rows: rows[:1] + [rows[1].replace('"popularity": ', '"popularity": null, "p": ')],
     r"prompts.jsonl:2: field 'popularity' is None"),
    ("probes.jsonl", lambda rows: rows[:4] + [json.dumps(dict(json.loads(rows[4]), entity="Nobody Known"))] + rows[5:],
     r"probes.jsonl:5: field 'entity' is 'Nobody Known', which kb.json does not know"),
    ("probes.jsonl", lambda rows: [json.dumps(dict(json.loads(rows[0]), attribute="age"))] + rows[1:],
     r"probes.jsonl:1: field 'attribute' is 'age', which kb.json does not declare"),
    ("probes.jsonl", lambda rows: ["[1, 2]"] + rows[1:], r"probes.jsonl:1: a row must be a JSON object"),
    ("kb.json", lambda lines: lines[:len(lines) // 2], r"kb.json:\d+: not valid JSON"),
    ("val.jsonl", lambda rows: rows[:1] + [rows[1].replace('"text": ', '"text": "mine", "text": ', 1)] + rows[2:],
     r"val.jsonl:2: the key 'text' is written twice in this row"),  # issue 29: the first silently dropped
])
def test_a_malformed_world_folder_names_file_line_and_field(tmp_path, name, edit, message):
    with pytest.raises(UsageError, match=message):
        read_world(broken_copy(tmp_path, name, edit))


def test_a_missing_world_says_how_to_make_one(tmp_path):
    with pytest.raises(UsageError, match="is not a folder; write one with `python -m lacy.world"):
        read_world(tmp_path / "nowhere")
    (tmp_path / "w").mkdir()
    ClosedWorld(people=5, val_docs=2).kb().save(tmp_path / "w" / "kb.json")
    with pytest.raises(UsageError, match=r"val.jsonl: missing"):
        read_world(tmp_path / "w")
