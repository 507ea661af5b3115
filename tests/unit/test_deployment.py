from __future__ import annotations

from lakehouse import deployment
from lakehouse.config import Settings, default_settings
from lakehouse.credentials import Credentials, as_keys


def test_the_chart_and_compose_files_are_what_the_settings_make():
    for path, text in deployment.outputs().items():
        assert path.read_text() == text, f"{path} is out of date: run `make deploy-facts`"
    assert deployment.main(["--check"]) == 0


def test_a_native_consumer_is_a_replica_of_the_consumers_component():
    assert deployment.component_of("consumer-3") == "consumers"
    assert deployment.component_of("gateway") == "gateway"
    assert set(deployment.components(default_settings())) >= {
        "postgres", "minio", "nessie", "kafka", "trino", "superset", "audit", "gateway",
        "consumers", "transform", "maintain",
    }  # fmt: skip


def test_every_secret_key_is_one_credential():
    keys = deployment.secret_keys()
    assert keys == list(as_keys(Credentials.generate(default_settings())))
    assert len(keys) == len(set(keys)) == 30


def test_the_compose_variables_are_the_settings_themselves(monkeypatch):
    env = deployment.compose_env(default_settings())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.ingest.metrics_port) == env["LAKEHOUSE_INGEST_METRICS_PORT"]
    assert str(settings.gateway.port) == env["LAKEHOUSE_GATEWAY_PORT"]
    assert settings.kafka.topic == env["LAKEHOUSE_KAFKA_TOPIC"]
    assert str(settings.credentials_dir) == env["LAKEHOUSE_CREDENTIALS_DIR"]


def test_the_values_table_documents_each_commented_key():
    values = """# -- Top.
top: 1
group:
  # -- Nested, on two
  # lines.
  inner: [a]
  plain: 2
"""
    table = deployment.values_table(values).splitlines()
    assert table[2:] == [
        "| `top` | int | `1` | Top. |",
        '| `group.inner` | list | `["a"]` | Nested, on two lines. |',
    ]
