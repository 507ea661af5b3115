"""helm/lakehouse with `tls.internal` (the default): every connection to an in-cluster
server (PostgreSQL, Kafka, MinIO, Nessie, Trino's nodes among themselves) is TLS,
verified against the platform certificate's CA, down to the clients our services build
from the environment the chart gives them; with `tls.internal=false`, the plaintext
settings of before. Rendered only: no pod runs here."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from lakehouse.clients import (
    iceberg_catalog_properties,
    iceberg_rest_url,
    kafka_config,
    nessie_api_url,
)
from lakehouse.config import default_settings
from lakehouse.credentials import Credentials
from lakehouse.deployment import facts
from tests.deploy.conftest import CHART, render
from tests.deploy.test_chart import component, ingress_sources, named, of_kind
from tests.deploy.test_chart_external import (
    POSTGRES_CLIENTS,
    catalog,
    env_of,
    nessie_properties,
    pods_by_component,
    settings_from,
)

pytestmark = pytest.mark.deploy

FACTS = facts(default_settings())
PORTS = {name: c["port"] for name, c in FACTS["components"].items()}
TLS_SECRET = "lh-lakehouse-trino-tls"
CA = "/etc/lakehouse/ca/{}.crt"
JDBC_TLS = "?sslmode=verify-full&sslrootcert=/etc/lakehouse/ca/postgres.crt"
# The pods of ours that read the env ConfigMap, and the servers each one is a client of.
OWN_CLIENTS = {
    "bootstrap": ("postgres", "kafka", "minio", "nessie"),
    "consumers": ("postgres", "kafka", "minio", "nessie"),
    "gateway": ("postgres", "kafka"),
    "transform": ("postgres", "minio", "nessie"),
    "maintain": ("postgres", "kafka", "minio", "nessie"),
    "audit": ("postgres",),
}
# Ports of the in-cluster servers that are TLS with tls.internal, by component.
TLS_PORTS = {
    "postgres": {PORTS["postgres"]},
    "minio": {PORTS["minio"]},
    "nessie": {PORTS["nessie"]},
    "kafka": {PORTS["kafka"], FACTS["ports"]["kafkaController"]},
    "trino": {PORTS["trino"]},
    "trino-worker": {FACTS["ports"]["trinoInternal"]},
}
# Plain ports a server may keep for the kubelet's probes only (no pod may reach them).
PROBE_ONLY_PORTS = {"nessie": {FACTS["ports"]["nessieManagement"]}}


@pytest.fixture(scope="module")
def plain(helm_binary) -> list[dict[str, Any]]:
    return render(helm_binary, "default", "--set", "tls.internal=false")


def ca_mounted(spec: dict[str, Any], container: dict[str, Any], server: str) -> bool:
    """Whether `container` has the platform CA at the path clients of `server` read."""
    mount = {"name": f"{server}-ca", "mountPath": CA.format(server), "subPath": "ca.crt",
             "readOnly": True}  # fmt: skip
    volume = {"name": f"{server}-ca", "secret": {"secretName": TLS_SECRET}}
    return mount in container.get("volumeMounts", []) and volume in spec["volumes"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def script(container: dict[str, Any]) -> str:
    return str(container["command"][-1])


def test_our_services_reach_every_server_over_tls_with_its_ca(rendered):
    objects = rendered["default"]
    env = env_of(objects)
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == CA.format("postgres")
    assert env["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["LAKEHOUSE_KAFKA_CA_FILE"] == CA.format("kafka")
    assert env["LAKEHOUSE_MINIO_ENDPOINT"] == f"https://lh-lakehouse-minio:{PORTS['minio']}"
    assert env["LAKEHOUSE_MINIO_CA_FILE"] == CA.format("minio")
    assert env["LAKEHOUSE_NESSIE_SCHEME"] == "https"
    assert env["LAKEHOUSE_NESSIE_CA_FILE"] == CA.format("nessie")
    pods = pods_by_component(objects)
    for name, servers in OWN_CLIENTS.items():
        spec = pods[name]
        for server in servers:
            assert ca_mounted(spec, spec["containers"][0], server), (name, server)
    # What the clients built from those settings do.
    settings = settings_from(env)
    credentials = Credentials.generate(default_settings())
    kafka = kafka_config(settings, "gateway", credentials=credentials)
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["ssl.ca.location"] == CA.format("kafka")
    assert kafka["sasl.mechanisms"] == "SCRAM-SHA-512"
    # (The port is this test process's own: the ConfigMap leaves the native default.)
    nessie = f"https://lh-lakehouse-nessie:{settings.nessie.port}"
    assert nessie_api_url(settings) == f"{nessie}/api/v2"
    assert iceberg_rest_url(settings, "run-1") == f"{nessie}/iceberg/run-1"
    properties = iceberg_catalog_properties(settings, credentials, s3_key="ingest")
    assert properties["uri"] == f"{nessie}/iceberg"
    assert properties["ssl"] == {"cabundle": CA.format("nessie")}
    assert properties["s3.endpoint"] == f"https://lh-lakehouse-minio:{PORTS['minio']}"
    assert properties["s3.ca-file"] == CA.format("minio")
    assert properties["py-io-impl"] == "lakehouse.iceberg_io.LakehouseFileIO"


def test_every_postgres_client_verifies_the_server(rendered):
    objects = rendered["default"]
    nessie = [line for line in nessie_properties(objects) if ".jdbc.url=" in line]
    assert nessie == [
        "quarkus.datasource.postgresql.jdbc.url=jdbc:postgresql://lh-lakehouse-postgres:"
        f"{PORTS['postgres']}/nessie{JDBC_TLS}"
    ]
    pg = [line for line in catalog(objects, "pg.properties") if line.startswith("connection-url")]
    assert pg == [
        f"connection-url=jdbc:postgresql://lh-lakehouse-postgres:{PORTS['postgres']}/lakehouse"
        f"{JDBC_TLS}"
    ]
    pods = pods_by_component(objects)
    assert ca_mounted(pods["nessie"], container(pods["nessie"], "nessie"), "postgres")
    for name in ("trino", "trino-worker"):
        assert ca_mounted(pods[name], container(pods[name], "trino"), "postgres"), name
    for name in ("superset", "superset-init"):
        superset = container(pods[name], "superset")
        env = {e["name"]: e.get("value") for e in superset["env"]}
        assert env["PGSSLMODE"] == "verify-full", name
        assert env["PGSSLROOTCERT"] == CA.format("postgres"), name
        assert ca_mounted(pods[name], superset, "postgres"), name
    # Every other client of PostgreSQL reads PGSSLMODE from the env ConfigMap.
    for name in POSTGRES_CLIENTS - {"nessie", "trino", "trino-worker", "superset",
                                    "superset-init"}:  # fmt: skip
        spec = pods[name]
        refs = [e["configMapRef"]["name"] for e in spec["containers"][0].get("envFrom", [])]
        assert refs == ["lh-lakehouse-env"], name
        assert ca_mounted(spec, spec["containers"][0], "postgres"), name


def test_postgres_takes_network_logins_over_tls_only(rendered):
    objects = rendered["default"]
    spec = named(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    server = container(spec, "postgres")
    args = server["args"]
    settings = dict(value.split("=", 1) for value in args[1::2])
    assert args[0::2] == ["-c"] * len(args[0::2])
    assert settings["ssl"] == "on"
    assert settings["ssl_cert_file"] == "/var/run/postgresql/tls/tls.crt"
    assert settings["ssl_key_file"] == "/var/run/postgresql/tls/tls.key"
    assert settings["hba_file"] == "/var/run/postgresql/tls/pg_hba.conf"
    prepare = script(container(spec, "tls"))
    # The key PostgreSQL reads is a private copy: 0600, the server's own user.
    assert "cp /tls/tls.key /server-tls/tls.key" in prepare
    assert "chmod 600 /server-tls/tls.key" in prepare
    assert container(spec, "tls")["securityContext"] == server["securityContext"]
    assert spec["securityContext"]["runAsUser"] == 999
    rules = re.findall(r"'((?:local|host\w*) [^']*)'", prepare)
    assert rules == ["local all all scram-sha-256", "hostssl all all all scram-sha-256"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == TLS_SECRET
    assert volumes["server-tls"]["emptyDir"] == {"medium": "Memory"}


def test_kafka_listens_sasl_ssl_only_and_brokers_verify_each_other(rendered):
    for scenario, brokers in (("default", 1), ("ha", 3)):
        objects = rendered[scenario]
        config = named(objects, "ConfigMap", "kafka")["data"]
        lines = config["server.properties"].splitlines()
        assert "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_SSL" in lines
        for setting in ("ssl.keystore.type=PEM", "ssl.keystore.location=/config/keystore.pem",
                        "ssl.truststore.type=PEM", "ssl.truststore.location=/tls/ca.crt",
                        "ssl.endpoint.identification.algorithm=https"):  # fmt: skip
            assert setting in lines, (scenario, setting)
        assert not [line for line in lines if "PLAINTEXT" in line]
        assert "cat /tls/tls.key /tls/tls.crt > /config/keystore.pem" in config["prepare.sh"]
        assert "chmod 600 /config/keystore.pem" in config["prepare.sh"]
        spec = named(objects, "StatefulSet", "kafka")["spec"]["template"]["spec"]
        for name in ("prepare", "kafka"):
            mounts = container(spec, name)["volumeMounts"]
            assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in mounts
        env = env_of(objects)
        assert len(env["LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == brokers
        assert env["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_minio_and_nessie_serve_https_and_their_java_clients_trust_the_ca(rendered):
    objects = rendered["default"]
    minio = named(objects, "StatefulSet", "minio")["spec"]["template"]["spec"]
    server = container(minio, "minio")
    assert server["args"][-2:] == ["--certs-dir", "/certs"]
    assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert server["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    certs = next(v for v in minio["volumes"] if v["name"] == "certs")["secret"]
    assert certs["secretName"] == TLS_SECRET
    assert {i["key"]: i["path"] for i in certs["items"]} == {
        "tls.crt": "public.crt", "tls.key": "private.key", "ca.crt": "CAs/ca.crt",
    }  # fmt: skip
    nessie = nessie_properties(objects)
    assert f"quarkus.http.ssl-port={PORTS['nessie']}" in nessie
    assert "quarkus.http.insecure-requests=disabled" in nessie
    assert "quarkus.http.ssl.certificate.files=/etc/nessie/tls/tls.crt" in nessie
    assert "quarkus.http.ssl.certificate.key-files=/etc/nessie/tls/tls.key" in nessie
    assert not [line for line in nessie if line.startswith("quarkus.http.port=")]
    endpoint = f"https://lh-lakehouse-minio:{PORTS['minio']}"
    assert f"nessie.catalog.service.s3.default-options.endpoint={endpoint}" in nessie
    truststore = (
        "-Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStoreType=PKCS12 "
        "-Djavax.net.ssl.trustStorePassword=changeit"
    )
    pod = named(objects, "Deployment", "nessie")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container(pod, "nessie")["env"]}
    store = "/truststore/truststore.p12"
    assert env["JAVA_OPTS_APPEND"] == f"-Djava.io.tmpdir=/tmp {truststore.format(store)}"
    build = script(container(pod, "truststore"))
    assert f"-file /etc/nessie/tls/ca.crt \\\n  -keystore {store}" in build
    lake = catalog(objects, "lake.properties")
    assert f"iceberg.rest-catalog.uri=https://lh-lakehouse-nessie:{PORTS['nessie']}/iceberg" in lake
    assert f"s3.endpoint={endpoint}" in lake
    pods = pods_by_component(objects)
    for name in ("trino", "trino-worker"):
        store = "/etc/trino/security/truststore.p12"
        assert truststore.format(store) in script(container(pods[name], "prepare")), name
        assert f"-file /etc/trino/tls/ca.crt \\\n  -keystore {store}" in script(
            container(pods[name], "trino")
        ), name


def test_trino_nodes_talk_https_only(rendered):
    for scenario in ("default", "ha"):
        objects = rendered[scenario]
        data = named(objects, "ConfigMap", "trino")["data"]
        discovery = f"discovery.uri=https://lh-lakehouse-trino-internal:{PORTS['trino']}"
        for role in ("coordinator", "worker"):
            lines = data[f"{role}.properties"].splitlines()
            assert discovery in lines, (scenario, role)
            assert "http-server.http.enabled=false" in lines, (scenario, role)
            assert "internal-communication.https.required=true" in lines, (scenario, role)
            assert "http-server.https.enabled=true" in lines, (scenario, role)
            # The automatic internal certificates name the nodes' addresses.
            assert not [line for line in lines if "internal-address-source" in line]
        worker = data["worker.properties"].splitlines()
        assert f"http-server.https.port={FACTS['ports']['trinoInternal']}" in worker
        services = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "Service")}
        internal = services["lh-lakehouse-trino-internal"]
        assert internal["clusterIP"] == "None"
        assert internal["ports"] == [
            {"name": "https", "port": PORTS["trino"], "targetPort": "https"}
        ]
        pods = pods_by_component(objects)
        for name in ("trino", "trino-worker"):
            trino = container(pods[name], "trino")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert trino[probe]["httpGet"]["scheme"] == "HTTPS", (name, probe)
        coordinator_ports = [p["containerPort"] for p in container(pods["trino"], "trino")["ports"]]
        assert coordinator_ports == [PORTS["trino"]]


def reachable_ports(objects: list[dict[str, Any]]) -> dict[str, set[int]]:
    """The ports of each component other pods may open connections to (NetworkPolicies)."""
    found: dict[str, set[int]] = {}
    for policy in of_kind(objects, "NetworkPolicy"):
        target = policy["spec"]["podSelector"].get("matchLabels", {})
        name = target.get("app.kubernetes.io/component")
        if name is None:
            continue
        for rule in policy["spec"].get("ingress", []):
            found.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    return found


@pytest.mark.parametrize("scenario", ["default", "ha", "dev"])
def test_no_server_listens_in_the_clear_where_another_pod_reaches(rendered, scenario):
    objects = rendered[scenario]
    reachable = reachable_ports(objects)
    pods = pods_by_component(objects)
    for name, tls_ports in TLS_PORTS.items():
        if name not in pods:  # no workers in the dev scenario
            continue
        assert reachable[name] <= tls_ports, (name, reachable[name])
        listening = {
            port["containerPort"]
            for server in pods[name]["containers"]
            for port in server.get("ports", [])
        }
        plain = listening - tls_ports
        assert plain <= PROBE_ONLY_PORTS.get(name, set()), (name, plain)
        assert not plain & reachable[name], (name, plain)


def test_the_readme_certificate_names_every_server_clients_reach(helm_binary):
    """The README's `lakehouse deploy tls` covers each host a client of a release named
    `lakehouse` in namespace `data` connects to, and each Kafka broker's own name."""
    readme = (CHART / "README.md").read_text()
    command = re.search(r"lakehouse deploy tls --out platform.pem(.*?)\nopenssl", readme, re.S)
    assert command is not None
    words = shlex.split(command.group(1).replace("\\\n", " "))
    hosts = {words[i + 1] for i, word in enumerate(words) if word == "--host"}
    args = ["--namespace", "data"]
    env = env_of(render(helm_binary, "default", *args))
    brokers = env["LAKEHOUSE_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    wanted = {
        env["LAKEHOUSE_POSTGRES_HOST"], env["LAKEHOUSE_NESSIE_HOST"], env["LAKEHOUSE_TRINO_HOST"],
        re.sub(r"^https://|:\d+$", "", env["LAKEHOUSE_MINIO_ENDPOINT"]),
        *(broker.rsplit(":", 1)[0] for broker in brokers),
    }  # fmt: skip
    assert {host.replace("lh-lakehouse", "lakehouse") for host in wanted} <= hosts
    cert_manager = re.search(r"dnsNames: \[(.*?)\]", readme, re.S)
    assert cert_manager is not None
    assert {name.strip() for name in cert_manager.group(1).split(",")} == hosts


