"""The configuration file: read, interpolated, validated, with every error at its key path.

Loading has no side effects: it reads YAML (refusing duplicate keys, alias
bombs and documents nested too deep), interpolates ``${ENV_VAR}``, applies the
``DRIFTMON_DATABASE_URL`` override, and validates the models of
driftmon/config.py. Every error names the key path it concerns
(``monitors[1].features[0].bins``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from driftmon import limits
from driftmon.config import (
    Config,
    MonitorThresholds,
    Schedule,
    Thresholds,
    format_duration,
    longest_interval,
    merge_thresholds,
)
from driftmon.errors import ConfigError

DATABASE_URL_ENV = "DRIFTMON_DATABASE_URL"
CONFIG_PATH_ENV = "DRIFTMON_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_key_path(location: tuple[str | int, ...]) -> str:
    """``("monitors", 1, "features", 0, "bins")`` → ``monitors[1].features[0].bins``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def interpolate_env(node: Any, environ: dict[str, str], location: tuple = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the YAML tree."""
    if isinstance(node, dict):
        return {k: interpolate_env(v, environ, (*location, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_env(v, environ, (*location, i)) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{format_key_path(location)}: environment variable {name} is not set"
        )

    return _ENV_REFERENCE.sub(substitute, node)


def parse_config(raw: Any, environ: dict[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document; raises ConfigError naming key paths."""
    environ = dict(os.environ) if environ is None else environ
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(top level): the configuration must be a mapping of keys")
    override = environ.get(DATABASE_URL_ENV)
    if override and isinstance(raw.get("database"), dict):
        # The override replaces the key whole: `url: ${DB_URL}` with DB_URL unset is no error then.
        raw = {**raw, "database": {k: v for k, v in raw["database"].items() if k != "url"}}
    raw = interpolate_env(raw, environ)
    if override:
        raw = {**raw, "database": {**(raw.get("database") or {}), "url": override}}
    problems: list[str] = []
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems, config = _describe_errors(exc), None
    problems += _inherited_threshold_problems(raw) + _duplicate_monitor_names(raw)
    if config is not None:
        problems += _catch_up_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _inherited_threshold_problems(raw: dict) -> list[str]:
    """warning ≤ critical must also hold once a monitor's overrides meet the defaults.

    Works on the raw document so that it is reported alongside any other error;
    parts that fail their own validation are already reported and skipped here.
    """
    try:
        defaults = Thresholds.model_validate((raw.get("defaults") or {}).get("thresholds") or {})
    except (ValidationError, AttributeError):
        return []
    monitors = raw.get("monitors")
    problems = []
    for index, monitor in enumerate(monitors if isinstance(monitors, list) else []):
        path = f"monitors[{index}].thresholds"
        try:
            written = MonitorThresholds.model_validate(monitor.get("thresholds") or {})
        except (ValidationError, AttributeError):
            continue
        try:
            thresholds = merge_thresholds(defaults, written)
        except ValidationError as exc:
            problems.append(f"{path}: {_first_message(exc)}")
            continue
        for column, override in written.per_feature.items():
            try:
                merge_thresholds(thresholds, override)
            except ValidationError as exc:
                problems.append(f"{path}.per_feature.{column}: {_first_message(exc)}")
    return problems


def _catch_up_problems(config: Config) -> list[str]:
    """``catch_up`` windows reach back at most 1000 years (driftmon/limits.py).

    The daemon subtracts catch_up intervals from now: ``every: 100w`` with
    ``catch_up: 10000`` passed check-config and then crashed serve with
    OverflowError. Said once at ``defaults.catch_up`` when the defaults alone
    reach too far, else at each monitor whose own settings do.
    """
    defaults = config.defaults
    problem = _catch_up_problem(defaults.schedule, defaults.catch_up)
    problems = [f"defaults.catch_up: {problem}"] if problem else []
    for index, monitor in enumerate(config.monitors):
        if monitor.schedule is None and monitor.catch_up is None:
            continue  # the defaults' own, checked above
        problem = _catch_up_problem(monitor.schedule or defaults.schedule, monitor.catch_up or defaults.catch_up)
        if problem:
            problems.append(f"monitors[{index}].catch_up: {problem}")
    return problems


def _catch_up_problem(schedule: Schedule, catch_up: int) -> str | None:
    interval = longest_interval(schedule)
    if interval * catch_up <= limits.MAX_CATCH_UP_SPAN:
        return None
    what = f"every {format_duration(interval)}" if schedule.every else f"up to {interval.days} days apart"
    return (f"{catch_up} windows {what} reach back {interval * catch_up / timedelta(days=365.25):,.0f} years: "
            f"catch_up × the schedule's interval must be at most 1000 years")


def _duplicate_monitor_names(raw: dict) -> list[str]:
    monitors = raw.get("monitors")
    seen: dict[str, int] = {}
    problems = []
    for index, monitor in enumerate(monitors if isinstance(monitors, list) else []):
        name = monitor.get("name") if isinstance(monitor, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(f"monitors[{index}].name: {name!r} is already the name of monitors[{seen[name]}]")
        else:
            seen[name] = index
    return problems


def _first_message(exc: ValidationError) -> str:
    return exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read and validate the config file (``--config``, else ``$DRIFTMON_CONFIG``, else ``config.yaml``)."""
    environ = dict(os.environ) if environ is None else environ
    path = Path(path or environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}") from None
    return parse_config(read_yaml(text, str(path)), environ)


# A config of 2,000 monitors with 24 columns each (what one daemon sustains on a 1-minute
# schedule: bench/README.md) is about 200,000 values; an alias bomb reaches millions at once.
MAX_CONFIG_VALUES = 2_000_000
# The deepest key a config has is 5 levels down (monitors[0].thresholds.per_feature.x.warning).
MAX_CONFIG_DEPTH = 32
# No setting takes a number of more digits (a 64-bit integer has 19); Python refuses to
# read one of over 4,300 (ValueError from inside the YAML loader).
MAX_NUMBER_DIGITS = 100
_YAML_INT = "tag:yaml.org,2002:int"


def read_yaml(text: str, name: str = "the configuration") -> Any:
    """Parse YAML, refusing duplicate keys and documents that aliases blow up.

    YAML aliases share nodes, so a few hundred bytes can stand for billions of
    values once expanded (and ``${ENV}`` interpolation expands them). The node
    graph is walked first, counting values as if expanded, with a bound. Nesting
    is bounded too, before the (recursive) composer runs: ``[[[[...]]]]`` 5,000
    deep raised RecursionError from it.
    """
    try:
        _check_depth(text, name)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name} is not valid YAML: {exc}") from exc
    if root is not None:
        _check_nodes(root, name)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name} is not valid YAML: {exc}") from exc


def _check_depth(text: str, name: str) -> None:
    """Refuse collections nested more than MAX_CONFIG_DEPTH deep, from the parser's events.

    The parser keeps its own stack (no recursion), so it reads any depth safely.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"{name}: line {event.start_mark.line + 1}: lists and mappings nested more "
                                  f"than {MAX_CONFIG_DEPTH} deep; no setting is")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_nodes(root: yaml.Node, name: str) -> None:
    seen = 0
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    while stack:
        node, location = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(f"{name}: more than {MAX_CONFIG_VALUES} values once its aliases are "
                              f"expanded (a YAML alias bomb?)")
        if len(location) > MAX_CONFIG_DEPTH:  # aliases of aliases nest without the text doing so
            raise ConfigError(f"{format_key_path(location[:3])}...: nested more than "
                              f"{MAX_CONFIG_DEPTH} deep once its aliases are expanded; no setting is")
        _check_number(node, location)
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key, value in node.value:
                _check_number(key, location)
                label = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line + 1)
                if label in first:
                    raise ConfigError(f"{format_key_path((*location, label))}: duplicate key (lines "
                                      f"{first[label] + 1} and {key.start_mark.line + 1})")
                first[label] = key.start_mark.line
                stack.append((value, (*location, label)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*location, i)) for i, item in enumerate(node.value))


def _check_number(node: yaml.Node, location: tuple) -> None:
    """Refuse an integer of more than MAX_NUMBER_DIGITS characters, naming where it is."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _YAML_INT and len(node.value) > MAX_NUMBER_DIGITS:
        raise ConfigError(f"{format_key_path(location)}: a number of {len(node.value)} digits (line "
                          f"{node.start_mark.line + 1}); no setting takes one of more than {MAX_NUMBER_DIGITS}")


def _describe_errors(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        location = _strip_union_tags(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{format_key_path(location)}: {message}")
    return problems


_UNION_TAGS = {"events", "histograms", "rolling", "fixed", "pseudocount", "epsilon"}
_UNION_PARENTS = {"source", "reference", "smoothing"}


def _strip_union_tags(location: tuple) -> tuple:
    # pydantic puts the discriminator's value into the location of tagged-union
    # errors (source.events.table); the user wrote source.table.
    return tuple(
        part
        for index, part in enumerate(location)
        if not (part in _UNION_TAGS and index and location[index - 1] in _UNION_PARENTS)
    )
