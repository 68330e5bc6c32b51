"""Values that are not literals (docs/algorithm.md §6.3: `gold == f(answer)` in the program's namespace):
each is solvable by the right answer and not by a wrong one, in all three solve checks, and
the verdict stays the trusted worker's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config.schema import SandboxConfig
from azr.sandbox.api import AbductionCheck, DeductionCheck, InductionCheck, ProgramRun
from azr.sandbox import SandboxExecutor
from azr.sandbox.answer_rules import decode_value, encode_value


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(SandboxConfig(timeout_s=5), workers=1) as ex:
        yield ex


# name: (program, gold input, right abduction input, wrong abduction input,
#        right deduction answers, wrong deduction answers, right induction candidate, wrong candidate)
CASES = {
    "Counter": (
        "from collections import Counter\ndef f(s):\n    return Counter(s)",
        "'abca'", "'caab'", "'abc'",
        ["Counter({'c': 1, 'b': 1, 'a': 2})", "{'a': 2, 'b': 1, 'c': 1}"], ["Counter({'a': 2})", "'abca'"],
        "from collections import Counter\ndef f(s):\n    return Counter(sorted(s))",
        "from collections import Counter\ndef f(s):\n    return Counter(set(s))",
    ),
    "deque": (
        "from collections import deque\ndef f(n):\n    return deque(range(n), maxlen=3)",
        "5", "5", "6",
        ["deque([2, 3, 4], maxlen=3)", "deque([2, 3, 4])"], ["[2, 3, 4]", "deque([2, 3])"],
        "from collections import deque\ndef f(n):\n    return deque([n - 3, n - 2, n - 1])",
        "def f(n):\n    return [n - 3, n - 2, n - 1]",
    ),
    "OrderedDict": (
        "from collections import OrderedDict\ndef f(keys):\n    return OrderedDict((k, len(k)) for k in keys)",
        "['ab', 'c']", "('ab', 'c')", "['c', 'ab']",
        ["OrderedDict([('ab', 2), ('c', 1)])", "{'c': 1, 'ab': 2}"], ["OrderedDict([('c', 1), ('ab', 2)])"],
        "import collections\ndef f(keys):\n    return collections.OrderedDict([(k, len(k)) for k in keys])",
        "import collections\ndef f(keys):\n    return collections.OrderedDict([(k, len(k)) for k in reversed(keys)])",
    ),
    "defaultdict": (
        "from collections import defaultdict\ndef f(words):\n    d = defaultdict(int)\n"
        "    for w in words:\n        d[w] += 1\n    return d",
        "['a', 'b', 'a']", "['b', 'a', 'a']", "['a', 'b']",
        ["defaultdict(<class 'int'>, {'a': 2, 'b': 1})", "defaultdict(int, {'b': 1, 'a': 2})", "{'a': 2, 'b': 1}"],
        ["defaultdict(int, {'a': 1, 'b': 1})"],
        "def f(words):\n    return {w: words.count(w) for w in words}",
        "def f(words):\n    return {w: 1 for w in words}",
    ),
    "frozenset": (
        "def f(xs):\n    return frozenset(xs)",
        "[1, 2, 3]", "[3, 3, 2, 1]", "[1, 2]",
        ["frozenset({3, 1, 2})", "{1, 2, 3}"], ["frozenset({1, 2})", "[1, 2, 3]"],
        "def f(xs):\n    return set(xs)",
        "def f(xs):\n    return tuple(xs)",
    ),
    "dataclass": (
        "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n    y: int\n"
        "def f(a, b):\n    return Point(a + b, a - b)",
        "3, 2", "3.0, 2.0", "2, 3",
        ["Point(x=5, y=1)", "Point(5, 1)"], ["Point(x=1, y=5)", "(5, 1)"],
        "import dataclasses\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: int\n"
        "def f(a, b):\n    return Point(x=a + b, y=a - b)",
        "from dataclasses import dataclass\n@dataclass\nclass Pair:\n    x: int\n    y: int\n"
        "def f(a, b):\n    return Pair(a + b, a - b)",
    ),
    "Ellipsis": (
        "def f(xs):\n    return [x if x > 0 else ... for x in xs]",
        "[1, -1, 3]", "[1, 0, 3]", "[1, 2, 3]",
        ["[1, Ellipsis, 3]", "[1, ..., 3]"], ["[1, None, 3]", "[1, 3]"],
        "def f(xs):\n    return [Ellipsis if x <= 0 else x for x in xs]",
        "def f(xs):\n    return [None if x <= 0 else x for x in xs]",
    ),
}


def gold_of(executor: SandboxExecutor, program: str, *inputs: str) -> tuple[str, ...]:
    (result,) = executor.run([ProgramRun(program, inputs, True)])
    assert result.ok, result
    return result.outputs


@pytest.mark.parametrize("name", list(CASES))
def test_non_literal_values_are_solvable_by_the_right_answer_only(executor: SandboxExecutor, name: str) -> None:
    program, gold_input, right, wrong, right_outputs, wrong_outputs, good, bad = CASES[name]
    (gold,) = gold_of(executor, program, gold_input)
    abduction = [AbductionCheck(program, gold, answer, gold_input) for answer in (right, wrong)]
    deduction = [DeductionCheck(gold, answer, program, gold_input) for answer in right_outputs + wrong_outputs]
    inputs = (gold_input, right, wrong)
    outputs = gold_of(executor, program, *inputs)
    induction = [InductionCheck(candidate, inputs, outputs, gold_program=program) for candidate in (good, bad)]
    verdicts = executor.verify([*abduction, *deduction, *induction])
    got = [v.matched for v in verdicts]
    expected = [1, 0] + [1] * len(right_outputs) + [0] * len(wrong_outputs) + [3, 0]
    assert got[:-1] == expected[:-1], (gold, verdicts)
    assert got[-1] < 3, (gold, verdicts)


def test_a_lookalike_class_does_not_match(executor: SandboxExecutor) -> None:
    # A subclass that compares equal to anything, and a class named like the gold's dataclass.
    gold_program = CASES["Counter"][0]
    (gold,) = gold_of(executor, gold_program, "'ab'")
    cheat = ("from collections import Counter\nclass Counter(Counter):\n"
             "    def __eq__(self, other):\n        return True\ndef f(s):\n    return Counter(s)")
    lookalike = "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\ndef f(a, b):\n    return Point(a, b)"
    point_program = CASES["dataclass"][0]
    (point,) = gold_of(executor, point_program, "3, 2")
    verdicts = executor.verify([
        InductionCheck(cheat, ("'xyz'",), (gold,), gold_program=gold_program),
        InductionCheck(lookalike, ("5, 1",), (point,), gold_program=point_program),
        DeductionCheck(gold, "f('ab')", gold_program, "'ab'"),  # a call of f is not a value
    ])
    assert [v.matched for v in verdicts] == [0, 0, 0]


def test_a_truncated_gold_stays_unsolvable(executor: SandboxExecutor) -> None:
    program = "from collections import Counter\ndef f(n):\n    return Counter(range(n))"
    (full,) = gold_of(executor, program, "200")
    truncated = full[:200] + "..." + full[-200:]
    verdicts = executor.verify([
        AbductionCheck(program, truncated, "200", "200"),
        DeductionCheck(truncated, truncated, program, "200"),
        AbductionCheck(program, full, "200", "200"),
    ])
    assert [v.matched for v in verdicts] == [0, 0, 1]


def test_value_trees_round_trip_to_equal_values() -> None:
    from collections import Counter, OrderedDict, defaultdict, deque

    values = [Counter("abca"), deque([1, 2], maxlen=4), OrderedDict(a=1, b=2), defaultdict(list, {"k": [1]}),
              frozenset({1, 2}), {1: (2.5, None, ...)}, [True, 1 + 2j, b"\x00"]]
    for value in values:
        tree = encode_value(value, {}, 10_000)
        assert tree is not None and decode_value(tree) == value
    assert encode_value(list(range(1000)), {}, 100) is None  # over the budget
    with pytest.raises(ValueError):
        decode_value(["set", [["list", []]]])  # an unhashable element: malformed, not a crash


def test_a_candidate_cannot_find_the_hidden_gold_in_its_process(executor: SandboxExecutor) -> None:
    # The hidden outputs are not literals, so the worker evaluates them in a child; that child's
    # fork server is not the one the candidate's child is forked from, so nothing of them is
    # in the candidate's memory to search for.
    gold_program = "from collections import Counter\ndef f(n):\n    return Counter({'secret' + str(n * 7919): n})"
    (gold,) = gold_of(executor, gold_program, "3")
    snoop = (
        "import gc\nfrom collections import Counter\ndef f(n):\n"
        "    for obj in gc.get_objects():\n"
        "        if isinstance(obj, list):\n"
        "            for item in obj:\n"
        "                if isinstance(item, str) and item.startswith(\"Counter({'secret\"):\n"
        "                    return eval(item)\n"
        "                if isinstance(item, list) and item and isinstance(item[0], str) and item[0].startswith(\"Counter({'secret\"):\n"
        "                    return eval(item[0])\n"
        "    return None"
    )
    (verdict,) = executor.verify([InductionCheck(snoop, ("3",), (gold,), gold_program=gold_program)])
    assert verdict.matched == 0, verdict
