"""docker-compose.yml, checked by parsing (no Docker engine runs here): the demo profile a
newcomer runs first, the variables the stack needs (documented in .env.example, no default
password, refused when missing) and what keeps the long-running services up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.test_packaging import COMPOSE_REFERENCE, compose_interpolate

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# The services the stack runs (no profile) and that must stay up: all but the one-shot check.
LONG_RUNNING = {"postgres", "driftmon", "prometheus", "alertmanager", "grafana"}
ENV_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$", re.MULTILINE)


def interpolated() -> list[tuple[str, str, str]]:
    """(name, kind, default-or-message) of every ${...} compose interpolates: in the values, not
    the comments; $$ is its escape for a literal $ (the preflight script's shell variables)."""
    return COMPOSE_REFERENCE.findall("\n".join(strings(COMPOSE)).replace("$$", ""))


def interpolate(node, shell: dict[str, str]):
    """The parsed compose file as compose resolves it (then $$ becomes $)."""
    if isinstance(node, dict):
        return {key: interpolate(value, shell) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, shell) for value in node]
    if isinstance(node, str):
        return "$".join(compose_interpolate(part, shell) for part in node.split("$$"))
    return node


def env_example() -> dict[str, str]:
    return dict(ENV_LINE.findall((ROOT / ".env.example").read_text()))


def strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def test_long_running_services_restart_unless_stopped():
    stack = {name for name, service in SERVICES.items() if "profiles" not in service}
    assert stack == LONG_RUNNING | {"preflight"}
    for name in LONG_RUNNING:
        assert SERVICES[name].get("restart") == "unless-stopped", name
    # A one-shot check that restarted would never complete; a demo should not return on every boot.
    assert SERVICES["preflight"]["restart"] == "no"
    assert SERVICES["demo"]["restart"] == "no"


def test_no_default_password_and_no_variable_blocks_the_demo():
    """No made-up password: every variable defaults to empty. And no ${VAR:?...}: compose
    interpolates the whole file whatever the profile, so one would refuse the demo too."""
    references = interpolated()
    assert {name for name, _, _ in references} == {"POSTGRES_PASSWORD", "SOURCE_DATABASE_URL"}
    for name, kind, rest in references:
        assert (kind, rest) == ("-", ""), f"${{{name}:{kind}{rest}}}"
    assert "change-me" not in "\n".join(strings(COMPOSE)) and "change-me" not in (ROOT / ".env.example").read_text()
    # With nothing set, the whole file still interpolates (compose_interpolate fails on a :?),
    # and the password postgres gets is empty, which its image refuses to initialise with.
    resolved = interpolate(COMPOSE, {})
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == ""
    assert "postgresql://driftmon:@postgres" in resolved["services"]["driftmon"]["environment"]["DRIFTMON_DATABASE_URL"]


def test_env_example_names_every_variable_and_sets_no_value():
    names = {name for name, _, _ in interpolated()}
    example = env_example()
    assert set(example) == names, "the variables .env.example documents are the ones compose interpolates"
    assert all(value == "" for value in example.values()), "a shipped value would be a default password"
    text = (ROOT / ".env.example").read_text()
    for name in names:  # each one is explained in a comment right above it
        assert re.search(rf"(?:^#.*\n)+{name}=", text, re.MULTILINE), name


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_env_file_is_ignored_and_not_shipped():
    """.env holds the user's secrets: git ignores it, and the repository ships only the example."""
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT).returncode == 1
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


