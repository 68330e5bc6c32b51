"""The steps of the one-shot GPU checks (benchmarks/vllm_gpu_check.py for one GPU,
benchmarks/vllm_gpu_check_2gpu.py for two), and the runner that gives each its own time limit.

Each step runs in a child process of its own (`python SCRIPT --step NAME --work DIR`), so its
GPU memory, its CUDA context and a hang are its own: the runner kills the step's process group
when its limit passes. Every step ends by printing one line `AZR-GPU-CHECK {json}` with at
least `step`, `ok` and `seconds`; the runner prints that line (or one it writes itself for a
step that crashed or timed out) as soon as the step ends, and a summary line last.

What a step asserts is in its `checks` (name -> bool); `ok` is all of them. Figures (memory,
seconds, versions) are reported beside them, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAG = "AZR-GPU-CHECK "
ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain what a hash map is in two sentences.",
    "Write a Python function that reverses the words of a sentence.",
    "What does sorted([3, 1, 2])[::-1] return? Think step by step.",
]
TARGET = " Banana banana banana banana banana."  # what the high-learning-rate update teaches


@dataclass(frozen=True)
class Step:
    """One step: its name, its time limit and what it does (in the child process)."""

    name: str
    timeout_s: float
    run: Callable[[argparse.Namespace], dict[str, Any]]
    needs: tuple[str, ...] = ()  # steps whose success it needs (else it is skipped)


def emit(record: dict[str, Any]) -> None:
    print(TAG + json.dumps(record, default=str), flush=True)


# ----------------------------------------------------------------------------- the runner


def gpus_here() -> list[str]:
    """The NVIDIA GPUs visible here, from the driver (no CUDA context is created)."""
    sys.path.insert(0, str(ROOT))
    from azr.engine.controller.launch import visible_gpus

    return visible_gpus()


def refuse_without_gpus(needed: int, script: str) -> int | None:
    """Exit code 2 and one JSON line when fewer than `needed` GPUs are visible; None otherwise."""
    found = gpus_here()
    if len(found) >= needed:
        return None
    emit({"step": "gpus", "ok": False, "seconds": 0.0, "gpus": found,
          "error": f"{script} needs {needed} NVIDIA GPU(s) and finds {len(found)} (nvidia-smi -L, "
                   "CUDA_VISIBLE_DEVICES): run it on a GPU machine"})
    return 2


def run_steps(script: str, steps: Sequence[Step], args: argparse.Namespace, extra: Sequence[str]) -> int:
    """Each step in a child process under its own limit; 0 when every step passed."""
    work = Path(args.work or tempfile.mkdtemp(prefix="azr-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    began = time.monotonic()
    for step in steps:
        missing = [need for need in step.needs if not results.get(need, {}).get("ok")]
        if missing:
            record = {"step": step.name, "ok": False, "seconds": 0.0, "skipped": f"needs {', '.join(missing)}"}
        else:
            record = _run_child(script, step, work, extra)
        results[step.name] = record
        if "_printed" not in record:
            emit(record)
    summary = {"step": "summary", "ok": all(r.get("ok") for r in results.values()),
               "seconds": round(time.monotonic() - began, 1), "work": str(work),
               "failed": [name for name, r in results.items() if not r.get("ok")]}
    emit(summary)
    return 0 if summary["ok"] else 1


def _run_child(script: str, step: Step, work: Path, extra: Sequence[str]) -> dict[str, Any]:
    command = [sys.executable, script, "--step", step.name, "--work", str(work), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "PYTHONUNBUFFERED": "1"}
    log = work / f"{step.name}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, env=env, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(l.decode(errors="replace") for l in child.stdout),
                                  daemon=True)
        reader.start()
        try:
            code = child.wait(timeout=step.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            reader.join(timeout=5)
            return {"step": step.name, "ok": False, "seconds": round(time.monotonic() - started, 1),
                    "error": f"timed out after {step.timeout_s:g} s (killed)", "log": str(log),
                    "log_tail": _tail(log)}
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # whatever the step left running (an engine)
            except ProcessLookupError:
                pass
        reader.join(timeout=5)
    tagged = [line for line in lines if line.startswith(TAG)]
    if not tagged:
        return {"step": step.name, "ok": False, "seconds": round(time.monotonic() - started, 1),
                "error": f"exited with code {code} without a result", "log": str(log), "log_tail": _tail(log)}
    record = json.loads(tagged[-1][len(TAG):])
    print(tagged[-1].rstrip("\n"), flush=True)
    record["_printed"] = True
    return record


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_one(steps: Sequence[Step], args: argparse.Namespace) -> int:
    """In the child: run step `args.step` and print its record."""
    step = next(s for s in steps if s.name == args.step)
    started = time.monotonic()
    try:
        record = step.run(args)
        checks = record.get("checks", {})
        record = {"step": step.name, "ok": all(checks.values()) if checks else True, **record}
    except Exception as exc:  # noqa: BLE001 - the record says what failed
        record = {"step": step.name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-3000:]}
    record["seconds"] = round(time.monotonic() - started, 1)
    emit(record)
    return 0 if record["ok"] else 1


# ----------------------------------------------------------------------------- shared pieces


class GPUMemory:
    """Peak memory.used per GPU (MiB) while the block runs, from nvidia-smi (every process)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                index, used = (part.strip() for part in line.split(","))
                self.peak[index] = max(self.peak.get(index, 0), int(used))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GPUMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def gpu_processes() -> list[dict[str, str]]:
    """The compute processes on each GPU (pid, GPU uuid, MiB), from nvidia-smi."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=20, check=False).stdout
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"pid": parts[0], "gpu": parts[1], "mib": parts[2]})
    return rows


def model_dir(work: Path) -> Path:
    return work / "model"


def prepare_model(args: argparse.Namespace) -> dict[str, Any]:
    """The model every later step loads: `--model`, else a small Llama built from a config with
    the bundled tokenizer (GPU machines may be offline: nothing is downloaded)."""
    target = model_dir(Path(args.work))
    if args.model:
        source = Path(args.model)
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"--model {source} has no config.json")
        if target.is_symlink():
            target.unlink()
        target.symlink_to(source.resolve())
        return {"model": str(source), "built_from_config": False}
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from azr.config.schema import ModelConfig, TINY_RANDOM_MODEL_ID
    from azr.engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name_or_path=TINY_RANDOM_MODEL_ID))
    eos = tokenizer.eos_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id or eos, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {"model": str(target), "built_from_config": True,
            "parameters": sum(p.numel() for p in model.parameters())}


def check_config(model: Path, *overrides: str) -> Any:
    """A small run config on the check's model: bf16, short generations, the given layout."""
    from azr.config.loading import build_config

    return build_config("cpu", None, [
        f"model.name_or_path={model}", "model.dtype=bfloat16", "model.gradient_checkpointing=true",
        "rollout.backend=vllm", "rollout.max_new_tokens=48", "rollout.max_prompt_tokens=512",
        "rollout.content_max_tokens=400", "rollout.vllm.start_timeout_s=240", "rollout.vllm.sync_timeout_s=120",
        "trainer.gpus=1", "trainer.learning_rate=0.001", "trainer.micro_batch_size=2",
        "engine.start_timeout_s=300", *overrides,
    ])


