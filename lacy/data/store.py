"""A tokenized split on disk, memory-mapped: the token stream, character offsets and the documents' texts.

Everything derived from the corpus is cached under ``cache_dir`` in a folder named by a hash of its inputs
(:func:`stable_hash`), built whole in a temporary sibling (lacy.io.atomic) so a killed run leaves no half cache.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from lacy.errors import UsageError

CACHE_VERSION = "3"  # bump when the on-disk format changes (3: text never encodes to a special id)


def stable_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TokenizedSplit:
    """One split on disk: memory-mapped token ids and character offsets, and the documents' texts.

    Files: ``ids.bin`` (int32, documents each followed by EOS), ``offsets.bin`` (int32 pairs: character
    offsets into the document; (0, 0) for EOS), ``doc_starts.npy`` (document d's tokens are
    ``doc_starts[d] : doc_starts[d+1] - 1``), ``texts.jsonl`` + ``text_index.npy`` (byte offsets of its lines).
    Nothing is read into memory until used, so a corpus of billions of tokens costs no RAM to open.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        n = json.loads((self.path / "meta.json").read_text())["tokens"]
        self.ids = self._map("ids.bin", (n,))
        self.offsets = self._map("offsets.bin", (n, 2))
        self.doc_starts = np.load(self.path / "doc_starts.npy")
        self.text_index = np.load(self.path / "text_index.npy")

    def _map(self, name: str, shape: tuple) -> np.ndarray:
        if shape[0] == 0:
            return np.zeros(shape, dtype=np.int32)
        return np.memmap(self.path / name, dtype=np.int32, mode="r", shape=shape)

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts) - 1

    def texts(self, docs: range) -> list[str]:
        """The texts of a contiguous range of documents, in one read."""
        if len(docs) == 0:
            return []
        with open(self.path / "texts.jsonl", "rb") as f:
            f.seek(int(self.text_index[docs.start]))
            raw = f.read(int(self.text_index[docs.stop] - self.text_index[docs.start]))
        return [json.loads(line) for line in raw.splitlines()]

    def doc_slice(self, d: int) -> slice:
        return slice(int(self.doc_starts[d]), int(self.doc_starts[d + 1]) - 1)


class SplitWriter:
    """Appends tokenized documents to a split's files (see :class:`TokenizedSplit`), batch by batch."""

    def __init__(self, path: Path, tokenizer):
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.tokenizer = path, tokenizer
        self.special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int32)
        self.files = [open(path / name, "wb") for name in ("ids.bin", "offsets.bin", "texts.jsonl")]
        self.starts, self.text_index = [0], [0]

    def add(self, texts: list[str]) -> None:
        f_ids, f_off, f_txt = self.files
        eos = self.tokenizer.eos_token_id
        encs = self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        self._check_text_only(encs)
        for text, enc in zip(texts, encs):
            np.asarray(enc.ids + [eos], dtype=np.int32).tofile(f_ids)
            np.asarray(enc.offsets + [(0, 0)], dtype=np.int32).reshape(-1, 2).tofile(f_off)
            self.starts.append(self.starts[-1] + len(enc.ids) + 1)
            line = (json.dumps(text) + "\n").encode()
            f_txt.write(line)
            self.text_index.append(self.text_index[-1] + len(line))

    def _check_text_only(self, encs) -> None:
        """No text may produce a special id (EOS, ``<CALL>``, ...): lacy's tokenizers encode special tokens written
        in text as characters; a tokenizer whose ordinary encoding still reaches one is refused."""
        lengths = [len(e.ids) for e in encs]
        hit = np.isin(np.fromiter((i for e in encs for i in e.ids), dtype=np.int32, count=sum(lengths)), self.special)
        if hit.any():
            first = int(np.argmax(hit))
            doc = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
            bad = self.tokenizer.convert_ids_to_tokens(int(encs[doc].ids[first - sum(lengths[:doc])]))
            raise UsageError(f"data.tokenizer: the tokenizer encodes text of document {len(self.starts) + doc} of "
                             f"{self.path.name} to its special token {bad!r}: text could pose as a control token; "
                             "use a tokenizer whose special tokens no text can produce")

    def close(self) -> None:
        for f in self.files:
            f.close()
        np.save(self.path / "doc_starts.npy", np.asarray(self.starts, dtype=np.int64))
        np.save(self.path / "text_index.npy", np.asarray(self.text_index, dtype=np.int64))
        (self.path / "meta.json").write_text(json.dumps({"tokens": self.starts[-1], "docs": len(self.starts) - 1}))
