"""The `accelerate launch` command that starts the engine's ranks on one machine.

Machine 0's launcher is started by the controller (`azr.engine.controller.client`); on the other machines
of a multi-node run the same command comes from `azr engine launch --machine-rank K`, one per
node (infra/README.md). On CPU the ranks meet over gloo: Accelerate only starts several CPU
processes through torchrun when asked for `--multi_gpu` with no visible GPU, and
`ACCELERATE_USE_CPU` keeps every rank on the CPU.

With several ranks `--multi_gpu` is always passed, so Accelerate does not read the
`distributed_type` of an `engine.accelerate_config` file (accelerate commands/launch.py
`_validate_launch_command` reads it only when no such flag is given): `trainer.strategy`
alone decides how the model is held (DDP, FSDP2 applied by the engine, or the engine's own
DeepSpeed plugin), and the flags below override the file's process counts and precision.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from azr.config.schema import AZRConfig

SERVICE_MODULE = "azr.engine.rank.service"
ENGINE_DIR = "engine"  # under the run directory: config, log, exchange files, rank pids
ROLLOUT_GPUS_ENV = "AZR_ROLLOUT_GPUS"  # the GPUs rank 0 gives its vLLM servers (rollout.gpus)


def engine_dir(run_root: Path) -> Path:
    return Path(run_root) / ENGINE_DIR


def on_cpu() -> bool:
    """Whether the engine runs on the CPU: no NVIDIA GPU is visible to this machine. Decided
    without the controller's torch, which may be a CPU build while the engine's interpreter
    (`engine.python`) has CUDA."""
    return not visible_gpus()


def _driver_gpu_count() -> int:
    """The machine's NVIDIA GPUs as the driver lists them: `nvidia-smi -L`, else the driver's
    /proc entries; 0 without a driver."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0:
            return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))
    proc = Path("/proc/driver/nvidia/gpus")
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def launch_command(config: AZRConfig, run_root: Path, *, machine_rank: int = 0, port: int | None = None,
                   python: str | None = None, cpu: bool | None = None) -> list[str]:
    """argv of one machine's launcher. `port`: the rendezvous port (engine.main_process_port
    when set, else the caller picks a free one on a single machine)."""
    engine = config.engine
    world, machines = config.trainer.world_size(), engine.num_machines
    if not 0 <= machine_rank < machines:
        raise ValueError(f"machine rank {machine_rank} is outside 0..{machines - 1} (engine.num_machines = {machines})")
    rendezvous = engine.main_process_port or port
    if rendezvous is None:
        raise ValueError("no rendezvous port: set engine.main_process_port")
    cpu = on_cpu() if cpu is None else cpu
    argv = [python or engine.python or colocated_vllm_python(config) or sys.executable, "-m", "accelerate.commands.launch"]
    if engine.accelerate_config is not None:
        argv += ["--config_file", str(engine.accelerate_config)]
    if world > 1 or machines > 1:
        argv.append("--multi_gpu")  # torchrun; on CPU it gives gloo ranks (see module docstring)
    elif cpu:
        argv.append("--cpu")
    argv += [
        "--num_processes", str(world),
        "--num_machines", str(machines),
        "--machine_rank", str(machine_rank),
        "--main_process_ip", engine.main_process_ip,
        "--main_process_port", str(rendezvous),
        "--mixed_precision", "no",  # the policy chooses its own precision from model.dtype
        "--dynamo_backend", "no",
        "-m", SERVICE_MODULE,
        "--run-dir", str(Path(run_root).resolve()),
    ]
    return argv


def colocated_vllm_python(config: AZRConfig) -> str | None:
    """The interpreter of the engine when vLLM runs inside its ranks (`rollout.vllm.mode:
    colocate`) and cannot be imported here: the one with vLLM (`rollout.vllm.python`,
    $AZR_VLLM_PYTHON, ./.venv-vllm), as for a vLLM server. None: this one will do."""
    import importlib.util

    rollout = config.rollout
    if rollout.backend != "vllm" or rollout.vllm.mode != "colocate" or importlib.util.find_spec("vllm") is not None:
        return None
    from azr.engine.rollout.vllm.server import find_vllm_python

    found = find_vllm_python(rollout.vllm.python, Path(__file__).resolve().parents[3])
    return None if found == sys.executable else found


def launch_environment(*, cpu: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment: this one, the project importable, CPU ranks kept on the CPU."""
    env = dict(os.environ)
    project = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["ACCELERATE_USE_CPU"] = "true"
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------- rollout GPUs


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them (indices or UUIDs); [] on CPU."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        names: list[str] = []
        for part in value.split(","):
            part = part.strip()
            if not part or part.startswith("-"):
                break  # CUDA stops enumerating at the first invalid entry
            names.append(part)
        return names
    return [str(index) for index in range(_driver_gpu_count())]


def split_gpus(config: AZRConfig, visible: list[str]) -> tuple[list[str], list[str]]:
    """(the trainer's, the vLLM servers') GPUs on machine 0: the trainer's ranks of this machine
    take the first ones, `rollout.gpus` the next; a clear error when they do not fit."""
    wanted = config.rollout.gpus
    if wanted == 0:
        return visible, []
    ranks = config.trainer.world_size() // config.engine.num_machines
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"CUDA_VISIBLE_DEVICES={shown}" if shown is not None else "all of this machine's"
    if not visible:
        raise ValueError(
            f"rollout.gpus={wanted} sets GPUs aside for vLLM servers, but no GPU is visible here ({where}); "
            "on a CPU machine set rollout.gpus=0 (the server then shares the CPU with the trainer)"
        )
    if ranks + wanted > len(visible):
        raise ValueError(
            f"rollout.gpus={wanted} plus the trainer's {ranks} rank(s) on this machine (trainer.processes="
            f"{config.trainer.world_size()}) need {ranks + wanted} GPUs, but {len(visible)} are visible "
            f"({where}: {','.join(visible)}); lower rollout.gpus or trainer.processes"
        )
    return visible[:ranks], visible[ranks:ranks + wanted]


def gpu_environment(config: AZRConfig, *, cpu: bool) -> dict[str, str]:
    """Machine 0's launcher environment for `rollout.gpus`: the trainer's ranks see only their
    GPUs (CUDA_VISIBLE_DEVICES), rank 0 learns the servers' ones ($AZR_ROLLOUT_GPUS)."""
    if config.rollout.gpus == 0:
        return {}
    trainer, rollout = split_gpus(config, [] if cpu else visible_gpus())
    return {"CUDA_VISIBLE_DEVICES": ",".join(trainer), ROLLOUT_GPUS_ENV: ",".join(rollout)}


def server_gpu_shares(config: AZRConfig, servers: int) -> list[list[str] | None]:
    """Each data-parallel server's CUDA_VISIBLE_DEVICES (None: the caller's devices, when no
    GPUs are set aside). Read from $AZR_ROLLOUT_GPUS in a launched engine; an in-process engine
    splits the visible GPUs itself, as the launcher would."""
    if config.rollout.gpus == 0:
        return [None] * servers
    value = os.environ.get(ROLLOUT_GPUS_ENV)
    ids = [p for p in value.split(",") if p] if value is not None else split_gpus(config, visible_gpus())[1]
    if len(ids) != config.rollout.gpus:
        raise ValueError(f"rollout.gpus={config.rollout.gpus} but ${ROLLOUT_GPUS_ENV} names {len(ids)}: {value!r}")
    size = len(ids) // servers
    return [ids[i * size:(i + 1) * size] for i in range(servers)]
