"""Write the laptop preset's frozen probe set: hand-written small programs, outputs computed by the sandbox.

    PYTHONPATH=. .venv/bin/python scripts/make_probe_set.py [--out azr/config/presets/probes/cpu_probe.jsonl]

The probe measures whether self-play taught the model anything, so its tasks are never trained on:
none of these programs is a seed (azr/config/presets/seeds/), an example in the small prompts, or
in a training buffer (a probe item is built here, not proposed). Each program and input goes
through the same validation as a proposal (static checks, a run in the sandbox with the
determinism check, the output policy); a program that fails is an error here, not a silent drop.
Run once; the file is committed, and tests check that it is unchanged by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from azr.config.schema import TaskConfig
from azr.sandbox import SandboxExecutor
from azr.selfplay.parsing import InductionProposal, ProgramProposal
from azr.selfplay.task_records import Triplet
from azr.selfplay.validation import validate_induction_proposals, validate_program_proposals

DEFAULT_OUT = Path("azr/config/presets/probes/cpu_probe.jsonl")

# (program, input): the model is asked for the output of f(input).
DEDUCTION = [
    ("def f(a):\n    return a * 3", "7"),
    ("def f(s):\n    return s.lower()", "'HeLLo'"),
    ("def f(xs):\n    return sum(xs)", "[4, 5, 6]"),
    ("def f(a, b):\n    return a + b", "12, 30"),
    ("def f(xs):\n    return xs[0]", "[9, 8, 7]"),
    ("def f(s):\n    return s[::-1]", "'stone'"),
    ("def f(n):\n    return n // 2", "15"),
    ("def f(xs):\n    return min(xs)", "[6, 2, 9]"),
    ("def f(a):\n    return a * a", "6"),
    ("def f(s):\n    return s + '!'", "'hey'"),
    ("def f(xs):\n    return [x + 1 for x in xs]", "[1, 2, 3]"),
    ("def f(a, b):\n    return max(a, b)", "4, 11"),
    ("def f(s):\n    return s.count('a')", "'banana'"),
    ("def f(xs):\n    return sorted(xs)", "[3, 1, 2]"),
    ("def f(n):\n    if n > 10:\n        return 'big'\n    return 'small'", "25"),
    ("def f(xs):\n    total = 1\n    for x in xs:\n        total *= x\n    return total", "[2, 3, 4]"),
]

# (program, gold input): the model is asked for any input giving f(gold input)'s output.
ABDUCTION = [
    ("def f(a):\n    return a + 10", "5"),
    ("def f(s):\n    return s * 2", "'ok'"),
    ("def f(xs):\n    return len(xs) * 2", "[1, 2]"),
    ("def f(a):\n    return a - 4", "10"),
    ("def f(s):\n    return s.title()", "'big cat'"),
    ("def f(a, b):\n    return a * b + 1", "2, 5"),
    ("def f(xs):\n    return xs[-1]", "[1, 2, 42]"),
    ("def f(n):\n    return n * 2", "21"),
    ("def f(s):\n    return 'x' + s", "'yz'"),
    ("def f(xs):\n    return [x * 2 for x in xs]", "[1, 5]"),
    ("def f(a):\n    return a % 5", "13"),
    ("def f(s):\n    return len(s) + 1", "'four'"),
    ("def f(a):\n    return str(a)", "8"),
    ("def f(xs):\n    return xs + [0]", "[7]"),
    ("def f(a, b):\n    return a + 2 * b", "20, 8"),
    ("def f(n):\n    return n == 3", "3"),
]

# (program, inputs, message): the model sees half the pairs and the message, writes f,
# and is scored on the other half.
INDUCTION = [
    ("def f(a):\n    return a * 2", ["3", "0", "5", "-2", "10", "7"], "Double the number."),
    ("def f(s):\n    return s.lower()", ["'ABC'", "'Hi'", "'x'", "'QQ'", "'MiX'", "'Zz'"], "Lower-case the text."),
    ("def f(xs):\n    return sum(xs)", ["[1, 2]", "[5]", "[0, 0, 3]", "[10, -1]", "[]", "[2, 2, 2]"], "Add up the list."),
    ("def f(a):\n    return a - 1", ["5", "1", "0", "20", "-3", "8"], "One less than the number."),
    ("def f(xs):\n    return xs[0]", ["[4, 5]", "[9]", "[1, 2, 3]", "[7, 0]", "[3, 3]", "[8, 1]"], "The first item."),
    ("def f(s):\n    return s + 'a'", ["'b'", "'x'", "''", "'ab'", "'zz'", "'q'"], "Append the letter a."),
    ("def f(a):\n    return a * a", ["2", "3", "0", "5", "-4", "10"], "The square of the number."),
    ("def f(xs):\n    return min(xs)", ["[3, 1]", "[5, 9, 2]", "[7]", "[0, -1]", "[4, 4]", "[8, 6, 7]"], "The smallest number."),
    ("def f(s):\n    return s[0]", ["'cat'", "'dog'", "'a'", "'zebra'", "'hi'", "'moon'"], "The first character."),
    ("def f(a, b):\n    return a + b", ["1, 2", "0, 0", "5, 5", "-1, 3", "10, 7", "2, 9"], "Add the two numbers."),
    ("def f(a):\n    return a + 100", ["1", "0", "-100", "23", "5", "900"], "Add one hundred."),
    ("def f(xs):\n    return xs[-1]", ["[1, 2]", "[9]", "[4, 5, 6]", "[0, 7]", "[3, 2, 1]", "[8, 8]"], "The last item."),
    ("def f(s):\n    return len(s) * 2", ["'ab'", "''", "'abc'", "'x'", "'hello'", "'four'"], "Twice the length of the text."),
    ("def f(a):\n    return a % 2", ["3", "4", "0", "7", "10", "11"], "The remainder after dividing by 2."),
    ("def f(xs):\n    return sorted(xs)", ["[2, 1]", "[3, 1, 2]", "[5]", "[0, -1]", "[9, 4, 6]", "[1, 1, 0]"], "The list in increasing order."),
    ("def f(a, b):\n    return b - a", ["2, 3", "0, 5", "4, 4", "-1, 6", "7, 1", "3, 3"], "Subtract the first number from the second."),
]


def build(executor: SandboxExecutor, tasks: TaskConfig) -> list[dict]:
    """Every probe item, validated like a proposal; raises on the first program that fails."""
    items: list[dict] = []
    for kind, pairs in (("deduction", DEDUCTION), ("abduction", ABDUCTION)):
        proposals = [ProgramProposal(program, given, ()) for program, given in pairs]
        for number, (proposal, result) in enumerate(zip(proposals, validate_program_proposals(proposals, executor, tasks)), 1):
            if not result.valid:
                raise SystemExit(f"{kind} item {number} is not a valid task ({result.label}): {proposal.program!r}")
            task = result.task
            items.append({"id": f"{kind}-{number:02d}", "task_type": kind, "program": task.program,
                          "input": task.input, "output": task.output, "imports": list(task.imports)})
    proposals = [InductionProposal(tuple(inputs), message) for _, inputs, message in INDUCTION]
    sources = [Triplet(program, inputs[0], "") for program, inputs, _ in INDUCTION]
    results = validate_induction_proposals(proposals, sources, executor, tasks)
    for number, (source, result) in enumerate(zip(sources, results), 1):
        if not result.valid:
            raise SystemExit(f"induction item {number} is not a valid task ({result.label}): {source.program!r}")
        task = result.task
        items.append({"id": f"induction-{number:02d}", "task_type": "induction", "program": task.program,
                      "inputs": list(task.inputs), "outputs": list(task.outputs), "message": task.message,
                      "imports": list(task.imports)})
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with SandboxExecutor() as executor:
        items = build(executor, TaskConfig())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(item, sort_keys=True) + "\n" for item in items), encoding="utf-8")
    counts = {kind: sum(i["task_type"] == kind for i in items) for kind in ("deduction", "abduction", "induction")}
    print(f"wrote {len(items)} probe items to {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
