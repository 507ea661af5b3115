"""dbt in-process (dbtRunner): a run's models, then its tests, against one Trino catalog."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lakehouse.config import Settings, environment_variables
from lakehouse.errors import TransformError
from lakehouse.tls import ca_path
from lakehouse.transform_runs import NodeResult


@dataclass(frozen=True)
class BuildResult:
    success: bool
    nodes: list[NodeResult]
    error: str | None = None
    # Seconds spent parsing the project, building the models and running the tests.
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

    def rows(self, model: str) -> int | None:
        for node in self.nodes:
            if node.resource_type == "model" and node.node.rsplit(".", 1)[-1] == model:
                return node.rows_affected
        return None


# What a project's fingerprint covers: everything that decides what a run builds.
_PROJECT_PARTS = ("dbt_project.yml", "models", "seeds", "macros", "tests")


def project_fingerprint(project: Path) -> int:
    """A 63-bit fingerprint of the dbt project's files (a changed model or seed
    rebuilds the reference tables on the next run)."""
    digest = hashlib.sha256()
    for part in _PROJECT_PARTS:
        root = project / part
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(path.relative_to(project).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return int.from_bytes(digest.digest()[:8], "big") >> 1


def build(
    settings: Settings,
    *,
    catalog: str,
    dbt_vars: dict[str, Any],
    password: str,
    command: Literal["build", "test"] = "build",
    exclude: Sequence[str] = (),
    unit_tests: bool = True,
    full_refresh: bool = False,
    quiet: bool = False,
) -> BuildResult:
    """Build the project's seeds and models in `catalog`, then run its tests (or, for
    `command="test"`, only the tests), leaving out the nodes `exclude` selects (their
    tests still run when they test something else too).

    Unlike `dbt build`, which holds each model until its parents' tests pass, every
    model is built first and every test runs after, all in parallel: a run publishes
    only when all of them pass, so holding models back only lengthens the run."""
    from dbt.cli.main import dbtRunner

    project = settings.transform.project_dir
    if not (project / "dbt_project.yml").is_file():
        raise TransformError(
            f"no dbt project at {project}",
            fix="set LAKEHOUSE_TRANSFORM_PROJECT_DIR to the repository's dbt/ directory",
        )
    work = settings.home / "transform"
    target = "lake" if settings.security else "lake_open"
    # What a parse depends on (schema names); the rest only matters when a node compiles.
    parse_vars = {name: dbt_vars[name] for name in _PARSE_VARS if name in dbt_vars}
    common = [
        "--project-dir", str(project),
        "--profiles-dir", str(project),
        "--target-path", str(work / "target"),
        "--log-path", str(work / "logs"),
        "--vars", json.dumps(dbt_vars),
        "--target", target,
    ]  # fmt: skip
    if quiet:
        common.append("--quiet")
    selection = ["--exclude", *exclude, "--indirect-selection", "cautious"] if exclude else []
    test = ["test", *common, *selection]
    if not unit_tests:
        test += ["--exclude-resource-type", "unit_test"]
    # dbt's env_var() reads the process environment.
    with environment_variables(_environment(settings, catalog, password)):
        if command == "test":
            started = time.monotonic()
            tested = _result(_invoke(dbtRunner(), test))
            return dataclasses.replace(tested, phases={"tests": time.monotonic() - started})
        started = time.monotonic()
        key = (str(project), project_fingerprint(project), target, json.dumps(parse_vars))
        manifest = _parsed_manifest(key, ["parse", *common], catalog)
        phases = {"parse": time.monotonic() - started}
        if isinstance(manifest, BuildResult):
            return dataclasses.replace(manifest, phases=phases)
        # Both steps reuse the one parse.
        runner = dbtRunner(manifest=manifest)
        models = ["build", *common, *selection]
        models += ["--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
        if full_refresh:
            models.append("--full-refresh")
        started = time.monotonic()
        built = _result(_invoke(runner, models))
        phases["models"] = time.monotonic() - started
        if not built.success:
            return dataclasses.replace(built, phases=phases)
        started = time.monotonic()
        tested = _result(_invoke(runner, test))
        phases["tests"] = time.monotonic() - started
        return BuildResult(
            tested.success, built.nodes + tested.nodes, error=tested.error, phases=phases
        )


# The vars that shape the parsed project (generate_schema_name and the sources read
# schema_prefix); the others vary from run to run and are read only when nodes compile.
_PARSE_VARS = ("schema_prefix",)
_KEPT_PARSES = 4
# Parsed projects by project, fingerprint, target and parse vars: a run's vars (its id,
# its bronze window) would make every parse a full one, over a second of each run.
_parses: dict[tuple[str, int, str, str], tuple[str, Any]] = {}


def _parsed_manifest(key: tuple[str, int, str, str], parse: list[str], catalog: str) -> Any:
    """The project parsed for `catalog`: a copy of a kept parse with the catalog swapped
    in, or a fresh parse (kept for the next run); a BuildResult when parsing fails."""
    from dbt.cli.main import dbtRunner

    kept = _parses.get(key)
    if kept is None:
        parsed = _invoke(dbtRunner(), parse)
        if not parsed.success or parsed.exception is not None:
            return BuildResult(False, [], error=str(parsed.exception or "dbt parse failed"))
        kept = (catalog, parsed.result)
        _parses[key] = kept
        while len(_parses) > _KEPT_PARSES:
            _parses.pop(next(iter(_parses)))
    parsed_catalog, parsed_manifest = kept
    manifest = _copy_for_a_run(parsed_manifest)
    if parsed_catalog != catalog:
        _move_to_catalog(manifest, parsed_catalog, catalog)
    return manifest


def _copy_for_a_run(manifest: Any) -> Any:
    """A manifest sharing the parse's macros and files, with nodes of its own (a run
    compiles into them) and lookups rebuilt on first use. Neither copy.deepcopy nor
    pickle gives a working copy of dbt's Manifest."""
    lookups = {f.name: None for f in dataclasses.fields(manifest) if f.name.endswith("_lookup")}
    return dataclasses.replace(
        manifest,
        nodes=copy.deepcopy(manifest.nodes),
        sources=copy.deepcopy(manifest.sources),
        **lookups,
    )


