"""How much orchestrator time the AZR algorithm library costs per paper-sized step.

One paper step handles 384 trained responses (6 groups x 64). This prints, as the median of
several runs, the time to build all prompts of a step, to parse and statically check 384
responses, and to compute TRR++ advantages, each with a ratio against a baseline measured in
the same run: a bare `ast.parse` of the same programs (the least any validator must do).
The point: the library must stay negligible next to generation (minutes a step on GPUs).

    python benchmarks/algorithm_overhead.py [--runs 7]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time
from collections.abc import Callable

import numpy as np

from azr.selfplay.iteration_prompts import build_iteration_prompts
from azr.selfplay.buffer import Buffers
from azr.config.schema import AZRConfig
from azr.selfplay.parsing import parse_generation, parse_program_proposal
from azr.selfplay.task_records import Triplet
from azr.selfplay.static_checks import argument_syntax_error, calls_input_builtin, find_banned_imports, program_syntax_error
from azr.selfplay.task_types import TaskType
from azr.selfplay.advantages import trrpp_advantages
from azr.selfplay.prompts.chat_format import R1Wrapper

GROUP_SIZE = 64
SEQUENCES = 6 * GROUP_SIZE


def program(i: int) -> str:
    """A 15-line program of the size proposers write early in training."""
    return (
        "from collections import deque\n"
        f"def solve_{i}(items, k):\n"
        "    queue = deque(items)\n"
        "    seen = {}\n"
        "    total = 0\n"
        "    while queue:\n"
        "        x = queue.popleft()\n"
        "        if x in seen:\n"
        "            seen[x] += 1\n"
        "        else:\n"
        "            seen[x] = 1\n"
        f"        total += (x * {i}) % (k + 1)\n"
        "        if total > 1000 and k > 2:\n"
        "            break\n"
        "    return sorted(seen.items()), total\n"
    )


def response(i: int) -> str:
    return (
        " I will build a queue walk with a running total. </think>\n<answer>\n"
        f"```python\n{program(i)}```\n```input\n[{i}, 2, 3, {i}], {i % 5}\n```\n</answer>"
    )


def check_response(text: str, banned: list[str]) -> bool:
    generation = parse_generation(text)
    parsed = parse_program_proposal(generation.answer)
    if not hasattr(parsed, "program"):
        return False
    if find_banned_imports(parsed.program, banned):
        return False
    if program_syntax_error(parsed.program) or argument_syntax_error(parsed.input):
        return False
    return not calls_input_builtin(parsed.program)


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    config = AZRConfig()
    responses = [response(i) for i in range(SEQUENCES)]
    programs = [program(i) for i in range(SEQUENCES)]
    seeds = [Triplet(program(i), f"[{i}, 1], 2", f"([({i}, 1)], {i})") for i in range(256)]

    def build_prompts() -> None:
        buffers = Buffers(config.buffer, np.random.default_rng(0))
        buffers.add_step(0, {TaskType.ABDUCTION: seeds, TaskType.DEDUCTION: seeds, TaskType.INDUCTION: []})
        buffers.add_step(1, {TaskType.ABDUCTION: seeds[:64], TaskType.DEDUCTION: seeds[:64], TaskType.INDUCTION: []})
        cfg = config.model_copy(update={"tasks": config.tasks.model_copy(update={"types": [TaskType.ABDUCTION, TaskType.DEDUCTION]})})
        build_iteration_prompts(buffers, 2, cfg, R1Wrapper())

    rng = np.random.default_rng(0)
    groups = [f"g{i % 6}" for i in range(SEQUENCES)]
    rewards = rng.choice([-1.0, -0.5, 0.25, 0.625, 1.0], size=SEQUENCES)
    lengths = rng.integers(50, 8000, size=SEQUENCES)

    baseline = median_seconds(lambda: [ast.parse(p) for p in programs], args.runs)
    rows = [
        ("baseline: ast.parse of 384 programs", baseline),
        ("parse + static checks, 384 responses", median_seconds(lambda: [check_response(r, config.tasks.banned_imports) for r in responses], args.runs)),
        ("build 256 propose/solve prompts (K=6)", median_seconds(build_prompts, args.runs)),
        ("TRR++ advantages, 384 sequences", median_seconds(lambda: trrpp_advantages(groups, rewards, lengths), args.runs)),
    ]
    print(f"median of {args.runs} runs, one paper step ({SEQUENCES} sequences)")
    print(f"{'stage':42s} {'ms':>9s} {'per item (us)':>14s} {'x baseline':>11s}")
    for name, seconds in rows:
        print(f"{name:42s} {seconds * 1e3:9.2f} {seconds / SEQUENCES * 1e6:14.1f} {seconds / baseline:11.2f}")


if __name__ == "__main__":
    main()
