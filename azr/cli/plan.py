"""`azr plan`: the per-device memory of a run, before anything is loaded; and the same check at
the start of `azr train`. The arithmetic is in azr/ops/memory_plan.py, the model facts in
azr/ops/model_facts.py; this module finds the device memory and prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table
from azr.cli.output import console, err_console
from azr.cli.output import fail as _fail

from azr.config.schema import AZRConfig
from azr.ops.cpu_features import dtype_report
from azr.ops.memory_plan import GIB, GPU_RUNTIME_OVERHEAD, MemoryPlan, Suggestion, gib, plan_memory, suggest_changes
from azr.ops.model_facts import ModelFactsError, model_facts

DEFAULT_GPU_GIB = 80.0
IGNORE_FLAG = "--ignore-memory-plan"



def _visible_ids() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (None: unset, every GPU is visible)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip() and part.strip() != "-1"]


def nvidia_smi_memory_gib() -> list[float]:
    """Total memory of each visible GPU from nvidia-smi (which starts no CUDA context here:
    the controller later forks the sandbox's servers)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    visible = _visible_ids()
    sizes = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        index, uuid, mib = parts
        if visible is None or any(v == index or uuid.startswith(v) for v in visible):
            sizes.append(int(mib) / 1024)
    return sizes


def torch_cuda_memory_gib() -> list[float]:
    """Total memory of each visible GPU as torch sees it (when nvidia-smi is missing)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_properties(i).total_memory / GIB for i in range(torch.cuda.device_count())]


def machine_ram_bytes() -> float:
    """Physical RAM, or the cgroup's memory limit when a container has a smaller one."""
    total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, float(text))
    return total


def device_capacity(config: AZRConfig, gpu_memory_gib: float | None) -> tuple[float, str]:
    """(bytes of one device, where the figure came from) for the plan of `config`."""
    if config.trainer.gpus == 0:
        if gpu_memory_gib is not None:
            return gpu_memory_gib * GIB, "--gpu-memory (the RAM of this CPU plan)"
        return machine_ram_bytes(), "this machine's RAM (trainer.gpus is 0: a CPU run)"
    if gpu_memory_gib is not None:
        return gpu_memory_gib * GIB, "--gpu-memory"
    for source, sizes in (("nvidia-smi", nvidia_smi_memory_gib), ("torch.cuda", torch_cuda_memory_gib)):
        found = sizes()
        if found:
            return min(found) * GIB, f"the smallest of the {len(found)} visible GPUs ({source})"
    return DEFAULT_GPU_GIB * GIB, f"no GPU visible here: planned for {DEFAULT_GPU_GIB:.0f} GiB GPUs (--gpu-memory to change)"


class PlanUnavailable(RuntimeError):
    """The plan cannot be made (the model's architecture is unknown)."""


def host_capacity(config: AZRConfig, host_memory_gib: float | None) -> tuple[float | None, str]:
    """(bytes of machine 0's RAM, where the figure came from) for a GPU plan; None when the plan
    is made for GPUs that are not here (this machine's RAM says nothing about theirs)."""
    if host_memory_gib is not None:
        return host_memory_gib * GIB, "--host-memory"
    if nvidia_smi_memory_gib() or torch_cuda_memory_gib():
        return machine_ram_bytes(), "this machine's RAM (or its cgroup limit)"
    return None, "not checked: no GPU here, so this is not the GPU machine (--host-memory to check)"


def make_plan(config: AZRConfig, gpu_memory_gib: float | None = None,
              host_memory_gib: float | None = None) -> tuple[MemoryPlan, str]:
    try:
        facts = model_facts(config.model.name_or_path, config.model.revision)
    except ModelFactsError as exc:
        raise PlanUnavailable(str(exc)) from exc
    capacity, source = device_capacity(config, gpu_memory_gib)
    host, host_source = host_capacity(config, host_memory_gib) if config.trainer.gpus > 0 else (None, "")
    plan = plan_memory(config, facts, capacity, host_ram_bytes=host)
    if plan.host is not None:
        plan.host_source = host_source
    return plan, source


