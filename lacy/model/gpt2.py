"""The paper's SLM family: a GPT-2 architecture built from a preset, randomly initialised.

The vocabulary is the tokenizer's, whose last id is ``<CALL>``: one extra row in the embedding and
in the (tied) LM head. Nothing else about the model knows about calls; the objective does.
"""
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
