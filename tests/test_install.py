"""What an install gets: the locks agree with pyproject.toml, production leaves the demo's
emulators out, and `rapid demo` without them says what to install.

No services: these run in `make test-fast`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])


def pins(lock: str) -> dict[str, Version]:
    """``name -> version`` of every requirement pinned in a lock file."""
    found = {}
    for line in (ROOT / lock).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            found[canonicalize_name(m.group(1))] = Version(m.group(2))
    return found


def requirements(*extras: str) -> list[Requirement]:
    """pyproject.toml's dependencies plus the named extras, self-references expanded."""
    todo = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        todo += PYPROJECT["project"]["optional-dependencies"][extra]
    out = []
    for text in todo:
        req = Requirement(text)
        if canonicalize_name(req.name) != PROJECT:
            out.append(req)
    return out


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements.lock", ()), ("requirements-dev.lock", ("demo", "test"))],
)
def test_every_requirement_is_pinned_in_the_lock_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    locked = pins(lock)
    stale = []
    for req in requirements(*extras):
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        version = locked.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            stale.append(f"{req} (locked: {version})")
    assert not stale, f"{lock} is stale, run `make lock`: {stale}"


def test_production_lock_leaves_the_demo_emulators_out_and_has_a_safe_jinja() -> None:
    prod, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert "moto" not in prod and "fakeredis" not in prod
    assert "moto" in dev and "fakeredis" in dev
    # 3.1.5 lets |attr('format') escape the sandbox and read the process's secrets.
    assert prod["jinja2"] >= Version("3.1.6")
    # Production pins are the dev lock's pins: tests run what production installs.
    assert {name: dev[name] for name in prod} == prod


def test_locks_hash_every_pin() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
        unhashed = [b.split()[0] for b in blocks if "==" in b.split()[0] and "--hash=" not in b]
        assert not unhashed, f"{lock} pins without hashes: {unhashed}"


def test_demo_without_the_demo_extra_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    # A module named moto ahead of site-packages that cannot be imported: as if not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "moto.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'moto'\", name='moto')\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(shadow),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'rapid.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from workers.cli import main; main()", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "rapid-response[demo]" in done.stderr and "moto" in done.stderr
    assert "Traceback" not in done.stderr
