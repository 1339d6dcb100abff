"""Models: where one comes from (sources.py: registry, local dir, Hub, GGUF file; pure), turning a GGUF file into a
checkpoint once (gguf.py), and loading weights and tokenizer for training (load.py)."""
