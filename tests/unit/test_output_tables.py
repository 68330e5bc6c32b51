"""Tables off a terminal (a pipe, a CI log): headers are never cut into fragments."""

from __future__ import annotations

import io

from rich.console import Console

from azr.cli.output import print_table, rows_table
from azr.pipeline.metrics import SUMMARY_COLUMNS


def _rows() -> list[dict[str, object]]:
    cells = ["deduction_propose", 4, 0.25, None, 0.5, 0.125, -0.5, 88.2]
    return [dict(zip(SUMMARY_COLUMNS, cells, strict=True)), dict(zip(SUMMARY_COLUMNS, ["induction_solve", *cells[1:]], strict=True))]


def _printed(terminal: bool, width: int = 80) -> str:
    out = io.StringIO()
    target = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    print_table(rows_table(_rows(), "iteration 1", terminal=terminal), target)
    return out.getvalue()


def test_headers_stay_whole_when_output_is_not_a_terminal() -> None:
    text = _printed(terminal=False)
    header = next(line for line in text.splitlines() if "group" in line)
    for column in SUMMARY_COLUMNS:
        assert column in header, f"{column!r} was wrapped: {header}"
    assert "seque" not in text.replace("sequences", "")
    assert "induction_solve" in text and "88.2" in text and "0.125" in text  # nothing cropped at 80 columns


def test_a_terminal_table_fits_the_terminal() -> None:
    lines = _printed(terminal=True, width=70).splitlines()
    assert max(len(line) for line in lines) <= 70
    assert any("deduction_propose" in line for line in lines)