def test_without_internal_tls_the_plaintext_settings_are_back(plain):
    env = env_of(plain)
    for key in ("PGSSLMODE", "PGSSLROOTCERT", "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL",
                "LAKEHOUSE_KAFKA_CA_FILE", "LAKEHOUSE_MINIO_CA_FILE", "LAKEHOUSE_NESSIE_SCHEME",
                "LAKEHOUSE_NESSIE_CA_FILE"):  # fmt: skip
        assert key not in env, key
    assert env["LAKEHOUSE_MINIO_ENDPOINT"] == f"http://lh-lakehouse-minio:{PORTS['minio']}"
    settings = settings_from(env)
    credentials = Credentials.generate(default_settings())
    assert kafka_config(settings, "gateway", credentials=credentials)["security.protocol"] == (
        "SASL_PLAINTEXT"
    )
    properties = iceberg_catalog_properties(settings, credentials, s3_key="ingest")
    assert properties["uri"] == f"http://lh-lakehouse-nessie:{settings.nessie.port}/iceberg"
    assert not {"ssl", "s3.ca-file"} & set(properties)
    nessie = nessie_properties(plain)
    assert f"quarkus.http.port={PORTS['nessie']}" in nessie
    assert not [line for line in nessie if "ssl" in line or "sslmode" in line]
    lines = named(plain, "ConfigMap", "kafka")["data"]["server.properties"].splitlines()
    assert "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT" in lines
    assert not [line for line in lines if line.startswith("ssl.")]
    data = named(plain, "ConfigMap", "trino")["data"]
    assert "discovery.uri=http://lh-lakehouse-trino-internal:8081" in data["worker.properties"]
    assert "node.internal-address-source=IP" in data["coordinator.properties"]
    assert "internal-communication.https" not in data["coordinator.properties"]
    assert f"iceberg.rest-catalog.uri=http://lh-lakehouse-nessie:{PORTS['nessie']}/iceberg" in (
        data["lake.properties"].splitlines()
    )
    assert "sslmode" not in data["pg.properties"]
    internal = FACTS["ports"]["trinoInternal"]
    coordinator = next(
        o
        for o in of_kind(plain, "NetworkPolicy")
        if o["metadata"]["name"].endswith("-trino-ingress")
    )
    assert sorted(ingress_sources(coordinator, internal)) == ["trino", "trino-worker"]
    for obj in plain:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = obj["spec"]["template"]["spec"]
        names = {v["name"] for v in spec["volumes"]}
        assert not names & {"postgres-ca", "kafka-ca", "minio-ca", "nessie-ca", "server-tls",
                            "certs", "truststore"}, component(obj)  # fmt: skip
        # Only the init steps there were before (no key copies, no trust stores).
        had_them = ("kafka", "trino", "trino-worker", "superset", "superset-init")
        assert "initContainers" not in spec or component(obj) in had_them, component(obj)
    postgres = named(plain, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    assert postgres["containers"][0]["args"] == [
        "-c", "max_connections=200", "-c", "shared_buffers=128MB"
    ]  # fmt: skip


def test_external_servers_keep_their_own_tls_settings(rendered):
    """`tls.internal` touches only what the release runs: an external PostgreSQL and Kafka
    keep the sslmode, protocol and CA their values give; Nessie is the release's."""
    env = env_of(rendered["external"])
    assert env["PGSSLMODE"] == "verify-full"
    assert env["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "LAKEHOUSE_MINIO_CA_FILE" not in env
    assert env["LAKEHOUSE_MINIO_ENDPOINT"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["LAKEHOUSE_NESSIE_SCHEME"] == "https"
    irsa = env_of(rendered["external-irsa"])
    assert irsa["LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    pods = pods_by_component(rendered["external"])
    volumes = {v["name"]: v for v in pods["gateway"]["volumes"]}
    assert volumes["postgres-ca"] == {"name": "postgres-ca", "configMap": {"name": "rds-ca"}}
    assert volumes["kafka-ca"] == {"name": "kafka-ca", "secret": {"secretName": "msk-ca"}}
    assert "minio-ca" not in volumes
