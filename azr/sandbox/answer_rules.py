"""What counts as a right answer (docs/algorithm.md §6.3): the algorithm's rules, not the sandbox's plumbing.

Pure and standard library only: the sandbox worker imports it (inside the sandbox it is loaded
from the source the executor sends, so the sandbox needs nothing from the project).

Values are compared the way the original compared them, `gold == value` in the program's
namespace, so a `Counter`, `deque`, `OrderedDict`, `defaultdict`, `frozenset`, a dataclass or
`Ellipsis` can be matched. Model code never decides the verdict: a task child turns the values it
computed into a plain tree (`encode_value`, exact types only, read through the base types'
methods), and the trusted worker rebuilds them from that tree with its own classes
(`decode_value`) and compares them. The child that runs a solver's answer never holds the gold.
"""

from __future__ import annotations

# Names an answer (a solver's input expression) may not use: they would let it rewrite `f` or
# reach the interpreter instead of being an input.
ANSWER_DENIED_NAMES = frozenset({
    "setattr", "delattr", "getattr", "globals", "locals", "vars", "exec", "eval", "compile", "open",
    "input", "breakpoint", "exit", "quit", "help", "memoryview",
})
_MAX_DEPTH = 100


def original_rule_passes(status: str, error: str) -> bool:
    """Would the original have let this failure pass? It tested `'error' in status.lower()` on
    the last traceback line, so an exception whose name and message lack "error" (a bare
    Exception, StopIteration, SystemExit, a custom class, its own non-determinism exception)
    did not count as a failure: a run stayed valid with output '', a solver check became
    unscorable (None). Timeouts, memory, blocked access and sandbox failures never pass."""
    import re

    if status == "nondeterministic" and "same process" in error:
        line = "Exception: Non-deterministic code"  # what the original's template raised
    elif status == "error" and re.match(r"[A-Za-z_][\w.]*(?::|$)", error):
        line = error.rstrip("\n").split("\n")[-1]
    else:
        return False
    return "error" not in line.lower()


def literal_value(text: str) -> tuple[bool, object]:
    """(True, value) when `text` is a Python literal, else (False, None)."""
    import ast

    try:
        return True, ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        return False, None


def same_value(gold: object, answer: object) -> bool:
    """`gold == answer` on trusted values (literals, or trees rebuilt by `decode_value`)."""
    try:
        return bool(gold == answer)
    except (RecursionError, MemoryError, TypeError, ValueError):
        return False


def values_equal(gold: str, answer: str) -> bool:
    """Value equality of two literal texts: spacing, quotes and `(1,)` vs `(1, )` do not
    matter; a text that is not a literal (`nan`, a truncated `...`) never matches here."""
    ok_gold, gold_value = literal_value(gold)
    ok_answer, answer_value = literal_value(answer)
    return ok_gold and ok_answer and same_value(gold_value, answer_value)


def answer_violation(text: str) -> str | None:
    """Why an answer expression is refused (it reaches beyond being an input), or None."""
    import ast

    try:
        tree = ast.parse(f"f({text})", mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the child reports the syntax error
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return f"the answer accesses {node.attr}"
        if isinstance(node, ast.Name) and (node.id.startswith("__") or node.id in ANSWER_DENIED_NAMES):
            return f"the answer uses {node.id}"
        if isinstance(node, ast.NamedExpr):
            return "the answer assigns a name"
    return None


def value_violation(text: str) -> str | None:
    """Why a text is not the written form of a value (what a repr looks like), or None.

    A deduction answer and a gold output are evaluated in the program's namespace only when
    they are values: literals, containers, `...`, names, and calls of names other than `f`
    (`Counter({'a': 1})`, `Point(x=1)`). An expression such as `f(3)` or `9**9**9` is not.
    """
    import ast

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not valid Python"
    allowed = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Load, ast.Name,
               ast.Call, ast.keyword, ast.UnaryOp, ast.USub, ast.UAdd, ast.BinOp, ast.Add, ast.Sub)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            return f"{type(node).__name__} is not part of a value"
        if isinstance(node, ast.Name) and (node.id == "f" or node.id.startswith("__") or node.id in ANSWER_DENIED_NAMES):
            return f"a value does not use {node.id}"
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            return "a value calls only names"
        if isinstance(node, ast.BinOp) and not (
            isinstance(node.left, (ast.Constant, ast.UnaryOp)) and isinstance(node.right, ast.Constant)
            and isinstance(node.right.value, complex)
        ):
            return "arithmetic is not part of a value (only complex literals such as 1+2j)"
    return None


