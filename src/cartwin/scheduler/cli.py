"""Command line of the update scheduler: ``cartwin queue`` and ``cartwin worker``.

:data:`queue_app` is a Typer app whose two commands the main ``cartwin`` app
mounts at its top level (``app.add_typer(queue_app)``); it also runs alone as
``python -m cartwin.scheduler.cli``. ``--store`` takes a DuckDB path or a
PostgreSQL URL (default ``$CARTWIN_STORE``, then ``./cartwin.duckdb``).

With a DuckDB store, ``cartwin worker`` holds the file for as long as it runs:
other processes (``cartwin import``, ``cartwin queue``) cannot open it
meanwhile. Run the workers inside the service process instead, or use
PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

import typer
from rich.console import Console
from rich.table import Table

from cartwin.errors import CartwinError

queue_app = typer.Typer(
    help="Update queue of twin recalibrations.", no_args_is_help=True,
    add_completion=False,
)  # fmt: skip

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)

StoreOption = typer.Option(
    None, "--store", envvar="CARTWIN_STORE",
    help="Twin store: DuckDB file or postgresql:// URL. "
    "Default: $CARTWIN_STORE or ./cartwin.duckdb.",
)  # fmt: skip


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("CARTWIN_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def _fail(exc: Exception) -> None:
    _err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=1)


@queue_app.command("queue")
def queue_cmd(
    store: str | None = StoreOption,
    limit: int = typer.Option(20, min=1, help="Finished jobs to list."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show the update queue: jobs per model and state, open and recent jobs."""
    from cartwin.scheduler.view import queue_view
    from cartwin.store import open_store

    _configure_logging()
    try:
        with open_store(store, read_only=True) as opened:
            view = queue_view(opened, limit=limit)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _out.print_json(json.dumps(view.to_dict()))
        return
    _print_view(view)


def _print_view(view) -> None:
    totals = ", ".join(f"{n} {state}" for state, n in view.totals().items())
    _out.print(f"queue of {view.store}: {totals}")
    for title, jobs in (("open", view.open_jobs), ("recent", view.recent_jobs)):
        if not jobs:
            continue
        table = Table(title=f"{title} jobs")
        for column in ("id", "patient", "model", "state", "due", "tries", "note"):
            table.add_column(column)
        for job in jobs:
            note = job.last_error or job.outcome or job.reason
            table.add_row(
                str(job.job_id), job.pseudonym, job.model, job.state,
                job.due_at.isoformat(timespec="seconds"), str(job.attempts),
                note or "",
            )  # fmt: skip
        _out.print(table)


@queue_app.command("worker")
def worker_cmd(
    store: str | None = StoreOption,
    workers: int = typer.Option(2, "--workers", min=1, help="Number of workers."),
    lease_seconds: float = typer.Option(
        300.0,
        min=0.001,
        help="Seconds a job stays with a worker before another may take it up "
        "(longer than the slowest calibration).",
    ),
    max_attempts: int = typer.Option(5, min=1, help="Attempts before a job fails."),
    poll_seconds: float = typer.Option(0.5, min=0.001, help="Idle wait, seconds."),
    drain: bool = typer.Option(
        False, "--drain", help="Exit once no job is due (for cron or batch runs)."
    ),
) -> None:
    """Run recalibration workers until stopped (SIGINT/SIGTERM) or drained."""
    from cartwin.scheduler.worker import Scheduler, SchedulerConfig

    _configure_logging()
    try:
        config = SchedulerConfig(
            lease_s=lease_seconds, max_attempts=max_attempts, poll_s=poll_seconds
        )
        scheduler = Scheduler(store, workers, config=config, drain=drain).start()
    except CartwinError as exc:
        _fail(exc)
    _err.print(f"{workers} worker {scheduler.mode} started")
    try:
        _wait(scheduler, drain)
    finally:
        scheduler.stop()
    _err.print("workers stopped")


def _wait(scheduler, drain: bool) -> None:
    stopping = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    before = [signal.signal(sig, lambda *_: stopping.set()) for sig in signals]
    try:
        while not stopping.is_set():
            if drain and scheduler.wait(timeout=0.2):
                return
            stopping.wait(0.2)
    finally:
        for sig, handler in zip(signals, before):
            signal.signal(sig, handler)


if __name__ == "__main__":
    queue_app()
