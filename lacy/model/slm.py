"""The SLM, in any Hugging Face causal-LM family, with the ``<CALL>`` row appended: the one place that knows the
architecture (its embedding and head, its decoder layer, its FLOPs).

Three ways to choose it (``model.*`` in the configs, one key each):
- ``preset``: the paper's GPT-2 sizes from scratch (lacy/model/gpt2.py; the default);
- ``architecture``: any transformers family from scratch: ``{family: llama, hidden_size: 64, ...}`` (the family's
  ``model_type`` and its config keys) or a folder holding a ``config.json``; vocabulary and context come from the
  data;
- ``pretrained``: continued pretraining of a model's weights (a local folder, ``smollm2``, a GGUF file in a folder,
  or ``hf:NAME``; lacy/model/loading.py), with the model's own tokenizer (``data.tokenizer``: the same source).

The ``<CALL>`` row of a pretrained model **[ours]** (the paper trains from scratch): rows beyond the tokenizer's
(a vocabulary padded for speed) are dropped, so no untrained row can ever get probability; ``<CALL>`` is appended
as the last row, its input embedding the mean of the embedding rows and, for an untied head, its output row the
mean of the head rows (Co-LLM's initialisation; transformers' ``mean_resizing`` samples around the mean instead,
which would make the step-0 model depend on a random draw). Every other row is unchanged, so before any update
p_noCALL is the pretrained model's distribution over its tokenizer's tokens (tested).
"""
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from lacy.errors import UsageError
from lacy.model import gpt2
from lacy.model.loading import load_model, local_model_folder, materialise, model_source

# config keys of a family that set dropout (each family names them its own way)
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout")
PRETRAINED_HINT = "give a local Hugging Face model folder, smollm2, or hf:NAME"


def build_slm(vocab_size: int, block_size: int, preset: str | None = "tiny", architecture: dict | str | None = None,
              pretrained: str | None = None, dropout: float = 0.0, cache_dir: str = ".cache/lacy") -> PreTrainedModel:
    """The SLM with ``vocab_size`` rows (``<CALL>`` the last), from the one of ``architecture`` / ``pretrained`` that
    is set, else the GPT-2 ``preset``. UsageError for both set, an unknown family, or a model lacy cannot host."""
    if architecture is not None and pretrained is not None:
        raise UsageError("model.architecture and model.pretrained are both set; choose one (architecture: a family "
                         "from scratch; pretrained: continue a model's weights)")
    if pretrained is not None:
        source = materialise(model_source(pretrained, "model.pretrained", PRETRAINED_HINT, hub_allowed=True), cache_dir)
        return with_call_row(load_model(source), vocab_size, f"model.pretrained {pretrained!r}").train()
    if architecture is not None:
        config = architecture_config(architecture, vocab_size, block_size, dropout)
        model = AutoModelForCausalLM.from_config(config)
        check_hostable(model, f"model.architecture {architecture!r}")
        return model
    return gpt2.build_slm(preset, vocab_size, block_size, dropout)


def architecture_config(architecture: dict | str, vocab_size: int, block_size: int,
                        dropout: float = 0.0) -> PretrainedConfig:
    """A family's config from ``{family: <model_type>, <its keys>...}`` or a folder's ``config.json``, with the data's
    vocabulary (``<CALL>`` included) and context."""
    if isinstance(architecture, (str, Path)):
        folder = local_model_folder(architecture, "model.architecture", "give a folder with a config.json, or "
                                    "{family: llama, hidden_size: ..., ...}")
        keys = json.loads((folder / "config.json").read_text())
        family = keys.pop("model_type", None)
    else:
        keys = dict(architecture)
        family = keys.pop("family", None)
    for k in ("architectures", "quantization_config", "torch_dtype", "dtype", "transformers_version"):
        keys.pop(k, None)
    try:
        config = AutoConfig.for_model(family, **keys)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"model.architecture: family {family!r} with {sorted(keys)} is not a transformers config "
                         f"({e}); e.g. {{family: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
                         "num_attention_heads: 4}}") from None
    config.vocab_size = vocab_size
    config.max_position_embeddings = block_size
    for key in DROPOUT_KEYS:
        if hasattr(config, key) and isinstance(getattr(config, key), float):
            setattr(config, key, dropout)
    return config