# ----------------------------------------------------------------- in the child: value -> tree


def encode_value(value: object, namespace: dict, budget: int) -> list | None:
    """A plain tree of `value` (lists, strings, numbers), or None when it is not one of the
    value types the rules compare or is larger than `budget` items and characters.

    Exact types only (a subclass could change `==`), contents read with the base types' own
    methods, dataclasses only when their class is the one the program binds under its name.
    """
    import sys

    collections = sys.modules.get("collections")
    kinds: dict = {}
    if collections is not None:
        kinds = {collections.Counter: "counter", collections.OrderedDict: "ordereddict",
                 collections.defaultdict: "defaultdict", collections.deque: "deque"}
    left = [budget]

    def spend(amount: int) -> None:
        left[0] -= amount
        if left[0] < 0:
            raise OverflowError

    def walk(item: object, depth: int) -> list:
        if depth > _MAX_DEPTH:
            raise OverflowError
        spend(1)
        kind = type(item)
        if item is None:
            return ["none"]
        if item is Ellipsis:
            return ["ellipsis"]
        if kind is bool or kind is int:
            text = int.__repr__(int(item))
            spend(len(text))
            return ["int", text]
        if kind is float:
            return ["float", float.__repr__(item)]
        if kind is complex:
            return ["complex", float.__repr__(item.real), float.__repr__(item.imag)]
        if kind is str:
            spend(len(item))
            return ["str", str.__str__(item)]
        if kind is bytes:
            spend(len(item))
            return ["bytes", bytes.hex(item)]
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            return [kind.__name__, [walk(x, depth + 1) for x in kind.__iter__(item)]]
        if kind is dict:
            return ["dict", [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in dict.items(item)]]
        if kind in kinds:
            name = kinds[kind]
            if name == "deque":
                return ["deque", [walk(x, depth + 1) for x in kind.__iter__(item)]]
            return [name, [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in dict.items(item)]]
        if isinstance(item, tuple) and "_fields" in kind.__dict__ and kind.__eq__ is tuple.__eq__:
            return ["tuple", [walk(x, depth + 1) for x in tuple.__iter__(item)]]  # a namedtuple equals its tuple
        fields = kind.__dict__.get("__dataclass_fields__")
        params = kind.__dict__.get("__dataclass_params__")
        if fields is not None and params is not None and params.eq and namespace.get(kind.__name__) is kind:
            names = [name for name, field in dict.items(fields) if field.compare and field._field_type.name == "_FIELD"]
            return ["dataclass", kind.__qualname__,
                    [[name, walk(object.__getattribute__(item, name), depth + 1)] for name in names]]
        raise TypeError(f"{kind.__name__} is not a value type the checks compare")

    try:
        return walk(value, 0)
    except (OverflowError, TypeError, ValueError, RecursionError, MemoryError, AttributeError, KeyError):
        return None


# ------------------------------------------------------------------ in the worker: tree -> value


