"""Turn prometheus-operator CRD manifests into the JSON schemas committed beside this file.

Usage (from a checkout of prometheus-operator/prometheus-operator at the tag named in README.md):

    python tests/schemas/prometheus-operator/crd_to_jsonschema.py \\
        PATH/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml

Each CRD's served v1 ``openAPIV3Schema`` becomes a draft-07 JSON schema, made strict as the API
server's strict field validation is: an object that lists its ``properties`` and says nothing else
about extra keys rejects them (a misspelt key fails here as ``kubectl apply --validate=strict``
would), and ``apiVersion``/``kind`` must name the resource. ``x-kubernetes-*`` keys are kept; JSON
Schema validators ignore them. The API server matches ``pattern`` with Go's regexp, which takes an
inline ``(?i)`` anywhere; ECMA-262 (JSON Schema's dialect) takes none, so such a pattern is spelt
out with a bracket per letter (``(?i)warn`` becomes ``[wW][aA][rR][nN]``), meaning the same.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def ecma_pattern(pattern: str) -> str:
    """A Go pattern with an inline (?i) as ECMA-262 writes it (only letters outside brackets occur)."""
    if "(?i)" not in pattern:
        return pattern
    assert "[" not in pattern and "\\" not in pattern, f"spell {pattern!r} out by hand"
    return re.sub(r"[A-Za-z]", lambda m: f"[{m[0].lower()}{m[0].upper()}]", pattern.replace("(?i)", ""))


def strict(node: Any) -> Any:
    """Close every object schema that lists its properties (recursively)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: strict(value) for key, value in node.items()}
    if isinstance(closed.get("pattern"), str):
        closed["pattern"] = ecma_pattern(closed["pattern"])
    if ("properties" in closed and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")):
        closed["additionalProperties"] = False
    return closed


def convert(crd: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v["name"] == "v1" and v.get("served", True))
    schema = strict(version["schema"]["openAPIV3Schema"])
    kind = spec["names"]["kind"]
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{spec['group']}/v1"]}
    schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
    schema.setdefault("required", [])
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key not in schema["required"]:
            schema["required"].append(key)
    operator = crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version", "?")
    schema = {"$schema": "http://json-schema.org/draft-07/schema#",
              "title": f"{kind} ({spec['group']}/v1), prometheus-operator {operator}", **schema}
    return f"{kind.lower()}-monitoring-v1.json", schema


def main(paths: list[str]) -> None:
    for path in paths:
        name, schema = convert(yaml.safe_load(Path(path).read_text()))
        (HERE / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
