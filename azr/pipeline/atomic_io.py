"""Atomic file writes (the schemas of the files live in azr/pipeline/schemas.py).

A run can be killed at any moment (pre-emption, OOM, Ctrl-C). Every artifact is therefore
written to a temporary file in the destination directory, fsynced, and renamed over the target,
so a reader sees either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

PathLike = str | os.PathLike[str]


def parquet_problem(path: PathLike, schema: pa.Schema | None = None, *, content: bool = True) -> str | None:
    """Why a Parquet file cannot be trusted (missing, empty, torn, another schema, a page whose
    bytes differ from its checksum), or None.

    A torn write (a full disk, a truncating network file system) loses the footer first; a
    flipped bit inside the data is caught by the CRC32 every page carries (written by
    `write_parquet_atomic`, verified on a full read: `content`). Files written before page
    checksums have none to verify: for them only the footer and the decoding are checked.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "empty (0 bytes)"
    try:
        found = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file ({size} bytes; {exc})"
    if schema is not None and not found.equals(schema):
        missing = [name for name in schema.names if name not in found.names]
        extra = [name for name in found.names if name not in schema.names]
        detail = "; ".join(part for part in (f"missing columns {missing}" if missing else "",
                                             f"unexpected columns {extra}" if extra else "") if part)
        return f"has another schema than this file should ({detail or 'column types differ'})"
    if content:
        try:
            pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            return f"damaged inside ({size} bytes; {str(exc)[:200]})"
    return None


# ------------------------------------------------------------------ content checksums


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """The file's sha256, read in 4 MiB pieces (no whole copy in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_checksums(directory: PathLike, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `directory` by its relative path (files named in `skip`, e.g.
    the completion marker that will hold them, are left out)."""
    root = Path(directory)
    return {path.relative_to(root).as_posix(): sha256_file(path)
            for path in sorted(root.rglob("*")) if path.is_file() and path.name not in skip}


def checksum_problems(directory: PathLike, expected: dict[str, str]) -> list[str]:
    """The files of `directory` whose content differs from the checksums written with them
    (or that are gone); an empty list when every one matches."""
    root = Path(directory)
    problems = []
    for name, digest in sorted(expected.items()):
        path = root / name
        try:
            found = sha256_file(path)
        except FileNotFoundError:
            problems.append(f"{path} is missing")
            continue
        except OSError as exc:
            problems.append(f"{path} is unreadable ({exc.strerror})")
            continue
        if found != digest:
            problems.append(f"{path} differs from the sha256 written with it (damaged on disk)")
    return problems


def json_problem(path: PathLike) -> str | None:
    """Why a JSON record file cannot be trusted (missing, empty, not a JSON object), or None."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not text.strip():
        return "empty"
    try:
        value = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"not valid JSON ({type(exc).__name__}: {str(exc)[:200]})"
    return None if isinstance(value, dict) else f"not a JSON object (a {type(value).__name__})"


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` so that readers never see a partial file."""
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Text flavour of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Serialise first, then write: a value json cannot encode leaves the old file untouched."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_parquet_atomic(table: pa.Table, path: PathLike) -> None:
    """Write `table` as Parquet with the same all-or-nothing guarantee as the other writers,
    every page with its CRC32 (Parquet's page checksums: parquet_problem verifies them)."""
    _atomic_write(path, lambda handle: pq.write_table(table, handle, write_page_checksum=True))


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Temp file in the same directory (same filesystem, so the rename is atomic), fsync,
    `os.replace`, then fsync the directory so the rename itself survives a power loss."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open honours the umask (mkstemp would force 0600 on every artifact).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Persist a rename. Some filesystems refuse fsync on directories; the rename is still
    atomic there, only its durability is up to the OS, so that refusal is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_directory(temp: PathLike, final: PathLike) -> None:
    """Rename a fully written directory into place: a reader sees the old one or the new one.
    An existing `final` is moved aside first, then removed."""
    temp, final = Path(temp), Path(final)
    if final.exists():
        trash = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, final)
    fsync_directory(final.parent)
