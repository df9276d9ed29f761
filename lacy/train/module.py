"""The LightningModule: a GPT-2 SLM with a ``<CALL>`` row, trained with the LaCy objective.

One forward per step. The per-token losses of that forward (detached) go to the configured strategy,
which returns the call mask; the objective does the rest. The strategy is a Callback found in
``trainer.callbacks``; training refuses to start with none or several, so a YAML that forgets it
cannot silently train a plain LM.
"""
import math
import time
from dataclasses import replace

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
import torch

from lacy.errors import UsageError
from lacy.io.checkpoints import MODEL_CONFIG_KEY
from lacy.model.call_token import call_id
from lacy.model.slm import build_slm, flops_per_token, model_config, non_embedding_params
from lacy.selection.strategy import CallStrategy, find_strategy
from lacy.selection.topk import budget, select_top
from lacy.train.guards import raise_if_non_finite
from lacy.train.objective import NONCALL_FORMS, TokenLosses, lacy_objective, token_losses
from lacy.train.optim import adamw_cosine, reapply_settings
from lacy.train.resume import check_checkpoint, check_own_tokenizer
from lacy.train.throughput import Throughput


class CallLM(L.LightningModule):
    """Args:
        preset: the paper's GPT-2 from scratch, one of lacy.model.gpt2.PRESETS (micro, tiny, small, gpt2-334m,
            gpt2-1.3b); used unless ``architecture`` or ``pretrained`` is set.
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
            [ours] (the full softmax, which also trains ``<CALL>`` down; lacy/train/objective.py says why).
        architecture: any transformers family from scratch [ours]: ``{family: llama, hidden_size: ..., ...}`` or a
            folder with a config.json (lacy/model/slm.py); vocabulary and context come from the data.
        pretrained: continue a pretrained model [ours]: a local folder, ``smollm2`` or ``hf:NAME``; data.tokenizer
            must be the same source (the model's own tokenizer, ``<CALL>`` appended).
        cache_dir: where a GGUF or hub model is materialised as a folder (linked from data.cache_dir).
    """

    def __init__(self, preset: str = "tiny", vocab_size: int = 8193, block_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 50,
                 min_lr_ratio: float = 0.1, dropout: float = 0.0, fig5_call_rate: float = 0.15,
                 finite_check_interval: int = 1, compile: bool = False, peak_tflops: float | None = None,
                 noncall_softmax: str = "renormalised", architecture: dict | str | None = None,
                 pretrained: str | None = None, cache_dir: str = ".cache/lacy"):
        super().__init__()
        if noncall_softmax not in NONCALL_FORMS:
            raise UsageError(f"model.noncall_softmax: {noncall_softmax!r} is not one of {NONCALL_FORMS}")
        finite = lambda *xs: all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)
        for option, value, ok, need in (("lr", lr, finite(lr) and lr > 0, "a finite number > 0"),
                                        ("dropout", dropout, finite(dropout) and 0 <= dropout < 1, "in [0, 1)"),
                                        ("weight_decay", weight_decay, finite(weight_decay) and weight_decay >= 0,
                                         "a finite number >= 0"),
                                        ("betas", list(betas), len(betas) == 2 and finite(*betas) and
                                         all(0 <= b < 1 for b in betas), "two numbers in [0, 1), e.g. [0.9, 0.95]"),
                                        ("warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0"),
                                        ("min_lr_ratio", min_lr_ratio, finite(min_lr_ratio) and 0 <= min_lr_ratio <= 1,
                                         "in [0, 1]"),
                                        ("fig5_call_rate", fig5_call_rate, finite(fig5_call_rate) and
                                         0 < fig5_call_rate <= 1, "in (0, 1]"),
                                        ("finite_check_interval", finite_check_interval, finite_check_interval >= 1,
                                         ">= 1"),
                                        ("peak_tflops", peak_tflops, peak_tflops is None or finite(peak_tflops) and
                                         peak_tflops > 0, "a finite number > 0, or null")):
            if not ok:
                raise UsageError(f"model.{option}={value}: must be {need}")
        self.save_hyperparameters()
        self.model = build_slm(vocab_size, block_size, preset, architecture, pretrained, dropout, cache_dir)
        self.call_id = call_id(vocab_size)
        self._strategy: CallStrategy | None = None
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("gradient_tokens", torch.zeros((), dtype=torch.long))  # paper's budget equaliser
        # first step with a non-finite loss (-1: none), kept on device so checking it costs no per-step sync
        self.register_buffer("first_bad_step", torch.full((), -1, dtype=torch.long), persistent=False)
        # not registered as a submodule, so state_dict keys stay ``model.*`` whether compiled or not
        self.__dict__["_forward"] = torch.compile(self.model) if compile else self.model
        self._fit_started = float("inf")
        self._schedule: torch.optim.lr_scheduler.LambdaLR | None = None  # set by configure_optimizers
        self._throughput = Throughput(flops_per_token(self.model, block_size), peak_tflops)

    # -- wiring ---------------------------------------------------------------------------------------
    @property
    def strategy(self) -> CallStrategy:
        """The run's one selection strategy, found once among ``trainer.callbacks`` (main.py checks the config
        before any work; this covers a Trainer built in Python) and handed on: budgets and evaluations ask here."""
        if self._strategy is None:
            self._strategy = find_strategy(self.trainer.callbacks)
        return self._strategy

    def setup(self, stage: str) -> None:
        self.strategy  # noqa: B018 - refuse none or two strategies before any step
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.hparams.pretrained and getattr(datamodule, "tokenizer", None) is not None:
            check_own_tokenizer(self.hparams.pretrained, datamodule.tokenizer, self.hparams.cache_dir)

    def check_checkpoint(self, checkpoint: dict, path, tokenizer=None) -> dict[str, tuple]:
        """Refuse a checkpoint this module cannot continue or evaluate (lacy/train/resume.py); returns the
        hyper-parameters this run changes, ``{name: (checkpoint's, this run's)}``."""
        return check_checkpoint(self, checkpoint, path, tokenizer)

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
        raise_if_non_finite(int(self.first_bad_step), self.trainer, self._fit_started)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._raise_if_non_finite()
        checkpoint[MODEL_CONFIG_KEY] = model_config(self.model)  # rebuilds the SLM without its source (export)

    def on_train_start(self) -> None:
        if self._schedule is not None:  # None: the CLI's --optimizer / --lr_scheduler replaced ours
            reapply_settings(self._schedule, self.hparams)
        self._throughput.start(self.device, self.trainer.precision)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        world = self.trainer.world_size
        for name, value in self._throughput.tick(batch["input_ids"].numel() * world).items():
            self.log(f"train/{name}", value, prog_bar=True)
            mfu = self._throughput.mfu(value / world)
            if mfu is not None:
                self.log("train/mfu", mfu)

    def _log_calls(self, split: str, losses: TokenLosses, call: torch.Tensor) -> None:
        """Realised call rate, losses and P(<CALL>) at call vs non-call targets. A batch with no call target logs
        nothing about call targets (nothing to score is no score, not 0): Vanilla never logs them (a Python flag:
        no device sync per step)."""
        valid = losses.valid
        rest = valid & ~call
        n_call, n_rest = call.sum().clamp(min=1), rest.sum().clamp(min=1)
        p_call = torch.exp(-losses.call.detach())
        self.log_dict({
            f"{split}/call_rate": call.sum() / valid.sum().clamp(min=1),
            f"{split}/loss_noncall": (losses.target.detach() * rest).sum() / n_rest,
            f"{split}/p_call_at_noncalls": (p_call * rest).sum() / n_rest,
        })
        if self.strategy.makes_calls:
            self.log_dict({
                f"{split}/loss_call_targets": (losses.call.detach() * call).sum() / n_call,  # -log p(<CALL>)
                f"{split}/orig_loss_at_calls": (losses.target.detach() * call).sum() / n_call,  # what a call saved
                f"{split}/p_call_at_calls": (p_call * call).sum() / n_call,
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
        opt, self._schedule = adamw_cosine(self, self.hparams, self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self._schedule, "interval": "step"}}

    def on_fit_start(self) -> None:
        self._fit_started = time.time() - 2  # checkpoints newer than this are this run's (2 s: coarse file clocks)
        millions = non_embedding_params(self.model) / 1e6
        hp = self.hparams
        what = (f"pretrained {hp.pretrained}" if hp.pretrained else f"{type(self.model).__name__} from scratch"
                if hp.architecture else f"preset {hp.preset}")
        rank_zero_info(f"SLM: {what}, {millions:.2f}M non-embedding parameters, "
                       f"vocabulary {hp.vocab_size} (<CALL> = id {self.call_id})")
