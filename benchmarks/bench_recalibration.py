"""Recalibration throughput of the update scheduler, in patients per minute.

Claim measured (issue 5, benchmarks): background workers recalibrate twins at
a rate worth reporting with 2 workers, on DuckDB (worker threads sharing the
process's connection) and on PostgreSQL (worker processes, one connection
each). Each patient is the bundled demo patient (1431 observations, 15
events; synthetic) cloned under its own pseudonym; each has one due
``kinetics`` job, and each job loads the record, runs
:func:`cartwin.twin.build.build_twin` (kinetics MAP + Laplace, 1000-draw
forecast, scores, CRS/ICANS grades) and saves a new twin version in the
transaction that marks the job done.

Two rates are printed per run:

* **end to end**: patients / wall time from :meth:`Scheduler.start` until the
  last job is done, start-up included (process spawn, imports, the first JAX
  compilation, which the persistent cache of :mod:`cartwin._jax` shortens);
* **steady**: completions after the first ``workers`` ones, divided by the time
  between the ``workers``-th and the last completion (``finished_at`` of the
  jobs), i.e. once every worker is warm.

The benchmark process builds one twin before the runs, so worker threads
start with the JAX programs compiled; worker processes start cold (they load
the compiled programs from the persistent cache). 1 worker is run next to 2
for reference. PostgreSQL is a throwaway server
started in a temporary folder (see ``bench_omop_import.ThrowawayPostgres``),
unless ``--pg-url`` names one; each run uses a fresh schema there.

Run::

    .venv/bin/python benchmarks/bench_recalibration.py [--patients 24]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from bench_omop_import import ThrowawayPostgres, _machine


def _demo_record():
    from cartwin.demo import demo_bundle_path
    from cartwin.io.formats import ReadOptions, read_source
    from cartwin.record.pseudonym import DEMO_KEY

    parsed = read_source(
        demo_bundle_path(), "fhir", key=DEMO_KEY, options=ReadOptions()
    )
    (record,) = parsed.records
    return record


def _warm_up(record) -> None:
    """Build one twin here, so that worker threads start with JAX compiled."""
    from cartwin.twin.build import build_twin

    build_twin(record)


def _fill(store_url: str, record, n_patients: int) -> None:
    """Import ``n_patients`` clones and queue one due kinetics job for each."""
    from cartwin.scheduler import enqueue_for_observations
    from cartwin.store import open_store

    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with open_store(store_url) as store:
        for index in range(1, n_patients + 1):
            facts = dataclasses.replace(record.facts, pseudonym=f"{index:016x}")
            store.import_records(
                [dataclasses.replace(record, facts=facts)],
                source_name=f"clone-{index}", source_sha256=f"{index:064x}",
            )  # fmt: skip
            enqueue_for_observations(store, facts.pseudonym, ["cart_qpcr"], past)


def _run(store_url: str, workers: int, n_patients: int) -> dict:
    """Run the scheduler until the queue is drained; return the timings."""
    from cartwin.scheduler import Scheduler, SchedulerConfig, queue_view
    from cartwin.store import open_store

    config = SchedulerConfig(poll_s=0.05, lease_s=600)
    started = time.perf_counter()
    scheduler = Scheduler(store_url, workers, config=config, drain=True).start()
    scheduler.wait(timeout=1800)
    wall = time.perf_counter() - started
    scheduler.stop()
    with open_store(store_url, read_only=True) as store:
        view = queue_view(store, limit=n_patients)
    finished = sorted(job.finished_at for job in view.recent_jobs)
    done = view.totals()["done"]
    steady = float("nan")
    if len(finished) > workers + 1:
        span = (finished[-1] - finished[workers - 1]).total_seconds()
        steady = 60.0 * (len(finished) - workers) / span
    return {
        "mode": scheduler.mode, "done": done, "failed": view.totals()["failed"],
        "wall_s": wall, "end_to_end": 60.0 * done / wall, "steady": steady,
    }  # fmt: skip


def _postgres_url(fixed: str | None, stack: contextlib.ExitStack):
    if fixed:
        return fixed
    return stack.enter_context(ThrowawayPostgres()).url


def _fresh_schema(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        con.execute(f'CREATE SCHEMA "{name}"')
    joiner = "&" if "?" in base_url else "?"
    return f"{base_url}{joiner}options=-csearch_path%3D{name}"


def main(argv: list[str] | None = None) -> None:
    """Fill a store per backend and worker count, drain it, print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["duckdb", "postgres"])
    parser.add_argument("--pg-url", help="an existing server (a schema is made)")
    args = parser.parse_args(argv)

    record = _demo_record()
    _warm_up(record)
    print(f"machine  : {_machine()}")
    print(
        f"patients : {args.patients} clones of the demo patient "
        f"({len(record.observations)} observations, {len(record.events)} events)"
    )
    print(f"{'backend':<9} {'workers':>7} {'mode':<10} {'done':>5} {'wall s':>7} "
          f"{'patients/min end to end':>24} {'steady':>8}")  # fmt: skip
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        pg_base = None
        for backend in args.backends:
            for workers in args.workers:
                if backend == "duckdb":
                    url = str(Path(tmp) / f"bench-{workers}.duckdb")
                else:
                    pg_base = pg_base or _postgres_url(args.pg_url, stack)
                    url = _fresh_schema(pg_base, f"cartwin_bench_recal_{workers}")
                _fill(url, record, args.patients)
                result = _run(url, workers, args.patients)
                print(f"{backend:<9} {workers:>7} {result['mode']:<10} "
                      f"{result['done']:>5} {result['wall_s']:7.1f} "
                      f"{result['end_to_end']:24.1f} {result['steady']:8.1f}")  # fmt: skip
                if result["failed"]:
                    print(f"  {result['failed']} jobs failed", file=sys.stderr)


if __name__ == "__main__":
    main()
