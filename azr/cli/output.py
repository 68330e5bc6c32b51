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
_BORDER_CHARS = 3  # per column in the default box: two padding spaces and one rule


def rows_table(rows: list[dict[str, Any]], title: str, *, terminal: bool | None = None) -> Table:
    """A table of `rows` (dicts with the same keys). On a terminal long cells (paths) and
    headers fold to its width; elsewhere (a pipe, a log file) there is no width to fit, so every
    header and cell stays on one line and the table takes its natural width: print it with
    `print_table`, which does not crop it to the 80 columns rich assumes off a terminal."""
    terminal = console.is_terminal if terminal is None else terminal
    table = Table(title=Text(title), title_justify="left")  # Text: paths and messages are not markup
    columns = list(rows[0]) if rows else []
    widths = [max(len(str(c)), *(len(_cell(row[c])) for row in rows)) for c in columns]
    natural = 1 + sum(w + _BORDER_CHARS for w in widths)
    for index, (column, widest) in enumerate(zip(columns, widths)):
        name = str(column)
        if index == 0 and widest <= ROW_NAME_CHARS:  # group and reason names are never cut
            table.add_column(name, no_wrap=True, min_width=widest)
        elif terminal:  # long cells (paths) and the measures' headers fold to the terminal's width
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, no_wrap=True, min_width=widest)
    if columns and not terminal:
        table.width = natural
    for row in rows:
        table.add_row(*(Text(_cell(v)) for v in row.values()))
    return table


def print_table(table: Table, out: Console | None = None) -> None:
    """Print a `rows_table` whole: off a terminal it is wider than the console's default."""
    target = out or console
    target.print(table, crop=target.is_terminal)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
