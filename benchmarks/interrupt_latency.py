"""How long `azr train` takes to stop after Ctrl-C (or SIGTERM), wherever the run is.

One round runs the preset for one iteration and interrupts it at each point in turn, resuming
between them: in the first generation command (the proposals), in the update, in the checkpoint
save, and (a separate run with `buffer.seeding: model`) in the seeding stage's first generation.
Each signal goes `--delay` seconds after the engine's log says the command started, to the
run's whole process group, as a terminal's Ctrl-C does. For each interrupt:

- engine stopped: from the signal to the engine's "stopped" line (a step boundary), or "killed"
  when it did not answer within its grace period;
- engine down: to the engine's "shutting down" line;
- last line: to the "continue with: azr train --resume" line on the terminal;
- exit: to the exit of `azr train`, with its exit code, the MLflow run's status, and the
  processes of the run's session still alive at that moment and 10 s later.

Medians over `--rounds`, and the exit time as a fraction of the 15 s the issue allows. Times
are wall clock on whatever the machine is doing; never asserted anywhere.

    python benchmarks/interrupt_latency.py [--preset cpu] [--rounds 3] [--delay 2] [--signal SIGINT]
        [--points generate,update,save_checkpoint,seeding] [-s key=value ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 15.0
# A smaller iteration of the same preset (the same model, micro-batch and layers): the interrupt
# points are the same, the way to them shorter.
DEFAULT_SETTINGS = ["rollout.batch_size=2", "rollout.max_new_tokens=48", "rollout.mc_samples=2", "tasks.references=1",
                    "trainer.probe_every=0"]
SEEDING_SETTINGS = ["buffer.seeding=model", "buffer.seed_io_file=null", "buffer.seed_induction_file=null"]
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) ")


@dataclass
class Interrupt:
    point: str
    signal_at: float
    code: int | None = None
    exit_s: float | None = None
    last_line_s: float | None = None
    engine_stopped_s: float | None = None
    engine_down_s: float | None = None
    mlflow_status: str = "?"
    left_at_exit: list[str] = field(default_factory=list)
    left_after_10s: list[str] = field(default_factory=list)


class Run:
    """`azr train` in a session of its own, its output read line by line with arrival times."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "flows.entry", *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def log_lines(log: Path, start: int) -> list[tuple[float | None, str]]:
    """The engine log's lines after byte `start`, with their timestamps (None when unstamped)."""
    if not log.exists():
        return []
    with open(log, "rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        match = _STAMP.match(line)
        at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None
        found.append((at, line))
    return found


def session_processes(session: int) -> list[str]:
    """Command lines of the live processes of `session` (the run started it with a session of its own)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.info["cmdline"] or [])[:100])
        except (OSError, psutil.Error):
            continue
    return found


def interrupt(point: str, command: str, args: list[str], env: dict[str, str], root: Path, delay: float,
              sig: signal.Signals, timeout: float) -> Interrupt:
    """Start `azr train ARGS`, wait for the engine's `command` to start, signal, measure."""
    log = root / "engine" / "engine.log"
    start = log.stat().st_size if log.exists() else 0
    run = Run(args, env)
    deadline = time.monotonic() + timeout
    while not any(f"command {command} started" in line for _, line in log_lines(log, start)):
        if run.process.poll() is not None:
            raise SystemExit(f"`azr train` ended before `{command}` started:\n{run.output()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(run.process.pid, signal.SIGKILL)
            raise SystemExit(f"`{command}` never started within {timeout:.0f} s")
        time.sleep(0.05)
    time.sleep(delay)
    result = Interrupt(point, time.time())
    os.killpg(run.process.pid, sig)
    run.process.wait(timeout=600)
    ended = time.time()
    result.left_at_exit = session_processes(run.process.pid)
    run.reader.join(timeout=10)
    result.code, result.exit_s = run.process.returncode, ended - result.signal_at
    for at, line in run.lines:
        if "continue with: azr train --resume" in line or "no run was started" in line:
            result.last_line_s = at - result.signal_at
    for at, line in log_lines(log, start):
        if at is None or at < result.signal_at - 1:
            continue
        if " stopped " in line and result.engine_stopped_s is None:
            result.engine_stopped_s = max(0.0, at - result.signal_at)
        if "shutting down" in line:
            result.engine_down_s = max(0.0, at - result.signal_at)
    time.sleep(10)
    result.left_after_10s = session_processes(run.process.pid)
    result.mlflow_status = mlflow_status(root)
    if result.code not in (130, 143):
        print(f"  unexpected exit code {result.code}:\n{run.output()[-2000:]}", flush=True)
    return result


def mlflow_status(root: Path) -> str:
    try:
        import mlflow

        from azr.pipeline.run_dir import RunDir

        info = RunDir(root).read_info()
        return mlflow.MlflowClient(info["tracking_uri"]).get_run(info["mlflow_run_id"]).info.status
    except Exception as exc:  # noqa: BLE001 - a figure of the benchmark, not a check
        return f"unknown ({type(exc).__name__})"


def show(result: Interrupt) -> None:
    def seconds(value: float | None, missing: str = "-") -> str:
        return f"{value:6.1f} s" if value is not None else f"{missing:>8}"

    print(f"  {result.point:<16} exit {seconds(result.exit_s)} (code {result.code})  engine stopped "
          f"{seconds(result.engine_stopped_s, 'killed')}  engine down {seconds(result.engine_down_s)}  last line "
          f"{seconds(result.last_line_s)}  MLflow {result.mlflow_status}  left at exit {len(result.left_at_exit)}, "
          f"after 10 s {len(result.left_after_10s)}", flush=True)
    for line in result.left_after_10s:
        print(f"      still running: {line}")


def one_round(base: Path, preset: str, settings: list[str], points: list[str], delay: float, sig: signal.Signals,
              env: dict[str, str], timeout: float) -> list[Interrupt]:
    results = []
    sets = [item for s in settings for item in ("--set", s)]
    root = base / "run"
    fresh = ["train", "--preset", preset, "--iterations", "1", "--run-dir", str(root), *sets]
    resume = ["train", "--resume", str(root)]
    started = False
    for point in [p for p in points if p != "seeding"]:
        args = resume if started else fresh
        results.append(interrupt(point, point, args, env, root, delay, sig, timeout))
        started = True
        show(results[-1])
    if "seeding" in points:
        seeded = base / "seeded"
        args = ["train", "--preset", preset, "--iterations", "1", "--run-dir", str(seeded), *sets,
                *[item for s in SEEDING_SETTINGS for item in ("--set", s)]]
        results.append(interrupt("seeding", "generate", args, env, seeded, delay, sig, timeout))
        show(results[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds between the command's start and the signal")
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM"])
    parser.add_argument("--points", default="generate,update,save_checkpoint,seeding")
    parser.add_argument("-s", "--set", dest="settings", action="append", default=None,
                        help=f"a setting of the runs (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--timeout", type=float, default=1800.0, help="longest wait for a command to start")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs under this directory")
    args = parser.parse_args()
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    sig = signal.Signals[args.signal]
    settings = args.settings if args.settings is not None else DEFAULT_SETTINGS
    scratch = Path(tempfile.mkdtemp(prefix="azr-interrupt-bench-"))
    base = args.keep or scratch
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(scratch / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    print(f"{args.signal} to `azr train --preset {args.preset}` ({' '.join(settings)}), {args.delay:g} s into "
          f"each command, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    results: list[Interrupt] = []
    try:
        for index in range(args.rounds):
            print(f"round {index + 1}:", flush=True)
            results += one_round(base / f"round-{index + 1}", args.preset, settings, points, args.delay, sig, env,
                                 args.timeout)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"medians over {args.rounds} rounds (load average now {os.getloadavg()[0]:.1f}):")
    for point in points:
        rows = [r for r in results if r.point == point]
        exits = [r.exit_s for r in rows if r.exit_s is not None]
        stops = [r.engine_stopped_s for r in rows if r.engine_stopped_s is not None]
        lasts = [r.last_line_s for r in rows if r.last_line_s is not None]
        if not exits:
            continue
        print(f"  {point:<16} exit {statistics.median(exits):5.1f} s (max {max(exits):5.1f}; "
              f"{statistics.median(exits) / LIMIT_S:.0%} of {LIMIT_S:g} s)  engine stopped "
              f"{statistics.median(stops):5.1f} s ({len(stops)}/{len(rows)} at a step boundary)  " if stops else
              f"  {point:<16} exit {statistics.median(exits):5.1f} s (max {max(exits):5.1f})  engine killed every time  ",
              end="")
        print(f"last line {statistics.median(lasts):5.1f} s  " if lasts else "", end="")
        print(f"codes {sorted({r.code for r in rows})}  MLflow {sorted({r.mlflow_status for r in rows})}  "
              f"processes left after 10 s: {sum(len(r.left_after_10s) for r in rows)}")


if __name__ == "__main__":
    main()
