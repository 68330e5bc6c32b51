"""The composition root of the `azr` command: the library's commands (azr.cli), plus `train`,
which needs Prefect and so lives here. pyproject's `azr` script points at `main`."""

from __future__ import annotations

from azr.cli.main import app
from flows.train_command import train

app.command("train")(train)


def main() -> None:
    """Run the `azr` command."""
    app()


if __name__ == "__main__":
    main()
