"""Typed loaders for the model and dataset registries (YAML data under the repo root)."""
