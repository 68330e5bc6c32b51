"""Reading a benchmark's rows from a Hugging Face hub dataset, when the machine is online.

`datasets` is used when it is installed (it knows every layout); otherwise the split's file is
fetched with `huggingface_hub` (a transformers dependency, so always present): first
`<split>.jsonl` (CRUXEval's layout), then any JSONL or Parquet file of the repository whose name
mentions the split. Downloads land in the hub cache, so a second run works offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from azr.eval.benchmarks.jsonl import describe_bad_lines, read_jsonl
from azr.eval.benchmarks.problems import EvalDataError

_READABLE = (".jsonl", ".jsonl.gz", ".parquet")


def _offline_hint(dataset_id: str, cause: BaseException) -> EvalDataError:
    return EvalDataError(
        f"cannot load the dataset {dataset_id!r} from the Hugging Face hub "
        f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else 'no detail'}). "
        "Pass --data with a local copy of the file instead (JSONL in the benchmark's schema)."
    )


def datasets_installed() -> bool:
    return importlib.util.find_spec("datasets") is not None


def load_hub_rows(dataset_id: str, split: str = "test", revision: str | None = None) -> list[dict[str, Any]]:
    """All rows of one split of a hub dataset, as plain dicts."""
    if datasets_installed():
        return _rows_with_datasets(dataset_id, split, revision)
    return _rows_with_hub_files(dataset_id, split, revision)


def _rows_with_datasets(dataset_id: str, split: str, revision: str | None) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(dataset_id, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth and layout errors all mean the same here
        raise _offline_hint(dataset_id, exc) from exc
    return [dict(row) for row in dataset]


def _rows_with_hub_files(dataset_id: str, split: str, revision: str | None) -> list[dict[str, Any]]:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        try:
            path = hf_hub_download(dataset_id, f"{split}.jsonl", repo_type="dataset", revision=revision)
        except EntryNotFoundError:
            files = HfApi().list_repo_files(dataset_id, repo_type="dataset", revision=revision)
            path = hf_hub_download(dataset_id, _pick_split_file(dataset_id, files, split), repo_type="dataset", revision=revision)
    except EvalDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise _offline_hint(dataset_id, exc) from exc
    return _read_rows(str(path))


def _pick_split_file(dataset_id: str, files: list[str], split: str) -> str:
    candidates = sorted(f for f in files if f.endswith(_READABLE) and split in PurePosixPath(f).name)
    if not candidates:
        raise EvalDataError(
            f"the hub dataset {dataset_id!r} has no JSONL or Parquet file for the split {split!r} "
            f"(files: {', '.join(files[:10]) or 'none'}); install `datasets` or pass --data with a local file"
        )
    return candidates[0]


def _read_rows(path: str) -> list[dict[str, Any]]:
    if path.endswith(".parquet"):
        return pd.read_parquet(path).to_dict("records")
    content = read_jsonl(path)
    if content.bad:
        raise EvalDataError(f"the downloaded file is damaged: {describe_bad_lines(path, content.bad)}")
    return [line.row for line in content.rows]
