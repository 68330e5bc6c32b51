"""Per-GPU global concurrency limits (flows/gpu.py) against a real local Prefect server.

GPUs are simulated with CUDA_VISIBLE_DEVICES (no CUDA needed: the holder only reads the
variable before CUDA is initialised); each test uses a host name of its own so that limits of
different tests never meet. Holders run as separate processes, as two flow runs would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import gpu
from tests.support.prefect_local import ROOT, LocalPrefect, free_port, processes_with_marker

pytestmark = pytest.mark.timeout(600)

HOLDER = """
import json, os, sys, time
from flows.gpu import hold_gpus
count, timeout, hold_s, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
began = time.time()
try:
    with hold_gpus(count, timeout) as devices:
        start = time.time()
        seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "AZR_GPUS_HELD")}
        open(out + ".held", "w").write(json.dumps(devices))
        if hold_s >= 0:
            time.sleep(hold_s)
        else:  # hold until the test says so
            deadline = time.time() + 300
            while not os.path.exists(out + ".release") and time.time() < deadline:
                time.sleep(0.1)
        end = time.time()
    result = {"devices": devices, "start": start, "end": end, "seen": seen,
              "after": os.environ.get("CUDA_VISIBLE_DEVICES")}
except TimeoutError as exc:
    result = {"timeout": str(exc), "waited": time.time() - began}
with open(out + ".tmp", "w") as f:
    json.dump(result, f)
os.replace(out + ".tmp", out)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefect]:
    base = tmp_path_factory.mktemp("gpu-limits")
    local = LocalPrefect(base / "prefect-home", base / "logs").start()
    try:
        yield local
    finally:
        killed = local.stop()
        shutil.rmtree(local.home, ignore_errors=True)
        assert not killed, f"processes needed SIGKILL: {killed}"
        assert processes_with_marker(local.marker) == []


@pytest.fixture
def api(server: LocalPrefect) -> Iterator[LocalPrefect]:
    """In-process Prefect calls of this test go to the test server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server


def _host() -> str:
    return f"test{uuid.uuid4().hex[:10]}"


def _holder(server: LocalPrefect, tmp: Path, name: str, *, devices: str, host: str, count: int,
            timeout: float, hold_s: float) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"{name}.json"
    env = server.env({"CUDA_VISIBLE_DEVICES": devices, gpu.HOST_ENV: host, "PYTHONPATH": str(ROOT)})
    env.pop(gpu.HELD_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count), str(timeout), str(hold_s), str(out)], cwd=ROOT, env=env,
        stdout=open(tmp / f"{name}.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    return proc, out


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None or path.exists(), f"holder exited ({proc.returncode}) before {path.name}"
        assert time.monotonic() < deadline, f"{path.name} not written within {timeout} s"
        time.sleep(0.2)


def _release(out: Path) -> None:
    out.with_name(out.name + ".release").touch()


def _result(proc: subprocess.Popen[bytes], out: Path, tmp: Path) -> dict:
    assert proc.wait(timeout=180) == 0, (tmp / f"{out.stem}.log").read_text()
    return json.loads(out.read_text())


# --- without a server ------------------------------------------------------------------------

@pytest.fixture
def no_server() -> Iterator[None]:
    """Point Prefect at a port where nothing listens: a test passes only if it never calls it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        yield


def test_zero_gpus_is_a_no_op(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    started = time.monotonic()
    with gpu.hold_gpus(0) as devices:
        assert devices == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert gpu.HELD_ENV not in os.environ
    assert time.monotonic() - started < 1.0


def test_bad_counts_are_refused_before_any_call(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match="count must be >= 0"), gpu.hold_gpus(-1):
        pass
    with pytest.raises(RuntimeError, match=r"needs 2 GPU\(s\) but this process sees 1"), gpu.hold_gpus(2):
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="sees 0"), gpu.hold_gpus(1):
        pass


def test_limits_off_and_non_zero_ranks_hold_nothing(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv(gpu.LIMITS_ENV, "off")
    with gpu.hold_gpus(1) as devices:
        assert devices == ["2"]
    monkeypatch.delenv(gpu.LIMITS_ENV)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with gpu.hold_gpus(2) as devices:  # local rank 0 of the launch holds them
        assert devices == ["2", "3"]


def test_names_and_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu.HOST_ENV, "node/7 (a100)")
    assert gpu.gpu_host() == "node-7-a100"
    assert gpu.limit_name("0") == "gpu-node-7-a100-0"
    assert gpu.limit_name("GPU-1a2b/3", host="h") == "gpu-h-GPU-1a2b-3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1,-1,5")
    assert gpu.visible_gpus() == ["3", "1"]


