"""The code that runs inside the sandbox: a worker, two fork-server templates, task children.

Standard library only, and run as a script (`python -I -S -B -c SOURCE ROLE CONFIG`), so the
sandbox needs nothing from the project or its virtual environment.

Process tree inside one sandbox:

    worker            trusted: talks to the orchestrator (JSON), holds gold answers, compares
      template A      a fork server with PYTHONHASHSEED=hash_seed (0); never sees gold answers
      template B      the same with another hash seed, for the cross-process determinism check
        task child    one per task: setsid, drop to the task uid, rlimits, run the program

A template imports as little as possible: forking costs time in proportion to its memory.
A task child's result is JSON that the template forwards as opaque bytes, framed by length, and
the worker parses; nothing untrusted is ever unmarshalled or unpickled. The verdict of a solver
check is computed by the worker from the repr strings the children return, so a program cannot
forge a verdict: it never sees the value it would have to match.
"""

import builtins
import errno
import gc
import marshal
import os
import resource
import select
import sys
import time

import _ast
import _json

try:  # imported as part of the project (the executor uses the framing helpers below)
    from azr.sandbox import answer_rules as rules
except ImportError:  # run as a script inside the sandbox: main() loads it from the source sent
    rules = None

# A program may patch builtins (`builtins.len = ...`); the harness binds its own references
# so that what it reports about the program is not changed by the program.
from builtins import (  # noqa: A004, E402
    BaseException, callable, compile, dict, eval, exec, float, int, isinstance, len, list, max,
    repr, str, tuple, type,
)

_SIGKILL, _SIGXCPU = 9, 24
_MAX_MESSAGE = 256 * 1024 * 1024
_PARSE_ONLY = 1024  # compile(..., flags=PyCF_ONLY_AST): a syntax tree without importing `ast`
# errno values that mean "the sandbox said no": shown as status `blocked`.
_DENIED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENETUNREACH, errno.ENETDOWN,
                  errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EAGAIN}


# ---------------------------------------------------------------------------------- framing


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, limit: int = _MAX_MESSAGE) -> bytes | None:
    """One length-prefixed frame, or None at end of file."""
    header = _read_exact(fd, 4, deadline)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > limit:
        raise ValueError(f"a frame of {size} bytes is larger than the {limit} allowed")
    return _read_exact(fd, size, deadline)


def send_json(fd: int, obj: object) -> None:
    import json

    write_frame(fd, json.dumps(obj, separators=(",", ":")).encode())


def receive_json(fd: int, deadline: float | None = None) -> object | None:
    import json

    frame = read_frame(fd, deadline)
    return None if frame is None else json.loads(frame)


def to_json(value: object) -> str:
    """A small JSON encoder for task results, so task children need not import `json`."""
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


# ------------------------------------------------------------------------------ task child


class CappedText:
    """A stdout/stderr stand-in that keeps the first `limit` characters and drops the rest."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def write(self, text: str) -> int:
        text = str(text)
        if self.size < self.limit:
            piece = text[: self.limit - self.size]
            self.parts.append(piece)
            self.size += len(piece)
        return len(text)

    def flush(self) -> None:
        return None

    def getvalue(self) -> str:
        return "".join(self.parts)


def call_parts(text: str, namespace: dict) -> tuple[list, dict]:
    """Evaluate argument text in the program's namespace without splicing it into source: it
    must parse as the argument list of one call of `f`; each argument is evaluated alone."""
    tree = compile(f"f({text})", "<input>", "eval", _PARSE_ONLY)
    call = tree.body
    if not (isinstance(call, _ast.Call) and isinstance(call.func, _ast.Name) and call.func.id == "f"):
        raise SyntaxError(f"{text[:80]!r} is not an argument list of f")

    def value(node: object) -> object:
        return eval(compile(_ast.Expression(body=node), "<input>", "eval"), namespace)  # noqa: S307 - sandboxed

    args: list = []
    for node in call.args:
        if isinstance(node, _ast.Starred):
            args.extend(value(node.value))
        else:
            args.append(value(node))
    kwargs: dict = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            kwargs.update(value(keyword.value))
        else:
            kwargs[keyword.arg] = value(keyword.value)
    return args, kwargs


def guard_imports(banned: list) -> None:
    """Refuse banned modules at run time too, however the program asks for them.

    Only imports made by the program itself are checked: a standard-library module that the
    program may use can still import what it needs internally.
    """
    if not banned:
        return
    original = builtins.__import__
    entries = [tuple(b.split(".")) for b in banned]

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001, ANN202
        if globals is not None and globals.get("__name__") != "__sandbox__":
            return original(name, globals, locals, fromlist, level)
        path = tuple(name.split("."))
        for full in [path + (item,) for item in (fromlist or ())] or [path]:
            for entry in entries:
                if (len(entry) == 1 and entry[0] in full) or full[: len(entry)] == entry:
                    raise ImportError(f"blocked: import of {'.'.join(entry)} is not allowed")
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded


def failure(exc: BaseException) -> dict:
    message = f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(exc, MemoryError):
        return {"status": "memory", "error": message}
    if isinstance(exc, ImportError) and str(exc).startswith("blocked:"):
        return {"status": "blocked", "error": message}
    if isinstance(exc, OSError) and exc.errno in _DENIED_ERRNOS:
        return {"status": "blocked", "error": message}
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return {"status": "blocked", "error": message}
    return {"status": "error", "error": message}


_LEGACY_NUMPY = [False]  # set in a task child by execute_task (sandbox.numpy_repr: legacy)


def _numpy_as_1x() -> None:
    """Print numpy scalars as numpy 1.x did (`5`, not `np.int64(5)`): the original pinned numpy
    1.26, so its outputs are plain literals. Only once numpy is loaded (by the program)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and _LEGACY_NUMPY[0]:
        try:
            numpy.set_printoptions(legacy="1.25")
        except (ValueError, TypeError, AttributeError):  # numpy 1.x: already so
            pass
        _LEGACY_NUMPY[0] = False


