"""Choosing and surviving the isolation: namespaces without bubblewrap, the explicit `none`,
a clear refusal when nothing isolates, and recovery when a sandbox process dies."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from azr.config.schema import SandboxConfig
from azr.sandbox.api import ExecStatus, ProgramRun
from azr.sandbox import IsolationUnavailable, SandboxExecutor
from azr.sandbox import isolation

ORDINARY = ProgramRun("def f(a):\n    return a[::-1]", ("'abc'",), True)
PROBE = (
    "import os\ndef f(a):\n    try:\n        open('/var/tmp/azr-isolation-probe', 'w')\n        wrote = True\n"
    "    except OSError:\n        wrote = False\n    return (wrote, os.getpid() < 100, 'AZR_TEST_SECRET' in os.environ)"
)


def test_namespaces_without_bubblewrap() -> None:
    if not isolation.namespaces_work(os.geteuid() == 0):
        pytest.skip("this machine cannot create Linux namespaces (no root, no user namespaces)")
    os.environ["AZR_TEST_SECRET"] = "x"
    try:
        with SandboxExecutor(SandboxConfig(isolation="namespaces", timeout_s=2), workers=1) as executor:
            assert executor.isolation == "namespaces"
            probe, ordinary = executor.run([ProgramRun(PROBE, ("0",), False), ORDINARY])
    finally:
        os.environ.pop("AZR_TEST_SECRET")
    assert probe.outputs == ("(False, True, False)",)  # read-only, private pids, clean env
    assert ordinary.outputs == ("'cba'",)
    assert not os.path.exists("/var/tmp/azr-isolation-probe")


def test_none_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="azr.sandbox.isolation"):
        with SandboxExecutor(SandboxConfig(isolation="none", timeout_s=1), workers=1) as executor:
            (ordinary,) = executor.run([ORDINARY])
            (loop,) = executor.run([ProgramRun("def f(a):\n    while True:\n        pass", ("0",), False)])
    assert "sandbox.isolation is 'none'" in caplog.text
    assert ordinary.outputs == ("'cba'",)
    assert loop.calls[0].status is ExecStatus.TIMEOUT  # limits still hold


def test_refuses_when_nothing_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "bubblewrap_path", lambda: None)
    monkeypatch.setattr(isolation, "namespaces_work", lambda as_root: False)
    with pytest.raises(IsolationUnavailable, match=r"apt-get install bubblewrap.*sandbox.isolation: none"):
        SandboxExecutor(SandboxConfig(isolation="auto"))
    with pytest.raises(IsolationUnavailable, match="bwrap is not installed"):
        SandboxExecutor(SandboxConfig(isolation="bubblewrap"))


def test_a_killed_sandbox_is_replaced() -> None:
    with SandboxExecutor(SandboxConfig(timeout_s=2), workers=1) as executor:
        assert executor.run([ORDINARY])[0].ok
        worker = executor._workers[0]
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        (after,) = executor.run([ORDINARY])
        assert after.outputs == ("'cba'",)


def test_a_task_that_kills_its_fork_server_is_contained() -> None:
    # Unisolated and as root here, a task can kill the template that forked it: its batch gets
    # an error, and the next batch runs on a new template.
    with SandboxExecutor(SandboxConfig(isolation="none", timeout_s=2), workers=1) as executor:
        (killer,) = executor.run([ProgramRun("import os\ndef f(a):\n    os.kill(os.getppid(), 9)", ("0",), False)])
        assert killer.calls[0].status in (ExecStatus.ERROR, ExecStatus.BLOCKED)
        assert executor.run([ORDINARY])[0].outputs == ("'cba'",)


def test_namespaces_hiding_never_exposes_the_host_to_cleanup(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Regression: the interpreter is re-bound from a temporary mount under /tmp; cleaning the
    sandbox's /tmp after a batch must never reach through a mount into the host's files."""
    if os.geteuid() != 0 or not isolation.namespaces_work(True):
        pytest.skip("needs root and mount namespaces")
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from azr.sandbox.pool import WORKER_SOURCE

    hidden = Path(tempfile.mkdtemp(prefix="azr-hidden-", dir="/var/tmp"))
    hidden.chmod(0o700)
    prefix = hidden / "prefix"
    prefix.mkdir()
    (prefix / "keep.txt").write_text("host file")
    script = WORKER_SOURCE.replace('if __name__ == "__main__":\n    main()', "") + f"""
isolate_filesystem({str(hidden)!r}, {str(prefix)!r})
open('/tmp/leftover', 'w').write('x')
clean_private_tmp({{"private_tmp": True, "scratch_roots": []}})
assert os.listdir('/tmp') == [], os.listdir('/tmp')
try:
    open({str(prefix / "new.txt")!r}, 'w')
    raise SystemExit('the re-bound interpreter directory is writable')
except OSError:
    pass
print('ok')
"""
    try:
        result = subprocess.run(["unshare", "--mount", "--fork", "--", sys.executable, "-I", "-S", "-c", script],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
        assert (prefix / "keep.txt").read_text() == "host file"
    finally:
        (prefix / "keep.txt").unlink(missing_ok=True)
        prefix.rmdir()
        hidden.rmdir()


PACKAGE_PROBE = "import azr_probe_pkg\ndef f(x):\n    return azr_probe_pkg.VALUE + x"


def _package_under(root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package directory as a virtual environment under `root` holds it, importable here."""
    import sys
    import tempfile

    site = tempfile.mkdtemp(prefix="azr-venv-", dir=root)
    package = os.path.join(site, "lib", "site-packages")
    os.makedirs(os.path.join(package, "azr_probe_pkg"))
    with open(os.path.join(package, "azr_probe_pkg", "__init__.py"), "w", encoding="utf-8") as handle:
        handle.write("VALUE = 40\n")
    monkeypatch.syspath_prepend(package)
    return site


@pytest.mark.parametrize("mode", ["bubblewrap", "namespaces"])
def test_packages_of_an_environment_under_tmp_are_importable(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's fresh /tmp used to hide a venv under /tmp (a checkout there): numpy was
    "not found". The package directories are bound again on top of it, read-only."""
    import shutil

    if mode == "bubblewrap" and not (isolation.bubblewrap_path()
                                     and isolation.bubblewrap_works(isolation.bubblewrap_path(), os.geteuid() == 0)):
        pytest.skip("bubblewrap is not usable here")
    if mode == "namespaces" and not isolation.namespaces_work(os.geteuid() == 0):
        pytest.skip("this machine cannot create Linux namespaces")
    site = _package_under("/tmp", monkeypatch)
    try:
        config = SandboxConfig(isolation=mode, timeout_s=3, packages=["azr_probe_pkg"])
        with SandboxExecutor(config, workers=1) as executor:
            (result,) = executor.run([ProgramRun(PACKAGE_PROBE, ("2",), False)])
            (write,) = executor.run([ProgramRun(
                f"def f(x):\n    try:\n        open({site!r} + '/lib/site-packages/azr_probe_pkg/w', 'w')\n"
                "        return 'wrote'\n    except OSError:\n        return 'refused'", ("0",), False)])
    finally:
        shutil.rmtree(site, ignore_errors=True)
    assert result.ok and result.outputs == ("42",), result
    assert write.outputs == ("'refused'",)  # shown read-only


def test_a_package_the_sandbox_cannot_show_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """bubblewrap gives the sandbox a fresh /dev: a package under /dev/shm cannot be shown.
    The executor refuses to start, naming the package and the directory, before any program runs."""
    import shutil

    from azr.sandbox import SandboxError

    bwrap = isolation.bubblewrap_path()
    if not (bwrap and isolation.bubblewrap_works(bwrap, os.geteuid() == 0)) or not os.path.isdir("/dev/shm"):
        pytest.skip("bubblewrap or /dev/shm is not usable here")
    site = _package_under("/dev/shm", monkeypatch)
    try:
        with pytest.raises(SandboxError) as refused:
            SandboxExecutor(SandboxConfig(isolation="bubblewrap", timeout_s=3, packages=["azr_probe_pkg"]), workers=1)
    finally:
        shutil.rmtree(site, ignore_errors=True)
    message = str(refused.value)
    assert "'azr_probe_pkg'" in message and "/dev/shm/" in message and "remove it from sandbox.packages" in message