def _move_to_catalog(manifest: Any, old: str, new: str) -> None:
    """Point the parsed relations of `old` (the profile's catalog at parse time) at `new`."""
    quoted_old, quoted_new = f'"{old}".', f'"{new}".'
    for nodes in (manifest.nodes, manifest.sources):
        for node in nodes.values():
            if getattr(node, "database", None) != old:
                continue
            node.database = new
            relation = getattr(node, "relation_name", None)
            if relation and relation.startswith(quoted_old):
                node.relation_name = quoted_new + relation[len(quoted_old) :]


def _environment(settings: Settings, catalog: str, password: str) -> dict[str, str]:
    """What profiles.yml reads: the Trino endpoint, principal and catalog of a run."""
    return {
        "LAKEHOUSE_DBT_HOST": settings.server_host("trino"),
        "LAKEHOUSE_DBT_PORT": str(settings.trino.port),
        "LAKEHOUSE_DBT_CATALOG": catalog,
        "LAKEHOUSE_DBT_USER": settings.transform.trino_user,
        "LAKEHOUSE_DBT_PASSWORD": password,
        "LAKEHOUSE_DBT_CERT": str(ca_path(settings.home)),
        # requests lets these variables override the CA dbt-trino passes.
        "REQUESTS_CA_BUNDLE": str(ca_path(settings.home)),
        "CURL_CA_BUNDLE": str(ca_path(settings.home)),
        "LAKEHOUSE_DBT_THREADS": str(settings.transform.threads),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def _invoke(runner: Any, args: list[str]) -> Any:
    try:
        return runner.invoke(args)
    finally:
        _release_log_files()


def _result(outcome: Any) -> BuildResult:
    nodes = _nodes(outcome.result)
    if outcome.exception is not None:
        return BuildResult(False, nodes, error=str(outcome.exception))
    return BuildResult(bool(outcome.success), nodes)


def _release_log_files() -> None:
    """Close the log files dbt opened: its next invocation drops the handlers unclosed."""
    from dbt_common.events.event_manager_client import cleanup_event_logger, get_event_manager

    for logger in get_event_manager().loggers:
        python_logger = getattr(logger, "_python_logger", None)
        if python_logger is None:
            continue
        for handler in list(python_logger.handlers):
            handler.close()
            python_logger.removeHandler(handler)
    cleanup_event_logger()


def _nodes(result: Any) -> list[NodeResult]:
    nodes = []
    for item in getattr(result, "results", None) or []:
        response = getattr(item, "adapter_response", None) or {}
        rows = response.get("rows_affected") if isinstance(response, dict) else None
        status = str(getattr(item.status, "value", item.status))
        message = item.message
        failures = getattr(item, "failures", None)
        if failures and status in {"fail", "warn"}:
            message = f"{failures} failing rows"
        nodes.append(
            NodeResult(
                node=item.node.unique_id,
                resource_type=str(item.node.resource_type),
                status=status,
                rows_affected=int(rows) if isinstance(rows, int) and rows >= 0 else None,
                seconds=float(item.execution_time or 0.0),
                message=str(message) if message else None,
            )
        )
    return nodes
