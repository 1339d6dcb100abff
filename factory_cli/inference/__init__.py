"""Inference: load a model (`load`), render a prompt with its chat template (`render`), generate (`generate`).

Every place that generates text (the training run's sample answer, the export check, the accuracy task, `factory
chat`) goes through `render` and `generate`, so prompts are written and generation stops the same way everywhere.
"""
