"""spaCy + reference ablation (paper section 5.4): fact tokens ranked by a reference model's loss instead of
the SLM's own. Two-stage, like Rho-1: needs ``ref_loss`` from :class:`baselines.rho1.ReferenceLoss`."""
from lacy.selection.lacy_rule import LaCy


class SpacyRef(LaCy):
    requires = ("fact", "ref_loss")

    def scores(self, batch, losses, step):
        return self.side(batch, "ref_loss").float()
