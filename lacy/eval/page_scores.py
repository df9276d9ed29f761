"""What a bio can be checked against on its subject's own page without a judge model (real text).

A 135M FActScore judge follows a text's shape more than its truth (docs/results.md, "Real text"); these scores
need only spaCy's entities, the page and string matching, so they are exact and cheap, and each sees only part
of what a fact is:

- **NE precision** (FactualityPrompts' "NE error", Lee et al. 2022): share of the bio's named entities (spaCy;
  numbers and the subject's own name aside) found in the page (as whole words, case-folded, as every match here). Cannot see whether an entity found there is
  attached to the right claim ("born in Leeds" where the page says "died in Leeds" counts as found).
- **NE recall**: share of the page's distinct named entities (the same kinds) that the bio names. Bounded by
  the bio's length (a 64-token bio cannot name a page's 20 entities): compare rows, not to 1.
- **Year precision**: share of the years (1000-2099) written in the bio that the page or its description
  states, over the bios whose page states a year. **Place precision**: the same for places (spaCy GPE, LOC,
  FAC), over the bios whose page names a place. Both blind to which event a year or place belongs to.
- **Birth-year accuracy**: where the description gives the birth year ("English historian (1906-1990)") and
  the bio states one ("born in 1906" in one clause, or "(1906" right after the name), the share stated right:
  an attached claim, but only this one, and "her son was born in 1960" is read as the subject's.
- **Word support** (:func:`word_support`): share of a partner's content words (not spaCy stop words) that
  occur in a reference text: the passages a retrieval partner was shown (is it writing from its passage?), or
  the page (for any partner). Sees grounding, not truth: a copied word can be put in a false claim.
"""
import re

# the description's life span, nothing else in the brackets: "(1906–1990)", "(born 1975)"; not a BC span, not
# "(1988–1990; 1993–1996)" (terms of office). A bare span can still be a reign or a term ("Emperor of China
# (1908–1912) and ..."): of the 1,189 People descriptions it reads, 8 name an office (a few of those are life spans)
_YEARS = re.compile(r"\((?:born\s+(\d{3,4})|(\d{3,4})\s*[–-]\s*\d{3,4})\)")
_YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")
# a bio's stated birth year: "born" and a year in the same clause (no comma, semicolon, full stop or "died"
# between), or a bracket opening the bio right after the name ("Ada Brandt (1931 - ...)")
_BORN = re.compile(r"\bborn\b(?:(?!\bdied\b)[^.;,]){0,40}?\b(1\d{3}|20\d{2})\b", re.IGNORECASE)
_OPENING = re.compile(r"^\s*,?\s*\((?:born\s+)?(1\d{3}|20\d{2})\b", re.IGNORECASE)
_CONTENT = re.compile(r"[^\W_]+")
SKIPPED_LABELS = ("ORDINAL", "CARDINAL")
PLACE_LABELS = ("GPE", "LOC", "FAC")


def birth_year(description: str) -> str | None:
    """The birth year a page's short description gives ("English historian (1906–1990)" -> "1906"), else None."""
    m = _YEARS.search(description or "")
    return (m.group(1) or m.group(2)) if m else None


def stated_birth_year(bio: str) -> str | None:
    """The birth year a bio states (``_BORN``, ``_OPENING``), else None. Cannot tell whose birth it is: "her son
    was born in 1960" is read as the subject's."""
    m = _OPENING.search(bio) or _BORN.search(bio)
    return m.group(1) if m else None


