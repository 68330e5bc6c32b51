"""One Prefect global concurrency limit per GPU, so two flow runs never share a GPU by accident.

Each GPU of a machine gets a limit named `gpu-<host>-<device>` with limit 1. A run that needs N
GPUs takes one slot on N of those limits, atomically (all or none), for as long as it runs, and
gives them back when it ends. The slots are leases: a run killed with SIGKILL stops renewing its
lease and the server frees its GPUs after `LEASE_SECONDS`.

`<device>` is the entry of CUDA_VISIBLE_DEVICES (an index, or a `GPU-...`/`MIG-...` UUID), or the
index CUDA reports when that variable is unset. Before CUDA is initialised the holder picks any
N free GPUs among the visible ones and narrows CUDA_VISIBLE_DEVICES to them (so two 4-GPU runs
share an 8-GPU box side by side); once CUDA is initialised, or under a distributed launcher, the
process already uses the first N visible GPUs, so exactly those are held.

Environment:
- `AZR_GPU_LIMITS=off`: hold nothing (Kubernetes: the device plugin already gives each pod its
  own GPUs, and the in-pod indices say nothing about the node's).
- `AZR_GPU_HOST`: the `<host>` part; defaults to the host name. Containers must set it to the
  machine's name (their own host name is the container id).
- `AZR_GPUS_HELD`: set while GPUs are held, so that child processes and nested calls (a
  launcher started by `python -m flows.gpu exec`, vLLM workers) do not take them a second time.

Command line (`python -m flows.gpu --help`): `create` makes the limits up front, `status` lists
them with their holders' slot counts, `exec` holds GPUs while a command (e.g. `accelerate
launch ...`) runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound

LIMITS_ENV = "AZR_GPU_LIMITS"
HOST_ENV = "AZR_GPU_HOST"
HELD_ENV = "AZR_GPUS_HELD"
LIMIT_PREFIX = "gpu"
LEASE_SECONDS = 120.0  # a killed run's GPUs come back after this; renewed every 90 s while held
POLL_SECONDS = 2.0
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

__all__ = [
    "HELD_ENV",
    "HOST_ENV",
    "LIMITS_ENV",
    "ensure_gpu_limits",
    "gpu_host",
    "hold_gpus",
    "limit_name",
    "main",
    "visible_gpus",
    "gpus_to_hold",
]


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger inside a run (so the UI shows the GPU choice), else a plain one."""
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("azr.gpu")


def gpu_host() -> str:
    """The `<host>` part of limit names: AZR_GPU_HOST, else the host name, made name-safe."""
    raw = os.environ.get(HOST_ENV) or socket.gethostname()
    safe = _NAME_UNSAFE.sub("-", raw).strip("-.")
    if not safe:
        raise ValueError(f"cannot build a GPU limit name from host {raw!r}; set {HOST_ENV}")
    return safe


def limit_name(device: str, host: str | None = None) -> str:
    """`gpu-<host>-<device>`, with characters Prefect names refuse replaced by `-`."""
    dev = _NAME_UNSAFE.sub("-", str(device)).strip("-")
    return f"{LIMIT_PREFIX}-{host or gpu_host()}-{dev}"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA names them for it: CUDA_VISIBLE_DEVICES when set
    (an empty value or `-1` means none), else the GPUs the NVIDIA driver lists (`nvidia-smi -L`,
    /proc/driver/nvidia). Never torch's count: the flow's torch may be a CPU build on a GPU box
    (issue 22, item 6); the engine's own interpreter decides what it runs on."""
    from azr.engine.controller.launch import visible_gpus as driver_visible_gpus

    return driver_visible_gpus()


def gpus_to_hold(config: Any) -> int:
    """GPUs a run takes on this machine (machine 0): its engine ranks here plus the GPUs set aside
    for dedicated vLLM servers (`rollout.gpus`); 0 for a CPU run (issue 22, item 10)."""
    if config.trainer.gpus == 0:
        return 0
    return config.trainer.world_size() // config.engine.num_machines + config.rollout.gpus


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _launcher_rank() -> int | None:
    """LOCAL_RANK under torchrun / `accelerate launch` with more than one process, else None."""
    world = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE")
    rank = os.environ.get("LOCAL_RANK")
    if rank is None or world is None or int(world) <= 1:
        return None
    return int(rank)