class DataclassValue:
    """A dataclass instance rebuilt by the worker: equal to another with the same class name and
    equal fields, as the generated `__eq__` compares (same class, fields as a tuple)."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, fields: tuple) -> None:
        self.name, self.fields = name, fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataclassValue):
            return NotImplemented
        return self.name == other.name and self.fields == other.fields

    def __hash__(self) -> int:
        return hash((self.name, self.fields))


def decode_value(tree: object, depth: int = 0) -> object:
    """Rebuild a value from a child's tree with the worker's own classes; ValueError when the
    tree is malformed (a child's output is untrusted)."""
    import collections

    if depth > _MAX_DEPTH or not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise ValueError("malformed value")
    tag, rest = tree[0], tree[1:]
    try:
        if tag == "none":
            return None
        if tag == "ellipsis":
            return Ellipsis
        if tag == "int":
            return int(_text(rest[0]))
        if tag == "float":
            return float(_text(rest[0]))
        if tag == "complex":
            return complex(float(_text(rest[0])), float(_text(rest[1])))
        if tag == "str":
            return _text(rest[0])
        if tag == "bytes":
            return bytes.fromhex(_text(rest[0]))
        if tag in ("list", "tuple", "set", "frozenset", "deque"):
            items = [decode_value(x, depth + 1) for x in _items(rest[0])]
            kind = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "deque": collections.deque}[tag]
            return kind(items)
        if tag in ("dict", "counter", "ordereddict", "defaultdict"):
            pairs = [(decode_value(k, depth + 1), decode_value(v, depth + 1)) for k, v in _pairs(rest[0])]
            if tag == "defaultdict":
                return collections.defaultdict(None, pairs)
            kind = {"dict": dict, "counter": collections.Counter, "ordereddict": collections.OrderedDict}[tag]
            mapping = kind()
            for key, item in pairs:
                mapping[key] = item
            return mapping
        if tag == "dataclass":
            fields = tuple((_text(name), decode_value(v, depth + 1)) for name, v in _pairs(rest[1]))
            return DataclassValue(_text(rest[0]), fields)
    except (IndexError, TypeError, OverflowError) as exc:  # an unhashable key, a bad number
        raise ValueError(f"malformed value: {exc}") from None
    raise ValueError(f"unknown value tag {tag!r}")


def _text(item: object) -> str:
    if not isinstance(item, str):
        raise ValueError("malformed value")
    return item


def _items(item: object) -> list:
    if not isinstance(item, list):
        raise ValueError("malformed value")
    return item


def _pairs(item: object) -> list:
    pairs = _items(item)
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ValueError("malformed value")
    return pairs


def gold_value(gold: str, evaluated: object) -> tuple[bool, object]:
    """The gold output as a trusted value: the literal, else what a child evaluated for it."""
    ok, value = literal_value(gold)
    if ok:
        return True, value
    if evaluated is None:
        return False, None
    try:
        return True, decode_value(evaluated)
    except ValueError:
        return False, None


def call_matches(gold: str, gold_evaluated: object, output: str, output_value: object) -> bool:
    """Does one call's result (its repr and its tree) equal the gold output? Abduction and
    each hidden pair of induction (docs/algorithm.md §6.3: `gold == f(answer)`)."""
    if values_equal(gold, output):
        return True
    ok_gold, expected = gold_value(gold, gold_evaluated)
    if not ok_gold or output_value is None:
        return False
    try:
        return same_value(expected, decode_value(output_value))
    except ValueError:
        return False


def deduction_matches(gold: str, gold_evaluated: object, answer: str, answer_evaluated: object) -> bool:
    """Is the predicted output the gold output in value (docs/algorithm.md §6.3)?

    The gold's own text counts too when the gold child confirmed it is the whole repr of the
    value (not a truncated one): `defaultdict(<class 'int'>, {...})` cannot be evaluated.
    """
    if values_equal(gold, answer):
        return True
    if answer.strip() == gold.strip() and gold_evaluated is not None:
        return True
    ok_gold, expected = gold_value(gold, gold_evaluated)
    ok_answer, given = gold_value(answer, answer_evaluated)
    return ok_gold and ok_answer and same_value(expected, given)
