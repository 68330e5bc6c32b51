"""The sandbox against hostile programs: each test asserts the status the program gets, that
the host is untouched (canary file, listener, processes, environment), and that the next
ordinary task still returns its right answer."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.config.schema import SandboxConfig
from azr.sandbox.api import ExecStatus, ProgramRun
from azr.sandbox import SandboxExecutor

TIMEOUT_S = 1.5
ORDINARY = ProgramRun("def f(xs):\n    return sorted(xs)[::-1]", ("[3, 1, 2]",), True)


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    os.environ["AZR_TEST_SECRET"] = "hunter2"  # must never be visible inside
    with SandboxExecutor(SandboxConfig(timeout_s=TIMEOUT_S, cpu_time_s=5, memory_mb=512), workers=2) as ex:
        yield ex
    os.environ.pop("AZR_TEST_SECRET", None)


@pytest.fixture(scope="module")
def canary() -> Iterator[Path]:
    """A file outside /tmp (the sandbox has its own /tmp), writable by everyone on the host."""
    directory = Path(tempfile.mkdtemp(prefix="azr-canary-", dir="/var/tmp"))
    directory.chmod(0o777)
    path = directory / "canary.txt"
    path.write_text("intact")
    path.chmod(0o666)
    yield path
    path.unlink(missing_ok=True)
    directory.rmdir()


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener on the host that no task may reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def task_processes() -> list[int]:
    """Processes of the task uid, or zombies among our own children: there must be none."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        uid = fields.get("Uid", "").split()
        zombie_child = fields.get("State", "").startswith("Z") and fields.get("PPid", "").strip() == str(os.getpid())
        if (uid and uid[0] == "65534") or zombie_child:
            found.append(int(name))
    return found


def run_one(executor: SandboxExecutor, program: str, input_text: str = "0", determinism: bool = False):
    (result,) = executor.run([ProgramRun(program, (input_text,), determinism)])
    return result.calls[0]


def assert_host_ok(executor: SandboxExecutor, canary: Path, listener: socket.socket) -> None:
    """The next ordinary task is right; canary intact; no stray process; listener untouched."""
    (ordinary,) = executor.run([ORDINARY])
    assert ordinary.ok and ordinary.outputs == ("[3, 2, 1]",)
    assert task_processes() == []
    assert canary.read_text() == "intact"
    with pytest.raises(BlockingIOError):
        listener.accept()