def safe_repr(value: object, limit: int, overflow: str = "reject") -> dict:
    """The repr of a result. One over `limit` characters is `output_limit`, or, with overflow
    `truncate` (the original kept such programs), its head and tail around `...`."""
    _numpy_as_1x()
    try:
        text = repr(value)
        if type(text) is not str:
            raise TypeError("__repr__ returned a non-string")
    except BaseException as exc:  # noqa: BLE001 - a hostile __repr__
        return failure(exc)
    if len(text) > limit:
        if overflow != "truncate":
            return {"status": "output_limit", "error": f"repr of {len(text)} characters exceeds {limit}"}
        half = limit // 2
        text = text[:half] + "..." + text[len(text) - half:]
    return {"status": "ok", "output": text}


def _evaluate(text: str, namespace: dict) -> object:
    return eval(compile(text.strip(), "<value>", "eval"), namespace)  # noqa: S307 - sandboxed, a checked value


def execute_task(task: dict, limits: dict) -> dict:
    """Run one task in this (child) process: per-input results as plain values.

    With `values`, each result also carries its value as a plain tree (answer_rules); with
    `expressions`, the task evaluates gold outputs in the program's namespace instead of calling
    `f` on inputs: by running `f` on the gold input when that reproduces the stored repr, else
    from the text when it is the written form of a value.
    """
    output_limit = limits["max_output_chars"]
    overflow = limits.get("output_overflow", "reject")
    _LEGACY_NUMPY[0] = limits.get("numpy_repr", "legacy") == "legacy"
    budget = 4 * output_limit
    stdout = CappedText(limits["max_stdout_chars"])
    sys.stdout = sys.stderr = stdout
    calls: list[dict] = []
    expressions = task.get("expressions")
    count = len(expressions) if expressions is not None else len(task["inputs"])
    try:
        guard_imports(task.get("banned") or [])
        namespace: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
        exec(compile(task["program"], "<program>", "exec"), namespace)  # noqa: S102 - sandboxed
        function = namespace.get("f")
        if expressions is not None:
            for text, gold_input, from_text in expressions:
                try:
                    value, found = None, False
                    if gold_input is not None and callable(function):
                        args, kwargs = call_parts(gold_input, namespace)
                        value = function(*args, **kwargs)
                        found = safe_repr(value, output_limit, "reject").get("output") == text
                    if not found and from_text:
                        value, found = _evaluate(text, namespace), True
                    tree = rules.encode_value(value, namespace, budget) if found else None
                    calls.append({"status": "ok", "output": "", "value": tree})
                except BaseException as exc:  # noqa: BLE001 - anything the program raises
                    calls.append(failure(exc))
            return {"calls": calls, "stdout": stdout.getvalue()}
        if not callable(function):
            raise NameError("the program defines no callable f")
        for text in task["inputs"]:
            try:
                args, kwargs = call_parts(text, namespace)
                value = function(*args, **kwargs)
                result = safe_repr(value, output_limit, overflow)
                if result["status"] == "ok" and task.get("repeat"):
                    args, kwargs = call_parts(text, namespace)
                    again = safe_repr(function(*args, **kwargs), output_limit, overflow)
                    if again.get("output") != result["output"]:
                        result = {"status": "nondeterministic",
                                  "error": "a second call in the same process returned a different value"}
                if result["status"] == "ok" and task.get("values"):
                    result["value"] = rules.encode_value(value, namespace, budget)
            except BaseException as exc:  # noqa: BLE001 - anything the program raises
                if not task.get("per_call_errors"):
                    raise
                result = failure(exc)
            calls.append(result)
    except BaseException as exc:  # noqa: BLE001
        calls = [failure(exc)] * max(1, count)
    return {"calls": calls, "stdout": stdout.getvalue()}


