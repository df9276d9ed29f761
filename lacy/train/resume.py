"""What a checkpoint must share with this run to be continued or evaluated: vocabulary rows, architecture, tokenizer.

The rest of the hyper-parameters may change on resume, and this run's values apply (lr, schedule, decay, ...).
"""
from lacy.errors import UsageError
from lacy.io.checkpoints import TOKENIZER_KEY, tokenizer_difference

# the architecture must be the checkpoint's: hyper-parameter -> the option that sets it
FIXED_ON_RESUME = {"preset": "--model.preset", "block_size": "--data.block_size"}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def check_checkpoint(module, checkpoint: dict, path, tokenizer=None) -> dict[str, tuple]:
    """Refuse (UsageError) a checkpoint ``module`` (a CallLM) cannot continue or evaluate: other vocabulary rows,
    another architecture, or (``tokenizer``: the data's) another tokenizer. Returns ``{hparam: (checkpoint's, this
    run's)}`` for the hyper-parameters this run changes."""
    hp, old = module.hparams, checkpoint.get("hyper_parameters", {})
    embedding = module.model.get_input_embeddings().weight
    key = "model." + next(n for n, p in module.model.named_parameters() if p is embedding)
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
