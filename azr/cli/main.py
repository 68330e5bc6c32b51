"""The `azr` command. Each subcommand is a thin shell over the library; errors the user can fix
are printed as one paragraph with a non-zero exit code, never as a traceback."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from azr.cli.output import ReportingGroup, console, err_console, fail

from azr.config.schema import AZRConfig

if TYPE_CHECKING:
    from azr.sandbox.api import ProgramRun
from azr.config.loading import (
    DEFAULT_PRESET, ConfigError, build_config, chosen_preset, config_to_yaml, preset_description, preset_names, undecodable,
)

app = typer.Typer(
    help="Absolute Zero Reasoner: self-play code reasoning with Prefect, MLflow and Accelerate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ReportingGroup,
)
config_app = typer.Typer(help="Inspect run configurations and presets.", no_args_is_help=True)
prompts_app = typer.Typer(help="Build and inspect the prompts of an iteration.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run programs in the sandboxed executor (debug proposals).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(prompts_app, name="prompts")
app.add_typer(sandbox_app, name="sandbox")


def _mount_eval_commands() -> None:
    """`azr eval ...` lives in azr/cli/eval.py (the evaluation commands)."""
    from azr.cli.eval import eval_app

    app.add_typer(eval_app, name="eval")


_mount_eval_commands()


def _mount_runs_commands() -> None:
    """`azr runs` lives in azr/cli/runs.py; `azr train` is added by flows/entry.py (it needs Prefect)."""
    from azr.cli.runs import runs_app

    app.add_typer(runs_app, name="runs")


_mount_runs_commands()


def _mount_plan_command() -> None:
    """`azr plan` (the memory plan) lives in azr/cli/plan.py."""
    from azr.cli.plan import plan_command

    app.command("plan")(plan_command)


_mount_plan_command()


def _mount_engine_commands() -> None:
    """`azr engine launch` (another machine of a multi-node engine) lives in azr/cli/engine.py."""
    from azr.cli.engine import engine_app

    app.add_typer(engine_app, name="engine")


_mount_engine_commands()


def _mount_safety_commands() -> None:
    """`azr safety scan` (the safety rules on a file of texts) lives in azr/cli/safety.py."""
    from azr.cli.safety import safety_app

    app.add_typer(safety_app, name="safety")


_mount_safety_commands()


PresetOption = Annotated[
    Optional[str], typer.Option("--preset", "-p", help=f"Preset name (default {DEFAULT_PRESET}); see `azr config presets`.")
]
ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file with settings, applied over the preset.")
]
SetOption = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override one setting: section.key=value (repeatable).")
]




def resolve_config(preset: str | None, config_file: Path | None, overrides: list[str] | None) -> AZRConfig:
    try:
        return build_config(chosen_preset(preset, config_file), config_file, overrides or [])
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


@config_app.command("show")
def config_show(preset: PresetOption = None, config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved configuration as YAML (preset < file < --set)."""
    console.print(config_to_yaml(resolve_config(preset, config, set_)), end="", highlight=False, markup=False)


@config_app.command("presets")
def config_presets() -> None:
    """List the presets with what each one is for."""
    table = Table("preset", "model", "batch/group", "description")
    for name in preset_names():
        config = build_config(name)
        table.add_row(name, config.model.name_or_path, str(config.rollout.batch_size), preset_description(name))
    console.print(table)


