"""`azr train`: start or continue a training run. It runs the Prefect training flow in this
process (Prefect's ephemeral server; no setup needed), so it lives beside the flows, not in the
library, and flows/entry.py adds it to the `azr` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from azr.cli.output import console, err_console
from azr.cli.output import fail as _fail
from azr.cli.output import print_table
from azr.cli.output import rows_table as _table


def _quiet_output() -> None:
    """Sensible defaults for a terminal run (the user's own settings win): no telemetry, a
    patient ephemeral server, warnings only, no per-save progress bars."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    quiet_prefect = "PREFECT_LOGGING_LEVEL" not in os.environ
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")  # failures are reported below, once
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    if quiet_prefect:
        # Prefect's event and log queues drain at exit and say so ("EventsWorker - Still
        # processing items") through loggers outside "prefect", so PREFECT_LOGGING_LEVEL misses them.
        for service in ("EventsWorker", "APILogWorker"):
            logging.getLogger(service).setLevel(logging.ERROR)

    import mlflow  # noqa: F401 - importing it configures its loggers; lower them after
    import transformers

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _ProgressView:
    """A bar over iterations and a line naming the running stage, fed by pipeline events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=None)
        self.started = False
        self.where = "the start of the run"  # what an interrupt interrupts

    def hide_unstarted(self) -> None:
        """After an error before the first iteration (in the start or the seeding) the bar says
        nothing: it is not left on the screen below the error."""
        if not self.started:
            self.progress.update(self.task, visible=False)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "iteration_started":
            self.started = True
            self.progress.update(self.task, total=data["last"], completed=data["step"] - 1,
                                 description=f"iteration {data['step']}/{data['last']}")
        elif event == "stage_started":
            self.where = f"iteration {data['step']}, stage {data['stage'].replace('_', ' ')}"
            self.progress.update(self.task, description=f"iteration {data['step']}: {data['stage'].replace('_', ' ')}")
        elif event == "iteration_finished":
            self.progress.update(self.task, completed=data["step"], description=f"iteration {data['step']} done")
            print_table(_table(data["rows"], f"iteration {data['step']}"), self.progress.console)
            metrics = data["metrics"]
            self.progress.console.print(
                f"  reward {metrics.get('overall/reward_mean', 0):+.3f}   valid proposals "
                f"{metrics.get('overall/valid_rate', 0):.0%}   solve accuracy {metrics.get('overall/solve_accuracy', 0):.0%}   "
                f"update loss {metrics.get('update/loss', float('nan')):.4f}   {metrics.get('time/iteration_s', 0):.0f} s",
                soft_wrap=True,
            )
            for finding in data.get("findings", []):
                self.progress.console.print(f"  [yellow]monitor {finding.name}[/]: {escape(finding.message)}", highlight=False)
        elif event == "warning":
            self.progress.console.print(f"  [bold yellow]warning:[/] {escape(data['message'])}", highlight=False)
        elif event == "checkpoint":
            self.progress.console.print(f"  checkpoint: {data['path']}", markup=False)
        elif event == "seeding_progress":
            self.where = f"the seeding of the {data['pool']} pool"
            self.progress.update(self.task, total=data["target"], completed=data["size"],
                                 description=f"seeding the {data['pool']} pool (batch {data['batch'] + 1})")


def train(
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="Preset (default cpu); see `azr config presets`.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings over the preset.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override one setting: section.key=value.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Iterations to run (trainer.iterations).", min=1)] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Where the run's files go (default runs/NAME-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory.")] = None,
    force: Annotated[bool, typer.Option(help="With --resume: accept settings that differ from the run's.")] = False,
    ignore_memory_plan: Annotated[bool, typer.Option("--ignore-memory-plan", help="Start even if `azr plan` says the layout does not fit.")] = False,
) -> None:
    """Run AZR self-play: propose, validate, solve, reward, update, for N iterations."""
    from azr.config.loading import ConfigError, build_config, chosen_preset
    from azr.pipeline.run_dir import RunDir, RunDirError

    if force and resume is None:
        _fail("--force only applies to --resume (it accepts settings that differ from the resumed run's); "
              "a new run takes its settings from --preset, --config and --set as given")
    if resume is not None and run_dir is not None and Path(run_dir) != Path(resume):
        _fail("give the run directory once: --resume RUN_DIR (not together with a different --run-dir)")
    if run_dir is not None and Path(run_dir).exists() and not Path(run_dir).is_dir():
        _fail(f"--run-dir {run_dir} is a file, not a directory; choose another --run-dir")
    if resume is not None and not (Path(resume) / "config.yaml").is_file():
        _fail(f"cannot resume {resume}: it is not a run directory (no config.yaml there)")
    wanted = None
    try:
        if resume is None or preset is not None or config or set_:
            # on resume, --config and --set change the run's own settings (a --preset replaces them)
            base = RunDir(resume).read_config() if resume is not None and preset is None else None
            wanted = build_config(None if base is not None else chosen_preset(preset, config), config, set_ or [], base=base)
            if iterations is not None:
                wanted = wanted.model_copy(update={"trainer": wanted.trainer.model_copy(update={"iterations": iterations})})
        if resume is not None:  # refused here at once, before Prefect starts (the flow checks too)
            from azr.pipeline.run import check_iterations

            ends_at = wanted.trainer.iterations if wanted is not None else iterations or RunDir(resume).read_config().trainer.iterations
            check_iterations(RunDir(resume), ends_at)
    except (ConfigError, RunDirError) as exc:
        _fail(str(exc))
    _check_memory(wanted, resume, ignore_memory_plan)
    _check_disk(wanted, resume, run_dir)

    _quiet_output()
    from prefect.exceptions import TerminationSignal

    from azr.pipeline.context import set_event_hook
    from flows.server_lifetime import bind_temporary_server
    from flows.training import default_run_dir, train_flow

    target = Path(resume) if resume is not None else (run_dir or default_run_dir(wanted))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        view = _ProgressView(progress)
        set_event_hook(view)
        interrupts = _Interrupts()
        try:
            with interrupts:
                bind_temporary_server()  # a kill -9 of this process must not leave Prefect's server behind
                summary = train_flow(preset=None, config=wanted, iterations=iterations, run_dir=str(target),
                                     resume=resume is not None, force=force)
        except (KeyboardInterrupt, TerminationSignal):
            from flows.cancellation import record_cancelled

            view.hide_unstarted()
            progress.stop()
            cancelled = record_cancelled()  # a Cancel from the Prefect UI: the flow run ends Cancelled
            _interrupted("a Prefect cancellation" if cancelled else interrupts.name, view.where, target)
        except (ConfigError, RunDirError) as exc:
            view.hide_unstarted()
            _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure of the run: its own reason, then what to do
            from azr.ops.failure_advice import failure_advice, is_model_problem, user_message

            view.hide_unstarted()
            _fail(f"{user_message(exc)} ({failure_advice(exc, target, model_problem=is_model_problem(exc))})", code=1)
        finally:
            set_event_hook(None)
    run = Path(summary["run_dir"])
    if resume is not None and summary.get("trained") == 0:
        console.print(f"\n[bold]already complete[/]: {escape(str(run))} has all its {summary['iterations']} iterations "
                      "(nothing to train; --iterations N with N larger trains further)")
    console.print(f"\n[bold]run finished[/]: {summary['iterations']} iterations in {escape(str(run))}")
    console.print(f"  stage files (Parquet): {run / 'iterations'}", markup=False)
    console.print(f"  checkpoints:           {run / 'checkpoints'}", markup=False)
    console.print(f"  MLflow run:            {summary['run_id']} (experiment {summary['experiment']}, {summary['tracking_uri']})",
                  markup=False, soft_wrap=True)
    ui = f"mlflow ui --backend-store-uri {summary['tracking_uri']} --host 127.0.0.1 --workers 1"
    console.print(f"  open the MLflow UI:    {ui}", soft_wrap=True, markup=False)
    console.print(f"  inspect the run:       azr runs show {run}", markup=False)
    if summary.get("verdict"):
        console.print(summary["verdict"], highlight=False, soft_wrap=True, markup=False)


class _Interrupts:
    """Ctrl-C and SIGTERM while `azr train` runs. The first unwinds the run as an interrupt
    (inside the flow Prefect turns SIGTERM into its TerminationSignal, the same path a Prefect
    cancellation takes): the engine stops its command at the next step boundary or is killed
    after its grace period, the MLflow run is marked KILLED, every file on disk is complete. A
    second one within that time stops at once: the engine is killed and this process ends by
    SIGKILL, which the process watchdog cleans up after as for any kill -9."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.first_at = 0.0
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        import signal

        for number in (signal.SIGINT, signal.SIGTERM):
            self.saved[number] = signal.signal(number, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for number, handler in self.saved.items():
            signal.signal(number, handler)

    def handle(self, number: int, frame: Any) -> None:
        import signal
        import time

        from azr.engine.interrupt import STOP_GRACE_S

        if self.name is not None and time.monotonic() - self.first_at < STOP_GRACE_S + 10:
            err_console.print("[bold red]second interrupt[/]: stopping at once (the engine is killed; "
                              "`--resume` still continues from the last complete stage)", highlight=False)
            from azr.engine.controller.client import kill_all_engines

            kill_all_engines()
            os.kill(os.getpid(), signal.SIGKILL)
        self.name, self.first_at = signal.Signals(number).name, time.monotonic()
        err_console.print(f"\n[bold yellow]{self.name}[/]: stopping the run (the engine stops its current command "
                          f"within {STOP_GRACE_S:g} s; press Ctrl-C again to stop at once)", highlight=False)
        raise KeyboardInterrupt(self.name)


def _interrupted(name: str | None, where: str, target: Path) -> None:
    """The last lines after an interrupt: what was interrupted and the exact command that continues."""
    from azr.ops.failure_advice import resumable

    name = name or "SIGTERM"
    err_console.print(f"[bold yellow]interrupted[/] ({name}) during {escape(where)}: nothing half-written is "
                      "kept; the iteration resumes from its last complete stage", highlight=False, soft_wrap=True)
    if resumable(target):
        err_console.print(f"continue with: azr train --resume {escape(str(target))}", highlight=False, soft_wrap=True)
    else:
        err_console.print(f"no run was started in {escape(str(target))}: start it again", highlight=False, soft_wrap=True)
    _leave(130 if name == "SIGINT" else 143)  # a cancellation came as SIGTERM: 143


def _leave(code: int) -> None:
    """End the interrupted process now. Every record is written by then (the stage files, MLflow's
    KILLED, the flow run's state); the exit handlers still run (Prefect's event and log queues,
    its temporary server, logging), but not the interpreter's finalization, which took 5-6 s
    after them and writes nothing (benchmarks/interrupt_latency.py: last line to exit)."""
    import atexit
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _check_memory(wanted: Any, resume: Path | None, ignore: bool) -> None:
    """The memory plan of the run (the new config, else the resumed run's), before anything loads."""
    from azr.cli.plan import check_before_training
    from azr.pipeline.run_dir import RunDir, RunDirError

    config = wanted
    if config is None and resume is not None:
        try:
            config = RunDir(resume).read_config()
        except RunDirError:
            return  # the flow reports an unreadable run directory itself
    check_before_training(config, ignore)


def _check_disk(wanted: Any, resume: Path | None, run_dir: Path | None) -> None:
    """Refuse a run whose checkpoints, logged models and stage files clearly cannot fit on its
    disk, and warn when they may fill it (azr/ops/disk_use.py), before anything starts."""
    from azr.ops.disk_use import DiskSpaceError, check_run
    from azr.pipeline.run_dir import RunDir, RunDirError

    config, target, done = wanted, run_dir or Path("runs") / "new-run", 0
    if resume is not None:
        target = Path(resume)
        try:
            config = config or RunDir(target).read_config()
            done = len(RunDir(target).completed_steps())
        except RunDirError:
            return  # the flow reports an unreadable run directory itself
    try:
        warnings = check_run(config, target, done)
    except DiskSpaceError as exc:
        _fail(str(exc), code=1)
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
