"""Small benchmark files in exactly the public layouts of the paper's nine benchmarks, written by
the tests (this machine cannot reach the hub): EvalPlus JSONL(.gz), LiveCodeBench
code_generation_lite rows (private tests base64/zlib/pickle-encoded), the math harness' files."""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import zlib
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


HUMANEVAL_PLUS = [
    {
        "task_id": "HumanEval/0", "entry_point": "add_pair",
        "prompt": 'def add_pair(a: float, b: float) -> float:\n    """Return the sum of a and b."""\n',
        "canonical_solution": "    return a + b\n",
        "contract": "", "test": "", "atol": 0,
        "base_input": [[1, 2], [3, 4]],
        "plus_input": [[1000000, 1], [0.1, 0.2]],
    },
    {
        "task_id": "HumanEval/32", "entry_point": "find_zero",
        "prompt": 'def find_zero(xs: list):\n    """A root of the polynomial with coefficients xs."""\n',
        "canonical_solution": "    lo, hi = -100.0, 100.0\n    f = lambda x: sum(c * x ** i for i, c in enumerate(xs))\n"
                              "    for _ in range(200):\n        mid = (lo + hi) / 2\n"
                              "        if f(lo) * f(mid) <= 0:\n            hi = mid\n        else:\n            lo = mid\n"
                              "    return lo\n",
        "contract": "", "test": "", "atol": 1e-4,
        "base_input": [[[-6, 11, -6, 1]]], "plus_input": [[[-1, 1]]],
    },
]

MBPP_PLUS = [
    {
        "task_id": "Mbpp/2", "entry_point": "similar_elements",
        "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n'
                  'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
        "canonical_solution": "def similar_elements(test_tup1, test_tup2):\n    return tuple(set(test_tup1) & set(test_tup2))\n",
        "test": "", "atol": 0,
        "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]]], "plus_input": [[[1, 2], [2, 3]]],
    },
    {
        "task_id": "Mbpp/17", "entry_point": "square_perimeter",
        "prompt": '"""\nWrite a function that returns the perimeter of a square given its side length as input.\n'
                  'assert square_perimeter(10)==40\n"""\n',
        "canonical_solution": "def square_perimeter(a):\n  return 4*a\n",
        "test": "", "atol": 0, "base_input": [[10], [5]], "plus_input": [[2.5], [0]],
    },
]


def pack_private(tests: list[dict[str, str]]) -> str:
    """LiveCodeBench's encoding of private tests: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def livecodebench_rows() -> list[dict[str, Any]]:
    functional = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
    hidden_functional = [{"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"},
                         {"input": "[1, 5, 9]\n14", "output": "[1, 2]", "testtype": "functional"}]
    stdin = [{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"}]
    hidden_stdin = [{"input": "2\n10 -4\n", "output": "6\n", "testtype": "stdin"},
                    {"input": "1\n0.5\n", "output": "0.50\n", "testtype": "stdin"}]
    return [
        {
            "question_title": "Two Sum", "question_content": "Return the indices of the two numbers adding to target.",
            "platform": "leetcode", "question_id": "1", "contest_id": "weekly-1", "contest_date": "2023-08-21T00:00:00",
            "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
            "difficulty": "easy", "public_test_cases": json.dumps(functional),
            "private_test_cases": pack_private(hidden_functional), "metadata": json.dumps({"func_name": "twoSum"}),
        },
        {
            "question_title": "Sum", "question_content": "Read n and n numbers; print their sum.",
            "platform": "atcoder", "question_id": "abc300_a", "contest_id": "abc300", "contest_date": "2024-11-02T00:00:00",
            "starter_code": "", "difficulty": "easy", "public_test_cases": json.dumps(stdin),
            "private_test_cases": json.dumps(hidden_stdin), "metadata": "{}",
        },
    ]


MATH_ROWS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "aime24": ("aime24", [{"id": 60, "problem": "Find 2+2.", "solution": "It is 4.", "answer": "4", "url": "u", "year": "2024"}]),
    "aime25": ("aime25", [{"problem": "Find 3*3.", "answer": "9", "id": "I-1"}]),
    "amc23": ("amc23", [{"id": 0, "question": "What is 27?", "answer": "27.0", "url": "u"}]),
    "math500": ("math500", [{"problem": "Half of one?", "solution": "$\\boxed{\\frac12}$", "answer": "\\frac{1}{2}",
                             "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}]),
    "minerva-math": ("minerva_math", [{"problem": "Speed of 10 m in 2 s?", "solution": "So $\\boxed{5}$ m/s.",
                                       "type": "Physics", "idx": 0}]),
    "olympiadbench": ("olympiadbench", [
        {"id": 1606, "question": "Find all x with x^2 = 4.", "solution": ["..."], "final_answer": ["$2$, $-2$"],
         "context": None, "image_1": None, "is_multiple_answer": True, "unit": None, "answer_type": "Numerical",
         "error": None, "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"},
        {"id": 1607, "question": "Interval where x^2 < 1?", "solution": ["..."], "final_answer": ["$(-1,1)$"],
         "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Interval", "error": None,
         "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"},
    ]),
}


def write_data_dir(root: Path) -> Path:
    """A data directory with all nine benchmarks under their public names."""
    write_jsonl(root / "HumanEvalPlus-v0.1.10.jsonl.gz", HUMANEVAL_PLUS)
    write_jsonl(root / "MbppPlus-v0.2.0.jsonl.gz", MBPP_PLUS)
    rows = livecodebench_rows()
    write_jsonl(root / "livecodebench" / "test.jsonl", rows[:1])
    write_jsonl(root / "livecodebench" / "test2.jsonl", rows[1:])
    for folder, rows in MATH_ROWS.values():
        write_jsonl(root / folder / "test.jsonl", rows)
    return root
