"""helm/lakehouse under GitOps and platform teams' clusters: renders that never differ,
no hook anything waits on, the scheduling and identity values on every pod, startup
probes, Services and budgets that never get in the way, and Helm 3 as released."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from lakehouse_testing.devtools import helm_version

from tests.deploy.conftest import CHART, SCENARIOS, render, render_text, run_helm
from tests.deploy.test_chart import WORKLOADS, component, named, of_kind

pytestmark = pytest.mark.deploy

# Template functions whose output differs between renders or depends on the cluster.
NONDETERMINISTIC = re.compile(
    r"\b(lookup|rand[A-Za-z]*|gen(CA|PrivateKey|SignedCert|SelfSignedCert)\w*|uuidv4|now|"
    r"htpasswd|derivePassword|randBytes)\b"
)


def test_no_template_generates_a_secret_or_asks_the_cluster():
    for template in sorted((CHART / "templates").rglob("*")):
        if template.is_file():
            found = NONDETERMINISTIC.search(template.read_text())
            assert found is None, (template.name, found and found.group(0))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_renders_are_byte_identical(helm_binary, scenario):
    assert render_text(helm_binary, scenario) == render_text(helm_binary, scenario)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nothing_is_a_hook_but_the_test_pod(rendered, scenario):
    """The set-up Jobs are plain Jobs: `--wait`, Flux and Argo CD (PostSync) would wait
    for pods that wait for a post-install hook."""
    hooks = {
        (obj["kind"], component(obj)): obj["metadata"]["annotations"]["helm.sh/hook"]
        for obj in rendered[scenario]
        if "helm.sh/hook" in obj["metadata"].get("annotations", {})
    }
    assert hooks == {("Pod", "test"): "test"}
    jobs = sorted(component(job) for job in of_kind(rendered[scenario], "Job"))
    superset = scenario != "dev"
    assert jobs == (["bootstrap", "superset-init"] if superset else ["bootstrap"])
    for job in of_kind(rendered[scenario], "Job"):
        name = job["metadata"]["name"]
        assert re.fullmatch(rf"lh-lakehouse-{component(job)}-[0-9a-f]{{10}}", name), name


def test_a_job_changes_its_name_with_its_pod_and_only_then(helm_binary):
    """A Job's pod template is immutable: a changed one must be a new Job."""

    def jobs(*extra: str) -> dict[str, str]:
        objects = render(helm_binary, "default", *extra)
        return {component(job): job["metadata"]["name"] for job in of_kind(objects, "Job")}

    before = jobs()
    assert jobs() == before
    assert jobs("--set", "gateway.replicas=3") == before
    changed = jobs("--set", "image.tag=0.1.1")
    assert changed["bootstrap"] != before["bootstrap"]
    assert changed["superset-init"] != before["superset-init"]
    tolerated = jobs("--set", "bootstrap.pod.priorityClassName=high")
    assert tolerated["bootstrap"] != before["bootstrap"]
    assert tolerated["superset-init"] == before["superset-init"]


def pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(component, pod metadata, pod spec) of every Deployment, StatefulSet, Job and Pod."""
    found = []
    for obj in objects:
        if obj["kind"] in (*WORKLOADS, "Job"):
            template = obj["spec"]["template"]
            found.append((component(obj), template["metadata"], template["spec"]))
        elif obj["kind"] == "Pod":
            found.append((component(obj), obj["metadata"], obj["spec"]))
    return found


def test_scheduling_and_identity_values_land_on_every_pod(rendered):
    """ci/scheduling-values.yaml: a node pool's selector and toleration, a ServiceAccount
    with a workload identity, annotations, labels, a priority class and a spread on
    every pod; Trino's workers override the selector, a label and the affinity."""
    objects = rendered["scheduling"]
    accounts = of_kind(objects, "ServiceAccount")
    assert [(a["metadata"]["name"], a["metadata"]["annotations"]) for a in accounts] == [
        (
            "lh-lakehouse",
            {"iam.gke.io/gcp-service-account": "lakehouse@example-project.iam.gserviceaccount.com"},
        )
    ]
    assert accounts[0]["automountServiceAccountToken"] is False
    found = pods(objects)
    assert sorted(name for name, _, _ in found) == sorted(
        ["audit", "bootstrap", "consumers", "gateway", "kafka", "maintain", "minio", "nessie",
         "postgres", "superset", "superset-init", "test", "transform", "trino", "trino-worker"]
    )  # fmt: skip
    toleration = {
        "key": "dedicated",
        "operator": "Equal",
        "value": "lakehouse",
        "effect": "NoSchedule",
    }
    spread = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
    }
    for name, metadata, spec in found:
        worker = name == "trino-worker"
        assert spec["nodeSelector"] == {"pool": "trino-workers" if worker else "lakehouse"}, name
        assert spec["tolerations"] == [toleration], name
        assert spec["serviceAccountName"] == "lh-lakehouse", name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["priorityClassName"] == "lakehouse", name
        assert spec["topologySpreadConstraints"] == [spread], name
        assert metadata["annotations"]["example.com/team"] == "data", name
        cost = "queries" if worker else "analytics"
        assert metadata["labels"]["example.com/cost-center"] == cost, name
        assert metadata["labels"]["app.kubernetes.io/component"] == name, name
        assert ("affinity" in spec) is worker, name
    worker = named(objects, "Deployment", "trino-worker")["spec"]["template"]["spec"]
    term = worker["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_defaults_add_no_scheduling_and_a_plain_service_account(rendered):
    objects = rendered["default"]
    account = of_kind(objects, "ServiceAccount")[0]
    assert (
        account["metadata"]["name"] == "lh-lakehouse" and "annotations" not in account["metadata"]
    )
    for name, _, spec in pods(objects):
        assert spec["serviceAccountName"] == "lh-lakehouse", name
        for key in (
            "nodeSelector",
            "tolerations",
            "affinity",
            "topologySpreadConstraints",
            "priorityClassName",
        ):
            assert key not in spec, (name, key)


def test_a_component_may_run_as_a_service_account_of_its_own(helm_binary):
    objects = render(
        helm_binary, "default", "--set", "serviceAccount.create=false",
        "--set", "trino.coordinator.pod.serviceAccountName=trino-s3",
    )  # fmt: skip
    assert of_kind(objects, "ServiceAccount") == []
    accounts = {name: spec["serviceAccountName"] for name, _, spec in pods(objects)}
    assert accounts.pop("trino") == "trino-s3"
    assert set(accounts.values()) == {"default"}


STARTUP = {
    # Trino's nodes answer HTTPS only (tls.internal): the coordinator on its client port.
    "trino": {"httpGet": {"path": "/v1/info", "port": "https", "scheme": "HTTPS"}},
    "trino-worker": {"httpGet": {"path": "/v1/info", "port": "internal", "scheme": "HTTPS"}},
    "nessie": {"httpGet": {"path": "/q/health/started", "port": "management"}},
    "kafka": {"tcpSocket": {"port": "controller"}},
}
# A JVM gets 5 minutes to start (Kafka 10, recovering its log) before liveness counts.
STARTUP_LIMITS = {"trino": 60, "nessie": 60, "kafka": 120}


@pytest.mark.parametrize("scenario", ["default", "ha"])
def test_the_jvm_servers_have_startup_probes(rendered, scenario):
    """Liveness waits for a JVM's start instead of guessing it with an initial delay."""
    for obj in rendered[scenario]:
        if obj["kind"] not in WORKLOADS or component(obj) not in (*STARTUP, "trino-worker"):
            continue
        server = component(obj).removesuffix("-worker")
        container = obj["spec"]["template"]["spec"]["containers"][0]
        expected = STARTUP[component(obj)] | {
            "periodSeconds": 5,
            "failureThreshold": STARTUP_LIMITS[server],
        }
        assert container["startupProbe"] == expected, obj["metadata"]["name"]
        assert "initialDelaySeconds" not in container["livenessProbe"], obj["metadata"]["name"]


@pytest.mark.parametrize("internal_tls", [True, False])
def test_trinos_internal_port_is_never_on_a_load_balancer(helm_binary, internal_tls):
    objects = render(
        helm_binary, "ha", "--set", "trino.service.type=LoadBalancer",
        "--set", "superset.service.type=LoadBalancer", "--set", "gateway.service.type=NodePort",
        "--set", f"tls.internal={str(internal_tls).lower()}",
    )  # fmt: skip
    services = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "Service")}
    assert services["lh-lakehouse-trino"]["type"] == "LoadBalancer"
    assert [p["port"] for p in services["lh-lakehouse-trino"]["ports"]] == [8080]
    internal = services["lh-lakehouse-trino-internal"]
    properties = named(objects, "ConfigMap", "trino")["data"]["worker.properties"]
    if internal_tls:  # headless: the coordinator's own address, on its HTTPS port
        assert internal["clusterIP"] == "None" and "type" not in internal
        assert [p["port"] for p in internal["ports"]] == [8080]
        discovery = "discovery.uri=https://lh-lakehouse-trino-internal:8080"
    else:
        assert internal["type"] == "ClusterIP"
        assert [p["port"] for p in internal["ports"]] == [8081]
        discovery = "discovery.uri=http://lh-lakehouse-trino-internal:8081"
    for name, spec in services.items():
        if spec.get("type") in ("LoadBalancer", "NodePort"):
            assert 8081 not in [p["port"] for p in spec["ports"]], name
    assert discovery in properties.splitlines()


