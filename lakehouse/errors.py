"""Every error the lakehouse raises on purpose derives from one root.

```
LakehouseError
 ├── ConfigError                 settings that cannot work together
 │    └── InvalidNameError       a run id, branch, device id … outside its pattern
 ├── CatalogError                Nessie refused or failed a reference operation
 │    └── ReferenceConflictError a branch moved or exists already (HTTP 409)
 ├── RegistryError               a device registry operation was refused
 ├── IngestError                 ingestion could not proceed
 │    ├── FencedCommitError      a batch's start offsets no longer match the table
 │    └── InputFileError         a file to ingest cannot be read at all
 ├── ReconcileError              the pipeline's stages could not be read to reconcile
 ├── MaintenanceError            compaction, garbage collection or retention failed
 │    └── MaintenanceLockedError another pass (or a backup) holds the maintenance lock
 └── StackError                  the native stack could not be brought up or down
      ├── PrerequisiteError      a tool the stack needs is missing (Go, Java ≥ 24, …)
      ├── FetchError             a server could not be obtained
      │    └── ChecksumMismatchError
      ├── PortInUseError         a configured port is taken by another process
      └── ServiceStartError      a service exited during start or never became ready
```

Each error carries a short `message` and, where one exists, the `fix`; the CLI prints
both (plus the tail of the service log for start failures) instead of a traceback.
"""

from __future__ import annotations


class LakehouseError(Exception):
    """Root of all errors raised by the lakehouse on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\nFix: {self.fix}"
        return self.message


class ConfigError(LakehouseError):
    """Settings that are individually valid but cannot work together."""


class InvalidNameError(ConfigError):
    """A name that would reach a URL, a path or SQL does not match its strict pattern."""


class CatalogError(LakehouseError):
    """Nessie refused or failed a branch, tag or merge operation."""


class ReferenceConflictError(CatalogError):
    """The reference exists already or moved since it was read (Nessie's HTTP 409)."""


class RegistryError(LakehouseError):
    """A device registry operation was refused (unknown device, bad site, …)."""


class IngestError(LakehouseError):
    """Ingestion could not proceed."""


class FencedCommitError(IngestError):
    """The table's offsets moved since the batch started: another consumer owns them now."""


class InputFileError(IngestError):
    """A file given to `lakehouse ingest file` cannot be read at all."""


class StackError(LakehouseError):
    """The native stack could not be brought up, inspected or stopped."""


class PrerequisiteError(StackError):
    """A tool the stack needs (Go toolchain, Java ≥ 24, Maven, …) is missing."""


class FetchError(StackError):
    """A server artifact could not be downloaded or built."""


class ChecksumMismatchError(FetchError):
    """A downloaded artifact does not match its pinned checksum."""


class PortInUseError(StackError):
    """A port the stack is configured to use is already bound by another process."""


class ServiceStartError(StackError):
    """A service exited while starting or did not become ready in time."""

    def __init__(
        self, message: str, *, fix: str | None = None, service: str, log_tail: str = ""
    ) -> None:
        super().__init__(message, fix=fix)
        self.service = service
        self.log_tail = log_tail


class TransformError(LakehouseError):
    """A transform run could not run or publish."""


class TransformLockedError(TransformError):
    """Another transform run holds the lock."""


class ServersAwayError(LakehouseError):
    """A server a job needs accepts no connection: wait for it, nothing was started."""


class TransformFailedError(TransformError):
    """dbt failed on the run's branch: main is untouched and the branch is kept."""


class ServingError(LakehouseError):
    """The PostgreSQL serving layer could not be published or is unsafe to serve."""


class UnsafeServingRoleError(ServingError):
    """A role that dashboards use could see past row-level security."""


class ReconcileError(LakehouseError):
    """The stages of the pipeline could not be read to account for the readings."""


class MaintenanceError(LakehouseError):
    """Compaction, garbage collection or retention could not be done."""


class MaintenanceLockedError(MaintenanceError):
    """Another maintenance pass (or a backup) holds the maintenance lock."""


class BackupError(LakehouseError):
    """A backup or a restore could not be made; nothing it had done is relied on."""
