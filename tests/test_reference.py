"""docs/reference.md describes every public interface, and no doc links outside the repo.

No services: these run in `make test-fast`. A new setting or command fails here until the
reference names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from config import settings
from workers import cli

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _commands(group: click.Group, path: str) -> Iterator[str]:
    for name, command in group.commands.items():
        full = f"{path} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, full)
        else:
            yield full


def test_every_environment_variable_is_in_the_reference() -> None:
    missing = [name for name in settings._VARIABLES if f"`{name}`" not in REFERENCE]
    assert not missing, f"docs/reference.md §2 does not describe {missing}"


def _documented(command: str, cells: list[str]) -> bool:
    """Named in full, or as a sibling in its group's row (`rapid blast pause ID` / `resume ID`)."""
    prefix, leaf = command.rsplit(" ", 1)
    sibling = re.compile(rf"`{re.escape(leaf)}[ `]")
    return any(
        command in cell or (cell.startswith(f"`{prefix} ") and sibling.search(cell))
        for cell in cells
    )


def test_every_command_is_in_the_reference() -> None:
    cli._register()
    commands = list(_commands(cli.cli, "rapid"))
    assert "rapid blast show" in commands
    cells = [line.split(" | ")[0][2:] for line in REFERENCE.splitlines() if line.startswith("| `")]
    missing = [command for command in commands if not _documented(command, cells)]
    assert not missing, f"docs/reference.md §6 does not describe {missing}"
    assert not _documented("rapid blast frobnicate", cells)


def test_no_doc_links_outside_the_repo() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    leaving = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address, not a file
            resolved = (doc.parent / target).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                leaving.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not leaving, leaving
