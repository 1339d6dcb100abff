"""What the engine backends (megatron, verl) share: plan.py for their pure planners (run-directory paths, argv
helpers), run.py for their run steps (engine lookup, child environment, the HF checkpoint link)."""
