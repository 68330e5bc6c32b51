"""Which id a benchmark row has, so that predictions made elsewhere can be matched to it.

The rule is the same for every benchmark file: the row's own id field (`id`, `task_id`,
`unique_id` or `idx`, the first one present), else its 0-based position in the file as a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ID_FIELDS: tuple[str, ...] = ("id", "task_id", "unique_id", "idx")


def row_id(row: dict[str, Any], index: int, fields: Sequence[str] = ID_FIELDS) -> str:
    """The id of `row`, the `index`-th row (0-based) of its file."""
    for name in fields:
        value = row.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, str)) and str(value) != "":
            return str(value)
    return str(index)
