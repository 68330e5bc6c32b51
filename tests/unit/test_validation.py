"""Proposal validation (docs/algorithm.md §5) against a scripted executor, and the static checks."""

from __future__ import annotations

import pytest

from azr.config.schema import ORIGINAL_BANNED_IMPORTS, TaskConfig
from azr.sandbox.api import CallResult, ExecStatus
from azr.selfplay.parsing import InductionProposal, ProgramProposal
from azr.selfplay.rejection import Reason
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.static_checks import argument_syntax_error, calls_input_builtin, find_banned_imports, program_syntax_error
from azr.selfplay.validation import truncate_output, validate_induction_proposals, validate_program_proposals
from tests.support.fakes import ScriptedExecutor, ok

BANNED = list(ORIGINAL_BANNED_IMPORTS)


class TestBannedImports:
    @pytest.mark.parametrize(
        ("code", "entry"),
        [
            ("import random\ndef f(a):\n    return a", "random"),
            ("import numpy.random as r\ndef f(a):\n    return a", "random"),
            ("from time import sleep\ndef f(a):\n    return a", "time"),
            ("def f(a):\n    import datetime\n    return a", "datetime"),
            # dotted entries, dead in the original (docs/algorithm.md §5.3), match here
            ("import os.path\ndef f(a):\n    return a", "os.path"),
            ("from os import path\ndef f(a):\n    return a", "os.path"),
            ("from os.path import join\ndef f(a):\n    return a", "os.path"),
            ("from os import environ\ndef f(a):\n    return a", "os.environ"),
            ("from sys import exit\ndef f(a):\n    return a", "sys.exit"),
            ("import os\ndef f(a):\n    return os.environ['HOME']", "os.environ"),
            ("import os as o\ndef f(a):\n    return o.path.join(a)", "os.path"),
            ("import sys\ndef f(a):\n    sys.exit(1)", "sys.exit"),
            ("from os import sys\ndef f(a):\n    return a", "os.sys"),
            ("def f(a):\n    return __import__('random').random()", "random"),
            ("import importlib\ndef f(a):\n    return importlib.import_module('hashlib')", "hashlib"),
        ],
    )
    def test_banned(self, code: str, entry: str) -> None:
        assert entry in {use.entry for use in find_banned_imports(code, BANNED)}

    @pytest.mark.parametrize(
        "code",
        [
            "import os\ndef f(a):\n    return os.sep",
            "import math\ndef f(a):\n    return math.floor(a)",
            "import sys\ndef f(a):\n    return sys.maxsize",
            # words in identifiers or comments are not imports (the original did not scan them)
            "def f(time_left):\n    # random comment\n    return time_left",
        ],
    )
    def test_allowed(self, code: str) -> None:
        assert find_banned_imports(code, BANNED) == []

    def test_unparsable_code_falls_back_to_word_search(self) -> None:
        uses = find_banned_imports("import random\ndef f(:", BANNED)
        assert [u.entry for u in uses] == ["random"]
        assert find_banned_imports("def f(: randomly", BANNED) == []

    def test_list_is_a_setting(self) -> None:
        code = "import math\ndef f(a):\n    return a"
        assert find_banned_imports(code, ["math"])[0].entry == "math"
        assert find_banned_imports(code, []) == []


class TestCallShape:
    def test_good_call(self) -> None:
        assert argument_syntax_error("1, 'x'") is None
        assert argument_syntax_error("a=1, **{'b': 2}") is None

    def test_splice_attack_is_refused(self) -> None:
        assert "not an argument list" in argument_syntax_error("0) or (True")
        assert argument_syntax_error("1)\nimport os\nf(2") is not None

    def test_program_syntax_error(self) -> None:
        assert program_syntax_error("def f(a:\n    return a").startswith("program:")
        assert program_syntax_error("def f(a):\n    return a") is None

    def test_input_guard_uses_call_nodes(self) -> None:
        assert calls_input_builtin("def f(a):\n    return input()")
        assert not calls_input_builtin("def f(a):\n    return parse_input(a)")


def proposal(program: str = "def f(a):\n    return a * 2", input_text: str = "3") -> ProgramProposal:
    return ProgramProposal(program, input_text, ())


