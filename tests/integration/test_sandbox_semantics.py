"""The executor's semantics settings (docs/algorithm.md §5-§6): each in its original mode (the default)
and its alternative."""

from __future__ import annotations

import pytest

from azr.config.schema import SandboxConfig
from azr.sandbox.api import ExecStatus, ProgramRun
from azr.sandbox import SandboxExecutor
from azr.sandbox.packages import PackageNotFound, package_paths
from azr.sandbox.worker import compare_runs


def run(config: SandboxConfig, program: str, *inputs: str, determinism: bool = False):
    with SandboxExecutor(config, workers=1) as executor:
        (result,) = executor.run([ProgramRun(program, inputs, determinism)])
    return result


NUMPY = "import numpy as np\ndef f(xs):\n    return int(np.array(xs).sum())"


def test_numpy_is_importable_by_default_and_nothing_else_installed() -> None:
    assert SandboxConfig().packages == ["numpy"]
    with SandboxExecutor(SandboxConfig(), workers=1) as executor:
        numpy, other = executor.run([
            ProgramRun(NUMPY, ("[1, 2, 3]",), True),
            ProgramRun("import pydantic\ndef f(x):\n    return x", ("1",), False),
        ])
    assert numpy.ok and numpy.outputs == ("6",), numpy
    assert other.calls[0].status is ExecStatus.ERROR and "ModuleNotFoundError" in other.calls[0].error


def test_standard_library_only_when_no_packages_are_listed() -> None:
    result = run(SandboxConfig(packages=[]), NUMPY, "[1, 2, 3]")
    assert result.calls[0].status is ExecStatus.ERROR and "ModuleNotFoundError" in result.calls[0].error


def test_a_package_that_is_not_installed_is_a_clear_error() -> None:
    with pytest.raises(PackageNotFound, match="not installed"):
        package_paths(["surely_not_a_package_xyz"])
    with pytest.raises(PackageNotFound, match="top-level"):
        package_paths(["numpy.linalg"])


MUTABLE_DEFAULT = "def f(x, seen=[]):\n    seen.append(x)\n    return len(seen)"
SLEEPS = "import select\ndef f(s):\n    select.select([], [], [], s)\n    return s"


def test_each_input_runs_in_a_fresh_process_by_default() -> None:
    assert SandboxConfig().process_per_input is True
    assert run(SandboxConfig(), MUTABLE_DEFAULT, "1", "2", "3").outputs == ("1", "1", "1")
    assert run(SandboxConfig(process_per_input=False), MUTABLE_DEFAULT, "1", "2", "3").outputs == ("1", "2", "3")


def test_each_input_has_its_own_time_limit_by_default() -> None:
    inputs = ("0.8", "0.8", "0.8", "0.8")  # 3.2 s of waiting in all, 0.8 s per input
    separate = run(SandboxConfig(timeout_s=2.5), SLEEPS, *inputs)
    assert separate.ok, separate
    together = run(SandboxConfig(timeout_s=2.5, process_per_input=False), SLEEPS, *inputs)
    assert together.calls[0].status is ExecStatus.TIMEOUT


def test_huge_outputs_are_kept_truncated_by_default() -> None:
    program = "def f(n):\n    return 'ab' * n"
    kept = run(SandboxConfig(max_output_chars=100), program, "500")
    assert kept.ok and kept.outputs[0] == repr("ab" * 500)[:50] + "..." + repr("ab" * 500)[-50:]
    rejected = run(SandboxConfig(max_output_chars=100, output_limit="reject"), program, "500")
    assert rejected.calls[0].status is ExecStatus.OUTPUT_LIMIT


@pytest.mark.parametrize("determinism", [False, True])
def test_an_endless_loop_is_a_timeout(determinism: bool) -> None:
    result = run(SandboxConfig(timeout_s=5, cpu_time_s=1), "def f(x):\n    while True:\n        pass", "1",
                 determinism=determinism)
    assert result.calls[0].status is ExecStatus.TIMEOUT, result


def test_a_determinism_checked_run_reports_wall_time() -> None:
    # The two runs go side by side in two fork servers: the longer one is the wall time.
    ok = {"status": "ok", "output": "1"}
    merged = compare_runs({"calls": [ok], "stdout": "", "duration_ms": 500.0},
                          {"calls": [ok], "stdout": "", "duration_ms": 400.0})
    assert merged["duration_ms"] == 500.0 and merged["calls"] == [ok]
