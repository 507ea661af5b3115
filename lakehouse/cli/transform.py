"""`lakehouse transform …`: publish silver, gold and platinum through a Nessie branch."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lakehouse import transform_runs as runs
from lakehouse.cli.common import err, out, settings_of
from lakehouse.clients import postgres_connection
from lakehouse.config import Settings
from lakehouse.credentials import load
from lakehouse.errors import LakehouseError, ServersAwayError, TransformLockedError
from lakehouse.metrics import serve
from lakehouse.names import checked
from lakehouse.retry import Backoff
from lakehouse.serving.publish import describe
from lakehouse.transform.metrics import TransformMetrics
from lakehouse.transform.runner import PHASES, RunReport, TransformRunner
from lakehouse.transform.trigger import BronzeCommits

transform_app = typer.Typer(
    help="Build silver, gold and platinum on a Nessie branch; publish when every test passes.",
    invoke_without_command=True,
)


@transform_app.callback()
def transform(
    ctx: typer.Context,
    every: Annotated[
        float | None,
        typer.Option(
            help="Run again until interrupted (SIGTERM/Ctrl-C): as soon as bronze has a new "
            "commit (see --watch), and at least every SECONDS.",
            min=1,
        ),
    ] = None,
    watch: Annotated[
        float,
        typer.Option(
            help="With --every: look for a new bronze commit every SECONDS and run as soon "
            "as one lands (0: run on the interval only).",
            min=0,
        ),
    ] = 1.0,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild every layer from all of bronze.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Run dbt even when bronze has no new rows.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-model progress.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="With --every: serve Prometheus metrics on this port (0: none)."),
    ] = None,
    audit_every: Annotated[
        float | None,
        typer.Option(
            help="With --every: audit main (every test, every row) this often, in seconds "
            "(0: never; default LAKEHOUSE_TRANSFORM_AUDIT_EVERY, a day).",
            min=0,
        ),
    ] = None,
) -> None:
    """Run once (or every SECONDS): branch, dbt build, merge into main when it passes."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_of(ctx)
    runner = TransformRunner(settings, load(settings), quiet=quiet)
    if every is None:
        report = runner.run(full_refresh=full_refresh, force=force)
        _print_report(report)
        raise typer.Exit(0 if report.outcome in {"published", "up_to_date"} else 1)
    metrics = TransformMetrics()
    if metrics_port:
        serve(metrics.registry, settings.host, metrics_port)
    audit = settings.transform.audit_every if audit_every is None else audit_every
    commits = BronzeCommits(settings, runner.credentials)
    try:
        _loop(
            runner, every, metrics, commits if watch > 0 else None, watch,
            full_refresh=full_refresh, force=force, audit_every=audit,
        )  # fmt: skip
    finally:
        commits.close()


def _loop(
    runner: TransformRunner,
    every: float,
    metrics: TransformMetrics,
    commits: BronzeCommits | None,
    watch: float,
    *,
    full_refresh: bool,
    force: bool,
    audit_every: float,
) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    first = True
    failures = 0
    waiting_for: str | None = None  # the servers away, said once until they are back
    skipped_for: str | None = None  # the lock held by another, said once while it is
    while not stop.is_set():
        started = time.monotonic()
        if commits is not None:
            commits.mark()
        try:
            # Only the first run of a loop rebuilds everything when asked to.
            report = runner.run(full_refresh=full_refresh and first, force=force)
            skipped_for = None
            if waiting_for is not None:
                err.print("servers answer again: runs resume", highlight=False)
                waiting_for = None
            _print_report(report)
            if report.outcome == "interrupted":
                failures += 1
            else:
                failures = 0
            # Layers first: a scrape that sees the run counted sees its figures too.
            _refresh_layers(runner, metrics)
            metrics.record_run(report.outcome, report.seconds)
            if runner.audit_due(audit_every):
                audit = runner.audit()
                _print_report(audit)
                metrics.record_run(audit.outcome, audit.seconds)
        except TransformLockedError as exc:
            if exc.message != skipped_for:  # once, not at every bronze commit
                err.print(f"[yellow]skipped:[/] {escape(exc.message)}", highlight=False)
                skipped_for = exc.message
            failures = 0
        except ServersAwayError as exc:
            failures += 1
            if exc.message != waiting_for:
                err.print(f"[yellow]waiting:[/] {escape(exc.message)}", highlight=False)
                waiting_for = exc.message
        except LakehouseError as exc:
            metrics.record_run("error", time.monotonic() - started)
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        except Exception as exc:  # a server away (Trino, Nessie, PostgreSQL): try again
            metrics.record_run("error", time.monotonic() - started)
            failures += 1
            err.print(
                f"[bold red]run failed:[/] {type(exc).__name__}: {escape(str(exc)[:300])}"
                + (f" ({failures} in a row)" if failures > 1 else ""),
                highlight=False,
            )
        first = False
        # After failures, retry sooner than the interval but back off up to it.
        wait = every if not failures else Backoff(5.0, every, jitter=0.0).delay(failures)
        left = max(wait - (time.monotonic() - started), 0)
        if commits is None or failures:
            stop.wait(left)
        else:
            commits.wait(stop, left, watch)
    err.print("stopped")


