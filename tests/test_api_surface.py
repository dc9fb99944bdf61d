"""The public surface: ``driftmon.__all__`` (httpx's way), a light import, py.typed, and the docstrings' examples."""

from __future__ import annotations

import doctest
import subprocess
import sys
import tomllib
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import driftmon
from tests.cli_helpers import driftmon as run_cli
from tests.test_api_history import write_config

ROOT = Path(__file__).resolve().parents[1]


def _public_names() -> list[str]:
    """Everything ``driftmon`` offers that is not a submodule or private, each lazy name loaded."""
    for name in driftmon.__all__:
        getattr(driftmon, name)
    return [name for name, value in vars(driftmon).items()
            if (not name.startswith("_") or name == "__version__") and not isinstance(value, types.ModuleType)]


def test_all_names_every_public_member_and_nothing_else():
    """A name added to the package but not to ``__all__`` (or the other way) fails here."""
    assert driftmon.__all__ == sorted(driftmon.__all__, key=str.casefold)
    assert sorted(_public_names(), key=str.casefold) == driftmon.__all__
    assert set(driftmon.__all__) <= set(dir(driftmon))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        driftmon.nope  # noqa: B018


def test_every_public_name_is_documented():
    for name in (n for n in driftmon.__all__ if n != "__version__"):
        assert (getattr(driftmon, name).__doc__ or "").strip(), f"driftmon.{name} has no docstring"


def test_the_errors_are_one_tree():
    for error in (driftmon.ConfigError, driftmon.SourceError, driftmon.StoreError):
        assert issubclass(error, driftmon.DriftmonError)


def test_import_driftmon_loads_nothing_heavy():
    probe = ("import sys, driftmon; print(sorted(m for m in ('torch', 'sqlalchemy', 'pandas', 'numpy', 'pydantic') "
             "if m in sys.modules)); driftmon.ConfigError")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_typed_package():
    assert (ROOT / "driftmon" / "py.typed").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["driftmon"]
    assert "driftmon.api" in project["tool"]["setuptools"]["packages"]
    for name in ("compare", "results", "runs"):
        assert getattr(driftmon, name).__annotations__.get("return")


@pytest.fixture(scope="module")
def doctest_globals(tmp_path_factory) -> dict:
    """What the examples name: a comparison, and a config whose monitor "shop" has one backfilled window."""
    from tests.test_api_history import write_source

    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"amount": rng.normal(100, 20, 5_000), "country": rng.choice(["DE", "FR", "US"], 5_000)})
    current = pd.DataFrame({"amount": rng.normal(130, 20, 5_000), "country": rng.choice(["DE", "FR", "US"], 5_000)})
    folder = tmp_path_factory.mktemp("doctest")

    def shop() -> str:
        here = folder / f"shop{len(list(folder.iterdir()))}"
        here.mkdir()
        plans = ["free", "pro"]
        source = write_source(here / "source.db",
                              pd.DataFrame({"amount": rng.normal(100, 20, 3_000), "plan": rng.choice(plans, 3_000)}),
                              pd.DataFrame({"amount": rng.normal(150, 20, 500), "plan": rng.choice(plans, 500)}))
        config = write_config(here / "config.yaml", f"sqlite:///{here / 'results.db'}", source,
                              features=[{"column": "amount"}, {"column": "plan", "type": "categorical"}])
        done = run_cli("backfill", "--config", str(config), "--start", "2024-03-08T11:00:00",
                       "--end", "2024-03-08T12:00:00")
        assert done.returncode in (0, 1), done.stderr
        return str(config)

    return {"driftmon": driftmon, "comparison": driftmon.compare(reference, current), "shop": shop,
            "datetime": datetime}


@pytest.mark.parametrize("module", ["driftmon.api.compare", "driftmon.api.comparison", "driftmon.api.history",
                                    "driftmon.api.monitor", "driftmon.errors"])
def test_docstring_examples_run(module, doctest_globals):
    imported = __import__(module, fromlist=["_"])
    globs = {**doctest_globals, "config_path": doctest_globals["shop"]()}
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(imported, module, globs=globs) if t.examples]
    assert tests, f"{module} has no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} example(s) of {module} failed (output above)"


def test_readme_example_runs_as_shown():
    """The README's "From Python" example (its ```pycon block), run as a doctest: the output it shows is real."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    block = section[section.index("```pycon\n") + len("```pycon\n"):section.index("```\n", section.index("```pycon"))]
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block, {}, "README From Python", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert len(test.examples) >= 8 and runner.failures == 0, f"{runner.failures} README example(s) failed (above)"
