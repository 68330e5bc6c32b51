"""What a process per input costs: validating induction proposals (10 inputs each, with the
cross-process determinism check) with `sandbox.process_per_input` true (the original's fresh
state and 10 s per input) against false (one process and one limit for all inputs).

Prints proposals/s for a batch of 64, median of several runs, and the ratio.

    python benchmarks/induction_validation.py [--runs 3] [--workers N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from azr.config.schema import SandboxConfig
from azr.sandbox.api import ProgramRun
from azr.sandbox import SandboxExecutor

PROPOSALS = 64
PROGRAM = "def f(xs):\n    seen = {}\n    for x in xs:\n        seen[x % 5] = seen.get(x % 5, 0) + x\n    return sorted(seen.items())"


def batch() -> list[ProgramRun]:
    return [ProgramRun(PROGRAM, tuple(f"[{i}, {k}, {i * k}, {k + 7}]" for k in range(10)), True) for i in range(PROPOSALS)]


def rate(per_input: bool, runs: int, workers: int | None) -> float:
    with SandboxExecutor(SandboxConfig(process_per_input=per_input), workers=workers) as executor:
        executor.run(batch()[:4])  # warm the fork servers
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            results = executor.run(batch())
            rates.append(PROPOSALS / (time.perf_counter() - started))
            assert all(r.ok for r in results)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    separate = rate(True, args.runs, args.workers)
    together = rate(False, args.runs, args.workers)
    print(f"induction proposals/s, 10 inputs, determinism checked (median of {args.runs}):")
    print(f"  a process per input (default, original): {separate:8.1f}")
    print(f"  one process for all inputs:              {together:8.1f}")
    print(f"  ratio per-input / together:              {separate / together:8.2f}")


if __name__ == "__main__":
    main()
