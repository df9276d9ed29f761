"""The small language model: a GPT-2 architecture built from a preset, randomly initialised.

The vocabulary is the tokenizer's, whose last id is ``<CALL>``: one extra row in the embedding and
in the (tied) LM head. Nothing else about the model knows about calls; the objective does.
"""
import hashlib
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

from lacy.errors import UsageError

# n_layer, n_embd, n_head. Non-embedding parameters are ~12 * n_layer * n_embd**2.
PRESETS: dict[str, dict[str, int]] = {
    "micro": dict(n_layer=2, n_embd=32, n_head=2),  # tests and smoke runs: seconds on a CPU
    "tiny": dict(n_layer=4, n_embd=128, n_head=4),  # ~0.8M non-embedding: a CPU model that trains in minutes
    "small": dict(n_layer=6, n_embd=256, n_head=8),  # ~4.7M: the closed-world partner scale on CPU
    "gpt2-334m": dict(n_layer=24, n_embd=1024, n_head=16),  # the paper's 334M (with a 32k vocab)
    "gpt2-1.3b": dict(n_layer=24, n_embd=2048, n_head=16),  # the paper's ~1.3B
}


def build_slm(preset: str, vocab_size: int, block_size: int, dropout: float = 0.0,
              attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of the given preset with ``vocab_size`` rows (``<CALL>`` included)."""
    if preset not in PRESETS:
        raise UsageError(f"model.preset={preset!r} is unknown; choose one of {sorted(PRESETS)}")
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=None,
        eos_token_id=None,
        **PRESETS[preset],
    )
    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config)


def non_embedding_params(model: GPT2LMHeadModel) -> int:
    """Parameter count without token/position embeddings (the LM head is tied to the token embedding)."""
    t = model.transformer
    return sum(p.numel() for p in model.parameters()) - t.wte.weight.numel() - t.wpe.weight.numel()


def weights_digest(folder: str | Path, gguf_file: str | None = None) -> str:
    """Hash of a local model's weights and config: caches keyed by it follow the model, not its path."""
    folder = Path(folder)
    files = [folder / gguf_file] if gguf_file else sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()[:16]


HUB_PREFIX = "hf:"  # hf:NAME asks for a Hugging Face hub model explicitly, where a command allows it


def local_model_folder(path: str | Path, role: str, hint: str, hub_prefix_allowed: bool = False) -> Path:
    """``path`` as a local Hugging Face model folder (holding config.json); UsageError otherwise.

    A name that is not a local folder is never looked up on the hub (offline by default). The message says how
    to ask for a hub model explicitly: ``hf:NAME`` where the caller allows it, else download it first.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        what = "is not a model folder (no config.json)" if folder.is_dir() else "is not a local folder"
        hub = (f"write {HUB_PREFIX}NAME to load a hub model (needs internet)" if hub_prefix_allowed else
               "a hub model: download it first with `hf download NAME --local-dir DIR` and pass DIR")
        raise UsageError(f"{role} {str(path)!r} {what}; {hint} ({hub}; lacy never looks names up on its own)")
    return folder