def prompts_for(tokenizer: Any, count: int = 8) -> list[str]:
    from azr.selfplay.prompts.chat_format import ChatWrapper

    wrapper = ChatWrapper(tokenizer)
    return [wrapper.wrap(QUESTIONS[i % len(QUESTIONS)] + f" (variant {i})") for i in range(count)]


def training_batch(tokenizer: Any, prompts: list[str]) -> list[Any]:
    """Every prompt answered with TARGET at advantage 1: one step at lr 1e-3 moves greedy output."""
    from azr.engine.api import TrainSequence

    target = tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [TrainSequence(p, target, "deduction_solve", 1.0) for p in ids]


def greedy(max_new_tokens: int = 24) -> Any:
    from azr.engine.api import SamplingSettings

    return SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)


def token_ids(groups: list[list[Any]]) -> list[list[int]]:
    return [list(group[0].token_ids) for group in groups]


def reference_greedy(exported: Path, prompts: list[str]) -> list[list[int]]:
    """Greedy output of a transformers model loaded from the engine's exported weights, on the
    GPU in bf16 (what vLLM computes in)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from azr.engine.rollout.transformers_backend import TransformersBackend

    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.bfloat16).to("cuda").eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    try:
        return token_ids(TransformersBackend(model, tokenizer).generate(prompts, greedy()))
    finally:
        del model
        torch.cuda.empty_cache()


def share_equal(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def plan_figures(config: Any) -> dict[str, Any]:
    """`azr plan`'s figures for the same config on this machine's GPUs."""
    from azr.cli.plan import make_plan
    from azr.ops.memory_plan import GIB

    plan, source = make_plan(config)
    figures = {"plan_generation_gib": round(plan.generation_total / GIB, 2),
               "plan_update_gib": round(plan.update_total / GIB, 2), "plan_capacity_source": source,
               "plan_fits": plan.fits}
    if plan.rollout_gpu is not None:
        figures["plan_rollout_gpu_gib"] = round(plan.rollout_gpu.total / GIB, 2)
    if plan.host is not None:
        figures["plan_host_gib"] = round(plan.host.total / GIB, 2)
    return figures


def probe_versions(args: argparse.Namespace) -> dict[str, Any]:
    """Versions and interpreters: this Python (the controller side), the engine's, the server's."""
    import importlib.metadata

    from azr.config.loading import build_config
    from azr.engine.controller.launch import colocated_vllm_python, visible_gpus
    from azr.engine.rollout.vllm.server import find_vllm_python
    from azr.engine.rollout.vllm.version import installed_version, is_cpu_build, is_supported

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    colocated = build_config("cpu", None, ["rollout.backend=vllm", "rollout.vllm.mode=colocate", "trainer.gpus=1"])
    engine_python = colocated.engine.python or colocated_vllm_python(colocated) or sys.executable
    server_python = find_vllm_python(None, ROOT)
    probe = subprocess.run([engine_python, "-c", "import torch; print(torch.__version__, torch.version.cuda, "
                            "torch.cuda.is_available(), torch.cuda.device_count())"],
                           capture_output=True, text=True, timeout=120, check=False)
    engine_torch = probe.stdout.strip() or probe.stderr.strip()[-500:]
    vllm_here = installed_version(None)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=False).stdout.strip().splitlines()
    record = {
        "python": sys.executable, "torch": version("torch"), "transformers": version("transformers"),
        "accelerate": version("accelerate"), "deepspeed": version("deepspeed"), "vllm": vllm_here,
        "vllm_cpu_build": is_cpu_build(None), "engine_python": engine_python, "engine_torch": engine_torch,
        "server_python": server_python, "server_vllm": installed_version(server_python),
        "gpus": visible_gpus(), "nvidia_smi": smi,
        "model_runner_v2": os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "vLLM's default"),
    }
    record["checks"] = {
        "engine_torch_sees_cuda": " True " in f" {engine_torch} ",
        "vllm_supported": bool(vllm_here) and is_supported(vllm_here),
        "vllm_not_cpu_build": not record["vllm_cpu_build"],
    }
    return record


@dataclass
class UpdateRound:
    """Greedy output before and after one update (and the sync), and the transformers
    reference built from the weights the engine exported after it."""

    before: list[list[int]]
    after: list[list[int]]
    reference: list[list[int]]
    sync_s: float | None

    def checks(self, match: float) -> dict[str, bool]:
        return {"update_changed_greedy_output": share_equal(self.before, self.after) <= 1 - match,
                "after_matches_reference": share_equal(self.after, self.reference) >= match}


def update_round(engine: Any, run: Path) -> UpdateRound:
    """generate, update at a high learning rate, sync, generate, export, reference."""
    prompts = prompts_for(engine.tokenizer)
    before = token_ids(engine.generate(prompts, greedy()))
    engine.update(training_batch(engine.tokenizer, prompts))
    sync_s = engine.sync_rollout_weights()
    after = token_ids(engine.generate(prompts, greedy()))
    reference = reference_greedy(engine.export_weights(run / "export"), prompts)
    return UpdateRound(before, after, reference, sync_s)


def async_overlap_checks(sync: dict[str, Any], one_step_off: dict[str, Any]) -> dict[str, bool]:
    """What the one-step-off step asserts (its speed-up is a figure, never asserted): the lag each
    order must show, and that both measured the same number of iterations."""
    return {"sync_lag_0": sync.get("lag") == 0.0, "one_step_off_lag_1": one_step_off.get("lag") == 1.0,
            "both_measured": bool(sync.get("iterations")) and sync.get("iterations") == one_step_off.get("iterations")}


def async_overlap(args: argparse.Namespace) -> dict[str, Any]:
    """Sync against one-step-off (`rollout.async_level` 0 and 1) with the trainer on GPU 0 and a
    `vllm serve` process on GPU 1 (rollout.gpus=1): iteration seconds, each side's idle seconds,
    lag and mismatch (benchmarks/async_overlap.py); the issue's goal is 1.3x."""
    from benchmarks.async_overlap import compare, speedup, summary

    work = Path(args.work)
    configs = {level: check_config(model_dir(work), "rollout.vllm.mode=server", "rollout.gpus=1",
                                   f"rollout.async_level={level}", "trainer.ratio_base=behaviour",
                                   "trainer.iterations=3", "trainer.checkpoint_every=1000")
               for level in (0, 1)}
    figures = compare(configs, work / "async-overlap", runs=2)
    sync, one_step_off = summary(figures[0]), summary(figures[1])
    return {"sync": sync, "one_step_off": one_step_off, "speedup": speedup(sync, one_step_off), "goal": 1.3,
            "checks": async_overlap_checks(sync, one_step_off)}


def script_main(script: str, doc: str, steps: Sequence[Step], gpus: int, argv: list[str] | None) -> int:
    """The command line both check scripts share: the runner, or (with --step) one step."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     epilog="Each step prints one `AZR-GPU-CHECK {json}` line; see the module docstring.")
    parser.add_argument("--model", default=None, help="A local model directory; default: a small Llama built from a config.")
    parser.add_argument("--work", default=None, help="Directory for the model, runs and step logs (default: a new temporary one).")
    parser.add_argument("--step", choices=[s.name for s in steps], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step is not None:
        return run_one(steps, args)
    name = f"benchmarks/{Path(script).name}"
    refused = refuse_without_gpus(gpus, name)
    if refused is not None:
        return refused
    return run_steps(script, steps, args, ["--model", args.model] if args.model else [])