@prompts_app.command("build")
def prompts_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the Parquet files.")],
    preset: PresetOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    step: Annotated[int, typer.Option(help="Iteration number the prompts are for (>= 1).", min=1)] = 1,
    show: Annotated[Optional[str], typer.Option(help="Print the first prompt of this group.")] = None,
    force: Annotated[bool, typer.Option(help="Replace prompt files already in --out.")] = False,
) -> None:
    """Build the first iteration's propose and solve prompts from the seed buffers.

    Writes propose_prompts.parquet, solve_prompts.parquet and config.yaml into --out, and
    prints a table of the six groups.
    """
    from azr.pipeline.atomic_io import atomic_write_text, write_parquet_atomic
    from azr.pipeline.registry import StageFile
    from azr.selfplay.iteration_prompts import PromptBuildError, build_iteration_prompts, prompts_table, tokenizer_counter
    from azr.selfplay.buffer import Buffers, BufferStoreError
    from azr.engine.models.sources import ModelSourceError
    from azr.engine.models.tokenizer import load_tokenizer
    from azr.selfplay.seed_tasks import SeedFileError
    from azr.selfplay.task_types import GROUP_NAMES, Group
    from azr.selfplay.prompts.chat_format import make_wrapper

    run_config = resolve_config(preset, config, set_)
    if show is not None and show not in GROUP_NAMES:
        fail(f"--show {show!r} is not a group; groups are: {', '.join(GROUP_NAMES)}")
    targets = [out / StageFile.PROPOSE_PROMPTS, out / StageFile.SOLVE_PROMPTS, out / "config.yaml"]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        fail(f"{existing[0]} already exists; choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a directory")
    try:
        with console.status("loading the tokenizer"):
            tokenizer = load_tokenizer(run_config.model)
        wrapper = make_wrapper(run_config.model.prompt_wrapper, tokenizer, run_config.tasks.prompt_profile)
        buffers = Buffers.initial(run_config.buffer, run_config.seed)
        prompts = build_iteration_prompts(buffers, step, run_config, wrapper, tokenizer_counter(tokenizer))
    except (ModelSourceError, SeedFileError, BufferStoreError, PromptBuildError, ValueError, OSError) as exc:
        fail(str(exc), code=1)
        raise
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(prompts_table(step, prompts.propose), targets[0])
    write_parquet_atomic(prompts_table(step, prompts.solve), targets[1])
    atomic_write_text(targets[2], config_to_yaml(run_config))

    table = Table("group", "prompts", "tokens (mean)", "tokens (max)", "distinct")
    for name in GROUP_NAMES:
        records = [r for r in prompts.propose + prompts.solve if r.group == Group.from_name(name)]
        if not records:
            continue
        tokens = [r.prompt_tokens or 0 for r in records]
        table.add_row(name, str(len(records)), f"{statistics.fmean(tokens):.0f}", str(max(tokens)), str(len({r.prompt for r in records})))
    console.print(table)
    if show is not None:
        record = next((r for r in prompts.propose + prompts.solve if r.group.name == show), None)
        if record is not None:
            console.rule(show)
            console.print(record.prompt, markup=False, highlight=False)
    console.print(f"wrote {targets[0]}, {targets[1].name} and {targets[2].name}", markup=False)


