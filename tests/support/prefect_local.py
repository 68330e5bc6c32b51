"""A real Prefect server (and workers) for tests, started and stopped by process id.

Each test server has its own PREFECT_HOME under the test's tmp directory, listens on a free port
of 127.0.0.1, and is started in a session of its own. Every process started here carries a
unique marker in its environment, so a test can prove that nothing it started outlived it.
Stop workers before the server: a worker whose server is gone hangs in its shutdown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # a cold server migrates its database; the machine may be busy


def prefect_cli() -> list[str]:
    """The `prefect` command of the running interpreter's environment."""
    script = Path(sys.executable).parent / "prefect"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Runs a command with default signal handling (same pid, via exec). When the tests run as a
# background job, SIGINT is ignored and that is inherited; a Prefect worker, which stops on
# SIGTERM by sending itself SIGINT, would then never stop.
_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):\n"
    "    signal.signal(sig, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def processes_with_marker(marker: str) -> list[tuple[int, str]]:
    """Live processes whose environment contains `marker` (pid, command line)."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker.encode() not in environ:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue  # exited, not yet reaped by its parent (this test)
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found


class LocalPrefect:
    """`prefect server start` on 127.0.0.1:<free port> with PREFECT_HOME=`home`."""

    def __init__(self, home: Path, logs: Path, *, ui: bool = False) -> None:
        self.ui = ui  # serve the web UI too (tests/support/browser_check.py)
        self.home = home
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.marker = f"AZR_TEST_PROCESS_MARKER={uuid.uuid4().hex}"
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for anything talking to this server (CLI calls, workers, scripts)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        key, value = self.marker.split("=", 1)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "true" if self.ui else "false",
                key: value,
            }
        )
        if self.ui:  # the browser reaches the API where this server listens (not the default port)
            env["PREFECT_UI_API_URL"] = self.api_url
        env.update(extra or {})
        return env

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process is reaped
        return subprocess.Popen(
            [sys.executable, "-c", _WITH_DEFAULT_SIGNALS, *args], env=dict(env), cwd=cwd,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def start(self) -> Self:
        self.home.mkdir(parents=True, exist_ok=True)
        env = self.env()
        env.pop("PREFECT_API_URL")
        self.server = self._spawn(
            "server", [*prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)], env, self.home
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.server.returncode}:\n{self.log_tail('server')}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT_S:.0f} s:\n{self.log_tail('server')}")

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 180, env: Mapping[str, str] | None = None) -> str:
        """Run `prefect --no-prompt ARGS` against this server; its output, or an error with it."""
        result = subprocess.run(
            [*prefect_cli(), "--no-prompt", *args], env=self.env(env), cwd=cwd or self.home,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start_worker(self, pool: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A worker for `pool`; returns once it says it started."""
        name = f"worker-{pool}"
        worker = self._spawn(name, [*prefect_cli(), "worker", "start", "--pool", pool, "--name", name], self.env(env), cwd)
        self.workers.append(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "started!" not in self.log_tail(name, 200):
            if worker.poll() is not None:
                raise RuntimeError(f"worker for {pool} exited with {worker.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker for {pool} did not start in {START_TIMEOUT_S:.0f} s:\n{self.log_tail(name)}")
            time.sleep(0.5)
        return worker

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
        """SIGTERM by pid; True if it exited in time, else SIGKILL (its session too) and False."""
        if process.poll() is not None:
            return True
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        try:
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of its session (start_new_session)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
        return clean

    def stop_workers(self, timeout: float = 60) -> list[int]:
        """Stop the workers by pid; the pids of those that had to be killed."""
        killed = [w.pid for w in self.workers if not self._terminate(w, timeout)]
        self.workers = []
        return killed

    def stop(self, timeout: float = 60) -> list[int]:
        """Workers first, then the server; the pids that had to be killed."""
        killed = self.stop_workers(timeout)
        if self.server is not None:
            if not self._terminate(self.server, timeout):
                killed.append(self.server.pid)
            self.server = None
        return killed

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
