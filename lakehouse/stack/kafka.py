"""Kafka 4.1 in KRaft mode: one process that is both broker and controller."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewPartitions,
    NewTopic,
)

from lakehouse.clients import kafka_config
from lakehouse.errors import FetchError, StackError
from lakehouse.private_files import write_private
from lakehouse.stack.artifacts import KAFKA_SCALA, KAFKA_VERSION, LOG4J_VERSION
from lakehouse.stack.java import min_heap
from lakehouse.stack.kafka_acl import ADMIN_PRINCIPAL, grant, grant_topic, platform_bindings
from lakehouse.stack.process import port_accepts
from lakehouse.stack.service import Service

_RUNTIME_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lakehouse.stack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Kafka logs through SLF4J; without a backend it logs nothing at all. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form (base64 of a UUID), never starting with "-"."""
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


class Kafka(Service):
    name = "kafka"

    @property
    def ports(self) -> list[int]:
        return [self.settings.kafka.port, self.settings.kafka.controller_port]

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.kafka_bootstrap()

    @property
    def url(self) -> str:
        return self.bootstrap_servers

    @property
    def start_timeout(self) -> float:
        return self.settings.kafka.start_timeout

    @property
    def install_dir(self) -> Path:
        return self.settings.cache_dir / "kafka" / KAFKA_VERSION

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"

    @property
    def _main_jar(self) -> Path:
        return self.lib_dir / f"kafka_{KAFKA_SCALA}-{KAFKA_VERSION}.jar"

    def obtain(self) -> None:
        if self._main_jar.exists():
            return
        self.install_dir.mkdir(parents=True, exist_ok=True)
        pom = self.install_dir / "pom.xml"
        pom.write_text(
            _RUNTIME_POM.format(kafka=KAFKA_VERSION, scala=KAFKA_SCALA, log4j=LOG4J_VERSION)
        )
        staging = self.install_dir / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        self.ctx.maven.dependencies(pom, staging, f"downloading Kafka {KAFKA_VERSION}")
        if not (staging / self._main_jar.name).exists():
            raise FetchError(f"Kafka {KAFKA_VERSION} resolved without {self._main_jar.name}")
        staging.rename(self.lib_dir)

    @property
    def _properties(self) -> Path:
        return self.state_dir / "server.properties"

    def _security_properties(self) -> list[str]:
        """SASL on both listeners; the authorizer denies what no ACL allows.

        With security off (benchmarks only): plain listeners and no authorizer.

        Clients and the broker itself use SCRAM-SHA-512 on the client listener (the
        credentials live in the cluster metadata, added at storage format). The
        controller listener uses PLAIN with its one user in the JAAS line, since SCRAM
        credentials cannot be read before the controller is up.
        """
        if not self.settings.security:
            return ["listener.security.protocol.map=CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=CLIENT"]  # fmt: skip
        password = self.ctx.credentials.kafka_passwords[ADMIN_PRINCIPAL]
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        login = f'username="{ADMIN_PRINCIPAL}" password="{password}"'
        return [
            "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name=CLIENT",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
            f"listener.name.client.scram-sha-512.sasl.jaas.config={scram} required {login};",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain} required {login} "
            f'user_{ADMIN_PRINCIPAL}="{password}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN_PRINCIPAL}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def configure(self) -> None:
        host, kafka = self.settings.host, self.settings.kafka
        data = self.state_dir / "data"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # 0600: it holds the admin principal's password.
        write_private(
            self._properties,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{host}:{kafka.controller_port}",
                    f"listeners=CLIENT://{host}:{kafka.port},CONTROLLER://{host}:{kafka.controller_port}",
                    f"advertised.listeners=CLIENT://{host}:{kafka.port}",
                    "controller.listener.names=CONTROLLER",
                    *self._security_properties(),
                    f"log.dirs={data}",
                    f"num.partitions={kafka.partitions}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    # Above the consumers' 1 MiB limit, so an oversized record reaches
                    # the rejected table instead of failing its producer.
                    "message.max.bytes=4194304",
                    "replica.fetch.max.bytes=4194304",
                    "",
                ]
            ),
        )
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2)
        scram_marker = self.state_dir / "scram-users"
        if (data / "meta.properties").exists():
            if self.settings.security and not scram_marker.exists():
                raise StackError(
                    f"the Kafka storage in {data} was formatted without SASL users, "
                    "so no client could sign in",
                    fix=f"let the consumers drain the topic, then remove {data} and run "
                    "`lakehouse stack up` again",
                )
            return
        cluster_file = self.state_dir / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(new_cluster_id())
        scram_users = [
            f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
            for name, password in sorted(self.ctx.credentials.kafka_passwords.items())
            if self.settings.security
        ]
        result = subprocess.run(
            [*self._java_command(), "kafka.tools.StorageTool", "format",
             # The = form: an id may start with "-", which would read as an option.
             f"--cluster-id={cluster_file.read_text().strip()}", "-c", str(self._properties),
             *scram_users],
            capture_output=True, text=True, check=False, cwd=self.state_dir,
        )  # fmt: skip
        if result.returncode != 0:
            # The tool echoes its arguments on some errors; never log a password.
            output = f"{result.stdout[-800:]}{result.stderr[-800:]}"
            for password in self.ctx.credentials.kafka_passwords.values():
                output = output.replace(password, "***")
            raise StackError(
                f"formatting Kafka storage failed: {output}",
                fix=f"remove {data} and run `lakehouse stack up` again",
            )
        if self.settings.security:
            scram_marker.write_text(",".join(sorted(self.ctx.credentials.kafka_passwords)))

    def _java_command(self) -> list[str]:
        return [
            str(self.ctx.java()),
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.lib_dir}/*",
        ]

    def command(self) -> list[str]:
        heap = self.settings.kafka.heap
        java, *rest = self._java_command()
        return [
            java, f"-Xms{min_heap(heap)}", f"-Xmx{heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", *rest, "kafka.Kafka", str(self._properties),
        ]  # fmt: skip

    def admin(self) -> AdminClient:
        config = kafka_config(
            self.settings, ADMIN_PRINCIPAL, credentials=self.ctx.credentials, log_level=3
        )
        return AdminClient(config)

    def ready(self) -> bool:
        # librdkafka logs every refused connection; only ask once the port answers.
        first = self.settings.kafka_bootstrap().split(",")[0]
        host, _, port = first.rpartition(":")
        if not port_accepts(host, int(port)):
            return False
        metadata = self.admin().list_topics(timeout=3)
        return bool(metadata.brokers)

    def bootstrap(self) -> None:
        topic, partitions = self.settings.kafka.topic, self.settings.kafka.partitions
        admin = self.admin()
        existing = admin.list_topics(timeout=10).topics
        if topic not in existing:
            futures = admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions,
                        replication_factor=self.settings.kafka.replication_factor,
                    )
                ]
            )
            futures[topic].result(timeout=30)
        elif len(existing[topic].partitions) < partitions:
            futures = admin.create_partitions([NewPartitions(topic, partitions)])
            futures[topic].result(timeout=30)
        if self.settings.security:
            grant(admin, platform_bindings())
            grant_topic(admin, topic, [self.settings.ingest.group_id])
