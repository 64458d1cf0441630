"""SIGKILL a real worker or importer process; nothing half-written, work resumes.

Each test runs a helper script (scheduler_crash_worker.py,
scheduler_import_burst.py) as a real subprocess, kills it with SIGKILL at a
known point, then checks the store and restarts the work, on DuckDB and on
PostgreSQL. Every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from scheduler_import_burst import N_OBSERVATIONS, burst_record
from scheduler_samples import import_clone

from cartwin.scheduler import enqueue_for_observations, queue_view
from cartwin.store import open_store

HERE = Path(__file__).resolve().parent


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """Next stdout line of ``proc`` within ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no output within {timeout} s: {proc.stderr.read()}")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"process ended: {proc.wait()} {proc.stderr.read()}")
    return line.strip()


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def _restart_worker(store_url: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "cartwin.scheduler.cli", "worker", "--store",
        store_url, "--workers", "1", "--drain", "--poll-seconds", "0.1",
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=180, check=False
    )


def test_kill_during_recalibration(store_url, backend):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with open_store(store_url) as store:
        patient = import_clone(store, 1)
        enqueue_for_observations(store, patient, ["spo2"], past)
    worker = _start("scheduler_crash_worker.py", store_url)
    try:
        line = _read_line(worker, timeout=120)
        assert line.startswith("SAVED-UNCOMMITTED ")
        if backend == "postgres":  # the row exists only inside its transaction
            with open_store(store_url) as other:
                assert other.table_counts()["twin_version"] == 0
    finally:
        _kill(worker)

    with open_store(store_url) as store:
        assert store.twin_versions(patient) == []  # no half-written version
        (job,) = queue_view(store).open_jobs
        assert (job.state, job.attempts, job.worker) == ("running", 1, "doomed")
    # PostgreSQL: another process may own the job until its 2 s lease ends.
    time.sleep(max(0.0, (job.leased_until - dt.datetime.now(dt.UTC))
                   .total_seconds() + 0.2))  # fmt: skip
    restarted = _restart_worker(store_url)
    assert restarted.returncode == 0, restarted.stderr

    with open_store(store_url) as store:
        (version,) = store.twin_versions(patient)  # reads back under its id
        (job,) = queue_view(store).recent_jobs
        assert (job.state, job.attempts, job.outcome) == ("done", 2, "new_version")
        assert job.version_id == version.version_id
        assert store.table_counts()["twin_version"] == 1
    # built again at the retry (a later created_at), not the killed one revived
    assert version.version_id != line.split()[1]


def test_kill_during_import_burst(store_url):
    burst = _start("scheduler_import_burst.py", store_url, "6")
    acked = []
    try:
        assert _read_line(burst, timeout=120) == "READY"
        while len(acked) < 3:
            word, *fields = _read_line(burst, timeout=120).split()
            if word == "ACK":
                acked.append(fields)
        assert _read_line(burst, timeout=60) == "IMPORTING 3"
        time.sleep(0.05)  # into the import of file 3 (50 000 rows take longer)
    finally:
        _kill(burst)

    with open_store(store_url) as store:
        logged = {
            sha: (import_id, json.loads(counts))
            for import_id, sha, counts in store.con.execute(
                "SELECT import_id, source_sha256, counts FROM import_log"
            ).fetchall()
        }
        per_import = dict(store.con.execute(
            "SELECT import_id, count(*) FROM measurement GROUP BY import_id"
        ).fetchall())  # fmt: skip
        open_patients = {job.pseudonym for job in queue_view(store).open_jobs}
        # every acknowledged import is there, whole, with its job queued
        for _, sha, pseudonym, n in acked:
            assert logged[sha][1]["n_observations"] == int(n) == N_OBSERVATIONS
            assert len(store.load_record(pseudonym).observations) == N_OBSERVATIONS
            assert pseudonym in open_patients
        # no import is half-written: rows only of logged imports, all of them
        assert per_import == {i: c["n_observations"] for i, c in logged.values()}
        # the sender retries what was not acknowledged; the store takes it
        record, sha = burst_record(len(acked))
        again = store.import_records([record], source_name="retry", source_sha256=sha)
        assert again.already_imported == (sha in logged)
        assert (
            len(store.load_record(record.facts.pseudonym).observations)
            == N_OBSERVATIONS
        )