def plan_table(plan: MemoryPlan, config: AZRConfig) -> Table:
    scope = "per GPU" if plan.device == "gpu" else "per process" if plan.ranks > 1 else "in RAM"
    table = Table(title=f"memory plan: {plan.model}, {plan.ranks} rank(s), {config.trainer.strategy}, {scope}",
                  title_justify="left")
    table.add_column("component")
    table.add_column("generation", justify="right")
    table.add_column("update", justify="right")
    table.add_column("how")
    for item in plan.items:
        how = item.how + (" (once for the machine)" if item.shared and plan.device == "cpu" else "")
        table.add_row(item.component, gib(item.generation), gib(item.update), how)
    label = "total" if plan.device == "gpu" or plan.ranks == 1 else f"total ({plan.ranks} processes)"
    table.add_row(f"[bold]{label}[/]", f"[bold]{gib(plan.generation_total)}[/]", f"[bold]{gib(plan.update_total)}[/]",
                  f"available: {gib(plan.capacity)} {plan.unit}", end_section=True)
    return table


def print_dtype_choice(config: AZRConfig) -> None:
    """One line: the CPU features found, the compute dtype chosen and why (a warning for bf16
    pinned on a CPU that would emulate it)."""
    line, warning = dtype_report(config.model.dtype, on_gpu=config.trainer.gpus > 0)
    console.print(line, highlight=False, soft_wrap=True, markup=False)
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def rollout_gpu_table(plan: MemoryPlan) -> Table | None:
    """One GPU of the dedicated vLLM servers (rollout.gpus), planned apart from the trainer's."""
    rollout = plan.rollout_gpu
    if rollout is None:
        return None
    share = rollout.share
    table = Table(title=f"rollout GPU: {rollout.servers} vLLM server(s) x TP {share.tensor_parallel} on "
                        f"{rollout.gpus} GPU(s) of their own, per GPU", title_justify="left")
    table.add_column("component")
    table.add_column("memory", justify="right")
    table.add_column("how")
    table.add_row("vLLM weights", gib(share.weights), f"/ TP {share.tensor_parallel}")
    table.add_row("vLLM workspace", gib(share.workspace), "activations and CUDA graphs (estimate)")
    table.add_row("vLLM KV cache", gib(max(share.kv_cache, 0.0)),
                  f"the rest of dedicated_gpu_memory_utilization {rollout.utilization}: {rollout.kv_cache_tokens} tokens")
    table.add_row("runtime overhead", gib(GPU_RUNTIME_OVERHEAD), "CUDA context (estimate)")
    table.add_row("[bold]total[/]", f"[bold]{gib(rollout.total)}[/]", f"available: {gib(plan.capacity)}")
    return table


def host_table(plan: MemoryPlan) -> Table | None:
    """Host RAM of machine 0: what the ranks, vLLM and the controller hold there at the peak."""
    host = plan.host
    if host is None:
        return None
    table = Table(title="host RAM of machine 0", title_justify="left")
    table.add_column("component")
    table.add_column("RAM", justify="right")
    table.add_column("how")
    for name, size, how in host.items:
        table.add_row(name, gib(size), how)
    available = f"available: {gib(host.capacity)}" if host.capacity is not None else "not checked"
    table.add_row("[bold]total[/]", f"[bold]{gib(host.total)}[/]", available)
    return table


def _host_ram(plan: MemoryPlan) -> float | None:
    return plan.host.capacity if plan.host is not None else None


def verdict(plan: MemoryPlan) -> str:
    return (f"fits: peak {gib(plan.peak)} of {gib(plan.capacity)} {plan.unit} (the {plan.peak_phase}), "
            f"{gib(plan.capacity - plan.peak)} to spare")