class TestProgramValidation:
    def test_valid_proposal_becomes_a_triplet(self) -> None:
        executor = ScriptedExecutor({("def f(a):\n    return a * 2", "3"): ok("6")})
        (result,) = validate_program_proposals([proposal()], executor, TaskConfig())
        assert result.valid and result.task == Triplet("def f(a):\n    return a * 2", "3", "6", ())
        assert executor.run_batches[0][0].check_determinism

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            (ExecStatus.ERROR, Reason.RUNTIME_ERROR),
            (ExecStatus.TIMEOUT, Reason.TIMEOUT),
            (ExecStatus.MEMORY, Reason.MEMORY),
            (ExecStatus.BLOCKED, Reason.BLOCKED),
            (ExecStatus.NONDETERMINISTIC, Reason.NONDETERMINISTIC),
            (ExecStatus.OUTPUT_LIMIT, Reason.OUTPUT_LIMIT),
        ],
    )
    def test_execution_failures(self, status: ExecStatus, reason: Reason) -> None:
        p = proposal()
        executor = ScriptedExecutor({(p.program, p.input): CallResult(status, "", "ZeroDivisionError: boom")})
        (result,) = validate_program_proposals([p], executor, TaskConfig())
        assert not result.valid and result.reason is reason

    def test_runtime_error_label_names_the_exception(self) -> None:
        p = proposal()
        executor = ScriptedExecutor({(p.program, p.input): CallResult(ExecStatus.ERROR, "", "ValueError: bad")})
        (result,) = validate_program_proposals([p], executor, TaskConfig())
        assert result.label == "runtime_error:ValueError"

    def test_static_failures_never_reach_the_executor(self) -> None:
        proposals = [
            proposal("import random\ndef f(a):\n    return a"),
            proposal(input_text="0) or (True"),
            proposal("def f(a):\n    return input()"),
        ]
        executor = ScriptedExecutor()
        results = validate_program_proposals(proposals, executor, TaskConfig())
        assert [r.reason for r in results] == [Reason.BANNED_IMPORT, Reason.SYNTAX_ERROR, Reason.INPUT_CALL_GUARD]
        assert executor.run_batches == []

    def test_one_batched_executor_call_keeps_order(self) -> None:
        a, b = proposal(input_text="1"), proposal(input_text="2")
        executor = ScriptedExecutor({(a.program, "1"): ok("2"), (b.program, "2"): ok("4")})
        bad = proposal("import time\ndef f(a):\n    return a")
        results = validate_program_proposals([a, bad, b], executor, TaskConfig())
        assert [r.task.output if r.task else None for r in results] == ["2", None, "4"]
        assert len(executor.run_batches) == 1 and len(executor.run_batches[0]) == 2

    def test_long_output_truncated_like_the_original(self) -> None:
        long = "'" + "x" * 500 + "'"
        p = proposal()
        executor = ScriptedExecutor({(p.program, p.input): ok(long)})
        (result,) = validate_program_proposals([p], executor, TaskConfig())
        assert result.task.output == long[:200] + "..." + long[-200:]
        assert len(result.task.output) == 403

    def test_long_output_rejected_when_configured(self) -> None:
        p = proposal()
        executor = ScriptedExecutor({(p.program, p.input): ok("1" * 401)})
        tasks = TaskConfig(output_overflow="reject")
        (result,) = validate_program_proposals([p], executor, tasks)
        assert result.reason is Reason.OUTPUT_TOO_LONG
        (kept,) = validate_program_proposals([p], executor, TaskConfig(output_max_chars=None))
        assert kept.task.output == "1" * 401

    def test_truncate_helper(self) -> None:
        assert truncate_output("abcdef", 10) == "abcdef"
        assert truncate_output("abcdefghijkl", 4) == "ab...kl"


class TestInductionValidation:
    SOURCE = Triplet("def f(a):\n    return a + 1", "1", "2", ())

    def test_valid_collects_every_output(self) -> None:
        executor = ScriptedExecutor({(self.SOURCE.program, str(i)): ok(str(i + 1)) for i in range(4)})
        p = InductionProposal(("0", "1", "2", "3"), "adds one")
        (result,) = validate_induction_proposals([p], [self.SOURCE], executor, TaskConfig())
        assert isinstance(result.task, InductionTask)
        assert result.task.outputs == ("1", "2", "3", "4")
        assert result.task.shown_pairs == [("0", "1"), ("1", "2")]
        assert result.task.hidden_pairs == [("2", "3"), ("3", "4")]

    def test_one_failing_input_invalidates(self) -> None:
        outputs = {(self.SOURCE.program, "0"): ok("1"), (self.SOURCE.program, "'x'"): CallResult(ExecStatus.ERROR, "", "TypeError: str")}
        p = InductionProposal(("0", "'x'"), "adds one")
        (result,) = validate_induction_proposals([p], [self.SOURCE], ScriptedExecutor(outputs), TaskConfig())
        assert result.reason is Reason.RUNTIME_ERROR

    def test_bad_input_text_is_a_syntax_error(self) -> None:
        p = InductionProposal(("0", "1)"), "adds one")
        executor = ScriptedExecutor()
        (result,) = validate_induction_proposals([p], [self.SOURCE], executor, TaskConfig())
        assert result.reason is Reason.SYNTAX_ERROR and executor.run_batches == []

    def test_source_count_must_match(self) -> None:
        with pytest.raises(ValueError, match="source programs"):
            validate_induction_proposals([], [self.SOURCE], ScriptedExecutor(), TaskConfig())