def enter_child(limits: dict, scratch: str, result_fd: int) -> None:
    """Become an isolated task: own session, unprivileged uid, rlimits, no inherited files."""
    os.setsid()
    os.chdir(scratch)
    uid = limits.get("task_uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    mb = 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, limits["memory_mb"] * mb),
        (resource.RLIMIT_CPU, int(limits["cpu_time_s"])),  # hard limit one second later: SIGXCPU comes first
        (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_NPROC, limits["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value + 1 if limit == resource.RLIMIT_CPU else value))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 20)


def _make_scratch(root: str, uid: int | None) -> str:
    path = os.path.join(root, os.urandom(8).hex())
    os.mkdir(path, 0o700)
    if uid is not None and os.getuid() == 0:
        os.chown(path, uid, uid)
    return path


class Scratch:
    """The task's private directory. An untouched one (still empty, same owner and mode) is
    handed to the next task; anything else is removed and replaced."""

    def __init__(self, root: str, uid: int | None) -> None:
        self.root, self.uid = root, uid
        self.path = ""
        self.expected: tuple[int, int] | None = None

    def take(self) -> str:
        if not self.path:
            self.path = _make_scratch(self.root, self.uid)
            info = os.lstat(self.path)
            self.expected = (info.st_mode, info.st_uid)
        return self.path

    def release(self) -> None:
        try:
            info = os.lstat(self.path)
            untouched = (info.st_mode, info.st_uid) == self.expected and not os.listdir(self.path)
        except OSError:
            untouched = False
        if not untouched:
            remove_tree(self.path)
            self.path = ""


def remove_tree(path: str, device: int | None = None) -> None:
    """shutil.rmtree without importing shutil (a lean template forks faster).

    It never leaves the file system it starts on: a mount point below `path` (a bind mount a
    task should not reach anyway) is left alone, never emptied.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return
    if device is None:
        device = info.st_dev
    if info.st_dev != device:
        return
    if not os.path.isdir(path) or os.path.islink(path):
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        remove_tree(entry.path, device)
    try:
        os.rmdir(path)
    except OSError:
        pass


def run_child(task: dict, limits: dict, scratch_dir: "Scratch") -> tuple[bytes | None, dict]:
    """Fork a child for the task, wait under the wall-clock limit, clean up after it.

    Returns the child's raw JSON (untouched) and what the template observed.
    """
    scratch = scratch_dir.take()
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the task child: never returns
        try:
            os.close(read_fd)
            enter_child(limits, scratch, write_fd)
            write_frame(write_fd, to_json(execute_task(task, limits)).encode())
        except BaseException as exc:  # noqa: BLE001
            try:
                write_frame(write_fd, to_json({"calls": [failure(exc)], "stdout": ""}).encode())
            except BaseException:  # noqa: BLE001, S110
                pass
        os._exit(0)
    os.close(write_fd)
    meta: dict = {}
    blob = None
    try:
        # What an honest result can weigh (JSON escapes a character in at most 6 bytes): a
        # hostile child cannot make the template hold more.
        # A value tree is at most 4x the repr budget (answer_rules.encode_value).
        count = max(1, len(task.get("expressions") or task["inputs"]))
        allowed = 8 * (5 * limits["max_output_chars"] * count + limits["max_stdout_chars"]) + 65536
        blob = read_frame(read_fd, started + limits["timeout_s"], allowed)
        if blob is None:
            meta = {"status": "error", "error": "the program ended its process without a result"}
    except TimeoutError:
        meta = {"status": "timeout", "error": f"no result within {limits['timeout_s']} s"}
    except (ValueError, OSError) as exc:
        meta = {"status": "error", "error": f"unreadable result: {exc}"}
    finally:
        os.close(read_fd)
        kill_group(pid)
        _, wait_status = os.waitpid(pid, 0)
        sweep_strays()
        scratch_dir.release()
    if blob is None and os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        if number == _SIGXCPU:
            meta = {"status": "timeout", "error": f"CPU time limit of {limits['cpu_time_s']} s"}
        elif number != _SIGKILL:
            meta = {"status": "error", "error": f"the process was killed by signal {number}"}
    meta["duration_ms"] = (time.monotonic() - started) * 1000
    return blob, meta


def kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, _SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _children() -> list[int]:
    """Our direct children, from /proc (re-parented orphans included: we are a subreaper)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        pass
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    if int(handle.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        children.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return children


def sweep_strays() -> None:
    """Kill what a task left behind: processes that escaped its process group.

    The template is a child subreaper, so orphaned descendants of a task are re-parented to
    it; once a task is over, every child of the template is a leftover.
    """
    for _ in range(64):
        leftovers = _children()
        if not leftovers:
            return
        for pid in leftovers:
            try:
                os.kill(pid, _SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in leftovers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def clean_private_tmp(limits: dict) -> None:
    """Remove what tasks left in the sandbox's own /tmp and /dev/shm (writable to tasks when
    the sandbox runs as an ordinary user), so the next batch cannot see it. Never in the
    unisolated mode, where /tmp is the host's."""
    if not limits.get("private_tmp"):
        return
    keep = set(limits.get("scratch_roots", ()))
    for directory in ("/tmp", "/dev/shm"):
        try:
            device = os.lstat(directory).st_dev
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if path not in keep:
                remove_tree(path, device)


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class PackageFinder:
    """Lets programs import the third-party packages `sandbox.packages` lists, and only those,
    from the directories that hold them (bound read-only into the sandbox); the interpreter
    runs with -I -S, so nothing else of the virtual environment is importable."""

    def __init__(self, names: list, paths: list) -> None:
        self.names, self.paths = set(names), list(paths)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if path is not None or fullname.partition(".")[0] not in self.names:
            return None  # submodules are found through their package's __path__
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(fullname, self.paths)


def packages_not_shown(packages: dict) -> str | None:
    """What keeps a listed package from being imported here (its directory is not visible in
    the sandbox, or the package is not in it), or None when every one can be found."""
    finder = PackageFinder(packages.get("names") or [], packages.get("paths") or [])
    problems = []
    for name in packages.get("names") or []:
        try:
            spec = finder.find_spec(name)
        except (ImportError, OSError, ValueError):
            spec = None
        if spec is None:
            shown = [path for path in finder.paths if os.path.isdir(path)]
            hidden = [path for path in finder.paths if path not in shown]
            problems.append(f"{name!r} (looked in {', '.join(finder.paths) or 'no directory'}"
                            + (f"; not visible inside the sandbox: {', '.join(hidden)}" if hidden else "") + ")")
    if not problems:
        return None
    return ("sandbox.packages lists " + "; ".join(problems) + ", which programs in the sandbox cannot import: "
            "install it in a directory the sandbox can show, or remove it from sandbox.packages")


def split_inputs(task: dict) -> list[dict]:
    """With `separate`, each input runs in a process of its own: a fresh program state and its
    own time limit, as the original ran each input as a program of its own (docs/algorithm.md §5.2)."""
    if not task.get("separate") or len(task.get("inputs", ())) <= 1:
        return [task]
    return [dict(task, inputs=[text]) for text in task["inputs"]]


def template_main(limits: dict) -> None:
    """Serve batches from the worker: marshal in (trusted), framed raw child results out."""
    packages = limits.get("packages") or {}
    if packages.get("names"):
        sys.meta_path.append(PackageFinder(packages["names"], packages["paths"]))
    if limits["processes"] > 1 or limits.get("task_uid") is None:
        # Only needed when tasks share our uid or may start processes. Loading ctypes makes
        # every fork slower, so a root sandbox whose tasks cannot fork skips it.
        _prctl(4, 0)  # PR_SET_DUMPABLE 0: a same-uid task cannot read our memory or pipes
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of tasks come back to us
    scratch_root = limits["scratch_root"]
    remove_tree(scratch_root)  # left by a template this one replaces
    os.mkdir(scratch_root, 0o711)
    scratch = Scratch(scratch_root, limits.get("task_uid"))
    gc.freeze()  # children then never touch (copy) the template's objects when they collect
    try:
        while True:
            frame = read_frame(0)
            if frame is None:
                break
            tasks = marshal.loads(frame)
            replies = [[run_child(part, limits, scratch) for part in split_inputs(task)] for task in tasks]
            write_frame(1, marshal.dumps(replies))
            clean_private_tmp(limits)
    finally:
        remove_tree(scratch_root)


# --------------------------------------------------------------------------------- worker


def parse_parts(parts: list) -> dict:
    """One task's result from the children that ran its inputs (one child, or one per input):
    their calls in order, the time they took together."""
    results = [_parse_child_result(blob, meta) for blob, meta in parts]
    if len(results) == 1:
        return results[0]
    return {"calls": [call for result in results for call in result["calls"][:1]],
            "stdout": "".join(result["stdout"] for result in results),
            "duration_ms": sum(result["duration_ms"] for result in results)}


def _parse_child_result(blob: bytes | None, meta: dict) -> dict:
    """The child's JSON, checked for shape; a malformed one is the program's error."""
    import json

    duration = float(meta.get("duration_ms", 0.0))
    if blob is None or "status" in meta:
        return {"calls": [{"status": meta.get("status", "error"), "error": meta.get("error", "")}],
                "stdout": "", "duration_ms": duration}
    try:
        result = json.loads(blob)
        calls = result["calls"]
        if not (isinstance(calls, list) and calls and all(
            isinstance(c, dict) and isinstance(c.get("status"), str)
            and isinstance(c.get("output", ""), str) and isinstance(c.get("error", ""), str) for c in calls
        )):
            raise ValueError("bad shape")
        stdout = result.get("stdout", "")
    except (ValueError, KeyError, TypeError, RecursionError):
        return {"calls": [{"status": "error", "error": "the program wrote a malformed result"}],
                "stdout": "", "duration_ms": duration}
    return {"calls": calls, "stdout": stdout if isinstance(stdout, str) else "", "duration_ms": duration}


class Template:
    """A template process as the worker sees it."""

    def __init__(self, hash_seed: int, limits: dict) -> None:
        import subprocess

        # One BLAS/OpenMP thread: task children may not start threads (RLIMIT_NPROC).
        env = {"PYTHONHASHSEED": str(hash_seed), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            # -I would ignore PYTHONHASHSEED (it implies -E): isolated by hand, with the
            # environment above as the only one (-s no user site, -P no script directory).
            [sys.executable, "-s", "-S", "-B", "-P", "-c", own_source(), "template", marshal.dumps(limits).hex(),
             RULES_SOURCE[0]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )

    def submit(self, tasks: list[dict]) -> bool:
        try:
            write_frame(self.process.stdin.fileno(), marshal.dumps(tasks))
            return True
        except OSError:
            return False

    def collect(self, deadline: float) -> list[dict] | None:
        try:
            frame = read_frame(self.process.stdout.fileno(), deadline)
        except (TimeoutError, OSError, ValueError):
            return None
        if frame is None:
            return None
        replies = marshal.loads(frame)  # written by the template: trusted
        return [parse_parts(parts) for parts in replies]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Worker:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.limits = dict(config["limits"])
        self.templates: dict[str, Template] = {}
        # Fixed for the worker's life, so each template knows what in /tmp is not a leftover.
        token = os.urandom(6).hex()
        self.scratch_roots = {name: f"/tmp/azr-{token}-{name}" for name in ("A", "B", "G")}

    def template(self, name: str) -> Template:
        current = self.templates.get(name)
        if current is None or not current.alive():
            if current is not None:
                current.stop()
            limits = dict(self.limits, scratch_root=self.scratch_roots[name],
                          scratch_roots=sorted(self.scratch_roots.values()))
            seed = int(self.config.get("hash_seed", 0))
            self.templates[name] = Template((seed + 1) % 4294967296 if name == "B" else seed, limits)
        return self.templates[name]

    def _run_on(self, batches: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """Run batches on the templates at the same time; a template that dies or hangs is
        replaced, and its batch answered with errors.

        A runs programs and solvers' answers, B the second run of the determinism check, G
        evaluates gold outputs: a child is a copy of its template, so no child that runs a
        solver's answer is forked from a process that ever held a gold value.
        """
        batches = {name: tasks for name, tasks in batches.items() if tasks}
        longest = max((sum(len(split_inputs(t)) for t in tasks) for tasks in batches.values()), default=0)
        deadline = time.monotonic() + longest * (self.limits["timeout_s"] + 2.0) + 5.0
        submitted = {name: self.template(name).submit(tasks) for name, tasks in batches.items()}
        results: dict[str, list[dict]] = {}
        for name, tasks in batches.items():
            replies = self.templates[name].collect(deadline) if submitted[name] else None
            if replies is None or len(replies) != len(tasks):
                self.templates.pop(name).stop()
                replies = [{"calls": [{"status": "error", "error": "the sandbox process running this batch died"}],
                            "stdout": "", "duration_ms": 0.0} for _ in tasks]
            results[name] = replies
        return results

    def handle(self, tasks: list[dict]) -> list[dict]:
        """A batch of program runs (twice across hash seeds when asked) and solver checks."""
        results: list = [None] * len(tasks)
        to_run: list[tuple[int, str, dict]] = []  # (task index, role, child task)
        separate = bool(self.config.get("separate_inputs"))
        for index, task in enumerate(tasks):
            kind = task["kind"]
            if kind == "run":
                to_run.append((index, "run", {"program": task["program"], "inputs": task["inputs"],
                                              "banned": task.get("banned", []), "separate": separate,
                                              "repeat": bool(task.get("determinism"))}))
                continue
            early, children = plan_check(task, separate)
            if early is not None:
                results[index] = early
            to_run.extend((index, role, child) for role, child in children)

        golds = [item for item in to_run if item[1] == "gold"]
        to_run = [item for item in to_run if item[1] != "gold"]
        cross = self.config.get("cross_process", True)
        twice = [p for p, (index, role, _) in enumerate(to_run)
                 if cross and role == "run" and tasks[index].get("determinism")]
        replies = self._run_on({"A": [child for _, _, child in to_run], "B": [to_run[p][2] for p in twice],
                                "G": [child for _, _, child in golds]})
        first = replies.get("A", [])
        second = dict(zip(twice, replies.get("B", [])))
        parts: dict[int, dict[str, dict]] = {}
        for position, (index, role, _) in enumerate(to_run):
            if role == "run":
                results[index] = compare_runs(first[position], second[position]) if position in second else first[position]
            else:
                parts.setdefault(index, {})[role] = first[position]
        for (index, role, _), reply in zip(golds, replies.get("G", [])):
            parts.setdefault(index, {})[role] = reply
        for index, found in parts.items():
            results[index] = verdict(tasks[index], found)
        return results

    def serve(self) -> None:
        _prctl(4, 0)
        missing = packages_not_shown(self.limits.get("packages") or {})
        if missing:  # refused before any program runs: the pool names it
            send_json(1, {"ready": False, "error": missing})
            return
        self.template("A")
        if self.config.get("determinism", True) and self.config.get("cross_process", True):
            self.template("B")
        send_json(1, {"ready": True})
        while True:
            request = receive_json(0)
            if request is None:
                break
            send_json(1, self.handle(request["tasks"]))
        for template in self.templates.values():
            template.stop()


def plan_check(task: dict, separate: bool) -> tuple[dict | None, list[tuple[str, dict]]]:
    """The children a solver check needs, or its verdict when none is needed.

    `answer` runs the solver's side (f on an abduction answer, the induction candidate on the
    hidden inputs, a deduction answer's value); `gold` evaluates gold outputs that are not
    literals, in the gold program's namespace. The two never share a process, so the code that
    runs a solver's answer never holds the value it would have to match.
    """
    kind = task["kind"]
    gold_program = task.get("gold_program") or task.get("program") or "\n".join(task.get("imports", []))
    if kind == "deduction":
        gold, answer = task["gold_output"], task["answer"]
        if rules.values_equal(gold, answer):
            return _checked(1, 1), []
        if task.get("comparison") == "original":
            return _original_deduction(gold, answer)
        children = []
        if not rules.literal_value(answer)[0] and answer.strip() != gold.strip():  # the gold's own text: see deduction_matches
            if rules.value_violation(answer) is not None:
                return _checked(0, 1), []
            children.append(("answer", {"program": gold_program, "inputs": [], "expressions": [[answer, None, True]]}))
        if not rules.literal_value(gold)[0]:
            children.append(("gold", _gold_task(gold_program, [gold], [task.get("gold_input")])))
        return (None, children) if children else (_checked(0, 1), [])
    if kind == "abduction":
        if task.get("comparison") == "original" and "\n" in task["answer_input"]:
            return _checked(0, 1), []  # the original's line-split template breaks on it
        violation = rules.answer_violation(task["answer_input"])
        if violation:
            return {"matched": 0, "total": 1, "status": "blocked", "error": violation, "duration_ms": 0.0}, []
        golds, gold_inputs = [task["gold_output"]], [task.get("gold_input")]
        answer = {"program": task["program"], "inputs": [task["answer_input"]], "per_call_errors": True, "values": True}
    else:
        golds, gold_inputs = list(task["outputs"]), list(task["inputs"])
        program = "\n".join([*task.get("imports", []), task["candidate_program"]])
        answer = {"program": program, "inputs": task["inputs"], "per_call_errors": True, "values": True,
                  "separate": separate}
    children = [("answer", answer)]
    if not all(rules.literal_value(gold)[0] for gold in golds):
        children.append(("gold", _gold_task(gold_program, golds, gold_inputs)))
    return None, children


def _original_deduction(gold: str, answer: str) -> tuple[dict | None, list[tuple[str, dict]]]:
    """The original's comparison, `eval(gold) == eval(answer)` with no program: each text that
    is not a literal is evaluated alone (arithmetic counts; a Counter or `inf` cannot be built),
    the answer and the gold in processes of their own."""
    children = []
    for role, text in (("answer", answer), ("gold", gold)):
        if not rules.literal_value(text)[0]:
            children.append((role, {"program": "", "inputs": [], "expressions": [[text, None, True]],
                                    "per_call_errors": True}))
    return None, children


def _checked(matched: int, total: int) -> dict:
    return {"matched": matched, "total": total, "status": "ok", "error": "", "duration_ms": 0.0}


def _gold_task(program: str, golds: list, gold_inputs: list) -> dict:
    """Evaluate gold outputs in the gold program's namespace (only the ones that are not literals)."""
    expressions = [[gold, gold_input, rules.value_violation(gold) is None]
                   for gold, gold_input in zip(golds, gold_inputs)]
    return {"program": program, "inputs": [], "expressions": expressions, "per_call_errors": True}


def _gold_trees(golds: list, result: dict | None) -> list:
    """Per gold output, what the gold child evaluated for it (None where nothing)."""
    calls = (result or {}).get("calls") or []
    if len(calls) != len(golds):
        return [None] * len(golds)
    return [call.get("value") if call.get("status") == "ok" else None for call in calls]


def verdict(task: dict, parts: dict) -> dict:
    """A solver check's verdict from its children's plain results (answer_rules decides)."""
    if task["kind"] == "deduction":
        answer_tree = _gold_trees([task["answer"]], parts.get("answer"))[0]
        gold_tree = _gold_trees([task["gold_output"]], parts.get("gold"))[0]
        matched = rules.deduction_matches(task["gold_output"], gold_tree, task["answer"], answer_tree)
        duration = sum(p.get("duration_ms", 0.0) for p in parts.values())
        return dict(_checked(int(matched), 1), duration_ms=duration)
    result = parts["answer"]
    golds = [task["gold_output"]] if task["kind"] == "abduction" else list(task["outputs"])
    gold_trees = _gold_trees(golds, parts.get("gold"))
    calls = result["calls"]
    if len(calls) != len(golds):  # the whole program failed: one failure stands for every call
        calls = [calls[0]] * len(golds)
    original_rule = task.get("exception_rule") == "original"
    inputs = task.get("inputs") or [task.get("answer_input", "")]
    scores = []
    for text, gold, tree, call in zip(inputs, golds, gold_trees, calls):
        if task.get("comparison") == "original" and "\n" in text:
            scores.append(0)  # a hidden input over several lines broke the original's check line
        elif original_rule and rules.original_rule_passes(call.get("status", ""), call.get("error", "")):
            scores.append(None)  # the original could not score it: left out of the mean
        else:
            scores.append(int(call.get("status") == "ok"
                              and rules.call_matches(gold, tree, call.get("output", ""), call.get("value"))))
    matched = sum(score for score in scores if score is not None)
    total = sum(score is not None for score in scores)
    if task["kind"] == "induction" and original_rule:
        total = max(total, 1)  # with no pair scored, the original gave the candidate 0
    failed = next((c for c in calls if c.get("status") != "ok"), None)
    return {"matched": matched, "total": total, "status": failed["status"] if failed else "ok",
            "error": failed.get("error", "") if failed else "", "duration_ms": result.get("duration_ms", 0.0)}


def compare_runs(first: dict, second: dict) -> dict:
    """Merge two runs of one program made in processes with different hash seeds."""
    if len(first["calls"]) != len(second["calls"]):
        calls = [{"status": "nondeterministic", "error": "the two runs gave different numbers of results"}]
        calls *= len(first["calls"])
    else:
        calls = []
        for a, b in zip(first["calls"], second["calls"]):
            if a.get("status") != "ok":
                calls.append(a)
            elif b.get("status") == "ok" and a.get("output") != b.get("output"):
                calls.append({"status": "nondeterministic",
                              "error": "the output differs between two processes with different hash seeds"})
            elif b.get("status") != "ok":
                calls.append(b if b.get("status") in ("timeout", "memory") else
                             {"status": "nondeterministic", "error": f"a second process failed: {b.get('error', '')}"})
            else:
                calls.append(a)
    # The two runs go side by side in two fork servers: the wall time is the longer one.
    return {"calls": calls, "stdout": first.get("stdout", ""),
            "duration_ms": max(first.get("duration_ms", 0.0), second.get("duration_ms", 0.0))}


# ------------------------------------------------------------ file system (namespaces mode)

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
# Flags a remount must keep: in a user namespace, inherited mounts have them locked.
_MOUNT_FLAGS = {"ro": _MS_RDONLY, "nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC,
                "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def encode(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {target}: {os.strerror(error)}")


def _umount(target: str) -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).umount2(target.encode(), 2) != 0:  # MNT_DETACH
        error = ctypes.get_errno()
        raise OSError(error, f"umount {target}: {os.strerror(error)}")


def isolate_filesystem(hide: str | None, prefix: str, keep: list | None = None) -> None:
    """In a fresh mount namespace: a private /tmp, every mount read-only, and (as root) the
    directory that hides the interpreter from the task uid replaced by an empty one."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    # The interpreter and package directories under /tmp (a checkout or venv there) are held
    # open across the fresh /tmp and bound again on top of it (read-only, with every mount below).
    held = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in [prefix, *(keep or [])]
            if path.startswith("/tmp/")]
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    for path, descriptor in held:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{descriptor}", path, None, _MS_BIND | _MS_REC)
        os.close(descriptor)
    if hide:
        # Park the interpreter (and the package directories under `hide`) on temporary
        # mounts, cover `hide`, bring them back, and remove the parking mounts again: nothing
        # of the host may stay reachable under /tmp.
        shown = [prefix, *[p for p in keep or [] if p.startswith(hide.rstrip("/") + "/")]]
        parks = [f"/tmp/.azr-keep-{n}" for n in range(len(shown))]
        for path, park in zip(shown, parks):
            os.makedirs(park)
            _mount(path, park, None, _MS_BIND | _MS_REC)
        _mount("tmpfs", hide, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
        for path, park in zip(shown, parks):
            os.makedirs(path, exist_ok=True)
            _mount(park, path, None, _MS_BIND | _MS_REC)
            _umount(park)
            os.rmdir(park)
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        mounts = [line.split() for line in handle]
    for fields in mounts:
        target = fields[4].encode().decode("unicode_escape")
        if target == "/tmp" or target == "/proc" or target.startswith("/proc/"):
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for option in fields[5].split(","):
            flags |= _MOUNT_FLAGS.get(option, 0)
        try:
            _mount(None, target, None, flags)
        except OSError:
            if target == "/":
                raise


def own_source() -> str:
    """This file's text: the sandbox runs it with `-c`, and starts templates the same way."""
    if "-c" in sys.orig_argv:
        return sys.orig_argv[sys.orig_argv.index("-c") + 1]
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


RULES_SOURCE = [""]  # answer_rules' source, inside the sandbox (handed on to the templates)


def install_rules(source: str) -> None:
    """Load answer_rules from its source: inside the sandbox the project is not importable."""
    global rules
    module = type(sys)("answer_rules")
    exec(compile(source, "answer_rules.py", "exec"), module.__dict__)  # noqa: S102 - our own source
    sys.modules["answer_rules"] = module
    rules = module
    RULES_SOURCE[0] = source


def main() -> None:
    if sys.argv[1] == "template":  # limits come from the worker, marshalled (no json import)
        install_rules(sys.argv[3])
        template_main(marshal.loads(bytes.fromhex(sys.argv[2])))
        return
    import json

    config = json.loads(sys.argv[2])
    install_rules(config["rules_source"])
    if config.get("isolate_filesystem"):
        isolate_filesystem(config.get("hide"), config["prefix"], config.get("keep"))
    Worker(config).serve()


if __name__ == "__main__":
    main()
