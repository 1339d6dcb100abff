"""Data: file readers, format conversion to canonical rows, chat templates and the training pipeline."""
