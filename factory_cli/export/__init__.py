"""Export a trained model: merge adapters, quantize (awq, gptq, int8, nf4, fp8), write GGUF, prove the artefact.

Importing this package is cheap (no torch): `plan_export` is pure; `run_export` imports the engines it needs.
The request and its checks live in request.py, the plan in plan.py, the work in run.py, the report and printing
in report.py.
"""

from factory_cli.export.plan import plan_export
from factory_cli.export.report import ExportReport, print_export_plan, print_export_report
from factory_cli.export.request import FORMATS, QUANT_METHODS, ExportRequest
from factory_cli.export.run import run_export

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
