"""Public benchmark files that do not live on the Hugging Face hub, fetched once into a cache.

EvalPlus publishes HumanEval+ and MBPP+ as release assets on GitHub, and the math harness of the
official AZR repository reads JSONL files kept in that repository. They are downloaded with the
standard library into `$AZR_DATA_DIR` (default `~/.cache/azr/data`), written atomically, and read
from there on later runs; an offline machine gets an error that says which `--data` to pass.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from azr.pipeline.atomic_io import atomic_write_bytes
from azr.eval.benchmarks.problems import EvalDataError

DATA_DIR_ENV = "AZR_DATA_DIR"
_TIMEOUT_S = 60.0


def data_dir() -> Path:
    """Where downloaded benchmark files are kept (and where local copies may be put by hand)."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "azr" / "data"


def cached_download(url: str, name: str, benchmark: str) -> Path:
    """The file at `url`, from the cache when present, else downloaded into it."""
    path = data_dir() / name
    if path.is_file():
        return path
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - a fixed https URL
            payload = response.read()
    except OSError as exc:
        raise EvalDataError(
            f"cannot download the {benchmark} data from {url} ({type(exc).__name__}: {exc}). "
            f"Pass --data with a local copy of the file, or put it at {path}"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload)
    return path
