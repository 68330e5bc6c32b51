"""The program that runs one HumanEval solution against its tests in the sandbox.

The sandbox calls `f()`. Our `f` executes the solution and the test code in a namespace of their
own and returns True when `check(<entry point>)` passes, so a solution may itself define a
function called `f` (HumanEval/106 does) and may call it recursively. Text is handed over as
string literals, never spliced into code.
"""

from __future__ import annotations

import ast

from azr.eval.benchmarks.problems import CodeProblem, PlusProblem
from azr.selfplay.static_checks import AST_ERRORS

_RUNNER = '''\
_SOLUTION = {solution!r}
_TESTS = {tests!r}
_ENTRY_POINT = {entry_point!r}


def f():
    namespace = {{"__name__": "__candidate__"}}
    exec(compile(_SOLUTION, "<solution>", "exec"), namespace)
    exec(compile(_TESTS, "<tests>", "exec"), namespace)
    namespace["check"](namespace[_ENTRY_POINT])
    return True
'''


def defines_function(code: str, name: str) -> bool:
    """Whether `code` parses on its own and defines `name` at top level (a whole function,
    not a body that continues the prompt)."""
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body)


def solution_source(problem: CodeProblem | PlusProblem, completion: str) -> str:
    """The solution as a module: the prompt continued by a body, or the prompt (for its imports
    and helpers; its stub is a valid function whose body is the docstring) followed by a whole
    function that replaces the stub."""
    if defines_function(completion, problem.entry_point):
        return f"{problem.prompt.rstrip()}\n\n\n{completion}"
    return problem.prompt + completion


def humaneval_program(problem: CodeProblem, completion: str) -> str:
    """The sandbox program for one completion: `f()` returns True iff every test passes."""
    return _RUNNER.format(solution=solution_source(problem, completion), tests=problem.test, entry_point=problem.entry_point)
