"""helm/lakehouse against a real API server (tests.deploy.kube), with Helm 3 and Helm 4:
server-side dry runs, a real install and upgrades of each scenario, so the API's
schemas, its admission and its immutable fields judge every object. (A dry run with
`--dry-run=server` only lets templates look the cluster up: neither Helm sends it the
objects, so the real install and upgrades are what the server judges.)

The Secrets the chart reads are made first, as an operator would: the credentials by
`lakehouse deploy secret`, Trino's certificate from a CA. There are no hooks to skip
(`helm test`'s pod is not installed), and nothing is waited for: no kubelet runs pods.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lakehouse.tls import server_certificate
from tests.deploy.conftest import CHART, run_helm, values_args
from tests.deploy.kube import ApiServer

pytestmark = pytest.mark.deploy

SERVER_SCENARIOS = ("default", "ha", "external", "external-irsa", "scheduling")


def credentials_secret(name: str) -> dict[str, Any]:
    """The Secret `lakehouse deploy secret` prints."""
    result = subprocess.run(
        [sys.executable, "-m", "lakehouse", "deploy", "secret", "--name", name],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    secret: dict[str, Any] = json.loads(result.stdout)
    return secret


def tls_secret(api: ApiServer, name: str, namespace: str) -> dict[str, Any]:
    """A kubernetes.io/tls Secret for Trino's Service names, with the CA's certificate."""
    trino = "lh-lakehouse-trino"
    hosts = [trino, f"{trino}.{namespace}", f"{trino}.{namespace}.svc"]
    pem = server_certificate(api.home / namespace, api.home / namespace / "trino.pem", trino, hosts)
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    chain = x509.load_pem_x509_certificates(pem.read_bytes())
    encode = serialization.Encoding.PEM
    data = {
        "tls.crt": chain[0].public_bytes(encode),
        "tls.key": key.private_bytes(
            encode, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "ca.crt": chain[-1].public_bytes(encode),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def prepare_namespace(api: ApiServer, namespace: str, scenario: str) -> None:
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})  # fmt: skip
    credentials = "lakehouse-credentials" if scenario == "ha" else "lh-lakehouse-credentials"
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    api.create(secrets, credentials_secret(credentials))
    api.create(secrets, tls_secret(api, "lh-lakehouse-trino-tls", namespace))


def helm_on(api: ApiServer, binary: Path, *args: str) -> str:
    result = run_helm(binary, *args, env=api.helm_env())
    assert result.returncode == 0, f"helm {' '.join(args[:2])}: {result.stderr}"
    return result.stdout


def stored(api: ApiServer, namespace: str, resource: str) -> list[dict[str, Any]]:
    """The objects of `resource` ("apps/v1/deployments") stored in `namespace`."""
    group, kind = resource.rsplit("/", 1)
    items: list[dict[str, Any]] = api.request(
        "GET", f"/apis/{group}/namespaces/{namespace}/{kind}"
    )["items"]
    return items


def job_names(api: ApiServer, namespace: str) -> list[str]:
    return sorted(job["metadata"]["name"] for job in stored(api, namespace, "batch/v1/jobs"))


@pytest.mark.parametrize("scenario", SERVER_SCENARIOS)
def test_install_and_upgrade_on_a_real_api_server(kube, helm_binary, scenario):
    major = helm_binary.parent.name.split("-v")[1].split(".")[0]
    namespace = f"helm{major}-{scenario}"
    prepare_namespace(kube, namespace, scenario)
    chart = ["lh", str(CHART), "--namespace", namespace, *values_args(scenario)]
    dry_run = helm_on(kube, helm_binary, "install", *chart, "--dry-run=server")
    assert "STATUS: pending-install" in dry_run
    helm_on(kube, helm_binary, "install", *chart)
    first = job_names(kube, namespace)
    assert [name.rsplit("-", 1)[0] for name in first] == [
        "lh-lakehouse-bootstrap",
        "lh-lakehouse-superset-init",
    ]
    # A new image: every pod template changes, the Jobs' with them (new Jobs, as their
    # templates cannot change); StatefulSets' claims and selectors must not.
    upgrade = ["upgrade", *chart, "--set", "image.tag=0.1.1"]
    assert "STATUS: pending-upgrade" in helm_on(kube, helm_binary, *upgrade, "--dry-run=server")
    helm_on(kube, helm_binary, *upgrade)
    second = job_names(kube, namespace)
    assert len(second) == len(first) and not set(first) & set(second)
    # The same values again: nothing to replace.
    helm_on(kube, helm_binary, *upgrade)
    third = job_names(kube, namespace)
    assert third == second
    deployments = stored(kube, namespace, "apps/v1/deployments")
    images = {
        container["image"]
        for deployment in deployments
        for container in deployment["spec"]["template"]["spec"]["containers"]
        if "lakehouse-platform/lakehouse:" in container["image"]
    }
    assert images == {"ghcr.io/lakehouse-platform/lakehouse:0.1.1"}
    status = json.loads(helm_on(kube, helm_binary, "status", "lh", "-n", namespace, "-o", "json"))
    assert (status["version"], status["info"]["status"]) == (3, "deployed")


def test_the_api_server_judges_what_helm_template_lets_through(kube, helm_binary):
    """A StatefulSet's volume claims cannot change: `helm template` and the dry run render
    the new size (`--dry-run=server` lets templates look the cluster up, it sends no
    object to be judged), the real upgrade is refused by the server and leaves the
    release as it was."""
    major = helm_binary.parent.name.split("-v")[1].split(".")[0]
    namespace = f"helm{major}-immutable"
    prepare_namespace(kube, namespace, "default")
    chart = ["lh", str(CHART), "--namespace", namespace]
    helm_on(kube, helm_binary, "install", *chart)
    resize = ["upgrade", *chart, "--set", "kafka.persistence.size=60Gi"]
    helm_on(kube, helm_binary, *resize, "--dry-run=server")
    result = run_helm(helm_binary, *resize, env=kube.helm_env())
    assert result.returncode == 1
    assert "updates to statefulset spec for fields other than" in result.stderr
    status = json.loads(helm_on(kube, helm_binary, "status", "lh", "-n", namespace, "-o", "json"))
    assert (status["version"], status["info"]["status"]) == (2, "failed")
    kafka = kube.request(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/lh-lakehouse-kafka"
    )
    claim = kafka["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    assert claim == {"storage": "50Gi"}