def ensure_gpu_limits(devices: Sequence[str], host: str | None = None) -> list[str]:
    """Create `gpu-<host>-<device>` (limit 1) for each device where it is missing.

    Returns the limit names. Safe to race: a limit another process just created is fine.
    A limit that exists with a limit other than 1, or inactive, is kept (an operator may have
    chosen that) but logged, because it no longer keeps runs apart.
    """
    names = [limit_name(d, host) for d in devices]
    log = _logger()
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                    log.info("created global concurrency limit %s (limit 1)", name)
                except ObjectAlreadyExists:
                    pass
                continue
            if existing.limit != 1 or not existing.active:
                log.warning(
                    "global concurrency limit %s has limit %s, active=%s: it does not keep runs "
                    "from sharing that GPU (`prefect gcl update %s --limit 1` / `prefect gcl enable %s`)",
                    name, existing.limit, existing.active, name, name,
                )
    return names


def _free_devices(devices: Sequence[str], host: str) -> list[str]:
    """The devices whose limit has a free slot now (a hint; the acquisition itself is atomic)."""
    free: list[str] = []
    with get_client(sync_client=True) as client:
        for device in devices:
            try:
                limit = client.read_global_concurrency_limit_by_name(limit_name(device, host))
            except ObjectNotFound:
                continue
            if limit.active_slots < limit.limit:
                free.append(device)
    return free


