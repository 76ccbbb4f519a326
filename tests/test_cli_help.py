"""Every command's --help at 80 columns: each option name whole, no line wider than the terminal."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from cli import app

WIDTH = 80


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(argv path, command) for the app and every command and sub-app below it."""
    found = [(path, command)]
    if isinstance(command, TyperGroup):
        context = typer.Context(command)
        for name in command.list_commands(context):
            found.extend(_commands(command.get_command(context, name), (*path, name)))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "evaluate", "generate", "manifest", "manifest build", "cluster slurm-script"} <= names
    assert len(names) >= 14


@pytest.mark.parametrize(
    "path", [path for path, _ in COMMANDS], ids=lambda path: " ".join(path) or "augmenter"
)
def test_help_at_80_columns_names_every_option_in_full(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, prog_name="augmenter")
    assert result.exit_code == 0, result.output
    text = result.output
    names = [name for param in command.params for name in (*param.opts, *param.secondary_opts)]
    names = [name for name in names if name.startswith("-")]
    assert names or path in {(), ("manifest",), ("cluster",), ("checkpoint",)}
    for name in [*names, "--help"]:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} not whole in:\n{text}"
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, text
    assert not re.search(r"-\w*…", text) and "╭" not in text  # no name cut short, not typer's Rich panels
    # a line never ends inside a hyphenated word (an option named in a help text stays on one line)
    assert not [line for line in lines if re.search(r"\w-$", line)], text