def refusal(plan: MemoryPlan, suggestions: list[Suggestion]) -> str:
    lines = ["this layout does not fit: " + "; ".join(plan.problems) + "."]
    if suggestions:
        lines.append("What to change (each checked with the same plan):")
        lines.extend(f"  {s.as_flags()}   (peak {gib(s.peak)})" for s in suggestions)
    else:
        lines.append("No single change found: use more GPUs with trainer.strategy=fsdp, a smaller "
                     "trainer.micro_batch_size, model.gradient_checkpointing=true, shorter "
                     "rollout.max_new_tokens, or a smaller model.")
    return "\n".join(lines)


def plan_command(
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="Preset (default cpu); see `azr config presets`.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings over the preset.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override one setting: section.key=value.")] = None,
    gpu_memory: Annotated[Optional[float], typer.Option(
        "--gpu-memory", min=0.1,
        help="Memory of one GPU in GB (GiB, 2^30 bytes; on a CPU plan: the RAM). Default: the visible GPUs' memory, else 80.")] = None,
    host_memory: Annotated[Optional[float], typer.Option(
        "--host-memory", min=0.1,
        help="Host RAM of each GPU machine in GiB (e.g. the job's memory limit). Default: this machine's when it has GPUs, else not checked.")] = None,
) -> None:
    """Print the per-device memory of a run (parameters, gradients, AdamW state, activations,
    vLLM's share) and refuse a layout that cannot fit, with what to change. Loads nothing."""
    from azr.config.loading import ConfigError, build_config, chosen_preset

    try:
        run_config = build_config(chosen_preset(preset, config), config, set_ or [])
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise
    try:
        plan, source = make_plan(run_config, gpu_memory, host_memory)
    except PlanUnavailable as exc:
        _fail(str(exc), 1)
        raise
    console.print(plan_table(plan, run_config))
    print_dtype_choice(run_config)
    for extra in (rollout_gpu_table(plan), host_table(plan)):
        if extra is not None:
            console.print(extra)
    console.print(f"device memory: {gib(plan.capacity)} from {source}", highlight=False, markup=False)
    if plan.host is not None:
        console.print(f"host RAM: {plan.host_source}", highlight=False, markup=False)
    for line in plan.assumptions:
        console.print(f"  assumed: {line}", highlight=False, soft_wrap=True, markup=False)
    if not plan.fits:
        facts = model_facts(run_config.model.name_or_path, run_config.model.revision)
        _fail(refusal(plan, suggest_changes(run_config, facts, plan.capacity, host_ram_bytes=_host_ram(plan))), 1)
    console.print(verdict(plan), highlight=False)


def check_before_training(config: AZRConfig, ignore: bool) -> None:
    """`azr train`'s first step: refuse (exit 1) a layout that cannot fit, before any run
    directory, MLflow run or model exists; `--ignore-memory-plan` starts it anyway. A model
    whose architecture is not known here yet gets a note and no plan. The dtype choice is
    printed first."""
    print_dtype_choice(config)
    try:
        plan, _ = make_plan(config)
    except PlanUnavailable as exc:
        # A hub model that is not downloaded yet is fine to train (loading fetches it); the
        # plan only needs its config.json, so say why there is none and go on.
        err_console.print(f"[bold yellow]note:[/] no memory plan: {escape(str(exc))}", highlight=False, soft_wrap=True)
        return
    if plan.fits:
        console.print(f"memory plan: {verdict(plan)} (`azr plan` for the table)", highlight=False, soft_wrap=True)
        return
    facts = model_facts(config.model.name_or_path, config.model.revision)
    message = refusal(plan, suggest_changes(config, facts, plan.capacity, host_ram_bytes=_host_ram(plan)))
    if ignore:
        err_console.print(f"[bold yellow]warning:[/] {escape(message)}\n(starting anyway: {IGNORE_FLAG})",
                          highlight=False, soft_wrap=True)
        return
    _fail(f"{message}\nSee `azr plan` for the table; {IGNORE_FLAG} starts the run anyway.", 1)


