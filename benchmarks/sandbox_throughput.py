"""Throughput and latency of the sandboxed executor on 256 small programs.

Prints, as the median of several runs: programs/s for a batch of 256 (plain, and with the
cross-process determinism check), p50/p99 latency of single-program calls, and the same for
the baseline of a fresh `python -c` per program (run with the same parallelism, unisolated),
with the ratio between them.

    python benchmarks/sandbox_throughput.py [--runs 5] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from azr.config.schema import SandboxConfig
from azr.sandbox.api import ProgramRun
from azr.sandbox import SandboxExecutor
from azr.sandbox.isolation import interpreter

PROGRAMS = 256


def programs() -> list[ProgramRun]:
    """Small programs of the kind proposers write: loops, dicts, strings, sorting."""
    shapes = [
        "def f(n):\n    return [i * i for i in range(n) if i % {k} == 0]",
        "def f(s):\n    counts = {{}}\n    for ch in s:\n        counts[ch] = counts.get(ch, 0) + {k}\n    return sorted(counts.items())",
        "def f(n):\n    a, b = 0, 1\n    for _ in range(n + {k}):\n        a, b = b, a + b\n    return a",
        "def f(xs):\n    return sorted(xs, key=lambda x: (x % {k}, -x))",
    ]
    inputs = ["20", "'abracadabra'", "15", "[5, 3, 9, 1, 7, 2]"]
    return [ProgramRun(shapes[i % 4].format(k=i % 7 + 2), (inputs[i % 4],), False) for i in range(PROGRAMS)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def baseline_call(run: ProgramRun) -> float:
    source = f"{run.program}\nprint(repr(f({run.inputs[0]})))"
    started = time.perf_counter()
    subprocess.run([interpreter(), "-I", "-S", "-c", source], capture_output=True, check=True)
    return time.perf_counter() - started


def measure(label: str, batch: list[ProgramRun], runs: int, executor: SandboxExecutor | None, workers: int) -> dict:
    rates, latencies = [], []
    for _ in range(runs):
        started = time.perf_counter()
        if executor is None:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(baseline_call, batch))
        else:
            results = executor.run(batch)
            assert all(r.ok for r in results), next(r for r in results if not r.ok)
        rates.append(len(batch) / (time.perf_counter() - started))
    for run in batch[:64]:  # single-program calls, one after another
        if executor is None:
            latencies.append(baseline_call(run) * 1000)
        else:
            started = time.perf_counter()
            executor.run([run])
            latencies.append((time.perf_counter() - started) * 1000)
    return {"label": label, "rate": statistics.median(rates), "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    plain = programs()
    checked = [ProgramRun(r.program, r.inputs, True) for r in plain]
    with SandboxExecutor(SandboxConfig(), workers=args.workers) as executor:
        executor.run(plain[:16])  # warm up
        rows = [
            measure("sandbox, plain", plain, args.runs, executor, args.workers),
            measure("sandbox, determinism check", checked, args.runs, executor, args.workers),
        ]
        isolation = executor.isolation
    rows.append(measure("baseline: fresh python -c per program", plain, max(1, args.runs // 2), None, args.workers))
    base = rows[-1]["rate"]
    print(f"{PROGRAMS} programs, {args.workers} workers, isolation={isolation}, python {sys.version.split()[0]}, "
          f"median of {args.runs} runs")
    print(f"{'':40s} {'programs/s':>11s} {'p50 ms':>8s} {'p99 ms':>8s} {'x baseline':>11s}")
    for row in rows:
        print(f"{row['label']:40s} {row['rate']:11.0f} {row['p50']:8.2f} {row['p99']:8.2f} {row['rate'] / base:11.1f}")


if __name__ == "__main__":
    main()
