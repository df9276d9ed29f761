"""The LightningModule and what runs each step: the objective, budgets in tokens, resume checks, guards, the optimiser, throughput, FSDP."""
