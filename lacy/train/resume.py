"""What a checkpoint must share with this run to be continued or evaluated: vocabulary rows, architecture, tokenizer.

The rest of the hyper-parameters may change on resume, and this run's values apply (lr, schedule, decay, ...).
"""
from lacy.errors import UsageError
from lacy.io.checkpoints import TOKENIZER_KEY, tokenizer_difference
from lacy.model.loading import load_hf_tokenizer, materialise, model_source
from lacy.model.slm import PRETRAINED_HINT, embedding_parameter

# the architecture must be the checkpoint's: hyper-parameter -> the option that sets it
FIXED_ON_RESUME = {"preset": "--model.preset", "block_size": "--data.block_size", "architecture": "--model.architecture",
                   "pretrained": "--model.pretrained"}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def check_checkpoint(module, checkpoint: dict, path, tokenizer=None) -> dict[str, tuple]:
    """Refuse (UsageError) a checkpoint ``module`` (a CallLM) cannot continue or evaluate: other vocabulary rows,
    another architecture, or (``tokenizer``: the data's) another tokenizer. Returns ``{hparam: (checkpoint's, this
    run's)}`` for the hyper-parameters this run changes."""
    hp, old = module.hparams, checkpoint.get("hyper_parameters", {})
    key = "model." + embedding_parameter(module.model)
    if key not in checkpoint.get("state_dict", {}):
        raise UsageError(f"{path}: not a checkpoint of this SLM (no {key} in its state_dict); use a checkpoint "
                         "written by `python main.py fit` with this architecture")
    rows = checkpoint["state_dict"][key].shape[0]
    if rows != hp.vocab_size:
        raise UsageError(
            f"{path}: the checkpoint's model has {rows} vocabulary rows but this config's tokenizer gives "
            f"{hp.vocab_size} (<CALL> included): it was trained with another tokenizer or corpus. "
            "Use the data config the checkpoint was trained with")
    for name, option in FIXED_ON_RESUME.items():
        if name in old and _plain(old[name]) != _plain(hp[name]):
            raise UsageError(f"{option}: this run asks for {hp[name]!r} but {path} was trained with {old[name]!r}; "
                             f"a checkpoint keeps its architecture: pass {option} {old[name]} (or start a new run "
                             "without --ckpt_path)")
    if tokenizer is not None and TOKENIZER_KEY in checkpoint:
        diff = tokenizer_difference(checkpoint[TOKENIZER_KEY], tokenizer)
        if diff:
            raise UsageError(f"data.tokenizer: the data's tokenizer is not the one {path} was trained with "
                             f"({diff}); use the data config (tokenizer, corpus, bpe_vocab_size) it was trained "
                             "with")
    return {k: (old[k], v) for k, v in hp.items() if k in old and k not in FIXED_ON_RESUME
            and k != "vocab_size" and _plain(old[k]) != _plain(v)}


def check_own_tokenizer(pretrained: str, tokenizer, cache_dir: str) -> None:
    """A pretrained SLM reads its own tokenizer (``<CALL>`` appended): UsageError naming both options when the data's
    tokenizer maps text to other ids (a trained BPE, another model's), which would train the rows on wrong tokens."""
    source = materialise(model_source(pretrained, "model.pretrained", PRETRAINED_HINT, hub_allowed=True), cache_dir)
    ours = tokenizer.get_vocab()  # the model's tokens, then what lacy appended (<CALL>, an EOS it lacked)
    if any(ours.get(t) != i for t, i in load_hf_tokenizer(source).get_vocab().items()):
        raise UsageError(f"data.tokenizer: model.pretrained {pretrained!r} reads its own tokenizer, but the data's "
                         "maps text to other ids; set data.tokenizer to the same source as model.pretrained")