def _is_busy(exc: ConcurrencySlotAcquisitionError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


def _holder() -> ConcurrencyLeaseHolder | None:
    """The current flow run, so the Prefect UI shows which run holds a GPU."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return None
    return ConcurrencyLeaseHolder(type="flow_run", id=UUID(str(run_id)))


@contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the block; restore them after."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def hold_gpus(
    count: int,
    timeout_s: float | None = None,
    *,
    host: str | None = None,
    poll_s: float = POLL_SECONDS,
    lease_s: float = LEASE_SECONDS,
) -> Iterator[list[str]]:
    """Hold `count` GPUs of this machine for the block; yield the devices held.

    `count == 0` (a CPU run) does nothing and contacts no server. `timeout_s=None` waits as long
    as other runs hold the GPUs; otherwise TimeoutError after `timeout_s` seconds. Inside the
    block CUDA_VISIBLE_DEVICES lists the held GPUs (when they could still be chosen freely).
    Use it from synchronous code (a sync flow); it blocks while waiting.
    """
    if count < 0:
        raise ValueError(f"hold_gpus: count must be >= 0, got {count}")
    if count == 0:
        yield []
        return
    log = _logger()
    if os.environ.get(LIMITS_ENV, "on").strip().lower() in {"off", "0", "false", "no"}:
        devices = visible_gpus()[:count]
        log.info("GPU limits are off (%s); using %s without holding them", LIMITS_ENV, devices)
        yield devices
        return
    rank = _launcher_rank()
    pinned = _cuda_initialised() or rank is not None
    if not pinned:
        # Indices as nvidia-smi shows them, the same in every process of this machine.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    visible = visible_gpus()
    if count > len(visible):
        raise RuntimeError(
            f"hold_gpus: the run needs {count} GPU(s) but this process sees {len(visible)} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); run it on a "
            f"worker with at least {count} GPUs, or lower trainer.processes (or rollout.gpus)"
        )
    if os.environ.get(HELD_ENV) or (rank is not None and rank != 0):
        # An outer holder (`python -m flows.gpu exec`, or local rank 0 of this launch) holds them.
        yield visible[:count]
        return
    host = host or gpu_host()
    ensure_gpu_limits(visible, host)
    candidates = visible[:count] if pinned else visible
    holder = _holder()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited = False
    with ExitStack() as stack:
        while True:
            free = _free_devices(candidates, host)
            chosen = free[:count] if not pinned else (candidates if len(free) == count else [])
            if len(chosen) == count:
                try:
                    stack.enter_context(
                        concurrency(
                            [limit_name(d, host) for d in chosen],
                            occupy=1,
                            max_retries=0,
                            lease_duration=lease_s,
                            strict=True,
                            holder=holder,
                            # A brief API outage must not kill a days-long run: Prefect
                            # retries the renewal and only logs if it keeps failing.
                            raise_on_lease_renewal_failure=False,
                        )
                    )
                    break
                except ConcurrencySlotAcquisitionError as exc:
                    if not _is_busy(exc):
                        raise
            if deadline is not None and time.monotonic() >= deadline:
                busy = sorted(set(candidates) - set(free))
                raise TimeoutError(
                    f"hold_gpus: {count} GPU(s) of {host} not free within {timeout_s:g} s "
                    f"(busy: {', '.join(limit_name(d, host) for d in busy) or 'none'}); other runs "
                    "hold them - see `prefect gcl ls`"
                )
            if not waited:
                log.info("waiting for %d free GPU(s) of %s among %s", count, host, candidates)
                waited = True
            pause = poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
            time.sleep(pause)
        log.info("holding GPU(s) %s of %s (limits %s)", chosen, host, [limit_name(d, host) for d in chosen])
        narrowed = None if pinned else ",".join(chosen)
        env: dict[str, str | None] = {HELD_ENV: ",".join(chosen)}
        if narrowed is not None:
            env["CUDA_VISIBLE_DEVICES"] = narrowed
        with _environ(**env):
            yield list(chosen)


def _status(host: str | None) -> int:
    prefix = f"{LIMIT_PREFIX}-{host}-" if host else f"{LIMIT_PREFIX}-"
    with get_client(sync_client=True) as client:
        limits, offset = [], 0
        while True:
            page = client.read_global_concurrency_limits(limit=200, offset=offset)
            limits.extend(page)
            if len(page) < 200:
                break
            offset += 200
    rows = sorted((lim for lim in limits if lim.name.startswith(prefix)), key=lambda lim: lim.name)
    if not rows:
        print(f"no GPU limits named {prefix}*; create them with `python -m flows.gpu create`")
        return 0
    for limit in rows:
        state = "busy" if limit.active_slots >= limit.limit else "free"
        print(f"{limit.name}\t{limit.active_slots}/{limit.limit}\t{state}{'' if limit.active else ' (inactive)'}")
    return 0


def _exec(count: int, timeout_s: float | None, command: list[str]) -> int:
    """Hold GPUs, run `command` with them visible, forward SIGTERM/SIGINT, return its exit code."""
    if not command:
        raise SystemExit("flows.gpu exec: give the command after `--`, e.g. -- accelerate launch ...")
    with hold_gpus(count, timeout_s) as devices:
        print(f"flows.gpu: holding {devices}; running {' '.join(command)}", file=sys.stderr, flush=True)
        child = subprocess.Popen(command)

        def forward(signum: int, _frame: Any) -> None:
            child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
            return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flows.gpu create|status|exec`: the GPU limits from a shell."""
    parser = argparse.ArgumentParser(prog="python -m flows.gpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create gpu-<host>-<device> limits (limit 1) for this machine's GPUs")
    create.add_argument("--host", help=f"host part of the names (default: ${HOST_ENV} or the host name)")
    create.add_argument("--devices", help="comma-separated devices (default: the GPUs this process sees)")
    create.add_argument("--count", type=int, help="devices 0..COUNT-1 (for a box whose GPUs this shell cannot see)")
    status = sub.add_parser("status", help="list GPU limits and their occupied slots")
    status.add_argument("--host", help="only this host's limits")
    run = sub.add_parser("exec", help="hold GPUs while a command runs: exec --count N -- CMD ...")
    run.add_argument("--count", type=int, required=True)
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait for free GPUs (default: forever)")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    own = logging.getLogger("azr.gpu")  # this module's messages only, not every HTTP request
    own.setLevel(logging.INFO)
    own.propagate = False
    own.addHandler(logging.StreamHandler(sys.stderr))
    try:
        return _main(args)
    except (TimeoutError, RuntimeError, ValueError) as exc:
        print(f"flows.gpu: error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    if args.command == "create":
        if args.devices:
            devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        elif args.count is not None:
            devices = [str(i) for i in range(args.count)]
        else:
            devices = visible_gpus()
        if not devices:
            print("flows.gpu create: no GPUs visible here; pass --count N or --devices 0,1,...", file=sys.stderr)
            return 2
        host = _NAME_UNSAFE.sub("-", args.host).strip("-.") if args.host else gpu_host()
        for name in ensure_gpu_limits(devices, host):
            print(name)
        return 0
    if args.command == "status":
        return _status(_NAME_UNSAFE.sub("-", args.host).strip("-.") if args.host else None)
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return _exec(args.count, args.timeout, command)


if __name__ == "__main__":
    sys.exit(main())