HOSTILE = {
    "infinite loop": ("def f(a):\n    while True:\n        pass", ExecStatus.TIMEOUT),
    "loop that swallows every exception": (
        "def f(a):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass",
        ExecStatus.TIMEOUT,
    ),
    "ignores signals": (
        "import signal\ndef f(a):\n    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
        "        signal.signal(s, signal.SIG_IGN)\n    while True:\n        pass",
        ExecStatus.TIMEOUT,
    ),
    "deep recursion": ("def f(a):\n    return f(a + 1)", ExecStatus.ERROR),
    "recursion limit raised": (
        "import sys\ndef f(a):\n    sys.setrecursionlimit(10**7)\n    def g(n):\n        return g(n + 1) + 1\n    return g(0)",
        {ExecStatus.ERROR, ExecStatus.MEMORY, ExecStatus.TIMEOUT},
    ),
    "one huge allocation": ("def f(a):\n    return len(bytearray(10**11))", ExecStatus.MEMORY),
    "growing memory": ("def f(a):\n    x = []\n    while True:\n        x.append(' ' * 10**7)", ExecStatus.MEMORY),
    "fork bomb": ("import os\ndef f(a):\n    while True:\n        os.fork()", ExecStatus.BLOCKED),
    "subprocess": ("import subprocess\ndef f(a):\n    return subprocess.run(['sleep', '60']).returncode", ExecStatus.BLOCKED),
    "thread that would outlive the call": (
        "import threading, time\ndef f(a):\n    threading.Thread(target=time.sleep, args=(60,)).start()\n    return 1",
        ExecStatus.BLOCKED,
    ),
    "os._exit": ("import os\ndef f(a):\n    os._exit(0)", ExecStatus.ERROR),
    "sys.exit": ("import sys\ndef f(a):\n    sys.exit(3)", ExecStatus.ERROR),
    "kill the parent": ("import os\ndef f(a):\n    os.kill(os.getppid(), 9)\n    return 1", ExecStatus.BLOCKED),
    "kill everything it may": ("import os\ndef f(a):\n    os.kill(-1, 9)\n    return 1", ExecStatus.OK),
    "read /etc/shadow": ("def f(a):\n    return open('/etc/shadow').read()", ExecStatus.BLOCKED),
    "100 MB printed": ("def f(a):\n    print('x' * 10**8)\n    return 1", ExecStatus.OK),
    "100 MB returned": ("def f(a):\n    return 'x' * 10**8", ExecStatus.OK),  # kept, cut to head...tail (sandbox.output_limit)
    "__repr__ raises": (
        "class Bad:\n    def __repr__(self):\n        raise ValueError('no')\ndef f(a):\n    return Bad()",
        ExecStatus.ERROR,
    ),
    "__repr__ never ends": (
        "class Bad:\n    def __repr__(self):\n        while True:\n            pass\ndef f(a):\n    return Bad()",
        ExecStatus.TIMEOUT,
    ),
    "__repr__ returns a non-string": (
        "class Bad:\n    def __repr__(self):\n        return 5\ndef f(a):\n    return Bad()",
        ExecStatus.ERROR,
    ),
    "__reduce__ and __eq__ misbehave": (
        "class Odd:\n    def __reduce__(self):\n        raise RuntimeError\n    def __eq__(self, o):\n        raise RuntimeError\n"
        "    def __repr__(self):\n        return 'Odd()'\ndef f(a):\n    return Odd()",
        ExecStatus.OK,
    ),
    "closes and forges its result pipe": (
        "import os\ndef f(a):\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'\\x00\\x00\\x00\\x05hello')\n"
        "        except OSError:\n            pass\n    os._exit(0)",
        ExecStatus.ERROR,
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program(executor: SandboxExecutor, name: str, canary: Path, listener: socket.socket) -> None:
    program, expected = HOSTILE[name]
    call = run_one(executor, program)
    assert call.status in (expected if isinstance(expected, set) else {expected}), (name, call)
    assert_host_ok(executor, canary, listener)


def test_writes_and_deletes_aimed_at_a_canary(executor: SandboxExecutor, canary: Path, listener: socket.socket) -> None:
    programs = [
        f"def f(a):\n    open({str(canary)!r}, 'w').write('owned')\n    return 1",
        f"import os\ndef f(a):\n    os.remove({str(canary)!r})\n    return 1",
        f"import shutil\ndef f(a):\n    shutil.rmtree({str(canary.parent)!r})\n    return 1",
        f"import os\ndef f(a):\n    os.chmod({str(canary)!r}, 0)\n    return 1",
    ]
    for program in programs:
        call = run_one(executor, program)
        assert call.status is ExecStatus.BLOCKED, call
        assert canary.read_text() == "intact"
    # the scratch directory itself is writable, and private to the task
    call = run_one(executor, "import os\ndef f(a):\n    open('x.txt', 'w').write('hi')\n    return os.listdir('.')")
    assert call.status is ExecStatus.OK and call.output == "['x.txt']"
    assert run_one(executor, "import os\ndef f(a):\n    return os.listdir('.')").output == "[]"
    assert_host_ok(executor, canary, listener)


def test_environment_is_empty(executor: SandboxExecutor) -> None:
    call = run_one(executor, "import os\ndef f(a):\n    return sorted(os.environ)")
    assert call.status is ExecStatus.OK
    assert "AZR_TEST_SECRET" not in call.output and "hunter2" not in call.output


def test_no_network_even_to_loopback(executor: SandboxExecutor, canary: Path, listener: socket.socket) -> None:
    program = (
        "import socket\ndef f(port):\n    s = socket.create_connection(('127.0.0.1', port), timeout=1)\n"
        "    s.sendall(b'leak')\n    return 1"
    )
    call = run_one(executor, program, str(listener.getsockname()[1]))
    assert call.status is ExecStatus.BLOCKED, call
    assert_host_ok(executor, canary, listener)


def test_orchestrator_cannot_be_signalled(executor: SandboxExecutor, canary: Path, listener: socket.socket) -> None:
    call = run_one(executor, "import os\ndef f(pid):\n    os.kill(pid, 15)\n    return 1", str(os.getpid()))
    assert call.status is not ExecStatus.OK  # our pid does not exist in the sandbox
    assert_host_ok(executor, canary, listener)


def test_patched_builtins_and_modules_do_not_leak(executor: SandboxExecutor, canary: Path, listener: socket.socket) -> None:
    patch = (
        "import builtins, sys\ndef f(a):\n    builtins.len = lambda x: 42\n    builtins.sorted = None\n"
        "    sys.modules['math'] = None\n    sys.setrecursionlimit(50)\n    import os\n    os.chdir('/')\n    return 1"
    )
    assert run_one(executor, patch).status is ExecStatus.OK
    normal = "import math, os\ndef f(a):\n    return (len(a), math.floor(2.5), os.getcwd() != '/')"
    assert run_one(executor, normal, "[1, 2]").output == "(2, 2, True)"
    assert_host_ok(executor, canary, listener)


NONDETERMINISTIC = {
    "hash order": "def f(a):\n    return str({str(i) for i in range(30)})",
    "id()": "def f(a):\n    return id(object())",
    "address in repr": "def f(a):\n    return repr(object())",
    "time": "import time\ndef f(a):\n    return time.time()",
    "pid": "import os\ndef f(a):\n    return os.getpid()",
    "state kept between calls": "def f(a, seen=[]):\n    seen.append(a)\n    return len(seen)",
}


@pytest.mark.parametrize("name", sorted(NONDETERMINISTIC))
def test_nondeterminism_is_rejected(executor: SandboxExecutor, name: str) -> None:
    call = run_one(executor, NONDETERMINISTIC[name], determinism=True)
    assert call.status is ExecStatus.NONDETERMINISTIC, (name, call)


def test_deterministic_program_passes_the_check(executor: SandboxExecutor) -> None:
    call = run_one(executor, "def f(a):\n    return sorted({str(i) for i in range(30)})", determinism=True)
    assert call.status is ExecStatus.OK


def test_banned_imports_are_refused_at_run_time_too() -> None:
    config = SandboxConfig(timeout_s=TIMEOUT_S)
    with SandboxExecutor(config, workers=1, banned_imports=["random", "os.path"]) as ex:
        dynamic = "def f(a):\n    return __import__('random').random()"
        assert run_one(ex, dynamic).status is ExecStatus.BLOCKED
        assert run_one(ex, "from os import path\ndef f(a):\n    return 1").status is ExecStatus.BLOCKED
        # the standard library may still import banned modules for itself
        assert run_one(ex, "import statistics\ndef f(a):\n    return statistics.mean([1, 2, 3])").output == "2"
