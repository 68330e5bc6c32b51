"""`azr engine launch`: the launcher of one more machine of a multi-node engine.

Machine 0's launcher is started by the run itself (the controller); every other machine runs
this command once per run, with the run directory on a file system all machines share
(infra/README.md, multi-node). It waits for the run to write its engine config, then becomes
that machine's `accelerate launch` (exec, so signals reach the launcher directly).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

engine_app = typer.Typer(help="The engine process group (multi-node launchers).", no_args_is_help=True)


@engine_app.command("launch")
def engine_launch(
    run_dir: Annotated[Path, typer.Option(help="The run directory, shared by every machine.")],
    machine_rank: Annotated[int, typer.Option(help="This machine's index, 1 .. engine.num_machines - 1.", min=1)],
    wait_s: Annotated[float, typer.Option(help="How long to wait for the run to write its engine config.")] = 600.0,
    dry_run: Annotated[bool, typer.Option(help="Print the launcher command instead of running it.")] = False,
) -> None:
    """Join machine MACHINE_RANK to the engine of the run in RUN_DIR."""
    from azr.config.schema import AZRConfig
    from azr.engine.controller.launch import engine_dir, launch_command, launch_environment, on_cpu
    from azr.engine.rank.service import CONFIG_FILE

    path = engine_dir(run_dir) / CONFIG_FILE
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() > deadline:
            typer.echo(f"error: {path} did not appear within {wait_s:g} s: start the run (machine 0) first, "
                       "and give every machine the same run directory", err=True)
            raise typer.Exit(1)
        time.sleep(1.0)
    config = AZRConfig.model_validate_json(path.read_text(encoding="utf-8"))
    machines = config.engine.num_machines
    if machine_rank >= machines:
        typer.echo(f"error: --machine-rank {machine_rank} but the run has engine.num_machines = {machines} "
                   f"(valid: 1..{machines - 1})", err=True)
        raise typer.Exit(2)
    cpu = on_cpu()
    argv = launch_command(config, run_dir, machine_rank=machine_rank, cpu=cpu)
    if dry_run:
        typer.echo(" ".join(argv))
        return
    os.execvpe(argv[0], argv, launch_environment(cpu=cpu))