def _refresh_layers(runner: TransformRunner, metrics: TransformMetrics) -> None:
    try:
        metrics.refresh_layers(runner.trino_cursor(), runner.prefix)
    except Exception as exc:  # metrics are best effort; the next run tries again
        err.print(f"[yellow]layer freshness not read:[/] {escape(str(exc)[:200])}", highlight=False)


def _print_report(report: RunReport) -> None:
    if report.outcome in {"audited", "audit_failed"}:
        _print_audit(report)
        return
    window = report.window
    if report.outcome == "up_to_date":
        err.print(
            f"run {report.run_id}: up to date (no new bronze rows) in {report.seconds:.2f} s, "
            "main unchanged",
            highlight=False,
        )
        return
    counts = report.counts
    err.print(
        f"run {report.run_id}: [bold]{report.outcome}[/] in {report.seconds:.1f} s — "
        f"bronze rows {counts.get('bronze')}, silver +{counts.get('silver')}, "
        f"quarantined +{counts.get('quarantine')}"
        + (f", {len(window.files)} new file(s)" if window and window.files else ""),
        highlight=False,
    )
    if report.outcome == "interrupted":
        err.print(
            f"[yellow]{report.error}[/]; its branch is dropped and the next run does the "
            "same work again",
            highlight=False,
        )
        return
    if report.outcome == "published":
        err.print(f"main is now at {report.main_after}", highlight=False)
        err.print(f"seconds by phase: {_phases(report)}", highlight=False)
        if report.serving is not None:
            err.print(describe(report.serving), highlight=False)
        elif report.serving_error is not None:
            err.print(
                f"[yellow]serving not updated:[/] {report.serving_error}; "
                "`lakehouse serve publish` catches up",
                highlight=False,
            )
        return
    _print_kept(report, "main is untouched. Branch and Trino catalog {branch} are kept")


def _phases(report: RunReport) -> str:
    """`window 0.21, branch 0.05, …` in the order the phases ran."""
    ordered = sorted(report.phases, key=lambda p: PHASES.index(p) if p in PHASES else len(PHASES))
    return ", ".join(f"{name} {report.phases[name]:.2f}" for name in ordered)


def _print_audit(report: RunReport) -> None:
    tests = [n for n in report.nodes if n.resource_type in {"test", "unit_test"}]
    if report.outcome == "audited":
        err.print(
            f"audit {report.run_id}: [bold]passed[/] in {report.seconds:.1f} s — "
            f"{len(tests)} tests over every row of main at {report.main_before}",
            highlight=False,
        )
        return
    err.print(
        f"audit {report.run_id}: [bold red]failed[/] in {report.seconds:.1f} s — "
        f"{len(report.failed_nodes)} of {len(tests)} tests failed on main at "
        f"{report.main_before}",
        highlight=False,
    )
    _print_kept(report, "Branch and Trino catalog {branch} hold main as audited")


def _print_kept(report: RunReport, kept: str) -> None:
    """The failed nodes, and the branch kept for inspection (`kept` names it)."""
    for node in report.failed_nodes:
        err.print(
            f"  [red]✗[/] {node.node} ({node.status}): {escape(node.message or '')}",
            highlight=False,
        )
    err.print(
        kept.format(branch=f"[bold]{report.branch}[/]")
        + f": query its tables as {report.branch}.<schema>.<table> in Trino; "
        f"drop them with `lakehouse transform discard {report.run_id}`.",
        highlight=False,
    )


@transform_app.command("audit")
def audit(ctx: typer.Context) -> None:
    """Test every row of main and run the project's unit tests; main is not changed.

    Runs test what they wrote; this checks the whole lake (the transform service does it
    every LAKEHOUSE_TRANSFORM_AUDIT_EVERY seconds, a day by default)."""
    settings = settings_of(ctx)
    report = TransformRunner(settings, load(settings)).audit()
    _print_report(report)
    raise typer.Exit(0 if report.outcome == "audited" else 1)


@transform_app.command("runs")
def list_runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("-n", help="How many recent runs.")] = 20,
) -> None:
    """Recent runs (also queryable in Trino as pg.transform.runs)."""
    settings: Settings = settings_of(ctx)
    with postgres_connection(settings, load(settings)) as conn:
        runs.ensure_schema(conn)
        records = runs.recent(conn, limit)
    table = Table("run", "started", "outcome", "seconds", "bronze", "silver", "quarantined",
                  "failed")  # fmt: skip
    for r in records:
        table.add_row(
            r.run_id,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            r.outcome,
            f"{r.seconds:.1f}" if r.seconds is not None else "",
            _number(r.bronze_rows),
            _number(r.silver_rows),
            _number(r.quarantined_rows),
            r.failed_nodes or r.error or "",
        )
    out.print(table)


@transform_app.command("discard")
def discard(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A failed run whose branch was kept.")],
) -> None:
    """Drop the branch and Trino catalog a failed run left for inspection."""
    checked("run id", run_id)
    settings = settings_of(ctx)
    TransformRunner(settings, load(settings)).discard(run_id)
    err.print(f"discarded the branch and catalog of run {run_id}")


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
