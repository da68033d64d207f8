"""The layers import one way, and only the store backends speak SQL (docs/architecture.md).

Read from the source with :mod:`ast` (every ``import``, at module level or inside a
function), so a new module that crosses a layer fails here before review has to notice.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("config", "messaging", "queues", "workers", "emulators")

#: What each top-level package may import of ours (itself included).
ALLOWED = {
    "config": {"config"},
    "messaging": {"config", "messaging"},
    "queues": {"config", "messaging", "queues"},
    "emulators": {"emulators"},
    "workers": set(OURS),
}

#: Modules outside ``messaging/store/`` that may import SQLAlchemy, and why: none of them
#: builds or runs a statement.
SQLALCHEMY_OUTSIDE_STORE = {
    "workers/app.py": "the composition root holds the Engine it opens through messaging.store",
    "config/settings.py": "DATABASE_URL is parsed with SQLAlchemy's URL parser",
    "workers/cli.py": "a database that is down is told apart by its exception class",
}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package", OURS)
def test_each_layer_imports_only_the_layers_below_it(package: str) -> None:
    crossings = [
        f"{_rel(path)}:{line} imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if name.split(".")[0] in OURS and name.split(".")[0] not in ALLOWED[package]
    ]
    assert crossings == [], "\n".join(crossings)


def test_the_domain_reaches_its_stores_through_the_ports() -> None:
    # Only the store backends (and their migrations) import messaging.store; the domain
    # asks for stores through messaging.ports and is handed them by the composition root.
    reaching = [
        f"{_rel(path)}:{line} imports {name}"
        for path in _modules("messaging")
        if not _rel(path).startswith("messaging/store/")
        for line, name in _imports(path)
        if name == "messaging.store" or name.startswith("messaging.store.")
    ]
    assert reaching == [], "\n".join(reaching)


def test_only_the_store_backends_speak_sql() -> None:
    speaking = []
    for package in ("config", "messaging", "queues", "workers"):
        for path in _modules(package):
            rel = _rel(path)
            if rel.startswith("messaging/store/") or rel in SQLALCHEMY_OUTSIDE_STORE:
                continue
            text = path.read_text(encoding="utf-8")
            if any(name.split(".")[0] == "sqlalchemy" for _, name in _imports(path)):
                speaking.append(f"{rel} imports sqlalchemy")
            if "dialect.name" in text:
                speaking.append(f"{rel} asks which database it talks to")
    assert speaking == [], "\n".join(speaking)


def test_the_checks_read_the_whole_tree() -> None:
    # A vacuous pass (no files found, a parser that finds no imports) fails here instead
    counted = {package: len(list(_modules(package))) for package in OURS}
    assert all(n >= 5 for n in counted.values()), counted
    imports = [name for _, name in _imports(ROOT / "workers" / "app.py")]
    assert any(name.startswith("messaging.") for name in imports), imports
