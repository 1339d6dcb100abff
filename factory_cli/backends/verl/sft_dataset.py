"""The SFT dataset class verl's trainer loads for factory's parquet (`data.custom_cls`, data.py SFT_DATASET_PAIRS).

verl's MultiTurnSFTDataset reads parquet with pandas, which hands `arrow.json` values over as JSON text; this
subclass decodes each row's messages and tools (stored as JSON by data.py so that every row keeps its own fields)
before verl applies the chat template. Imported only by verl, inside its own environment.
"""

from __future__ import annotations

import json
from typing import Any

from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset


def decoded(value: Any) -> Any:
    """JSON text -> its value; a list of JSON texts -> the list of values; anything else (a null) -> None."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, list):
        return [decoded(item) for item in value]
    return None


class FactorySFTDataset(MultiTurnSFTDataset):
    """MultiTurnSFTDataset over data.py's parquet: messages and tools decoded from JSON, row by row."""

    tools: list[Any] | None  # set by MultiTurnSFTDataset._read_files_and_process

    def _read_files_and_process(self) -> None:
        super()._read_files_and_process()
        if self.tools is not None:
            self.tools = [decoded(item) for item in self.tools]

    def _build_messages(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        messages = decoded(list(example[self.messages_key]))
        return super()._build_messages({**example, self.messages_key: messages})  # type: ignore[no-any-return]
