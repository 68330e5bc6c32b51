"""The one pair of consoles every command prints through, the shared error exit, and the
table that shows per-group rows (group and reason names never wrapped)."""

from __future__ import annotations

from typing import Any, NoReturn

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
