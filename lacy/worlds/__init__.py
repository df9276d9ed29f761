"""The closed world: its generator, its exact KB checker, world folders, true fact masks."""
