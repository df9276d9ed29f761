"""The LightningModule: a GPT-2 SLM with a ``<CALL>`` row, trained with the LaCy objective.

One forward per step. The per-token losses of that forward (detached) go to the configured strategy,
which returns the call mask; the objective does the rest. The strategy is a Callback found in
``trainer.callbacks``; training refuses to start with none or several, so a YAML that forgets it
cannot silently train a plain LM.
"""
import math
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
import torch

from lacy.checkpoint_io import read_checkpoint, tokenizer_difference
from lacy.errors import UsageError
from lacy.export import TOKENIZER_KEY
from lacy.model import build_slm, non_embedding_params
from lacy.objective import NONCALL_FORMS, TokenLosses, lacy_objective, token_losses
from lacy.selection import budget, select_top
from lacy.strategy import CallStrategy, one_strategy


class NonFiniteLossError(UsageError, RuntimeError):
    """The loss went non-finite; the message names the step, the checkpoint to resume from and the fix (one line
    at the command line, as every UsageError)."""


# On resume the architecture must be the checkpoint's (the option that sets each); the vocabulary is checked
# through the tokenizer. The rest may change and this run's values apply (lr, schedule, decay, ...).
FIXED_ON_RESUME = {"preset": "--model.preset", "block_size": "--data.block_size"}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


