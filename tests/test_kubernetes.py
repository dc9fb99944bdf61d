"""The Kubernetes package (deploy/kubernetes/), checked offline: no cluster runs here.

``kubectl kustomize`` renders the kustomize base (the tested artefact) and the example overlay
that a team would write. Every rendered document must parse; the core kinds validate against
Kubernetes' own OpenAPI schemas (``kubernetes-validate``, strict: an unknown field fails) and the
ServiceMonitor, PodMonitor and PrometheusRule against the prometheus-operator CRD schemas
committed under tests/schemas/prometheus-operator/ (``check-jsonschema``). Then the wiring that
a cluster would only show by failing quietly: the ServiceMonitor selects the Service and names its
port, the probes hit /healthz and /readyz on it, the `job` label is the one the rules select, the
rules and dashboard are the repository's own (and pass ``promtool``), the pods run unprivileged,
and the database URL comes from a Secret, never a ConfigMap.

The Helm chart must render the same objects. Rendering needs ``helm``, so those tests skip
without it; its values schema, its copies of the rules and dashboard and Chart.yaml are checked
anyway. A cluster test would add what none of this can: that the image starts under these
security settings, that the operator accepts the objects and Prometheus scrapes the pods, that
the sidecar loads the dashboard, and that the init container migrates a real PostgreSQL.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from driftmon.config_file import parse_config, read_yaml
from driftmon.serving.daemon import ABANDON_WAIT_SECONDS
from tests.test_alerts import PROMTOOL, needs_promtool

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
EXAMPLE = KUBERNETES / "examples" / "production"
CHART = KUBERNETES / "helm" / "driftmon"
RULES = ROOT / "deploy" / "prometheus" / "driftmon-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftmon.json"
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "prometheus-operator"

KUBERNETES_VERSION = "1.32"  # among the versions kubernetes-validate ships (1.25 to 1.37 in its 1.37.0)
MONITORING_GROUP = "monitoring.coreos.com/v1"
CONFIG_PATH = "/etc/driftmon/config.yaml"
SECRET = "driftmon-database"
RELEASE_LABEL = "kube-prometheus-stack"

KUBECTL = shutil.which("kubectl")
HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm is not installed: the chart's render tests skip (its values schema, copies and "
                         "Chart.yaml are checked without it; the kustomize base renders the same objects)")

Doc = dict[str, Any]


# --- rendering ----------------------------------------------------------------------


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


@functools.cache
def kustomize(folder: Path) -> tuple[Doc, ...]:
    """The documents ``kubectl kustomize`` renders from a folder (offline)."""
    assert KUBECTL, "kubectl is needed to render the kustomize base (`kubectl kustomize` works offline)"
    done = _run([KUBECTL, "kustomize", str(folder)])
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def helm_template(*args: str) -> subprocess.CompletedProcess:
    return _run([HELM, "template", "driftmon", str(CHART), *args])


@functools.cache
def helm_render(*args: str) -> tuple[Doc, ...]:
    done = helm_template(*args)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def only(docs: tuple[Doc, ...], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def configmap(docs: tuple[Doc, ...], key: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == "ConfigMap" and key in doc.get("data", {})]
    assert len(found) == 1, f"expected one ConfigMap holding {key}"
    return found[0]


def pod_spec(docs: tuple[Doc, ...]) -> Doc:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def containers(docs: tuple[Doc, ...]) -> list[Doc]:
    spec = pod_spec(docs)
    return spec.get("initContainers", []) + spec["containers"]


def main_container(docs: tuple[Doc, ...]) -> Doc:
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "driftmon"]
    return container


RENDERINGS = {"base": lambda: kustomize(BASE), "example overlay": lambda: kustomize(EXAMPLE)}
rendering = pytest.mark.parametrize("render", list(RENDERINGS.values()), ids=list(RENDERINGS))


# --- validation ---------------------------------------------------------------------


def validate_core(docs: tuple[Doc, ...]) -> None:
    for doc in docs:
        if doc["apiVersion"] != MONITORING_GROUP:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def check_jsonschema(tmp_path: Path, schema: str, docs: list[Doc]) -> subprocess.CompletedProcess:
    """Run check-jsonschema on the documents against a committed CRD schema."""
    files = []
    for number, doc in enumerate(docs):
        path = tmp_path / f"{doc['kind'].lower()}-{number}.json"
        path.write_text(json.dumps(doc))
        files.append(str(path))
    return _run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(CRD_SCHEMAS / schema), *files])


def validate_monitoring(tmp_path: Path, docs: tuple[Doc, ...]) -> None:
    by_kind: dict[str, list[Doc]] = {}
    for doc in docs:
        if doc["apiVersion"] == MONITORING_GROUP:
            by_kind.setdefault(doc["kind"], []).append(doc)
    assert by_kind, "no prometheus-operator object rendered"
    for kind, found in by_kind.items():
        done = check_jsonschema(tmp_path, f"{kind.lower()}-monitoring-v1.json", found)
        assert done.returncode == 0, done.stdout + done.stderr


# --- the copies of the rules and the dashboard --------------------------------------


def load_sync():
    spec = importlib.util.spec_from_file_location("driftmon_kubernetes_sync", KUBERNETES / "sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copies_of_the_rules_and_dashboard_are_byte_identical_to_their_sources():
    stale = [str(path.relative_to(ROOT)) for path in load_sync().stale()]
    assert not stale, (f"{', '.join(stale)} differ from deploy/prometheus/driftmon-rules.yml or "
                       "deploy/grafana/dashboards/driftmon.json: run `python deploy/kubernetes/sync.py` and commit")


def test_a_changed_source_makes_its_copies_stale(tmp_path, monkeypatch):
    sync = load_sync()
    changed = tmp_path / "driftmon-rules.yml"
    changed.write_text(RULES.read_text().replace("for: 15m", "for: 16m", 1))
    monkeypatch.setattr(sync, "RULES", changed)
    assert set(sync.stale()) == {sync.BASE / "prometheusrule.yaml", sync.CHART / "files" / "driftmon-rules.yml"}


# --- what kustomize renders ---------------------------------------------------------


def test_the_base_renders_the_package():
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in kustomize(BASE))
    config = [name for kind, name in kinds if name.startswith("driftmon-config-")]
    assert len(config) == 1, kinds  # a content hash: a config change rolls the pods
    assert kinds == sorted([
        ("ConfigMap", config[0]), ("ConfigMap", "driftmon-dashboard"), ("Deployment", "driftmon"),
        ("PodDisruptionBudget", "driftmon"), ("PrometheusRule", "driftmon"), ("Service", "driftmon"),
        ("ServiceAccount", "driftmon"), ("ServiceMonitor", "driftmon")])


@rendering
def test_every_document_parses_and_core_kinds_validate(render):
    docs = render()
    for doc in docs:
        assert isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
    validate_core(docs)


def test_the_kubernetes_schemas_reject_a_misspelt_field():
    deployment = copy.deepcopy(only(kustomize(BASE), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@rendering
def test_monitoring_objects_validate_against_the_prometheus_operator_crds(render, tmp_path):
    validate_monitoring(tmp_path, render())


def test_the_crd_schemas_reject_a_broken_servicemonitor(tmp_path):
    monitor = copy.deepcopy(only(kustomize(BASE), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["prot"] = monitor["spec"]["endpoints"][0].pop("port")
    monitor["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    done = check_jsonschema(tmp_path, "servicemonitor-monitoring-v1.json", [monitor])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "prot" in done.stdout and "thirty seconds" in done.stdout, done.stdout


# --- the wiring ---------------------------------------------------------------------


def service_port(docs: tuple[Doc, ...]) -> Doc:
    (port,) = only(docs, "Service")["spec"]["ports"]
    return port


@rendering
def test_the_servicemonitor_selects_the_service_and_names_its_port(render):
    docs = render()
    monitor, service = only(docs, "ServiceMonitor"), only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in monitor["spec"]  # the ServiceMonitor's own namespace
    assert monitor["metadata"].get("namespace") == service["metadata"].get("namespace")
    port = service_port(docs)
    assert port == {"name": "http", "port": 9847, "targetPort": "http", "protocol": "TCP"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"


@rendering
def test_the_service_reaches_the_pods_on_the_configured_port(render):
    docs = render()
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert only(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert main_container(docs)["ports"] == [{"name": "http", "containerPort": 9847, "protocol": "TCP"}]
    config = yaml.safe_load(configmap(docs, "config.yaml")["data"]["config.yaml"])
    assert config.get("server", {}).get("port", 9847) == 9847


@rendering
def test_probes_hit_healthz_and_readyz_on_the_http_port(render):
    container = main_container(render())
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def rules_job() -> str:
    jobs = set(re.findall(r'\bjob="([^"]+)"', RULES.read_text()))
    assert len(jobs) == 1, jobs
    return jobs.pop()


@rendering
def test_the_job_label_is_the_one_the_rules_select(render):
    # ServiceMonitor targets are labelled job=<the value of the Service label named by jobLabel>.
    docs = render()
    monitor = only(docs, "ServiceMonitor")
    assert only(docs, "Service")["metadata"]["labels"][monitor["spec"]["jobLabel"]] == rules_job() == "driftmon"


@rendering
def test_replicas_merge_into_one_alert(render):
    # The rules aggregate replicas away with `without (instance)`; prometheus-operator also labels
    # each target with its pod and container, which would keep the replicas' series apart.
    assert "max without (instance)" in RULES.read_text()
    (endpoint,) = only(render(), "ServiceMonitor")["spec"]["endpoints"]
    dropped = [r["regex"] for r in endpoint.get("relabelings", []) if r["action"] == "labeldrop"]
    assert len(dropped) == 1
    for label in ("pod", "container"):
        assert re.fullmatch(dropped[0], label)
    for label in ("job", "instance", "namespace", "service", "monitor", "feature"):
        assert not re.fullmatch(dropped[0], label)


def test_the_prometheusrule_holds_the_rules_file():
    rule = only(kustomize(BASE), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["spec"]["groups"]


@needs_promtool
def test_the_extracted_rules_pass_promtool(tmp_path):
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": only(kustomize(BASE), "PrometheusRule")["spec"]["groups"]}))
    done = _run([PROMTOOL, "check", "rules", str(extracted)])
    assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_dashboard_configmap_holds_the_provisioned_dashboard():
    dashboard = configmap(kustomize(BASE), "driftmon.json")
    assert dashboard["data"]["driftmon.json"] == DASHBOARD.read_text()
    assert json.loads(dashboard["data"]["driftmon.json"]) == json.loads(DASHBOARD.read_text())
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_monitoring_objects_carry_the_release_label_and_an_overlay_changes_it():
    for folder, release in ((BASE, RELEASE_LABEL), (EXAMPLE, "monitoring")):
        docs = kustomize(folder)
        labelled = [only(docs, "ServiceMonitor"), only(docs, "PrometheusRule"), configmap(docs, "driftmon.json")]
        assert [doc["metadata"]["labels"]["release"] for doc in labelled] == [release] * 3


def test_the_networkpolicy_is_optional_and_admits_prometheus_on_the_http_port():
    assert not [doc for doc in kustomize(BASE) if doc["kind"] == "NetworkPolicy"]
    docs = kustomize(EXAMPLE)
    policy = only(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(docs).items()
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def pod_labels(docs: tuple[Doc, ...]) -> dict[str, str]:
    return only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


@rendering
def test_the_disruption_budget_covers_the_pods(render):
    docs = render()
    budget = only(docs, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert budget["maxUnavailable"] == 1


# --- the pods -----------------------------------------------------------------------


def dockerfile_user() -> int:
    (user,) = re.findall(r"^USER\s+(\d+)\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(user)


@rendering
def test_pods_run_unprivileged_on_a_read_only_root(render):
    docs = render()
    spec = pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == dockerfile_user()
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    writable = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    for container in containers(docs):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts["/tmp"] in writable
        env = {var["name"]: var.get("value") for var in container["env"]}
        assert env["MPLCONFIGDIR"].startswith("/tmp/")  # matplotlib's cache, off the read-only root


@rendering
def test_replicas_share_postgresql_and_migrate_first(render):
    docs = render()
    assert only(docs, "Deployment")["spec"]["replicas"] >= 2
    spec = pod_spec(docs)
    (migration,) = spec["initContainers"]
    assert migration["args"] == ["db", "upgrade", "--config", CONFIG_PATH]
    assert main_container(docs)["args"] == ["serve", "--config", CONFIG_PATH]
    assert migration["image"] == main_container(docs)["image"]
    config_volume = {v["name"]: v for v in spec["volumes"]}
    for container in containers(docs):
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent)]
        assert config_volume[mount["name"]]["configMap"]["name"] == configmap(docs, "config.yaml")["metadata"]["name"]


@rendering
def test_termination_outlasts_driftmons_shutdown(render):
    docs = render()
    config = driftmon_config(docs)
    grace = config.server.shutdown_grace.total_seconds() + ABANDON_WAIT_SECONDS
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > grace


def driftmon_config(docs: tuple[Doc, ...]):
    text = configmap(docs, "config.yaml")["data"]["config.yaml"]
    environ = {"DRIFTMON_DATABASE_URL": "postgresql://driftmon:pw@db:5432/driftmon",
               "SOURCE_DATABASE_URL": "postgresql://reader:pw@warehouse:5432/log"}
    return parse_config(read_yaml(text), environ=environ)


@rendering
def test_the_configmap_holds_a_valid_driftmon_config(render):
    config = driftmon_config(render())
    assert config.monitors


URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]*@")


@rendering
def test_the_database_url_comes_from_a_secret_and_never_a_configmap(render):
    docs = render()
    assert not [doc for doc in docs if doc["kind"] == "Secret"]  # the user creates it
    for container in containers(docs):
        (url,) = [var for var in container["env"] if var["name"] == "DRIFTMON_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "url"}, container["name"]
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for text in doc["data"].values():
                assert not URL_WITH_CREDENTIALS.search(text), doc["metadata"]["name"]
    config = yaml.safe_load(configmap(docs, "config.yaml")["data"]["config.yaml"])
    assert "database" not in config


def test_the_example_secret_is_in_no_kustomization():
    example = KUBERNETES / "examples" / "database-secret.example.yaml"
    assert yaml.safe_load(example.read_text())["kind"] == "Secret"
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        assert example.name not in kustomization.read_text(), kustomization


# --- the Helm chart, offline --------------------------------------------------------


def chart_values() -> Doc:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def values_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_chart_yaml_is_a_helm_3_chart_of_this_driftmon():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "driftmon" and chart["type"] == "application"
    assert chart["appVersion"] == project["version"]


def test_values_validate_against_the_values_schema():
    values_validator().validate(chart_values())


@pytest.mark.parametrize("change", [
    {"database": {"url": "postgresql://driftmon:pw@db/driftmon"}},
    {"config": {"database": {"url": "sqlite:///driftmon.db"}}},
    {"replicaCount": "two"},
    {"monitoring": {"relase": "x"}},
], ids=["URL with credentials", "URL in the config", "replicas not a number", "misspelt key"])
def test_the_values_schema_rejects(change):
    values = chart_values()
    for key, value in change.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    assert list(values_validator().iter_errors(values))


def test_the_chart_defaults_match_the_base():
    values, docs = chart_values(), kustomize(BASE)
    spec, container = pod_spec(docs), main_container(docs)
    assert values["config"] == yaml.safe_load((BASE / "config.yaml").read_text())
    assert values["replicaCount"] == only(docs, "Deployment")["spec"]["replicas"]
    assert values["podSecurityContext"] == spec["securityContext"]
    assert values["securityContext"] == container["securityContext"]
    assert values["resources"] == container["resources"]
    assert values["terminationGracePeriodSeconds"] == spec["terminationGracePeriodSeconds"]
    assert values["monitoring"]["release"] == RELEASE_LABEL
    assert f"{values['image']['repository']}:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}" \
        == container["image"]


def test_the_chart_guards_sqlite_replicas_in_its_templates():
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    guard = re.search(r'if and \(include "driftmon\.sqlite" \.\) \(gt \(int \.Values\.replicaCount\) 1\) -}}\s*'
                      r'{{- fail ', helpers)
    assert guard, "the fail guard for replicaCount > 1 with SQLite is gone from _helpers.tpl"
    assert (CHART / "templates" / "deployment.yaml").read_text().startswith('{{- include "driftmon.validate" . }}')


# --- the Helm chart, rendered (needs helm) ------------------------------------------


def comparable(doc: Doc) -> Doc:
    """A rendered object without what differs by design between kustomize and Helm."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("labels", None)
    doc["metadata"].pop("annotations", None)
    if doc["metadata"]["name"].startswith("driftmon-config"):
        doc["metadata"]["name"] = "driftmon-config"
    if doc["kind"] == "Deployment":
        doc["spec"]["template"]["metadata"].pop("annotations", None)  # Helm's config checksum
        doc["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "driftmon-config"
    if doc["kind"] == "ConfigMap":
        doc["data"] = {key: (json.loads if key.endswith(".json") else yaml.safe_load)(value)
                       for key, value in doc["data"].items()}
    return doc


@needs_helm
def test_helm_renders_the_same_objects_as_kustomize(tmp_path):
    helm, base = helm_render(), kustomize(BASE)
    by_name = [{(doc["kind"], doc["metadata"]["name"]): doc for doc in map(comparable, docs)} for docs in (helm, base)]
    assert by_name[0].keys() == by_name[1].keys()
    for key, doc in by_name[0].items():
        assert doc == by_name[1][key], key
    validate_core(helm)
    validate_monitoring(tmp_path, helm)
    for doc in helm:
        if doc["apiVersion"] == MONITORING_GROUP or "grafana_dashboard" in doc["metadata"]["labels"]:
            assert doc["metadata"]["labels"]["release"] == RELEASE_LABEL


@needs_helm
@pytest.mark.parametrize("values", ["", "sqlite-values.yaml", "podmonitor-values.yaml"])
def test_helm_lint_passes_strict(values):
    args = ["-f", str(CHART / "ci" / values)] if values else []
    done = _run([HELM, "lint", "--strict", str(CHART), *args])
    assert done.returncode == 0, done.stdout + done.stderr


@needs_helm
def test_helm_refuses_replicas_with_sqlite():
    done = helm_template("--set", "database.url=sqlite:////var/lib/driftmon/driftmon.db")
    assert done.returncode != 0
    assert "SQLite allows one driftmon daemon per database file" in done.stderr, done.stderr


@needs_helm
def test_helm_renders_one_sqlite_daemon_on_a_volume(tmp_path):
    docs = helm_render("-f", str(CHART / "ci" / "sqlite-values.yaml"))
    validate_core(docs)
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = only(docs, "PersistentVolumeClaim")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
    for container in containers(docs):
        assert {"name": "data", "mountPath": "/var/lib/driftmon"} in container["volumeMounts"]


@needs_helm
@pytest.mark.parametrize(("values", "said"), [
    (["--set", "database.existingSecret="], "database.existingSecret: name the Secret"),
    (["--set", "database.url=postgresql://driftmon:pw@db/driftmon"], "database.url"),
    (["--set", "monitoring.podMonitor.enabled=true"], "enable serviceMonitor or podMonitor, not both"),
    (["--set-string", "config.database.url=sqlite:///x.db"], "config.database"),
], ids=["no database", "URL with credentials", "two monitors", "URL in the config"])
def test_helm_refuses_what_cannot_work(values, said):
    done = helm_template(*values)
    assert done.returncode != 0 and said in done.stderr, done.stderr


@needs_helm
def test_helm_podmonitor_networkpolicy_and_release_options(tmp_path):
    docs = helm_render("-f", str(CHART / "ci" / "podmonitor-values.yaml"))
    validate_core(docs)
    validate_monitoring(tmp_path, docs)
    assert not [doc for doc in docs if doc["kind"] == "ServiceMonitor"]
    monitor = only(docs, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pod_labels(docs)[monitor["spec"]["jobLabel"]] == rules_job()
    assert only(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    labelled = [monitor, only(docs, "PrometheusRule"), configmap(docs, "driftmon.json")]
    assert [doc["metadata"]["labels"]["release"] for doc in labelled] == ["monitoring"] * 3
