"""helm/lakehouse on managed services (ci/external-values.yaml: an S3 store with key ids
of its own, addressed path-style, PostgreSQL verified against its CA, Kafka over
SASL_SSL; ci/external-irsa-values.yaml: S3 through the ServiceAccount's IAM role with no
keys, virtual-hosted, Kafka over SSL), down to the clients our services build from the
environment the chart gives them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lakehouse.clients import iceberg_catalog_properties, kafka_config
from lakehouse.config import Settings, default_settings, environment_variables
from lakehouse.credentials import Credentials
from tests.deploy.test_chart import component, containers, named, pod_specs

pytestmark = pytest.mark.deploy

KEY_IDS = {
    "nessie": "AKIAEXAMPLENESSIE001",
    "trino": "AKIAEXAMPLETRINO0001",
    "ingest": "AKIAEXAMPLEINGEST001",
    "reader": "AKIAEXAMPLEREADER001",
    "maintain": "AKIAEXAMPLEMAINTAIN1",
}
RDS = "lakehouse.cluster-abc.eu-west-1.rds.amazonaws.com"
# Pods that talk to PostgreSQL: ours (the env ConfigMap), Superset, Nessie and Trino.
POSTGRES_CLIENTS = {
    "audit", "bootstrap", "consumers", "gateway", "maintain", "nessie", "superset",
    "superset-init", "test", "transform", "trino", "trino-worker",
}  # fmt: skip


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = named(objects, "ConfigMap", "env")["data"]
    return data


def catalog(objects: list[dict[str, Any]], name: str) -> list[str]:
    return str(named(objects, "ConfigMap", "trino")["data"][name]).splitlines()


def nessie_properties(objects: list[dict[str, Any]]) -> list[str]:
    text = named(objects, "ConfigMap", "nessie")["data"]["application.properties"]
    return str(text).splitlines()


def pods_by_component(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            found[component(obj)] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            found[component(obj)] = obj["spec"]
    return found


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a pod of ours builds from the env ConfigMap."""
    with environment_variables(env):
        return Settings()


def test_an_s3_store_with_key_ids_of_its_own_addressed_path_style(rendered):
    objects = rendered["external"]
    env = env_of(objects)
    assert json.loads(env["LAKEHOUSE_MINIO_ACCESS_KEY_IDS"]) == KEY_IDS
    assert env["LAKEHOUSE_MINIO_PATH_STYLE"] == "true"
    assert "LAKEHOUSE_MINIO_AMBIENT_CREDENTIALS" not in env
    lake = catalog(objects, "lake.properties")
    assert "s3.aws-access-key=AKIAEXAMPLETRINO0001" in lake
    assert "s3.path-style-access=true" in lake
    nessie = nessie_properties(objects)
    assert "lakehouse.s3.name=AKIAEXAMPLENESSIE001" in nessie
    assert "nessie.catalog.service.s3.default-options.path-style-access=true" in nessie
    assert "nessie.catalog.service.s3.default-options.auth-type=STATIC" in nessie
    settings = settings_from(env)
    credentials = Credentials.generate(default_settings())
    properties = iceberg_catalog_properties(settings, credentials, s3_key="ingest")
    assert properties["s3.access-key-id"] == "AKIAEXAMPLEINGEST001"
    assert properties["s3.secret-access-key"] == credentials.minio_keys["ingest"]
    assert properties["s3.force-virtual-addressing"] == "false"


def test_a_workload_identity_signs_for_s3_with_no_keys_anywhere(rendered):
    objects = rendered["external-irsa"]
    account = named(objects, "ServiceAccount", "service-account")["metadata"]
    assert account["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lakehouse"
    }
    for name, spec in pod_specs(objects):
        assert spec["serviceAccountName"] == "lh-lakehouse", name
        for container in containers(spec):
            for variable in container.get("env", []):
                key = variable.get("valueFrom", {}).get("secretKeyRef", {}).get("key", "")
                assert not key.startswith("minio-"), (name, variable["name"])
    env = env_of(objects)
    assert env["LAKEHOUSE_MINIO_AMBIENT_CREDENTIALS"] == "true"
    assert env["LAKEHOUSE_MINIO_PATH_STYLE"] == "false"
    assert "LAKEHOUSE_MINIO_ACCESS_KEY_IDS" not in env
    lake = catalog(objects, "lake.properties")
    assert "s3.path-style-access=false" in lake
    assert not [line for line in lake if line.startswith(("s3.aws-access-key", "s3.aws-secret"))]
    nessie = nessie_properties(objects)
    assert "nessie.catalog.service.s3.default-options.auth-type=APPLICATION_GLOBAL" in nessie
    assert "nessie.catalog.service.s3.default-options.path-style-access=false" in nessie
    assert not [line for line in nessie if "access-key" in line or "lakehouse.s3" in line]
    settings = settings_from(env)
    credentials = Credentials.generate(default_settings())
    properties = iceberg_catalog_properties(settings, credentials, s3_key="ingest")
    assert "s3.access-key-id" not in properties and "s3.secret-access-key" not in properties
    assert properties["s3.force-virtual-addressing"] == "true"


