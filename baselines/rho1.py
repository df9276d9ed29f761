"""Rho-1 adapted to calls (paper section 5): delegate the tokens with the LOWEST excess loss.

    excess_i = loss_SLM(x_i) - loss_ref(x_i)        (signed)

Rho-1 trains on high-excess tokens (learnable, not yet learned); the paper's adaptation turns the 15% with
the lowest excess loss into ``<CALL>``. The reference is any causal LM with the same tokenizer (default: a
vanilla model trained on the same corpus, exported with lacy.export).

This strategy computes the reference loss online: one no-grad forward of the reference, in eval mode, on the
training device, attached to the batch as ``batch["ref_loss"]`` before the step. The selector reads only
the batch, so a precomputed ``ref_loss`` side array selects the same tokens.
"""
import torch
from transformers import AutoModelForCausalLM

from lacy.objective import token_losses
from lacy.selection import budget, select_top
from lacy.strategy import CallStrategy


def rho1_select(loss, ref_loss, valid, k):
    """The k valid targets with the lowest excess loss (SLM loss - reference loss)."""
    return select_top(-(loss - ref_loss), valid, k)


class Rho1(CallStrategy):
    """Args:
        reference: local Hugging Face folder of the reference model (same tokenizer; ``<CALL>`` row optional).
        call_rate: fraction of each batch's valid targets that become ``<CALL>``.
    """

    requires = ("ref_loss",)

    def __init__(self, reference: str, call_rate: float = 0.15):
        super().__init__(call_rate)
        self.reference_path = reference
        self.reference = None

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        ref = AutoModelForCausalLM.from_pretrained(self.reference_path, local_files_only=True)
        rows, ours = ref.config.vocab_size, pl_module.hparams.vocab_size
        if rows not in (ours, ours - 1):
            raise ValueError(f"Rho1 reference {self.reference_path!r} has {rows} vocabulary rows; the SLM has {ours} "
                             "(<CALL> included): the reference must use the same tokenizer")
        self.reference = ref.to(pl_module.device).eval().requires_grad_(False)
        self.needs_call_column = rows == ours - 1

    @torch.no_grad()
    def reference_loss(self, batch) -> torch.Tensor:
        logits = self.reference(input_ids=batch["input_ids"]).logits
        if self.needs_call_column:  # a reference without <CALL>: p_noCALL is its plain softmax
            logits = torch.cat([logits, logits.new_full(logits.shape[:-1] + (1,), float("-inf"))], dim=-1)
        return token_losses(logits, batch["labels"]).target

    def _attach(self, batch):
        if self.reference is not None and "ref_loss" not in batch:
            batch["ref_loss"] = self.reference_loss(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._attach(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._attach(batch)

    def select(self, batch, losses, step):
        k = budget(losses.valid, self.call_rate)
        return rho1_select(losses.target, self.side(batch, "ref_loss").float(), losses.valid, k)
