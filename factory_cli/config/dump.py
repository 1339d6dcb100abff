"""A resolved job back to YAML: the run directory's job.yaml, reproducible as is."""

from __future__ import annotations

from typing import Any

import yaml

from factory_cli.config.schema import JobBase


class _JobDumper(yaml.SafeDumper):
    """SafeDumper that writes lists of scalars inline and keeps key order."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_JobDumper.add_representer(list, _represent_list)


def job_to_dict(job: JobBase) -> dict[str, Any]:
    """Plain data of the job: every field that applies, nothing that the loader would refuse."""
    from factory_cli.config.validate import METHOD_SECTIONS, STAGE_SECTIONS

    data = job.model_dump(mode="json")
    for section in STAGE_SECTIONS:
        if data.get(section) is None:
            data.pop(section, None)
    method = data["method"]
    for sub, kinds in METHOD_SECTIONS.items():
        if method["type"] not in kinds:
            method.pop(sub, None)
    return data


def job_to_yaml(job: JobBase) -> str:
    """YAML text that loads back into the same job."""
    return yaml.dump(job_to_dict(job), Dumper=_JobDumper, sort_keys=False, allow_unicode=True, width=120)
