"""factory: a declarative, YAML-driven toolkit for training large language models."""

__version__ = "0.1.0"