@app.command("parse")
def parse_response(
    response_file: Annotated[Path, typer.Argument(help="File with one model response ('-' for stdin).")],
    group: Annotated[str, typer.Option(help="Group the response belongs to, e.g. deduction_propose.")],
    seeding: Annotated[bool, typer.Option("--seeding", help="Read a proposal as the seeding stage does "
                                          "(with tasks.proposal_parsing: original, the whole response).")] = False,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Show how a response is read: format score, answer, parsed fields or the failure reason."""
    import json

    from azr.selfplay.parsing import ParseFailure, parse_generation, parse_solution
    from azr.selfplay.proposals import proposal_reading
    from azr.selfplay.task_types import Group, Role

    run_config = resolve_config(preset, None, set_)
    try:
        parsed_group = Group.from_name(group)
    except ValueError as exc:
        fail(str(exc))
        raise
    text = _read_input_text(response_file)
    generation = parse_generation(text)
    if parsed_group.role is Role.SOLVE:
        if seeding:
            fail("--seeding reads proposals; the seeding stage has no solve groups")
        parsed = parse_solution(parsed_group.task_type, generation.answer, run_config.reward.solver_parsing == "original")
    else:
        parsed = proposal_reading(parsed_group.task_type, text, generation.answer, run_config, seeding=seeding)
    result: dict[str, object] = {"group": parsed_group.name, "format_ok": generation.format_ok, "answer": generation.answer}
    if seeding:
        result["reads"] = "whole response" if run_config.tasks.proposal_parsing == "original" else "answer"
    if isinstance(parsed, ParseFailure):
        result.update(parsed=False, reason=parsed.reason.value, detail=parsed.detail)
    elif isinstance(parsed, str):
        result.update(parsed=True, value=parsed)
    else:
        result.update(parsed=True, **{k: list(v) if isinstance(v, tuple) else v for k, v in vars(parsed).items()})
    console.print_json(json.dumps(result))


def _open_executor(preset: str | None, overrides: list[str] | None, workers: int | None = None, **sandbox: object):
    """A SandboxExecutor from the resolved config, or a one-paragraph error."""
    from azr.sandbox import IsolationUnavailable, SandboxError, SandboxExecutor

    run_config = resolve_config(preset, None, overrides)
    settings = run_config.sandbox.model_copy(update={k: v for k, v in sandbox.items() if v is not None})
    try:
        return SandboxExecutor(settings, workers=workers)
    except (IsolationUnavailable, SandboxError) as exc:
        fail(str(exc), code=1)
        raise


def _call_json(call: object, duration_ms: float, **extra: object) -> str:
    import json

    return json.dumps({**extra, "status": call.status.value, "output": call.output, "error": call.error,
                       "duration_ms": round(duration_ms, 3)})


@sandbox_app.command("run")
def sandbox_run(
    code: Annotated[Path, typer.Option("--code", help="File with the program (defines f).")],
    input_text: Annotated[str, typer.Option("--input", help="Argument text for f, e.g. \"1, 'a'\".")],
    timeout: Annotated[Optional[float], typer.Option(help="Wall-clock limit in seconds.", min=0.1)] = None,
    check_determinism: Annotated[bool, typer.Option("--check-determinism", help="Also run it in a second process with another hash seed.")] = False,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Run f(<input>) once in the sandbox and print one JSON object (status, output, error, duration_ms)."""
    from azr.sandbox.api import ProgramRun

    try:
        program = code.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read --code {code}: {getattr(exc, 'strerror', None) or exc}")
        raise
    with _open_executor(preset, set_, workers=1, timeout_s=timeout, check_determinism=check_determinism) as executor:
        (result,) = executor.run([ProgramRun(program, (input_text,), check_determinism)])
    typer.echo(_call_json(result.calls[0], result.duration_ms))


def _batch_entry(number: int, line: str, check_determinism: bool) -> tuple[object, ProgramRun | str]:
    """(id, run) for a good line; (id if readable, error text) for a malformed one."""
    import json

    from azr.sandbox.api import ProgramRun

    try:
        row = json.loads(line)
    except ValueError as exc:
        return None, f"line {number} is not JSON: {exc}"
    except RecursionError:
        return None, f"line {number} is JSON nested too deeply to read"
    if not isinstance(row, dict):
        return None, f"line {number} is not a JSON object"
    missing = [key for key in ("code", "input") if not isinstance(row.get(key), str)]
    if missing:
        return row.get("id"), f"line {number}: missing or non-string {', '.join(missing)}"
    return row.get("id"), ProgramRun(row["code"], (row["input"],), check_determinism)


@sandbox_app.command("batch")
def sandbox_batch(
    in_file: Annotated[Path, typer.Argument(help='JSONL lines {"id", "code", "input"} (\'-\' for stdin).')],
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write results here (default: stdout).")] = None,
    check_determinism: Annotated[bool, typer.Option("--check-determinism")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Sandbox workers (default: all cores).", min=1)] = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Run every line through one executor; one JSON result line per input line, in order."""
    import json

    from azr.pipeline.atomic_io import atomic_write_text
    from azr.sandbox.api import ProgramRun

    if out is not None:
        _check_output_file(out, "-o/--out")
    lines = _read_input_text(in_file).splitlines()
    entries: list[tuple[object, ProgramRun | str]] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = _batch_entry(number, line, check_determinism)
        if entry[0] is not None:
            key = json.dumps(entry[0], sort_keys=True)
            if key in first_line:
                fail(f"{in_file}: id {entry[0]!r} is on line {first_line[key]} and again on line {number}; "
                     "give every line its own id (results are matched to lines by id)")
            first_line[key] = number
        entries.append(entry)
    runs = [entry for _, entry in entries if isinstance(entry, ProgramRun)]
    results = iter(())
    if not entries:  # nothing to run is not an error (exit 0), but it is said, not silent
        err_console.print(f"note: {in_file} holds no tasks (every line is blank): nothing was run"
                          + (f"; {out} is empty" if out is not None else ""), markup=False, highlight=False, soft_wrap=True)
    elif runs:
        with _open_executor(preset, set_, workers=workers, check_determinism=check_determinism) as executor:
            results = iter(executor.run(runs))
    output_lines = []
    for row_id, entry in entries:
        if isinstance(entry, str):
            output_lines.append(json.dumps({"id": row_id, "status": "error", "output": "", "error": entry, "duration_ms": 0.0}))
        else:
            result = next(results)
            output_lines.append(_call_json(result.calls[0], result.duration_ms, id=row_id))
    text = "\n".join(output_lines) + ("\n" if output_lines else "")
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", code=1)


def _read_input_text(path: Path) -> str:
    """A UTF-8 input file ('-' for stdin), or a one-paragraph error naming the bad byte."""
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text ({undecodable(exc)}); save it as UTF-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    raise AssertionError("unreachable: fail() exits")


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path.is_dir():
        fail(f"{option} {path} is a directory; give a file name, e.g. {path / 'results.jsonl'}")
    if not path.parent.is_dir():
        fail(f"{option} {path}: the folder {path.parent} does not exist; create it first or choose another path")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
