"""The durable queue: debounce, leases, retries with backoff, restart, view.

Every test runs on DuckDB and on PostgreSQL (see conftest.py). Times are
passed explicitly (``now``), so due times and backoff are exact.
"""

from __future__ import annotations

import datetime as dt

import pytest
from scheduler_samples import T_ARRIVAL, after, import_clone

from cartwin.errors import DataError
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.scheduler import (
    LeaseLost,
    claim_job,
    complete_job,
    enqueue_for_observations,
    enqueue_for_records,
    expire_leases,
    fail_job,
    queue_view,
)
from cartwin.store import open_store
from cartwin.twin.version import TwinVersion

P1, P2 = f"{1:016x}", f"{2:016x}"


def _claim(store, seconds, worker="w1", **options):
    return claim_job(store, worker=worker, now=after(seconds), **options)


def test_burst_of_vitals_makes_one_job(store):
    # 50 vital signs within 5 s, then a temperature: one CRS job, due 5 s
    # after the first sign.
    ids = {
        job_id
        for i in range(50)
        for job_id in enqueue_for_observations(store, P1, ["spo2"], after(i * 0.1))
    }
    enqueue_for_observations(store, P1, ["temperature", "crp"], after(4))
    (job,) = queue_view(store).open_jobs
    assert ids == {job.job_id}
    assert (job.model, job.state, job.n_triggers) == ("crs_grading", "pending", 51)
    assert job.reason == "spo2,temperature"
    assert job.due_at == after(5)


def test_each_rule_gets_its_window(store):
    enqueue_for_observations(store, P1, ["cart_qpcr", "spo2"], T_ARRIVAL)
    enqueue_for_observations(store, P1, ["single_cell"], T_ARRIVAL)
    due = {job.model: job.due_at - T_ARRIVAL for job in queue_view(store).open_jobs}
    assert due == {
        "crs_grading": dt.timedelta(seconds=5),
        "kinetics": dt.timedelta(hours=1),
        "omics_priors": dt.timedelta(days=1),
    }
    assert enqueue_for_observations(store, P1, ["crp", "anc"], T_ARRIVAL) == []


def test_job_is_not_claimed_before_it_is_due(store):
    enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
    assert _claim(store, 4.999) is None
    job = _claim(store, 5)
    assert (job.state, job.attempts, job.worker) == ("running", 1, "w1")
    assert job.leased_until == after(5 + 300)


def test_running_job_takes_no_new_observations(store):
    enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
    running = _claim(store, 5)
    (new_id,) = enqueue_for_observations(store, P1, ["spo2"], after(6))
    assert new_id != running.job_id
    # the patient's second job waits while the first one runs
    assert _claim(store, 60, worker="w2") is None


def test_expired_lease_is_claimed_again(store):
    enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
    first = _claim(store, 5, lease_s=30)
    assert _claim(store, 34.9, worker="w2") is None
    again = _claim(store, 35, worker="w2", lease_s=30)
    assert (again.job_id, again.attempts, again.worker) == (first.job_id, 2, "w2")
    with pytest.raises(LeaseLost, match="no longer held by worker w1"):
        complete_job(store, first, version_id="0" * 16, now=after(36))
    assert queue_view(store).open_jobs[0].worker == "w2"


def test_lease_lost_writes_no_version(store):
    pseudonym = import_clone(store, 1)
    enqueue_for_observations(store, pseudonym, ["spo2"], T_ARRIVAL)
    first = _claim(store, 5, lease_s=30)
    _claim(store, 40, worker="w2")
    version = TwinVersion(pseudonym, after(41), "d" * 64, "m", "1", "0.1.0")
    with pytest.raises(LeaseLost):
        complete_job(store, first, version=version, now=after(41))
    assert store.twin_versions(pseudonym) == []  # rolled back with the job update


def test_worker_lost_too_often_fails_the_job(store):
    enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
    for attempt in range(3):
        assert _claim(store, 5 + 100 * attempt, lease_s=10, max_attempts=3)
    assert _claim(store, 400, lease_s=10, max_attempts=3) is None
    (job,) = queue_view(store).recent_jobs
    assert (job.state, job.attempts) == ("failed", 3)
    assert "lease expired" in job.last_error


def test_failures_back_off_then_give_up(store):
    enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
    now, retries = 5.0, []
    for _ in range(4):
        job = _claim(store, now)
        state = fail_job(store, job, "CalibrationError: no convergence",
                         now=after(now), max_attempts=4, retry_base_s=10)  # fmt: skip
        retries.append(state)
        pending = queue_view(store).open_jobs
        if pending:
            now = (pending[0].due_at - T_ARRIVAL).total_seconds()
    # backoff 10, 20, 40 s after attempts 1-3; attempt 4 is the last
    assert retries == ["pending", "pending", "pending", "failed"]
    assert now == 5 + 10 + 20 + 40
    (job,) = queue_view(store).recent_jobs
    assert (job.state, job.attempts, job.last_error) == (
        "failed", 4, "CalibrationError: no convergence",
    )  # fmt: skip


def test_queue_survives_restart(store_url):
    with open_store(store_url) as store:
        enqueue_for_observations(store, P1, ["spo2"], T_ARRIVAL)
        enqueue_for_observations(store, P2, ["cart_flow"], T_ARRIVAL)
        running = _claim(store, 5)
    with open_store(store_url) as store:  # "restart": a new process would do this
        view = queue_view(store)
        assert [(j.pseudonym, j.state) for j in view.open_jobs] == [
            (P1, "running"), (P2, "pending"),
        ]  # fmt: skip
        assert expire_leases(store, after(6)) == 1
        again = _claim(store, 6, worker="w2")
    assert (again.job_id, again.attempts) == (running.job_id, 2)


def test_view_counts_and_json(store):
    assert queue_view(store).totals() == {
        "pending": 0, "running": 0, "failed": 0, "done": 0,
    }  # fmt: skip
    enqueue_for_observations(store, P1, ["spo2", "cart_qpcr"], T_ARRIVAL)
    job = _claim(store, 5)
    complete_job(store, job, version_id="0123456789abcdef", now=after(6))
    view = queue_view(store)
    assert view.counts == {"crs_grading": {"done": 1}, "kinetics": {"pending": 1}}
    assert view.totals()["done"] == 1
    done = view.to_dict()["recent_jobs"][0]
    assert (done["outcome"], done["version_id"]) == ("unchanged", "0123456789abcdef")
    assert done["finished_at"] == after(6).isoformat()


def test_enqueue_refuses_source_ids_and_naive_times(store):
    with pytest.raises(DataError, match="not a pseudonym"):
        enqueue_for_observations(store, "MRN-0001", ["spo2"], T_ARRIVAL)
    with pytest.raises(DataError, match="no time zone"):
        enqueue_for_observations(store, P1, ["spo2"], dt.datetime(2025, 3, 12, 8))


def test_enqueue_for_an_imports_records(store):
    records = [
        PatientRecord(PatientFacts(P1), (Observation("spo2", T_ARRIVAL, 92.0, "%"),)),
        PatientRecord(PatientFacts(P2), events=(Event("infusion", T_ARRIVAL),)),
        PatientRecord(PatientFacts(P1), events=(Event("vasopressor", T_ARRIVAL),)),
    ]
    jobs = enqueue_for_records(store, records, T_ARRIVAL)
    assert list(jobs) == [P1]  # an infusion alone triggers no rule
    (job,) = queue_view(store).open_jobs
    assert (job.job_id, job.reason) == (jobs[P1][0], "spo2,vasopressor")
