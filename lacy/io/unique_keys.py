"""A key written twice in a file a user writes is a mistake, not an override: JSON and YAML readers that say so.

Python's ``json`` and PyYAML keep the last value of a repeated key and drop the first without a word (a second
``model:`` block in a config silently replaced the first; a repeated entity in kb.json dropped its first
definition). These readers raise :class:`DuplicateKey` with the key and, for YAML, its line; the callers turn it
into one line naming the file.
"""
import json

import yaml


class DuplicateKey(ValueError):
    def __init__(self, key: str, line: int | None = None):
        super().__init__(f"the key {key!r} is written twice" + (f" (again on line {line})" if line else ""))
        self.key, self.line = key, line


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def loads_json(text: str):
    """``json.loads`` that raises :class:`DuplicateKey` for a key repeated in one object."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that raises :class:`DuplicateKey` (with the line) for a key repeated in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": a merge, its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise DuplicateKey(str(key), key_node.start_mark.line + 1)
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                pass
        return super().construct_mapping(node, deep)  # merges "<<" as PyYAML does