def preflight(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs preflight's script as its container would: `sh -c SCRIPT`, after compose turns $$
    into $, with only the environment compose gives it."""
    service = SERVICES["preflight"]
    assert service["entrypoint"] == ["sh", "-c"]
    (script,) = service["command"]
    assert set(service["environment"]) == {name for name, _, _ in interpolated()}
    return subprocess.run(["sh", "-c", script.replace("$$", "$")], capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environment})


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_preflight_refuses_a_stack_without_its_variables():
    nothing = preflight({})
    assert nothing.returncode == 1
    assert "POSTGRES_PASSWORD is not set" in nothing.stderr and "SOURCE_DATABASE_URL is not set" in nothing.stderr
    assert ".env.example" in nothing.stderr

    source = "postgresql://reader:pw@warehouse:5432/logs"
    no_password = preflight({"POSTGRES_PASSWORD": "", "SOURCE_DATABASE_URL": source})
    assert no_password.returncode == 1
    assert "POSTGRES_PASSWORD" in no_password.stderr and "SOURCE_DATABASE_URL" not in no_password.stderr
    no_source = preflight({"POSTGRES_PASSWORD": "0123abcd", "SOURCE_DATABASE_URL": ""})
    assert no_source.returncode == 1 and "SOURCE_DATABASE_URL" in no_source.stderr
    # The password is spliced into DRIFTMON_DATABASE_URL: a character a URL reserves would break it.
    for unsafe in ("p@ss", "a/b", "x:y", "with space", "50%"):
        refused = preflight({"POSTGRES_PASSWORD": unsafe, "SOURCE_DATABASE_URL": source})
        assert refused.returncode == 1 and "letters, digits" in refused.stderr, unsafe
    ready = preflight({"POSTGRES_PASSWORD": "9f86d081884c7d65-9a2f.e_~", "SOURCE_DATABASE_URL": source})
    assert (ready.returncode, ready.stderr) == (0, "")


def test_stack_waits_for_preflight():
    """Without the check passing, neither the database nor driftmon starts (so postgres never
    initialises its volume without a password)."""
    for name in ("postgres", "driftmon"):
        assert SERVICES[name]["depends_on"]["preflight"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["driftmon"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def demo_context() -> click.Context:
    """The demo service's command, parsed by driftmon's own CLI: the image's entrypoint is
    `tini -- driftmon`, so compose's command is driftmon's arguments."""
    from driftmon.cli import main

    (entrypoint,) = [item["value"] for item in DockerfileParser(path=str(ROOT / "Dockerfile")).structure
                     if item["instruction"] == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint)[-1] == "driftmon"
    service = SERVICES["demo"]
    assert "entrypoint" not in service
    name, *args = service["command"]
    with main.make_context("driftmon", [name, "--help"], resilient_parsing=True) as group:
        command = main.get_command(group, name)
    assert command is not None, f"driftmon has no command {name!r}"
    return command.make_context(name, list(args))  # unknown options and bad values raise here


def test_demo_profile_runs_the_real_demo_command_reachable_from_outside():
    service = SERVICES["demo"]
    assert service["profiles"] == ["demo"]
    context = demo_context()
    assert context.info_name == "demo"
    # Inside a container 127.0.0.1 is the container alone: a published port needs 0.0.0.0.
    assert context.params["host"] == "0.0.0.0"
    port = context.params["port"]
    assert service["ports"] == [f"{port}:{port}"]
    assert not context.params["no_serve"]
    assert context.params["directory"].startswith("/var/lib/driftmon/")  # the image user's home
    assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    # Self-contained: nothing to set, mount or start first.
    assert not {"depends_on", "volumes", "env_file"} & set(service)
    assert not COMPOSE_REFERENCE.findall(yaml.safe_dump(service))


def test_images_are_pinned_and_current():
    images = {name: service["image"] for name, service in SERVICES.items() if "image" in service}
    assert set(images) == {"preflight", "postgres", "prometheus", "alertmanager", "grafana"}
    for name, image in images.items():
        repository, _, tag = image.partition(":")
        assert re.fullmatch(r"v?\d+(\.\d+)*", tag), f"{name}: {image} is not pinned to a version"
    assert images["preflight"] == images["postgres"]  # no extra pull for the check

    def major(image: str) -> int:
        return int(image.partition(":")[2].lstrip("v").split(".")[0])

    assert images["prometheus"].startswith("prom/prometheus:") and major(images["prometheus"]) >= 3
    assert images["grafana"].startswith("grafana/grafana:") and major(images["grafana"]) >= 12


def test_prometheus_config_uses_nothing_prometheus_3_dropped():
    """Prometheus 3 removed the Alertmanager v1 API and renamed scrape_classic_histograms;
    holt_winters became double_exponential_smoothing (behind a feature flag)."""
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for alertmanager in prometheus["alerting"]["alertmanagers"]:
        assert alertmanager.get("api_version", "v2") == "v2"
    text = "\n".join(strings(prometheus))
    assert "scrape_classic_histograms" not in text
    rules = (ROOT / "deploy" / "prometheus" / "driftmon-rules.yml").read_text()
    assert "holt_winters" not in rules


def test_readme_docker_section_gives_the_commands():
    readme = (ROOT / "README.md").read_text()
    docker = readme[readme.index("## Docker\n"):]
    docker = docker[:docker.index("\n## ", 1)]
    for command in ("docker compose --profile demo up demo", "cp .env.example .env", "docker compose up -d"):
        assert command in docker, command
    for name in {name for name, _, _ in interpolated()}:
        assert name in docker, name
    assert "refuses to start" in docker