def test_the_flow_finds_gpus_from_the_driver_not_its_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow with a CPU torch on a GPU box still holds the GPUs (`nvidia-smi -L` on PATH)."""
    import torch

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
                   "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\necho 'GPU 2: NVIDIA H100 (UUID: GPU-c)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpu.visible_gpus() == ["0", "1", "2"]


def test_a_dedicated_layout_holds_its_rollout_gpus_too() -> None:
    from azr.config.loading import build_config

    dedicated = build_config("qwen2.5-coder-7b", overrides=["rollout.vllm.mode=server", "rollout.gpus=2",
                                                            "trainer.processes=2"])
    assert gpu.gpus_to_hold(dedicated) == 4  # 2 trainer ranks + 2 vLLM server GPUs
    assert gpu.gpus_to_hold(build_config("qwen2.5-coder-7b")) == 4  # trainer.gpus 4, colocated
    assert gpu.gpus_to_hold(build_config("qwen2.5-coder-7b", overrides=["trainer.processes=2"])) == 2
    assert gpu.gpus_to_hold(build_config("tiny")) == 0  # a CPU run holds nothing


# --- against the server ----------------------------------------------------------------------

def test_two_holders_of_one_gpu_never_overlap(server: LocalPrefect, tmp_path: Path) -> None:
    host = _host()
    first, first_out = _holder(server, tmp_path, "first", devices="0", host=host, count=1, timeout=60, hold_s=-1)
    _wait_for(first_out.with_name(first_out.name + ".held"), first)
    # While the first holds GPU 0: a holder with a short timeout gives up, a patient one waits.
    impatient, impatient_out = _holder(server, tmp_path, "impatient", devices="0", host=host, count=1, timeout=1, hold_s=0)
    second, second_out = _holder(server, tmp_path, "second", devices="0", host=host, count=1, timeout=180, hold_s=0.5)
    c = _result(impatient, impatient_out, tmp_path)
    time.sleep(3)  # the patient one is waiting by now (or still starting: either way it must wait)
    assert second.poll() is None and not second_out.exists(), "second holder got GPU 0 while the first held it"
    _release(first_out)
    a = _result(first, first_out, tmp_path)
    b = _result(second, second_out, tmp_path)
    assert a["devices"] == b["devices"] == ["0"]
    assert b["start"] >= a["end"], f"overlap: second held GPU 0 at {b['start']}, first released at {a['end']}"
    assert "timeout" in c and f"gpu-{host}-0" in c["timeout"], c
    assert c["waited"] < 30
    assert a["seen"] == {"CUDA_VISIBLE_DEVICES": "0", "AZR_GPUS_HELD": "0"}


def test_two_runs_share_a_box_on_different_gpus(server: LocalPrefect, tmp_path: Path) -> None:
    host = _host()
    first, first_out = _holder(server, tmp_path, "first", devices="0,1", host=host, count=1, timeout=60, hold_s=-1)
    _wait_for(first_out.with_name(first_out.name + ".held"), first)
    second, second_out = _holder(server, tmp_path, "second", devices="0,1", host=host, count=1, timeout=3, hold_s=0)
    b = _result(second, second_out, tmp_path)  # done while the first still holds its GPU
    _release(first_out)
    a = _result(first, first_out, tmp_path)
    assert "timeout" not in b, b
    assert sorted(a["devices"] + b["devices"]) == ["0", "1"]
    assert b["start"] < a["end"], "the second run should not have waited for the first"
    # Each sees only its own GPU while holding it, and the full set again afterwards.
    assert a["seen"]["CUDA_VISIBLE_DEVICES"] == a["devices"][0]
    assert b["seen"]["CUDA_VISIBLE_DEVICES"] == b["devices"][0]
    assert a["after"] == b["after"] == "0,1"


def test_limits_are_created_once_and_released(api: LocalPrefect, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    host = _host()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    monkeypatch.setenv(gpu.HOST_ENV, host)
    assert gpu.ensure_gpu_limits(["0", "1", "2"]) == [f"gpu-{host}-{i}" for i in range(3)]
    assert gpu.ensure_gpu_limits(["0"]) == [f"gpu-{host}-0"]  # already there: no error
    with gpu.hold_gpus(2, timeout_s=30) as devices:
        assert len(devices) == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(devices)
        with get_client(sync_client=True) as client:
            active = {i: client.read_global_concurrency_limit_by_name(f"gpu-{host}-{i}").active_slots for i in "012"}
        assert sorted(active.values()) == [0, 1, 1] and all(active[d] == 1 for d in devices)
        with gpu.hold_gpus(1) as nested:  # a nested call (or a child process) re-uses the hold
            assert nested == devices[:1]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"
    with get_client(sync_client=True) as client:
        limits = [client.read_global_concurrency_limit_by_name(f"gpu-{host}-{i}") for i in "012"]
    assert [(lim.limit, lim.active_slots) for lim in limits] == [(1, 0)] * 3


def test_cli_create_status_and_exec(server: LocalPrefect, tmp_path: Path) -> None:
    host = _host()
    env = server.env({"PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "4,5"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows.gpu", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    created = cli("create", "--host", host, "--count", "2")
    assert created.returncode == 0, created.stderr
    assert created.stdout.split() == [f"gpu-{host}-0", f"gpu-{host}-1"]
    status = cli("status", "--host", host)
    assert status.returncode == 0 and status.stdout.count("0/1\tfree") == 2, status.stdout
    env[gpu.HOST_ENV] = host
    child = "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['AZR_GPUS_HELD']); sys.exit(3)"
    ran = cli("exec", "--count", "1", "--timeout", "30", "--", sys.executable, "-c", child)
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout.split() in (["4", "4"], ["5", "5"])
