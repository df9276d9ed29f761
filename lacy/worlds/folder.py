"""A world folder, whoever wrote it (format: docs/world.md): read and validated before any evaluation work."""
import json
from dataclasses import dataclass
from pathlib import Path

from lacy.data.corpus import read_utf8
from lacy.errors import UsageError
from lacy.io.unique_keys import DuplicateKey, loads_json
from lacy.worlds.kb import KnowledgeBase


@dataclass
class WorldFiles:
    """A world folder as the evaluation reads it (format: docs/world.md)."""
    kb: KnowledgeBase
    prompts: list[dict]           # {"entity", "prompt", "popularity"}: bio prompts
    probes: list[dict]            # {"entity", "attribute", "prompt", "answer", "popularity"}: leakage probes
    val: list[tuple[str, str]]    # (entity, text): documents for call placement


def _read_rows(path: Path, fields: dict[str, type], kb: KnowledgeBase) -> list[dict]:
    """The objects of a JSONL file with the required ``fields`` (name -> type; a ``popularity`` missing from
    a row is the entity's in the KB), checked line by line: a ``UsageError`` names the file, line and field."""
    lines = read_utf8(path).splitlines()  # a byte that is not UTF-8: UsageError naming the line
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = loads_json(line)
        except DuplicateKey as e:
            raise UsageError(f"{path}:{n}: the key {e.key!r} is written twice in this row; keep one (format: "
                             "docs/world.md)") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno}); one JSON object per line "
                             "(a truncated file: write it again; format: docs/world.md)") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{n}: a row must be a JSON object with {sorted(fields)} (format: docs/world.md)")
        if "entity" in row and isinstance(row["entity"], str):
            row.setdefault("popularity", kb.entities[row["entity"]].popularity if row["entity"] in kb.entities else 1)
        for key, kind in fields.items():
            value = row.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or isinstance(value, str) and not value.strip():
                raise UsageError(f"{path}:{n}: field {key!r} is {value!r}; expected a non-empty {kind.__name__} "
                                 "(format: docs/world.md)")
        if "entity" in fields and row["entity"] not in kb.entities:
            raise UsageError(f"{path}:{n}: field 'entity' is {row['entity']!r}, which kb.json does not know; use an "
                             "entity key of kb.json")
        if "attribute" in fields and row["attribute"] not in kb.attributes:
            raise UsageError(f"{path}:{n}: field 'attribute' is {row['attribute']!r}, which kb.json does not "
                             "declare; use one of its attributes")
        rows.append(row)
    return rows


def read_world(folder: str | Path) -> WorldFiles:
    """Read and validate a world folder (docs/world.md): ``kb.json`` and ``val.jsonl`` are required;
    ``prompts.jsonl`` defaults to one prompt per entity (its name), ``probes.jsonl`` to ``kb.probes()``.
    Raises ``UsageError`` naming the file, line and field of the first fault, before any evaluation work."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"world {str(root)!r} is not a folder; write one with `python -m lacy.world --out DIR` "
                         "or set the evaluation's world to null (the DataModule's ClosedWorld)")
    kb = KnowledgeBase.load(root / "kb.json")
    if not (root / "val.jsonl").is_file():
        raise UsageError(f"{root / 'val.jsonl'}: missing; the world's documents for call placement, one "
                         '{"entity": ..., "text": ...} per line (format: docs/world.md)')
    val = [(r["entity"], r["text"]) for r in _read_rows(root / "val.jsonl", {"entity": str, "text": str}, kb)]
    if not val:
        raise UsageError(f"{root / 'val.jsonl'}: no documents; write at least one (format: docs/world.md)")
    prompts = (_read_rows(root / "prompts.jsonl", {"entity": str, "prompt": str, "popularity": int}, kb)
               if (root / "prompts.jsonl").is_file() else
               [{"entity": e.name, "prompt": e.name, "popularity": e.popularity} for e in kb.entities.values()])
    probes = (_read_rows(root / "probes.jsonl", {"entity": str, "attribute": str, "prompt": str, "answer": str,
                                                 "popularity": int}, kb)
              if (root / "probes.jsonl").is_file() else kb.probes())
    return WorldFiles(kb, prompts, probes, val)