@pytest.mark.parametrize(
    ("scenario", "protocol", "volume"),
    [
        ("external", "SASL_SSL", {"name": "kafka-ca", "secret": {"secretName": "msk-ca"}}),
        ("external-irsa", "SSL", {"name": "kafka-ca", "configMap": {"name": "msk-ca"}}),
    ],
)
def test_kafka_over_tls_with_the_clusters_ca(rendered, scenario, protocol, volume):
    objects = rendered[scenario]
    env = env_of(objects)
    assert env["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == protocol
    assert env["LAKEHOUSE_KAFKA_CA_FILE"] == "/etc/lakehouse/ca/kafka.crt"
    key = "ca.crt" if scenario == "external" else "ca.pem"
    mount = {"name": "kafka-ca", "mountPath": "/etc/lakehouse/ca/kafka.crt", "subPath": key,
             "readOnly": True}  # fmt: skip
    pods = pods_by_component(objects)
    for name in ("bootstrap", "consumers", "gateway", "maintain"):  # Kafka's clients
        assert volume in pods[name]["volumes"], name
        assert mount in pods[name]["containers"][0]["volumeMounts"], name
    config = kafka_config(
        settings_from(env), "gateway", credentials=Credentials.generate(default_settings())
    )
    assert config["security.protocol"] == protocol
    assert config["ssl.ca.location"] == "/etc/lakehouse/ca/kafka.crt"
    assert ("sasl.username" in config) is (protocol == "SASL_SSL")


def test_postgres_sslmode_and_ca_reach_every_client(rendered):
    objects = rendered["external"]
    env = env_of(objects)
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/etc/lakehouse/ca/postgres.crt"
    params = "?sslmode=verify-full&sslrootcert=/etc/lakehouse/ca/postgres.crt"
    assert f"connection-url=jdbc:postgresql://{RDS}:5432/lakehouse{params}" in catalog(
        objects, "pg.properties"
    )
    assert (
        f"quarkus.datasource.postgresql.jdbc.url=jdbc:postgresql://{RDS}:5432/nessie{params}"
        in nessie_properties(objects)
    )
    mount = {"name": "postgres-ca", "mountPath": "/etc/lakehouse/ca/postgres.crt",
             "subPath": "global-bundle.pem", "readOnly": True}  # fmt: skip
    pods = pods_by_component(objects)
    assert set(pods) == POSTGRES_CLIENTS
    for name, spec in pods.items():
        assert {"name": "postgres-ca", "configMap": {"name": "rds-ca"}} in spec["volumes"], name
        main = spec["containers"][0]
        assert mount in main["volumeMounts"], name
        if name.startswith("superset"):  # Superset's own image: no env ConfigMap
            variables = {v["name"]: v.get("value") for v in main["env"]}
            assert variables["PGSSLMODE"] == "verify-full", name
            assert variables["PGSSLROOTCERT"] == "/etc/lakehouse/ca/postgres.crt", name
        elif name not in ("nessie", "trino", "trino-worker"):
            assert main["envFrom"] == [{"configMapRef": {"name": "lh-lakehouse-env"}}], name


def test_postgres_sslmode_without_a_ca(rendered):
    objects = rendered["external-irsa"]
    env = env_of(objects)
    assert env["PGSSLMODE"] == "require" and "PGSSLROOTCERT" not in env
    assert f"connection-url=jdbc:postgresql://{RDS}:5432/lakehouse?sslmode=require" in catalog(
        objects, "pg.properties"
    )
    for name, spec in pods_by_component(objects).items():
        assert "postgres-ca" not in [v["name"] for v in spec["volumes"]], name


def test_the_release_servers_take_none_of_the_external_settings(rendered):
    env = env_of(rendered["default"])
    assert env["LAKEHOUSE_MINIO_PATH_STYLE"] == "true"
    for variable in ("LAKEHOUSE_MINIO_ACCESS_KEY_IDS", "LAKEHOUSE_MINIO_AMBIENT_CREDENTIALS"):
        assert variable not in env, variable
    # TLS to the release's own servers is tls.internal's (test_chart_tls), not
    # postgres.external.sslmode's (`require` by default) or kafka.external's.
    assert env["PGSSLMODE"] == "verify-full"
    assert env["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    volumes = {v["name"]: v for v in pods_by_component(rendered["default"])["gateway"]["volumes"]}
    for server in ("postgres", "kafka"):
        assert volumes[f"{server}-ca"]["secret"]["secretName"] == "lh-lakehouse-trino-tls"
    assert "s3.aws-access-key=trino" in catalog(rendered["default"], "lake.properties")
