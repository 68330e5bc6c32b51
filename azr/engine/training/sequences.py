"""The TRR++ batch of an iteration, read from its scored file (`scored.parquet`).

Both sides read it: the controller to see whether there is anything to train, every engine
rank to train on it (the file is the command's payload; docs/architecture.md, process model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from azr.pipeline.atomic_io import PathLike
from azr.engine.api import TrainSequence

if TYPE_CHECKING:
    import pandas as pd

_COLUMNS = ["trained", "prompt_token_ids", "response_token_ids", "group", "advantage"]
_BEHAVIOUR = "behaviour_logprobs"  # absent from the files of runs before it was recorded


def train_sequences(scored: pa.Table | pd.DataFrame) -> list[TrainSequence]:
    """The trained rows of a scored table (a pandas DataFrame or a pyarrow Table), with the
    rollout engine's behaviour log-probs where it recorded them."""
    names = list(scored.column_names if isinstance(scored, pa.Table) else scored.columns)
    wanted = _COLUMNS + ([_BEHAVIOUR] if _BEHAVIOUR in names else [])
    columns = scored.to_pydict() if isinstance(scored, pa.Table) else {c: scored[c].tolist() for c in wanted}
    behaviour = columns.get(_BEHAVIOUR) or [None] * len(columns["trained"])
    return [
        TrainSequence(list(prompt), list(response), group, float(advantage),
                      behaviour_logprobs=None if logprobs is None else list(logprobs))
        for trained, prompt, response, group, advantage, logprobs in zip(*(columns[c] for c in _COLUMNS), behaviour)
        if trained
    ]


def read_train_sequences(path: PathLike) -> list[TrainSequence]:
    present = pq.read_schema(path).names
    return train_sequences(pq.read_table(path, columns=_COLUMNS + [c for c in (_BEHAVIOUR,) if c in present]))
