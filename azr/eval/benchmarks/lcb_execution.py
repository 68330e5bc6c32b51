"""LiveCodeBench execution (hub `livecodebench/execution`, split test) as the original AZR used it
for in-training validation (docs/algorithm.md §11.3): each program's function renamed to `f`,
the call in `input` cut down to its arguments, the imports the program needs added, and the
problem posed as **input prediction** (abduction), as the original built it, not as the
benchmark's official output prediction. Programs are parsed with `ast`, never run here.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from azr.selfplay.task_types import TaskType

HUB_ID = "livecodebench/execution"
_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.DOTALL)
# Names the programs use without importing them, and where they come from.
_IMPORTS = {
    "Counter": "from collections import Counter", "defaultdict": "from collections import defaultdict",
    "deque": "from collections import deque", "collections": "import collections",
    "gcd": "from math import gcd", "inf": "from math import inf", "comb": "from math import comb",
    "prod": "from math import prod", "math": "import math", "cache": "from functools import cache",
    "lru_cache": "from functools import lru_cache", "reduce": "from functools import reduce",
    "accumulate": "from itertools import accumulate", "islice": "from itertools import islice",
    "itertools": "import itertools", "heapify": "from heapq import heapify", "heappush": "from heapq import heappush",
    "heappop": "from heapq import heappop", "heapq": "import heapq", "bisect": "import bisect",
    "bisect_left": "from bisect import bisect_left", "bisect_right": "from bisect import bisect_right",
    "List": "from typing import List", "Dict": "from typing import Dict", "Tuple": "from typing import Tuple",
    "Set": "from typing import Set", "Optional": "from typing import Optional",
}


def _missing_imports(code: str) -> list[str]:
    """Import lines for the known names the program reads but neither defines nor imports."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    bound = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return [_IMPORTS[name] for name in sorted(used - bound) if name in _IMPORTS]


def execution_problem(row: dict[str, Any]) -> tuple[str, str, str, str] | str:
    """(id, program, input, output) of one hub row, or why the row is unusable."""
    code, call, output = row.get("code"), row.get("input"), row.get("output")
    if not all(isinstance(v, str) for v in (code, call, output)):
        return "needs string fields code, input and output"
    match = _CALL.match(call)
    if match is None:
        return f"input {call[:60]!r} is not a call"
    name, arguments = match.groups()
    if not re.search(rf"\bdef\s+{re.escape(name)}\s*\(", code):
        return f"the program defines no function {name!r}"
    program = re.sub(rf"\bdef\s+{re.escape(name)}\s*\(", "def f(", code)
    program = re.sub(rf"(?<![\w.]){re.escape(name)}\s*\(", "f(", program)  # recursive calls
    program = "\n".join([*_missing_imports(program), program])
    identifier = str(row.get("id") or row.get("question_id") or "")
    return identifier, program, arguments.strip(), output.strip()


def load_lcb_execution(data: str | None) -> list[Any]:
    """The problems as input prediction (the original's in-training validation); hub by default."""
    from azr.eval.benchmarks.loaders import _build, read_rows
    from azr.eval.benchmarks.problems import ReasoningProblem

    source = data or HUB_ID

    def make(origin: str, row: dict[str, Any]) -> Any:
        made = execution_problem(row)
        if isinstance(made, str):
            return f"{origin}: {made}"
        identifier, program, arguments, output = made
        return ReasoningProblem(identifier or origin, TaskType.ABDUCTION, program, arguments, output)

    return _build(read_rows(source), make, source)
