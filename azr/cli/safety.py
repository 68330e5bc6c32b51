"""`azr safety scan FILE`: the safety rules on a JSONL of reasoning texts, one per line.

Each line is a JSON string or an object with `text`; with `label` (`ordinary`/`concerning`) on
the lines, it also prints precision and recall per `split`, so a set of reviewed responses from
a run measures the rules (and the false-flag rate that `safety.false_flag_rate` should take).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from azr.cli.output import console, fail, rows_table

safety_app = typer.Typer(help="The safety monitor's rules, on your own texts.", no_args_is_help=True)


def _rate(value: float | None) -> str:
    return "cannot tell" if value is None else f"{value:.3f}"


@safety_app.command("scan")
def scan_command(
    file: Annotated[Path, typer.Argument(help="JSONL: one reasoning text per line (a JSON string or {\"text\": ...}).")],
    show_all: Annotated[bool, typer.Option("--all", help="List every line, not only the flagged ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of tables.")] = False,
) -> None:
    """Flag concerning reasoning in FILE with the rule set; with labels, report precision and recall."""
    from azr.ops.safety.evaluation import ExcerptFileError, measure, read_excerpts
    from azr.ops.safety.rules import reasoning_of, scan_reasoning

    if not file.is_file():
        fail(f"{file} is not a file; give a JSONL file with one text per line")
    try:
        excerpts = read_excerpts(file)
    except ExcerptFileError as exc:
        fail(str(exc))
        raise
    scans = [scan_reasoning(reasoning_of(e.text)) for e in excerpts]
    if as_json:
        for number, (excerpt, found) in enumerate(zip(excerpts, scans), start=1):
            if found.flagged or show_all:
                console.print_json(json.dumps({"line": number, "id": excerpt.id, "flagged": found.flagged,
                                               "rules": list(found.rules), "matches": [m.text for m in found.matches]}))
    else:
        rows = [{"line": n, "id": e.id or "", "rules": ", ".join(s.rules), "matched": "; ".join(m.text for m in s.matches),
                 "label": e.label or ""}
                for n, (e, s) in enumerate(zip(excerpts, scans), start=1) if s.flagged or show_all]
        if rows:
            console.print(rows_table(rows, f"{file.name}: {'all lines' if show_all else 'flagged lines'}"))
    flagged = sum(s.flagged for s in scans)
    console.print(f"{len(excerpts)} texts scanned, {flagged} flagged", markup=False)
    figures = measure(excerpts, [s.flagged for s in scans])
    if figures and not as_json:
        console.print(rows_table([
            {"split": f.split, "ordinary": f.ordinary, "concerning": f.concerning, "true flags": f.true_flags,
             "false flags": f.false_flags, "precision": _rate(f.precision), "recall": _rate(f.recall),
             "false-flag rate (95% upper)": _rate(f.false_flag_upper) if f.ordinary else "cannot tell"}
            for f in figures], "rules against the labels"))
