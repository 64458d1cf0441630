"""Workers: each job a new immutable twin version; retries; background runs.

The jobs build real twins of the bundled demo patient (cloned under several
pseudonyms) with :func:`cartwin.twin.build.build_twin`.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from scheduler_samples import T_ARRIVAL, after, import_clone

from cartwin.errors import DataError
from cartwin.record.hashing import record_hash
from cartwin.record.model import Observation
from cartwin.scheduler import (
    Scheduler,
    SchedulerConfig,
    enqueue_for_observations,
    queue_view,
    run_pending,
    store_lock,
)
from cartwin.scheduler import worker as worker_module
from cartwin.store import open_store


def _wait_until(predicate, timeout=60.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _all_done(store, n_jobs):
    def done():
        with store_lock(store):
            return queue_view(store).totals()["done"] >= n_jobs

    return done


def test_jobs_make_a_chain_of_versions(store):
    patient = import_clone(store, 1)
    enqueue_for_observations(store, patient, ["spo2", "cart_qpcr"], T_ARRIVAL)
    (crs,) = run_pending(store, now=after(5))
    assert (crs.model, crs.state, crs.outcome) == ("crs_grading", "done", "new_version")
    (first,) = store.twin_versions(patient)
    assert first.version_id == crs.version_id and first.parent_id is None
    assert first.data_hash == record_hash(store.load_record(patient))
    assert first.created_at == after(5)
    # The kinetics job sees the same data: done without a second version.
    (kinetics,) = run_pending(store, now=after(3600))
    assert (kinetics.outcome, kinetics.version_id) == ("unchanged", first.version_id)
    # New data: the next version's parent is the first.
    spo2 = Observation("spo2", after(7200), 89.0, "%", source_id="Observation/new")
    store.import_records(
        [store.load_record(patient).with_data([spo2])],
        source_name="new.json", source_sha256="e" * 64,
    )  # fmt: skip
    enqueue_for_observations(store, patient, ["spo2"], after(7200))
    (again,) = run_pending(store, now=after(7205))
    second = store.latest_twin_version(patient)
    assert (again.outcome, second.parent_id) == ("new_version", first.version_id)
    assert [v.version_id for v in store.twin_versions(patient)] == [
        first.version_id, second.version_id,
    ]  # fmt: skip


def test_failed_build_is_retried_with_backoff(store, monkeypatch):
    patient = import_clone(store, 2)
    real_build, calls = worker_module.build_twin, []

    def flaky(record, **options):
        calls.append(options["now"])
        if len(calls) == 1:
            raise RuntimeError("solver diverged")
        return real_build(record, **options)

    monkeypatch.setattr(worker_module, "build_twin", flaky)
    enqueue_for_observations(store, patient, ["spo2"], T_ARRIVAL)
    config = SchedulerConfig(retry_base_s=30)
    (failed,) = run_pending(store, now=after(5), config=config)
    assert (failed.state, failed.error) == ("pending", "RuntimeError: solver diverged")
    assert run_pending(store, now=after(34), config=config) == []  # backoff 30 s
    (done,) = run_pending(store, now=after(35), config=config)
    assert (done.state, done.outcome) == ("done", "new_version")
    (job,) = queue_view(store).recent_jobs
    assert (job.attempts, job.state, job.last_error) == (2, "done", None)
    assert len(store.twin_versions(patient)) == 1


def test_gives_up_after_max_attempts(store, monkeypatch):
    patient = import_clone(store, 3)

    def broken(record, **options):
        raise ValueError("bad prior")

    monkeypatch.setattr(worker_module, "build_twin", broken)
    enqueue_for_observations(store, patient, ["spo2"], T_ARRIVAL)
    config = SchedulerConfig(max_attempts=2, retry_base_s=1)
    states = [r.state for r in run_pending(store, now=after(5), config=config)]
    states += [r.state for r in run_pending(store, now=after(60), config=config)]
    assert states == ["pending", "failed"]
    assert store.twin_versions(patient) == []


def test_background_threads_on_duckdb(tmp_path):
    path = tmp_path / "twin.duckdb"
    with open_store(path) as store:
        patients = [import_clone(store, i) for i in range(1, 5)]
        for patient in patients:
            enqueue_for_observations(store, patient, ["spo2"], T_ARRIVAL)
    with Scheduler(str(path), workers=2, config=SchedulerConfig(poll_s=0.05)) as sched:
        assert sched.mode == "threads"
        assert _wait_until(_all_done(sched.store, 4))
        with store_lock(sched.store):
            versions = [len(sched.store.twin_versions(p)) for p in patients]
    assert versions == [1, 1, 1, 1]


def test_calibration_does_not_block_ingestion(tmp_path, monkeypatch):
    # A DuckDB store shared by the workers and an importer in this process:
    # the importer waits for short transactions only, never for a build.
    real_build, building = worker_module.build_twin, threading.Event()

    def slow_build(record, **options):
        building.set()
        time.sleep(1.5)
        return real_build(record, **options)

    monkeypatch.setattr(worker_module, "build_twin", slow_build)
    with open_store(tmp_path / "twin.duckdb") as store:
        patient = import_clone(store, 1)
        enqueue_for_observations(store, patient, ["spo2"], T_ARRIVAL)
        with Scheduler(store, workers=1, config=SchedulerConfig(poll_s=0.05)):
            assert building.wait(30)
            started = time.perf_counter()
            with store_lock(store):
                import_clone(store, 2)
                enqueue_for_observations(store, f"{2:016x}", ["spo2"])
            waited = time.perf_counter() - started
            assert _wait_until(_all_done(store, 1))
    assert waited < 1.0, f"import waited {waited:.2f} s behind a 1.5 s build"


def test_worker_processes_on_postgres(postgres):
    url = postgres.new_schema("procs")
    with open_store(url) as store:
        patients = [import_clone(store, i) for i in range(1, 4)]
        for patient in patients:
            enqueue_for_observations(store, patient, ["cart_flow"], T_ARRIVAL)
        config = SchedulerConfig(poll_s=0.1, lease_s=30)
        scheduler = Scheduler(url, workers=2, config=config).start()
        try:
            assert scheduler.mode == "processes"
            assert _wait_until(_all_done(store, 3), timeout=90)
            # A worker process killed outright is replaced.
            victim = scheduler._handles[0]
            os.kill(victim.pid, signal.SIGKILL)
            assert _wait_until(lambda: scheduler.restarts == 1, timeout=30)
            assert scheduler._handles[0].pid != victim.pid
            enqueue_for_observations(store, patients[0], ["spo2"], T_ARRIVAL)
            assert _wait_until(_all_done(store, 4), timeout=90)
        finally:
            handles = list(scheduler._handles)
            scheduler.stop()
        # worker names are host-pid-index: the jobs ran in the child processes
        pids = {int(j.worker.rsplit("-", 2)[1]) for j in queue_view(store).recent_jobs}
        assert pids and os.getpid() not in pids
        assert [len(store.twin_versions(p)) for p in patients] == [1, 1, 1]
    assert not any(handle.is_alive() for handle in handles)


@pytest.mark.parametrize("workers", [0, -1])
def test_scheduler_needs_a_worker(workers):
    with pytest.raises(DataError, match="workers must be >= 1"):
        Scheduler(":memory:", workers)
