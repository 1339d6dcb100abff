"""Export a trained model: merge adapters, quantize (awq, gptq, int8, nf4, fp8), write GGUF, prove the artefact.

Importing this package is cheap (no torch): `plan_export` is pure; `run_export` imports the engines it needs.
"""

from factory_cli.export.run import (
    FORMATS,
    QUANT_METHODS,
    ExportReport,
    ExportRequest,
    plan_export,
    print_export_plan,
    print_export_report,
    run_export,
)

__all__ = [
    "FORMATS",
    "QUANT_METHODS",
    "ExportReport",
    "ExportRequest",
    "plan_export",
    "print_export_plan",
    "print_export_report",
    "run_export",
]
