"""The one pair of consoles every command prints through, the shared error exit, and the
table that shows per-group rows (group and reason names never wrapped)."""

from __future__ import annotations

from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a user-facing error and exit; `code` 2 for bad input, 1 for failures."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class ReportingGroup(typer.core.TyperGroup):
    """The `azr` command group: whatever a subcommand raises reaches the user as one paragraph
    with its own reason and exit code 1 (2 for bad input), never as a traceback
    (azr/ops/failure_advice.py names the kinds and keeps an unexpected error's traceback in a file)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.exceptions.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's failure is reported
            from azr.ops.failure_advice import exit_code, user_message

            fail(user_message(exc), exit_code(exc))


ROW_NAME_CHARS = 24  # the longest group or failure-reason name, with room to spare


def rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=Text(title), title_justify="left")  # Text: paths and messages are not markup
    columns = list(rows[0]) if rows else []
    for index, column in enumerate(columns):
        widest = max(len(str(column)), *(len(str(row[column])) for row in rows))
        if index == 0 and widest <= ROW_NAME_CHARS:  # group and reason names are never cut
            table.add_column(str(column), no_wrap=True, min_width=widest)
        else:  # long cells (paths) and the measures' headers fold
            table.add_column(str(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row.values()))
    return table