def contains(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as whole words (case-folded): "us" is not in "famous", 1950 not in "1950s"."""
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def year_probes(records: list[dict]) -> list[dict]:
    """"<title> was born in" -> the birth year from the description, e.g. "English historian (1906-1990)"."""
    return [{"entity": r["title"], "prompt": f"{r['title']} was born in", "answer": year}
            for r in records if (year := birth_year(r.get("description") or ""))]


def _entities(doc, own: set[str]) -> list:
    return [e for e in doc.ents if e.label_ not in SKIPPED_LABELS and not set(e.text.lower().split()) <= own]


def ne_precision(generations: list[str], entities: list[str], source, nlp) -> dict:
    """Share of the named entities in generations that occur in the entity's page (entity's own name aside).
    ``source``: a knowledge source (``page(title)``); returns ne_precision (None: no entity) and named_entities."""
    found = total = 0
    for doc, ent in zip(nlp.pipe(generations), entities):
        page = source.page(ent)
        if page is None:  # a subject without a page adds nothing (page_scores counts it)
            continue
        for e in _entities(doc, set(ent.lower().split())):
            total += 1
            found += contains(page, e.text)
    return {"ne_precision": found / total if total else None, "named_entities": total}


def _share(hit: int, n: int) -> float | None:
    return hit / n if n else None


def page_scores(generations: list[str], titles: list[str], source, nlp,
                descriptions: dict[str, str] | None = None) -> dict:
    """Every score of the module docstring but word support, pooled over the bios (micro averages).

    Args:
        generations: the bios' continuations (the prompt, the subject's title, left out).
        titles: each bio's subject (its page title in ``source``).
        source: knowledge source (``page(title)``; a subject without a page adds nothing and is counted).
        nlp: a spaCy pipeline with NER.
        descriptions: title -> the page's short description (years and the birth year), optional.

    Returns ne_precision, named_entities, ne_recall, page_entities, year_precision, years, place_precision,
    places, birth_year_accuracy, birth_years, no_page; a share is None where nothing was there to score.
    """
    descriptions = descriptions or {}
    pages = [source.page(t) for t in titles]
    out = ne_precision(generations, titles, source, nlp)
    recalled = page_ents = year_hit = years = place_hit = places = birth_hit = births = 0
    scored = [(g, t, p) for g, t, p in zip(generations, titles, pages) if p is not None]
    docs = nlp.pipe([g for g, _, _ in scored])
    page_docs = nlp.pipe([p for _, _, p in scored])
    for (gen, title, page), doc, page_doc in zip(scored, docs, page_docs):
        own, described = set(title.lower().split()), descriptions.get(title) or ""
        page_text = f"{page}\n{described}"
        on_page = {e.text.lower() for e in _entities(page_doc, own)}
        page_ents += len(on_page)
        recalled += sum(contains(gen, e) for e in on_page)
        if _YEAR.search(page_text):
            written = _YEAR.findall(gen)
            years += len(written)
            year_hit += sum(contains(page_text, y) for y in written)
        if any(e.label_ in PLACE_LABELS for e in page_doc.ents):
            written = [e.text for e in doc.ents if e.label_ in PLACE_LABELS]
            places += len(written)
            place_hit += sum(contains(page_text, p) for p in written)
        truth, stated = birth_year(described), stated_birth_year(gen)
        if truth and stated:
            births += 1
            birth_hit += stated == truth
    return {**out, "ne_recall": _share(recalled, page_ents), "page_entities": page_ents,
            "year_precision": _share(year_hit, years), "years": years,
            "place_precision": _share(place_hit, places), "places": places,
            "birth_year_accuracy": _share(birth_hit, births), "birth_years": births,
            "no_page": len(titles) - len(scored)}


def word_support(pieces: list[list[str]], references: list[str], stop_words: set[str]) -> dict:
    """Share of the content words of each text's pieces that occur (as words, case-folded) in its reference.

    Args:
        pieces: per text, the pieces whose words are checked (e.g. what the partner wrote in one bio).
        references: per text, the reference (the passages shown; or the page; "" = nothing supports them).
        stop_words: lower-case words left out (spaCy's: ``nlp.Defaults.stop_words``).
    Returns word_support (None: no content word) and content_words.
    """
    hit = total = 0
    for texts, ref in zip(pieces, references):
        known = {w.lower() for w in _CONTENT.findall(ref)}
        words = [w.lower() for t in texts for w in _CONTENT.findall(t) if w.lower() not in stop_words]
        total += len(words)
        hit += sum(w in known for w in words)
    return {"word_support": _share(hit, total), "content_words": total}
