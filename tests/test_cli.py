"""The real ``driftmon`` command as a subprocess: exit codes, messages, secrets."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import inspect

from driftmon.store import migrate
from driftmon.store.database import create_db_engine
from tests.cli_helpers import driftmon

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def shipped_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_version():
    import torch

    result = driftmon("--version")
    assert result.returncode == 0
    assert result.stdout == f"driftmon 0.1.0 (torch {torch.__version__})\n"


HEAVY_MODULES = ("torch", "numpy", "sqlalchemy", "alembic", "pydantic", "apscheduler", "prometheus_client")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["backfill", "--help"], ["serve", "--help"]])
def test_help_and_version_import_nothing_heavy(args):
    """torch alone took 2 s to import (`--version` took 2.5 to 4.75 s, `--help` 0.7 s):
    the commands import what they need themselves. The speed itself (0.07 s, target
    0.5 s) is measured, not asserted; the bound below only catches a heavy import
    coming back."""
    probe = ("import sys, time; from driftmon.cli import main\n"
             "try:\n    main(sys.argv[1:], prog_name='driftmon')\nexcept SystemExit as exit:\n    code = exit.code\n"
             f"print('HEAVY', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), code)")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "HEAVY [] 0", done.stdout + done.stderr
    fastest = min(_wall_seconds(args) for _ in range(3))  # the best of three: the machine is shared
    assert fastest < 2.0, f"driftmon {' '.join(args)} took {fastest:.2f} s"


def _wall_seconds(args: list[str]) -> float:
    started = time.perf_counter()
    assert driftmon(*args).returncode == 0
    return time.perf_counter() - started


def test_cli_spells_the_config_constants_as_the_config_module_does():
    from driftmon import cli, config_file

    assert (cli.CONFIG_PATH_ENV, cli.DEFAULT_CONFIG_PATH) == (config_file.CONFIG_PATH_ENV,
                                                             config_file.DEFAULT_CONFIG_PATH)


@pytest.mark.parametrize("command", [[], ["check-config"], ["db"], ["db", "upgrade"]])
def test_help_on_every_command(command):
    result = driftmon(*command, "--help")
    assert result.returncode == 0
    assert "Usage: driftmon" in result.stdout


def test_shipped_config_checks_clean():
    result = driftmon("check-config", "--config", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_bad_config_exits_2_naming_every_culprit(tmp_path):
    config = shipped_config()
    monitor = config["monitors"][0]
    monitor["features"][0]["bins"] = -4
    monitor["features"][1]["topk"] = 5
    monitor["thresholds"] = {"warning": 0.9, "critical": 0.25}
    config["monitors"].append({**monitor, "name": "second", "source": {**monitor["source"], "kind": "parquet"}})
    result = driftmon("check-config", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for path in (
        "monitors[0].features[0].bins:",
        "monitors[0].features[1].topk: unknown key",
        "monitors[0].thresholds: warning (0.9) must not exceed critical (0.25)",
        "monitors[1].source:",
    ):
        assert path in result.stderr, result.stderr


def test_unknown_option_is_usage_error():
    assert driftmon("check-config", "--no-such-flag").returncode == 2


def test_missing_config_file_exits_2(tmp_path):
    result = driftmon("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr


def test_config_path_from_environment(tmp_path):
    path = write_config(tmp_path, {"server": {"port": 9100}})
    result = driftmon("check-config", env={"DRIFTMON_CONFIG": str(path)})
    assert result.returncode == 0
    assert ":9100" in result.stdout


def test_password_never_printed(tmp_path):
    config = shipped_config()
    config["database"]["url"] = "postgresql://driftmon:hunter2-secret@127.0.0.1:1/results"
    config["monitors"][0]["source"]["url"] = "${SOURCE_DATABASE_URL}"
    path = write_config(tmp_path, config)
    env = {"SOURCE_DATABASE_URL": "postgresql://reader:src-pass-42@127.0.0.1:1/src"}

    checked = driftmon("check-config", "--config", str(path), env=env)
    assert checked.returncode == 0
    assert "driftmon:***@127.0.0.1" in checked.stdout

    failed = driftmon("db", "upgrade", "--config", str(path), env=env)  # port 1: refused
    assert failed.returncode == 3
    assert "driftmon:***@127.0.0.1" in failed.stderr
    for output in (checked.stdout + checked.stderr, failed.stdout + failed.stderr):
        assert "hunter2-secret" not in output and "src-pass-42" not in output


def test_db_upgrade_creates_schema_and_is_idempotent(empty_db_url, tmp_path):
    path = write_config(tmp_path, {"database": {"url": empty_db_url}})
    first = driftmon("db", "upgrade", "--config", str(path))
    assert first.returncode == 0, first.stderr
    second = driftmon("db", "upgrade", "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert "(head)" in second.stdout
    engine = create_db_engine(empty_db_url)
    try:
        assert {"runs", "results", "reference_profiles"} <= set(inspect(engine).get_table_names())
        assert migrate.is_at_head(engine)
    finally:
        engine.dispose()


def test_database_url_from_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    result = driftmon("db", "upgrade", "--config", str(write_config(tmp_path, {})),
                      env={"DRIFTMON_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env.db").exists()


def test_check_config_runs_the_checks_a_run_would_fail(tmp_path):
    import torch

    config = shipped_config()
    config["database"]["url"] = f"sqlite:///{tmp_path / 'r.db'}"
    if not torch.cuda.is_available():
        config["compute"]["device"] = "cuda"
        result = driftmon("check-config", "--config", str(write_config(tmp_path, config)))
        assert result.returncode == 2 and "compute.device: device 'cuda' requested" in result.stderr
        config["compute"]["device"] = "cpu"
    config["monitors"][0]["slice"] = "7m"
    result = driftmon("check-config", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2 and "monitors[0].slice: slice 0:07:00 does not divide" in result.stderr


def test_check_config_connect_checks_tables_columns_and_types(tmp_path):
    import sqlalchemy as sa

    from tests.sourcedata import create_and_fill

    config = shipped_config()
    config["database"]["url"] = f"sqlite:///{tmp_path / 'r.db'}"
    config["monitors"][0]["source"]["url"] = f"sqlite:///{tmp_path / 'source.db'}"
    path = write_config(tmp_path, config)
    assert driftmon("check-config", "--config", str(path)).returncode == 0  # offline: no database needed
    missing = driftmon("check-config", "--connect", "--config", str(path))
    assert missing.returncode == 2 and "monitors[0].source:" in missing.stderr
    assert "table 'inference_log' does not exist" in missing.stderr
    engine = sa.create_engine(config["monitors"][0]["source"]["url"])
    create_and_fill(engine, sa.Table(  # amount as text: declared numeric in the config
        "inference_log", sa.MetaData(), sa.Column("ts", sa.DateTime), sa.Column("model_version", sa.String(10)),
        sa.Column("amount", sa.String(20)), sa.Column("country", sa.String(20)), sa.Column("score", sa.Double)), [])
    engine.dispose()
    typed = driftmon("check-config", "--connect", "--config", str(path))
    assert typed.returncode == 2
    assert "column 'amount' is declared numeric but its type is VARCHAR(20)" in typed.stderr
