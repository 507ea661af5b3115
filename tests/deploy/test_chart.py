"""helm/lakehouse with Helm 3 and Helm 4: lint, the rendered scenarios validated against
two Kubernetes versions' schemas, and what platform teams rely on in the rendered
objects. tests/deploy/test_chart_*.py check the rest (GitOps, managed services,
scheduling, a real API server)."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest

from lakehouse.config import default_settings
from lakehouse.deployment import component_of, facts, secret_keys
from tests.deploy.conftest import CHART, SCENARIOS, native_services, render, run_helm

EXTERNAL = ("external", "external-irsa")

pytestmark = pytest.mark.deploy

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
WORKLOADS = ("Deployment", "StatefulSet")
FACTS = facts(default_settings())


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in of_kind(objects, kind) if component(o) == name]
    assert len(matches) == 1, (kind, name, len(matches))
    return matches[0]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload, Job and Pod."""
    specs = []
    for obj in objects:
        if obj["kind"] in (*WORKLOADS, "Job"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_the_chart_lints_strictly(helm_binary):
    result = run_helm(helm_binary, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    for scenario in SCENARIOS[1:]:
        values = CHART / "ci" / f"{scenario}-values.yaml"
        result = run_helm(helm_binary, "lint", "--strict", str(CHART), "-f", str(values))
        assert result.returncode == 0, (scenario, result.stdout)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid_for_kubernetes(rendered, scenario, version):
    for obj in rendered[scenario]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")


def test_values_outside_the_schema_are_refused(helm_binary):
    for bad in ("image.tag=latest", "unknown=1", "kafka.replicas=0", "gateway.ingress.enabled=x"):
        result = run_helm(helm_binary, "template", "lh", str(CHART), "--set", bad)
        assert result.returncode == 1, bad
        assert "values don't meet the specifications of the schema" in result.stderr, bad


def test_impossible_combinations_are_refused_with_the_reason(helm_binary):
    cases = {
        "consumers.replicas=7": "cannot exceed the topic's 6 partitions",
        "kafka.replicationFactor=3": "kafka.replicationFactor cannot exceed kafka.replicas",
        "postgres.enabled=false": "postgres.external.host is required",
        "gateway.ingress.enabled=true,gateway.ingress.tlsSecret=": "devices upload over HTTPS",
        "gateway.podDisruptionBudget.minAvailable=2": (
            "minAvailable (2) must be below the gateways' 2 replicas"
        ),
    }
    for values, reason in cases.items():
        result = run_helm(helm_binary, "template", "lh", str(CHART), "--set", values)
        assert result.returncode == 1 and reason in result.stderr, (values, result.stderr)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_container_runs_as_root_or_escalates(rendered, scenario):
    for name, spec in pod_specs(rendered[scenario]):
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert own["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert own["capabilities"]["drop"] == ["ALL"], (name, container["name"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_image_is_pinned(rendered, scenario):
    for name, spec in pod_specs(rendered[scenario]):
        for container in containers(spec):
            image = container["image"]
            assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", image), (name, image)
            assert not image.endswith(":latest"), (name, image)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secrets_reach_pods_only_from_the_secret(rendered, scenario):
    """No password in values, ConfigMaps or environment: every secret-like variable
    comes from a secretKeyRef (or from another variable that does)."""
    secret_like = re.compile(r"PASSWORD|SECRET|TOKEN|KEY$")
    for name, spec in pod_specs(rendered[scenario]):
        for container in containers(spec):
            for env in container.get("env", []):
                if secret_like.search(env["name"]) and "value" in env:
                    assert re.fullmatch(r"[a-z-]+:\$\([A-Z_]+\)", env["value"]), (name, env)
                if "valueFrom" in env and "secretKeyRef" in env["valueFrom"]:
                    assert env["valueFrom"]["secretKeyRef"]["key"] in secret_keys()
    for config_map in of_kind(rendered[scenario], "ConfigMap"):
        text = json.dumps(config_map["data"])
        assert not re.search(r"password=[^$\"\\\\]", text, re.IGNORECASE), config_map["metadata"]
    values_text = (CHART / "values.yaml").read_text()
    assert not re.search(r"(?i)password:\s*\S", values_text)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_is_rendered_and_pods_read_the_operators(rendered, scenario):
    """Secrets come from `lakehouse deploy secret` (or the operator's own), never from a
    render: a render that made them would differ every time."""
    objects = rendered[scenario]
    assert of_kind(objects, "Secret") == []
    credentials = "lakehouse-credentials" if scenario == "ha" else "lh-lakehouse-credentials"
    secrets = {
        volume["secret"]["secretName"]
        for _, spec in pod_specs(objects)
        for volume in spec.get("volumes", [])
        if volume["name"] in ("credentials", "trino-ca", "tls")
    }
    assert secrets == {credentials, "lh-lakehouse-trino-tls"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_workload_has_probes_resources_and_config_checksums(rendered, scenario):
    for obj in rendered[scenario]:
        if obj["kind"] not in WORKLOADS:
            continue
        template = obj["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        checksums = {k: v for k, v in annotations.items() if k.startswith("checksum/")}
        expected = {"checksum/env"}
        if component(obj) in ("kafka", "nessie", "trino", "trino-worker"):  # their own files
            expected.add("checksum/config")
        assert set(checksums) == expected, obj["metadata"]
        assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in checksums.values())
        for container in template["spec"]["containers"]:
            where = (obj["metadata"]["name"], container["name"])
            assert "readinessProbe" in container and "livenessProbe" in container, where
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where


def test_a_config_change_changes_the_checksum_that_rolls_the_pods(helm_binary):
    before = render(helm_binary, "default")
    after = render(helm_binary, "default", "--set", "audit.enabled=false")
    gateway_before = named(before, "Deployment", "gateway")["spec"]["template"]["metadata"]
    gateway_after = named(after, "Deployment", "gateway")["spec"]["template"]["metadata"]
    assert (
        gateway_before["annotations"]["checksum/env"]
        != (gateway_after["annotations"]["checksum/env"])
    )
    kafka_before = named(render(helm_binary, "ha"), "StatefulSet", "kafka")["spec"]["template"]
    changed = render(helm_binary, "ha", "--set", "kafka.minInsyncReplicas=3")
    kafka_after = named(changed, "StatefulSet", "kafka")["spec"]["template"]
    assert (
        kafka_before["metadata"]["annotations"]["checksum/config"]
        != (kafka_after["metadata"]["annotations"]["checksum/config"])
    )


def test_trino_workers_follow_the_values(rendered, helm_binary):
    assert named(rendered["ha"], "Deployment", "trino-worker")["spec"]["replicas"] == 4
    assert named(rendered["default"], "Deployment", "trino-worker")["spec"]["replicas"] == 1
    assert not [o for o in rendered["dev"] if component(o) == "trino-worker"]
    coordinator = named(rendered["dev"], "ConfigMap", "trino")["data"]["coordinator.properties"]
    assert "node-scheduler.include-coordinator=true" in coordinator
    seven = render(helm_binary, "default", "--set", "trino.worker.replicas=7")
    assert named(seven, "Deployment", "trino-worker")["spec"]["replicas"] == 7


def test_the_ha_profile_replicates_kafka_and_budgets_disruptions(rendered):
    objects = rendered["ha"]
    kafka = named(objects, "StatefulSet", "kafka")
    assert kafka["spec"]["replicas"] == 3
    properties = named(objects, "ConfigMap", "kafka")["data"]["server.properties"]
    lines = properties.splitlines()
    assert "default.replication.factor=3" in lines and "min.insync.replicas=2" in lines
    assert "offsets.topic.replication.factor=3" in lines
    assert "transaction.state.log.min.isr=2" in lines
    voters = re.search(r"controller.quorum.voters=(.*)", properties).group(1).split(",")
    assert len(voters) == 3
    env = named(objects, "ConfigMap", "env")["data"]
    assert env["LAKEHOUSE_KAFKA_REPLICATION_FACTOR"] == "3"
    assert len(env["LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3
    budgets = {component(o): o["spec"] for o in of_kind(objects, "PodDisruptionBudget")}
    assert budgets["kafka"]["maxUnavailable"] == 1
    assert budgets["trino-worker"]["maxUnavailable"] == 1
    assert budgets["nessie"]["maxUnavailable"] == 1
    assert budgets["gateway"]["minAvailable"] == 2
    assert not of_kind(rendered["dev"], "PodDisruptionBudget")


def test_the_gateway_scales_and_is_exposed_over_tls(rendered):
    objects = rendered["ha"]
    hpa = named(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert "replicas" not in named(objects, "Deployment", "gateway")["spec"]
    ingress = named(objects, "Ingress", "gateway")["spec"]
    tls = [{"hosts": ["ingest.example.com"], "secretName": "ingest-example-com-tls"}]
    assert ingress["tls"] == tls
    assert ingress["rules"][0]["host"] == "ingest.example.com"
    assert named(rendered["dev"], "Deployment", "gateway")["spec"]["replicas"] == 1
    assert not of_kind(rendered["default"], "Ingress")


def ingress_sources(policy: dict[str, Any], port: int) -> list[Any]:
    """Who a NetworkPolicy lets in on `port`: component names, or "anyone"."""
    sources: list[Any] = []
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule["ports"]]:
            continue
        if "from" not in rule:
            sources.append("anyone")
        for peer in rule.get("from", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            sources.append(labels.get("app.kubernetes.io/component", peer))
    return sources


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies_let_in_only_who_needs_it(rendered, scenario):
    policies = {
        o["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component", ""): o
        for o in of_kind(rendered[scenario], "NetworkPolicy")
    }
    deny = next(o for o in of_kind(rendered[scenario], "NetworkPolicy")
                if o["metadata"]["name"].endswith("default-deny"))  # fmt: skip
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    ports = {name: c["port"] for name, c in FACTS["components"].items()}
    public = "anyone" if scenario != "ha" else {"kubernetes.io/metadata.name": "ingress-nginx"}
    for name in ("gateway", "trino", "superset"):
        if scenario == "dev" and name == "superset":
            assert "superset" not in policies
            continue
        sources = ingress_sources(policies[name], ports[name])
        if public == "anyone":
            assert "anyone" in sources, name
        else:
            assert {"namespaceSelector": {"matchLabels": public}} in sources, name
    expected = {
        "postgres": ["audit", "bootstrap", "consumers", "demo", "gateway", "maintain",
                     "nessie", "superset", "superset-init", "transform", "trino",
                     "trino-worker"],
        "minio": ["bootstrap", "consumers", "maintain", "nessie", "transform", "trino",
                  "trino-worker"],
        "nessie": ["bootstrap", "consumers", "maintain", "transform", "trino", "trino-worker"],
        "kafka": ["bootstrap", "consumers", "gateway", "kafka", "maintain"],
        "audit": ["trino", "trino-worker"],
    }  # fmt: skip
    for name, clients in expected.items():
        if scenario in EXTERNAL and name in ("postgres", "minio", "kafka"):
            assert name not in policies
            continue
        assert sorted(ingress_sources(policies[name], ports[name])) == clients, name
    # Trino's nodes reach the coordinator on its HTTPS port (internal TLS, the default;
    # test_chart_tls checks the plain internal port of tls.internal=false).
    coordinator = ingress_sources(policies["trino"], ports["trino"])
    assert "trino" in coordinator and "trino-worker" in coordinator
    assert ingress_sources(policies["trino"], FACTS["ports"]["trinoInternal"]) == []


def test_disabled_servers_are_absent_and_their_external_endpoints_wired_in(rendered):
    objects = rendered["external"]
    assert {component(o) for o in of_kind(objects, "StatefulSet")} == set()
    assert not [o for o in objects if component(o) in ("postgres", "minio", "kafka")]
    env = named(objects, "ConfigMap", "env")["data"]
    assert env["LAKEHOUSE_POSTGRES_HOST"] == "lakehouse.cluster-abc.eu-west-1.rds.amazonaws.com"
    assert env["LAKEHOUSE_POSTGRES_PORT"] == "5432"
    assert env["LAKEHOUSE_POSTGRES_SUPERUSER"] == "lakehouse_admin"
    assert env["LAKEHOUSE_MINIO_ENDPOINT"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["LAKEHOUSE_MINIO_REGION"] == "eu-west-1"
    assert env["LAKEHOUSE_MINIO_ENCRYPT"] == "false"
    assert env["LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS"] == (
        "b-1.msk.example.internal:9096,b-2.msk.example.internal:9096"
    )
    nessie = named(objects, "ConfigMap", "nessie")["data"]["application.properties"]
    rds = "lakehouse.cluster-abc.eu-west-1.rds.amazonaws.com"
    assert f"jdbc:postgresql://{rds}:5432/nessie?" in nessie
    assert "default-options.endpoint=https://s3.eu-west-1.amazonaws.com" in nessie
    trino = named(objects, "ConfigMap", "trino")["data"]
    assert "s3.endpoint=https://s3.eu-west-1.amazonaws.com" in trino["lake.properties"]
    assert "s3.region=eu-west-1" in trino["lake.properties"]
    default_env = named(rendered["default"], "ConfigMap", "env")["data"]
    assert default_env["LAKEHOUSE_POSTGRES_HOST"] == "lh-lakehouse-postgres"
    assert default_env["LAKEHOUSE_MINIO_ENDPOINT"] == "https://lh-lakehouse-minio:9000"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_chart_runs_every_service_the_native_supervisor_runs(rendered, scenario):
    workloads = {component(o) for o in rendered[scenario] if o["kind"] in WORKLOADS}
    wanted = {component_of(name) for name in native_services()}
    if scenario == "dev":
        wanted.discard("superset")
    else:  # the demo fleet is off unless asked for (the dev scenario does)
        wanted.discard("demo")
    if scenario in EXTERNAL:
        wanted -= {"postgres", "minio", "kafka"}
    assert wanted <= workloads
    jobs = {component(o) for o in of_kind(rendered[scenario], "Job")}
    assert "bootstrap" in jobs
    test_pod = of_kind(rendered[scenario], "Pod")[0]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_names_stay_within_63_characters(helm_binary):
    long = "a-release-name-that-is-quite-long-indeed-for-sure"
    objects = render(helm_binary, "ha", "--set", f"fullnameOverride={long}")
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


def test_the_readme_lists_every_value(rendered):
    readme = (CHART / "README.md").read_text()
    values = (CHART / "values.yaml").read_text()
    documented = re.findall(r"^\s*# -- ", values, re.MULTILINE)
    rows = re.findall(r"^\| `[a-zA-Z.]+` \|", readme, re.MULTILINE)
    assert len(rows) == len(documented) > 50