def replicas_of(objects: list[dict[str, Any]], selector: dict[str, str]) -> int:
    """The fewest replicas of the workload a budget selects (an autoscaler's minimum)."""
    workload = next(
        o for o in objects
        if o["kind"] in WORKLOADS and o["spec"]["selector"]["matchLabels"] == selector
    )  # fmt: skip
    scalers = [
        h for h in of_kind(objects, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
    ]  # fmt: skip
    return scalers[0]["spec"]["minReplicas"] if scalers else workload["spec"]["replicas"]


BUDGET_CASES = {
    "default": ([], ["gateway"]),
    "one-gateway": (["--set", "gateway.autoscaling.enabled=false,gateway.replicas=1"], []),
    "autoscaled-from-one": (["--set", "gateway.autoscaling.minReplicas=1"], []),
    "ha": (["-f", str(CHART / "ci" / "ha-values.yaml")],
           ["gateway", "kafka", "nessie", "trino-worker"]),
    "single-replicas": (["--set", "nessie.replicas=1,trino.worker.replicas=1"], ["gateway"]),
}  # fmt: skip


@pytest.mark.parametrize("case", BUDGET_CASES)
def test_no_budget_blocks_the_drain_of_a_node(helm_binary, case):
    """No budget for a single replica, and every budget lets one pod go."""
    extra, expected = BUDGET_CASES[case]
    objects = render(helm_binary, "default", *extra)
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert sorted(component(b) for b in budgets) == expected
    for budget in budgets:
        spec = budget["spec"]
        replicas = replicas_of(objects, spec["selector"]["matchLabels"])
        assert replicas > 1, budget["metadata"]["name"]
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] >= 1, budget["metadata"]["name"]
        else:
            assert spec["minAvailable"] < replicas, budget["metadata"]["name"]


# Values whose content is a Kubernetes object's or a map's, checked by their own schema.
FREE_FORM = ("resources", "ca", "pod", "podSecurityContext", "containerSecurityContext")


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of a values document down to documented keys (maps that hold
    free-form content, such as resources, stop at their own key)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in FREE_FORM:
            paths += leaf_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def test_every_value_is_in_the_schema_which_refuses_others():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    for path in leaf_paths(values):
        node = schema
        for key in path.split("."):
            node = resolve(node)
            assert node.get("additionalProperties") is False, (path, key)
            assert key in node["properties"], path
            node = node["properties"][key]


def test_helm3_reports_the_kubernetes_version_its_release_does(helm_binary, tmp_path: Path):
    """Built as upstream builds its releases: Helm 3's default Kubernetes version comes from
    its client-go (v0.37: 1.37), not the in-source 1.20 the chart's kubeVersion refuses."""
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "v.yaml").write_text(
        "kind: Probe\nversion: {{ .Capabilities.KubeVersion.Version }}\n"
    )
    result = run_helm(helm_binary, "template", str(chart))
    assert result.returncode == 0, result.stderr
    kube = yaml.safe_load(result.stdout)["version"]
    version = run_helm(helm_binary, "version", "--template", "{{ .Version }}").stdout
    if helm_binary.parent.name.startswith("helm-v3"):
        assert version == helm_version(3)
        assert kube == "v1.37.0"
    else:
        assert version == helm_version(4)
        assert re.fullmatch(r"v1\.(\d+)\.\d+", kube) and int(kube.split(".")[1]) >= 27
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["kubeVersion"] == ">=1.27.0-0"