class CallLM(L.LightningModule):
    """Args:
        preset: model size, one of lacy.model.PRESETS (tiny, small, gpt2-334m, gpt2-1.3b).
        vocab_size: tokenizer ids including ``<CALL>`` (linked from data.vocab_size).
        block_size: context length (linked from data.block_size).
        lr: peak AdamW learning rate.
        weight_decay: AdamW decay on matrices (not on biases, norms, embeddings' positions).
        betas: AdamW betas.
        warmup_steps: linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` at max_steps.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        dropout: dropout everywhere (0: modern pretraining default, and exact resume).
        fig5_call_rate: share of a validation batch's targets forming the model's call mask (the top
            ``<CALL>`` logits) for the paper's Fig. 5 call / non-call loss split.
        finite_check_interval: steps between checks that the loss is finite (a check is a host sync: raise
            it on GPUs). A non-finite loss is also checked before any checkpoint is written, so a bad
            checkpoint is never saved, and the error names the first bad step.
        compile: ``torch.compile`` the model's forward (GPU fast path; the exported weights are unaffected).
        peak_tflops: the device's peak TFLOP/s for the MFU log; null = Lightning's table for known GPUs.
        noncall_softmax: the loss at non-call targets: "renormalised" (the paper's p_noCALL, default) or "full"
            [ours] (the full softmax, which also trains ``<CALL>`` down; lacy/objective.py says why).
    """

    def __init__(self, preset: str = "tiny", vocab_size: int = 8193, block_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 50,
                 min_lr_ratio: float = 0.1, dropout: float = 0.0, fig5_call_rate: float = 0.15,
                 finite_check_interval: int = 1, compile: bool = False, peak_tflops: float | None = None,
                 noncall_softmax: str = "renormalised"):
        super().__init__()
        if noncall_softmax not in NONCALL_FORMS:
            raise UsageError(f"model.noncall_softmax: {noncall_softmax!r} is not one of {NONCALL_FORMS}")
        for option, value, ok, need in (("lr", lr, lr > 0, "> 0"), ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
                                        ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
                                        ("warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0"),
                                        ("min_lr_ratio", min_lr_ratio, 0 <= min_lr_ratio <= 1, "in [0, 1]"),
                                        ("fig5_call_rate", fig5_call_rate, 0 < fig5_call_rate <= 1, "in (0, 1]"),
                                        ("finite_check_interval", finite_check_interval, finite_check_interval >= 1,
                                         ">= 1")):
            if not ok:
                raise UsageError(f"model.{option}={value}: must be {need}")
        self.save_hyperparameters()
        self.model = build_slm(preset, vocab_size, block_size, dropout)
        self.call_id = vocab_size - 1
        self.strategy: CallStrategy | None = None
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("gradient_tokens", torch.zeros((), dtype=torch.long))  # paper's budget equaliser
        # first step with a non-finite loss (-1: none), kept on device so checking it costs no per-step sync
        self.register_buffer("first_bad_step", torch.full((), -1, dtype=torch.long), persistent=False)
        # not registered as a submodule, so state_dict keys stay ``model.*`` whether compiled or not
        self.__dict__["_forward"] = torch.compile(self.model) if compile else self.model
        self._last_batch_time: float | None = None
        self._fit_started = math.inf
        self._schedule: torch.optim.lr_scheduler.LambdaLR | None = None  # set by configure_optimizers
        self._peak_flops: float | None = None

    # -- wiring ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # main.py checks the config before any work (lacy.cli); this covers a Trainer built in Python
        callbacks = self.trainer.callbacks
        self.strategy = callbacks[one_strategy([type(cb) for cb in callbacks])]

    def check_checkpoint(self, checkpoint: dict, path, tokenizer=None) -> dict[str, tuple]:
        """Refuse (UsageError) a checkpoint this module cannot continue or evaluate: other vocabulary rows, another
        architecture, or (``tokenizer``: the data's) another tokenizer. Returns ``{hparam: (checkpoint's, this
        run's)}`` for the hyper-parameters this run changes."""
        hp, old = self.hparams, checkpoint.get("hyper_parameters", {})
        rows = checkpoint["state_dict"]["model.transformer.wte.weight"].shape[0]
        if rows != hp.vocab_size:
            raise UsageError(
                f"{path}: the checkpoint's model has {rows} vocabulary rows but this config's tokenizer gives "
                f"{hp.vocab_size} (<CALL> included): it was trained with another tokenizer or corpus. "
                "Use the data config the checkpoint was trained with")
        for key, option in FIXED_ON_RESUME.items():
            if key in old and _plain(old[key]) != _plain(hp[key]):
                raise UsageError(f"{option}: this run asks for {hp[key]!r} but {path} was trained with {old[key]!r}; "
                                 f"a checkpoint keeps its architecture: pass {option} {old[key]} (or start a new run "
                                 "without --ckpt_path)")
        if tokenizer is not None and TOKENIZER_KEY in checkpoint:
            diff = tokenizer_difference(checkpoint[TOKENIZER_KEY], tokenizer)
            if diff:
                raise UsageError(f"data.tokenizer: the data's tokenizer is not the one {path} was trained with "
                                 f"({diff}); use the data config (tokenizer, corpus, bpe_vocab_size) it was trained "
                                 "with")
        return {k: (old[k], v) for k, v in hp.items() if k in old and k not in FIXED_ON_RESUME
                and k != "vocab_size" and _plain(old[k]) != _plain(v)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None)
        path = getattr(trainer, "ckpt_path", None) or "the checkpoint"
        changes = self.check_checkpoint(checkpoint, path, getattr(datamodule, "tokenizer", None))
        if trainer is not None and trainer.state.fn == "fit":
            for key, (was, now) in changes.items():
                rank_zero_info(f"resuming {path}: model.{key} {was!r} (checkpoint) -> {now!r} (this run)")

    # -- steps ----------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._forward(input_ids=input_ids).logits

    def _step(self, batch: dict, step: int) -> tuple[torch.Tensor, TokenLosses, torch.Tensor]:
        losses = token_losses(self(batch["input_ids"]), batch["labels"])
        call = self.strategy.select(batch, replace(losses, target=losses.target.detach()), step)
        return lacy_objective(losses, call, self.hparams.noncall_softmax), losses, call & losses.valid

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # micro-batch counter (restored on resume): distinct random draws for each accumulated micro-batch
        loss, losses, call = self._step(batch, self.trainer.fit_loop.epoch_loop.total_batch_idx)
        bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step.copy_(torch.where(bad, self.global_step, self.first_bad_step))
        if self.global_step % self.hparams.finite_check_interval == 0:
            self._raise_if_non_finite()
        valid = losses.valid
        self.tokens_seen += valid.sum()
        self.gradient_tokens += (valid & ~call).sum()
        self.log("train/loss", loss, prog_bar=True)
        self._log_calls("train", losses, call)
        for name, value in self.strategy.metrics(batch, call).items():
            self.log(f"train/{name}", value)
        self.log("train/tokens_seen", self.tokens_seen.float() * self.trainer.world_size)
        self.log("train/gradient_tokens", self.gradient_tokens.float() * self.trainer.world_size)
        return loss

    def _raise_if_non_finite(self) -> None:
        step = int(self.first_bad_step)
        if step >= 0:
            found = self._checkpoint_before(step)
            resumed = self.trainer.ckpt_path
            resumed_bad = resumed and int(read_checkpoint(resumed, mmap=True)["global_step"]) >= step
            held = (f"the checkpoint this run resumed from ({resumed}) already gives it, as does every checkpoint "
                    f"from step {step} on" if resumed_bad
                    else f"checkpoints from step {step} on (last.ckpt included) hold the weights that gave it")
            advice = (f"Last good checkpoint: {found[0]} (step {found[1]}); resume from it with a lower --model.lr "
                      f"({held})" if found else f"No checkpoint was saved before it ({held}): start a new run, "
                      "without --ckpt_path, with a lower --model.lr")
            raise NonFiniteLossError(f"non-finite training loss at step {step}; stopping. {advice}, or check the data")

    def _checkpoint_before(self, bad_step: int) -> tuple[str, int] | None:
        """The newest checkpoint of this run (or of the run it resumed from, in that folder) saved before step
        ``bad_step``, the first non-finite loss, as (path, step). One saved at ``bad_step`` holds the weights that
        produced it."""
        paths = []
        resumed = self.trainer.ckpt_path
        if resumed:
            paths += Path(resumed).parent.glob("*.ckpt")
        for cb in self.trainer.checkpoint_callbacks:  # ModelCheckpoint tracks only its newest file: list its folder
            folder = getattr(cb, "dirpath", None)
            if folder and Path(folder).is_dir():
                paths += [p for p in Path(folder).glob("*.ckpt") if p.stat().st_mtime >= self._fit_started]
        steps = {}
        for p in set(map(str, paths)):
            try:
                steps[p] = int(read_checkpoint(p, mmap=True)["global_step"])
            except (UsageError, KeyError):
                continue
        good = [(p, s) for p, s in steps.items() if s < bad_step]
        # among equals, an interval checkpoint: last.ckpt may be overwritten later
        return max(good, key=lambda ps: (ps[1], not Path(ps[0]).stem.startswith("last")), default=None)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._raise_if_non_finite()

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 x matmul parameters (LM head included) + attention (PaLM appendix B)."""
        c = self.model.config
        matmul_params = non_embedding_params(self.model) + c.n_embd * c.vocab_size
        return 6 * matmul_params + 12 * c.n_layer * c.n_embd * c.n_positions

    def on_train_start(self) -> None:
        from lightning.fabric.utilities.throughput import get_available_flops

        self._reapply_optim_hparams()

        if self.hparams.peak_tflops:
            self._peak_flops = self.hparams.peak_tflops * 1e12
        elif self.device.type == "cuda":
            self._peak_flops = get_available_flops(self.device, self.trainer.precision)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Throughput (and MFU when the peak is known) from wall time between batches: no device sync."""
        now = time.perf_counter()
        if self._last_batch_time is not None:
            tokens_per_s = batch["input_ids"].numel() * self.trainer.world_size / (now - self._last_batch_time)
            self.log("train/tokens_per_s", tokens_per_s, prog_bar=True)
            if self._peak_flops:
                per_device = tokens_per_s / self.trainer.world_size
                self.log("train/mfu", per_device * self.flops_per_token() / self._peak_flops)
        self._last_batch_time = now

    def _log_calls(self, split: str, losses: TokenLosses, call: torch.Tensor) -> None:
        """Realised call rate, losses and P(<CALL>) at call vs non-call targets."""
        valid = losses.valid
        rest = valid & ~call
        n_call, n_rest = call.sum().clamp(min=1), rest.sum().clamp(min=1)
        p_call = torch.exp(-losses.call.detach())
        self.log_dict({
            f"{split}/call_rate": call.sum() / valid.sum().clamp(min=1),
            f"{split}/loss_call_targets": (losses.call.detach() * call).sum() / n_call,  # -log p(<CALL>)
            f"{split}/loss_noncall": (losses.target.detach() * rest).sum() / n_rest,
            f"{split}/orig_loss_at_calls": (losses.target.detach() * call).sum() / n_call,  # what a call saved
            f"{split}/p_call_at_calls": (p_call * call).sum() / n_call,
            f"{split}/p_call_at_noncalls": (p_call * rest).sum() / n_rest,
        })

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        loss, losses, call = self._step(batch, 10**9 + batch_idx)
        self.log(f"{split}/loss", loss, prog_bar=True)
        self._log_calls(split, losses, call)
        # Paper Fig. 5: the model's own call mask = the batch's top <CALL> scores; ground-truth loss on each side.
        # The paper ranks raw <CALL> logits; we rank the log-odds [ours], which orders positions like p(<CALL>).
        own = select_top(losses.call_logodds, losses.valid, budget(losses.valid, self.hparams.fig5_call_rate))
        rest = losses.valid & ~own
        self.log_dict({
            f"{split}/fig5_call_loss": (losses.target * own).sum() / own.sum().clamp(min=1),
            f"{split}/fig5_noncall_loss": (losses.target * rest).sum() / rest.sum().clamp(min=1),
            # did the model learn the rule? share of its own mask the strategy also selects (chance: call rate)
            f"{split}/fig5_rule_overlap": (own & call).sum() / own.sum().clamp(min=1),
        })

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    # -- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2 and "wpe" not in n]
        no_decay = [p for n, p in self.named_parameters() if p.dim() < 2 or "wpe" in n]
        hp = self.hparams
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=hp.betas, fused=self.device.type == "cuda")
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def schedule(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            progress = min(1.0, (step - hp.warmup_steps) / max(1, total - hp.warmup_steps))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        self._schedule = sched
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _reapply_optim_hparams(self) -> None:
        """A resume restores the optimizer's and the schedule's state, their settings included: this run's lr,
        weight decay and betas are put back (the schedule's shape, warm-up, floor and length, is this run's
        already), so ``--model.lr`` on resume applies from the first resumed step. A fresh run: no change."""
        hp, sched = self.hparams, self._schedule
        if sched is None:  # the CLI's --optimizer / --lr_scheduler replaced ours: theirs to configure
            return
        opt = sched.optimizer
        sched.base_lrs = [hp.lr] * len(opt.param_groups)
        for group, decay, factor in zip(opt.param_groups, (hp.weight_decay, 0.0), sched.lr_lambdas):
            group.update(initial_lr=hp.lr, lr=hp.lr * factor(sched.last_epoch), weight_decay=decay,
                         betas=tuple(hp.betas))

    def on_fit_start(self) -> None:
        self._fit_started = time.time() - 2  # checkpoints newer than this are this run's (2 s: coarse file clocks)
        millions = non_embedding_params(self.model) / 1e6
        rank_zero_info(f"SLM: preset {self.hparams.preset}, {millions:.2f}M non-embedding parameters, "
                       f"vocabulary {self.hparams.vocab_size} (<CALL> = id {self.call_id})")
