"""The `augmenter` command line: parses options and calls library functions, nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from augmenter.errors import UserError

app = typer.Typer(
    name="augmenter",
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Synthetic micro-expression clips from a facial-prior FOMM, generated on Dask, stored in Zarr, "
    "and measured by leave-one-subject-out recognition.",
)
manifest_app = typer.Typer(no_args_is_help=True, help="Build and check manifests from dataset annotations.")
cluster_app = typer.Typer(no_args_is_help=True, help="Cluster helpers (SLURM scripts).")
app.add_typer(manifest_app, name="manifest")
app.add_typer(cluster_app, name="cluster")
err_console = Console(stderr=True)


# --- manifest commands (issue 2) ---

# --- demo-data (issue 2) ---

# --- train / score (issue 3) ---

# --- generate / preview / cluster (issue 4) ---

# --- evaluate (issue 5) ---

# --- demo (issue 6) ---


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()

_ = Path  # imported for the command sections above
