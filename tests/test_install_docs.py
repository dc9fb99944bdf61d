"""Every ``pip install`` that the README, the docs, the build files and driftmon's own hints print
installs driftmon from a path (the checkout) or by its own distribution name, never by a name that
PyPI serves for another project: ``driftmon`` on PyPI is an unrelated package (issue 29)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Names PyPI serves for projects that are not this one (checked with `pip index versions` when
# the distribution name was chosen; see pyproject.toml).
FOREIGN = {"driftmon"}
INSTALL = re.compile(r"pip3? install\s+(?P<args>[^`\n]+)")


def own_name() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder, pattern in (("docs", "*.md"), ("bench", "*.md"), ("deploy", "*.md"), ("driftmon", "*.py"),
                            ("tests", "*.py")):
        found += sorted((ROOT / folder).rglob(pattern))
    return [path for path in found if path.exists() and path.name != Path(__file__).name]


def requirements(args: str) -> list[str]:
    """The requirement and path arguments of one ``pip install`` (its options and their values left out)."""
    try:
        words = shlex.split(args, comments=True)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        words = args.split()
    wanted, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("-r", "-c", "--index-url", "--extra-index-url", "-i", "--target", "-t", "--find-links",
                      "-f", "--constraint", "--requirement", "--platform", "--python-version", "--prefix"):
            skip = True
        elif word in ("&&", "||", ";", "|") or word.startswith(")"):
            break
        elif not word.startswith("-"):
            word = word.strip("'\"`").rstrip("),;:")
            # A sentence's full stop after a name ("pip install pyodbc."), not a path's dot.
            wanted.append(word.rstrip(".") if not word.startswith((".", "/")) else word)
    return [w for w in wanted if w]


def is_path(requirement: str) -> bool:
    return requirement.startswith((".", "/", "~", "$", "file:")) or requirement.endswith((".whl", ".tar.gz"))


def project_of(requirement: str) -> str:
    return normalized(re.split(r"[\[<>=!~; @]", requirement, maxsplit=1)[0])


def install_lines() -> list[tuple[str, str]]:
    lines = []
    for path in documents():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in INSTALL.finditer(line):
                lines.append((f"{path.relative_to(ROOT)}:{number}", match.group("args")))
    return lines


def test_the_distribution_name_is_not_a_foreign_one():
    assert normalized(own_name()) not in FOREIGN
    assert normalized(own_name()) == "driftmon-daemon"


def test_every_pip_install_of_driftmon_is_a_path_or_its_own_name():
    lines = install_lines()
    assert len(lines) >= 10, lines  # the scan finds the README's and the hints' lines
    own, from_paths = normalized(own_name()), 0
    for where, args in lines:
        for requirement in requirements(args):
            if is_path(requirement):
                from_paths += 1
                continue
            project = project_of(requirement)
            assert project not in FOREIGN, f"{where}: `pip install {args.strip()}` installs PyPI's {project!r}, " \
                                           f"another project: install from the checkout ('.[extra]') or as {own}"
    assert from_paths >= 3


@pytest.mark.parametrize("args, wanted", [
    ("driftmon[mysql]", ["driftmon[mysql]"]),
    ("--no-cache-dir --extra-index-url https://x/whl/cpu '.[duckdb]'", [".[duckdb]"]),
    ("-e '.[test]' && echo", [".[test]"]),
])
def test_the_scan_reads_requirements(args, wanted):
    assert requirements(args) == wanted
    assert project_of("driftmon[mysql]") in FOREIGN  # so the line above would fail the real test


def test_the_driver_hints_name_no_foreign_project():
    """What ``database.url: the driver ...: pip install X`` tells a user to install."""
    from driftmon.store import database

    for hint in {**database._DRIVER_PACKAGES, **database._DIALECT_PACKAGES}.values():
        for requirement in requirements(hint.split("(")[0]):
            assert project_of(requirement) not in FOREIGN, hint