def check_hostable(model: PreTrainedModel, what: str) -> None:
    """A causal LM lacy can give a ``<CALL>`` row: an embedding and a plain linear head over the vocabulary."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or not isinstance(model.get_input_embeddings(), nn.Embedding):
        raise UsageError(f"{what}: its LM head is {type(head).__name__}, not a plain linear layer over the "
                         "vocabulary; lacy appends <CALL> as one row of the embedding and the head, so it cannot "
                         "host this family")


def with_call_row(model: PreTrainedModel, vocab_size: int, what: str) -> PreTrainedModel:
    """A pretrained model resized to ``vocab_size`` rows, ``<CALL>`` the last and initialised as the module
    docstring says; rows ``0 .. vocab_size - 2`` keep their weights exactly."""
    check_hostable(model, what)
    tokens = vocab_size - 1  # the tokenizer's ids without <CALL>
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    rows = inp.weight.shape[0]
    if rows < tokens:
        raise UsageError(f"{what}: the model has {rows} vocabulary rows but its tokenizer {tokens} tokens; use the "
                         "model's own tokenizer (data.tokenizer: the same folder)")
    tied = out.weight is inp.weight
    with torch.no_grad():
        mean_in = inp.weight[:tokens].float().mean(0)
        mean_out = out.weight[:tokens].float().mean(0)
        mean_bias = out.bias[:tokens].float().mean() if out.bias is not None else None
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
        inp.weight[-1] = mean_in.to(inp.weight.dtype)
        if not tied:
            out.weight[-1] = mean_out.to(out.weight.dtype)
        if out.bias is not None:
            out.bias[-1] = mean_bias.to(out.bias.dtype)
    model.config.vocab_size = vocab_size
    return model


def model_config(model: PreTrainedModel) -> dict:
    """The model's architecture as plain values (saved in every checkpoint): enough to rebuild it without weights."""
    return model.config.to_dict()


def from_model_config(config: dict) -> PreTrainedModel:
    """An SLM with random weights of the architecture :func:`model_config` saved (load a state dict into it)."""
    keys = {k: v for k, v in config.items() if k not in ("architectures", "quantization_config", "transformers_version")}
    family = keys.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **keys))
    model.config._attn_implementation = config.get("_attn_implementation", "sdpa")
    return model


def embedding_parameter(model: PreTrainedModel) -> str:
    """The state-dict name of the input embedding's weight (GPT-2: ``transformer.wte.weight``)."""
    weight = model.get_input_embeddings().weight
    return next(n for n, p in model.named_parameters() if p is weight)


def position_embeddings(model: PreTrainedModel) -> list[nn.Embedding]:
    """Learned position embeddings, if the family has them (GPT-2's ``wpe``; rotary families have none)."""
    token = model.get_input_embeddings()
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and m is not token]


def non_embedding_params(model: PreTrainedModel) -> int:
    """Parameters without token and position embeddings (a tied head is the token embedding; an untied one counts)."""
    skip = {id(model.get_input_embeddings().weight)} | {id(m.weight) for m in position_embeddings(model)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def flops_per_token(model: PreTrainedModel, context: int | None = None) -> float:
    """Training FLOPs per token from the config: 6 x matmul parameters (the LM head included, once) + attention
    (12 x layers x width x context; PaLM appendix B). ``context``: the training block (default: the config's
    ``max_position_embeddings``, which a pretrained model sets to its longest context, not the one trained on)."""
    c = model.config.get_text_config()
    head = model.get_output_embeddings()
    tied = head.weight is model.get_input_embeddings().weight
    matmul = non_embedding_params(model) + (head.weight.numel() if tied else 0)
    return 6 * matmul + 12 * c.num_hidden_layers * c.hidden_size * (context or c.max_position_embeddings)


def decoder_layer(model: PreTrainedModel) -> type[nn.Module]:
    """The family's transformer block class (one FSDP unit each): the class transformers keeps whole
    (``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if len(found) != 1:
        raise UsageError(f"{type(model).__name__}: cannot tell its decoder layer class (found {sorted(map(str, found))}"
                         "); give the FSDP auto_wrap_policy yourself")
    return found.pop()
