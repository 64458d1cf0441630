"""Background recalibration: workers that run the update queue's jobs.

A job (see :mod:`cartwin.scheduler.queue`) is run by loading the patient's
record, calling :func:`cartwin.twin.build.build_twin` with the latest twin
version as parent, and saving the result as a new immutable twin version in
the same transaction that marks the job done. When the record, model and
settings are those of the latest version already, the job is done without a
new version (``outcome = "unchanged"``): two rules firing for the same data
make one version, not two.

:class:`Scheduler` runs workers in the background:

* **DuckDB** (one writing process per file): the workers are threads of the
  calling process sharing one store object (one connection) and taking turns
  on it through :func:`~cartwin.scheduler.queue.store_lock`; the twin is
  built outside the lock, so imports in the same process (holding the same
  lock) wait only for short queue and save transactions, never for a
  calibration. Jobs found ``running`` at start were left by a process that
  died and are taken up at once.
* **PostgreSQL** given as a URL: the workers are separate processes (``spawn``),
  each with its own connection; leases, row locks and advisory locks keep
  them from running one job twice. A running job of a worker process that
  died is taken up when its lease (``lease_s``) expires; the scheduler starts
  a new process in place of one that died. A worker process whose parent
  dies stops after its current job.

:func:`run_pending` runs due jobs in the calling thread, for tests and cron.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cartwin.errors import CartwinError, DataError
from cartwin.record.hashing import record_hash
from cartwin.scheduler.queue import (
    Job,
    LeaseLost,
    claim_job,
    complete_job,
    expire_leases,
    fail_job,
    is_postgres,
    store_lock,
    utc_now,
)
from cartwin.store import TwinStore, is_postgres_url, open_store
from cartwin.twin.build import (
    MODEL_NAME,
    MODEL_VERSION,
    TwinSettings,
    recorded_settings,
    build_twin,
)
from cartwin.twin.version import TwinVersion

logger = logging.getLogger(__name__)

#: Seconds a worker process slot waits after a start before a dead process in
#: it is replaced (keeps a process that cannot start from looping fast).
RESTART_DELAY_S = 2.0


@dataclass(frozen=True)
class SchedulerConfig:
    """How workers claim, retry and build.

    Attributes
    ----------
    lease_s : float
        Seconds a claimed job stays with its worker before another worker may
        take it up (longer than the slowest calibration).
    max_attempts : int
        Attempts before a job is marked ``failed``.
    retry_base_s, retry_max_s : float
        Backoff after a failed attempt: ``retry_base_s * 2**(attempt - 1)``
        seconds, at most ``retry_max_s``.
    poll_s : float
        Seconds an idle worker waits before looking at the queue again.
    settings : TwinSettings
        Settings of the twins built.
    """

    lease_s: float = 300.0
    max_attempts: int = 5
    retry_base_s: float = 10.0
    retry_max_s: float = 3600.0
    poll_s: float = 0.5
    settings: TwinSettings = field(default_factory=TwinSettings)

    def __post_init__(self) -> None:
        for name in ("lease_s", "retry_base_s", "retry_max_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise DataError(
                    f"{name} must be > 0 seconds, got {getattr(self, name)!r}"
                )
        if self.max_attempts < 1:
            raise DataError(f"max_attempts must be >= 1, got {self.max_attempts!r}")


@dataclass(frozen=True)
class JobResult:
    """What one attempt at a job did.

    Attributes
    ----------
    job_id : int
    pseudonym, model : str
    state : str
        ``"done"``; ``"pending"`` (failed, retried later); ``"failed"`` (no
        attempts left); ``"lost"`` (lease lost, nothing written).
    outcome : str or None
        ``"new_version"`` or ``"unchanged"`` when done.
    version_id : str or None
    error : str or None
    seconds : float
        Wall-clock time of the attempt.
    """

    job_id: int
    pseudonym: str
    model: str
    state: str
    outcome: str | None = None
    version_id: str | None = None
    error: str | None = None
    seconds: float = 0.0


def _is_current(parent: TwinVersion | None, record, settings: TwinSettings) -> bool:
    # settings compared as build_twin records them in a version
    return (
        parent is not None
        and parent.data_hash == record_hash(record)
        and (parent.model_name, parent.model_version) == (MODEL_NAME, MODEL_VERSION)
        and parent.settings == recorded_settings(settings)
    )


def run_job(
    store: TwinStore,
    job: Job,
    *,
    config: SchedulerConfig | None = None,
    now: dt.datetime | None = None,
) -> JobResult:
    """Recalibrate the twin of ``job``'s patient and record the result.

    Failures of the build or the save are recorded on the job (retried with
    backoff, or failed after ``max_attempts``) and returned, not raised.
    """
    config = config or SchedulerConfig()
    started = time.perf_counter()
    base = {"job_id": job.job_id, "pseudonym": job.pseudonym, "model": job.model}
    try:
        outcome, vid = _recalibrate(store, job, config, now)
    except LeaseLost as exc:
        logger.warning("%s", exc)
        return JobResult(**base, state="lost", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded on the job, see docstring
        error = f"{type(exc).__name__}: {exc}"
        state = fail_job(
            store, job, error, now=now, max_attempts=config.max_attempts,
            retry_base_s=config.retry_base_s, retry_max_s=config.retry_max_s,
        )  # fmt: skip
        logger.warning("job %d (%s) attempt %d failed: %s", job.job_id, job.model,
                       job.attempts, error)  # fmt: skip
        seconds = time.perf_counter() - started
        return JobResult(**base, state=state, error=error, seconds=seconds)
    seconds = time.perf_counter() - started
    return JobResult(**base, state="done", outcome=outcome, version_id=vid,
                     seconds=seconds)  # fmt: skip


def _recalibrate(store, job: Job, config: SchedulerConfig, now) -> tuple[str, str]:
    with store_lock(store):
        record = store.load_record(job.pseudonym)
        parent = store.latest_twin_version(job.pseudonym)
    if _is_current(parent, record, config.settings):
        complete_job(store, job, version_id=parent.version_id, now=now)
        return "unchanged", parent.version_id
    version = build_twin(
        record, settings=config.settings, parent=parent, now=now or utc_now()
    )
    complete_job(store, job, version=version, now=now)
    return "new_version", version.version_id


def run_pending(
    store: TwinStore,
    *,
    now: dt.datetime | None = None,
    worker: str = "run_pending",
    max_jobs: int | None = None,
    config: SchedulerConfig | None = None,
) -> list[JobResult]:
    """Run due jobs one after another in the calling thread; return what happened.

    Parameters
    ----------
    store : TwinStore
    now : datetime, optional
        The instant jobs are judged due at and versions are stamped with;
        defaults to the current time at each step.
    worker : str
        Name recorded on the jobs claimed.
    max_jobs : int, optional
        Stop after this many attempts; by default when nothing is due.
    config : SchedulerConfig, optional
    """
    config = config or SchedulerConfig()
    results: list[JobResult] = []
    while max_jobs is None or len(results) < max_jobs:
        job = claim_job(
            store, worker=worker, now=now, lease_s=config.lease_s,
            max_attempts=config.max_attempts,
        )  # fmt: skip
        if job is None:
            break
        results.append(run_job(store, job, config=config, now=now))
    return results


def worker_name(index: int) -> str:
    """``host-pid-index``: who holds a job, for the queue view and leases."""
    return f"{socket.gethostname()}-{os.getpid()}-{index}"


def _work_loop(
    store, config: SchedulerConfig, index: int, stop, drain: bool, *,
    watch_parent: bool = False,
) -> None:  # fmt: skip
    name, parent = worker_name(index), os.getppid()
    while not stop.is_set() and not (watch_parent and os.getppid() != parent):
        try:
            results = run_pending(store, worker=name, max_jobs=1, config=config)
        except CartwinError as exc:  # store unreachable: log, wait, try again
            logger.error("worker %s: %s", name, exc)
            results = []
        if not results:
            if drain:
                return
            stop.wait(config.poll_s)


class _StopFlag:
    """A stop request a signal handler may set (no lock a handler could block on)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._set and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return self._set


def _process_main(url: str, config: SchedulerConfig, index: int, drain: bool) -> None:
    """Body of a worker process: work until SIGTERM (or drained, or orphaned).

    The stop request is a signal, not a shared ``multiprocessing.Event``: a
    process killed while holding such an event's internal lock would leave
    every other process waiting on it for ever.
    """
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    with open_store(url) as store:
        _work_loop(store, config, index, stop, drain, watch_parent=True)


class Scheduler:
    """Background workers that run due recalibration jobs (see module notes).

    Parameters
    ----------
    store : str or TwinStore, optional
        A DuckDB path or PostgreSQL URL (see :func:`cartwin.store.open_store`),
        or an open store to share (the workers are then threads of this
        process; other users of that store object must hold
        :func:`~cartwin.scheduler.queue.store_lock`). A process that also
        imports into a DuckDB file should pass its store object, so that all
        writes go through one connection.
    workers : int
        Number of workers (threads for DuckDB or a shared store, processes
        for a PostgreSQL URL).
    config : SchedulerConfig, optional
    drain : bool
        Workers stop once nothing is due (for batch runs); :meth:`wait`
        returns when all have stopped.

    Examples
    --------
    >>> with Scheduler(":memory:", workers=1) as scheduler:  # doctest: +SKIP
    ...     enqueue_for_observations(scheduler.store, pseudonym, ["spo2"])
    """

    def __init__(
        self,
        store: str | os.PathLike | TwinStore | None = None,
        workers: int = 2,
        *,
        config: SchedulerConfig | None = None,
        drain: bool = False,
    ) -> None:
        if workers < 1:
            raise DataError(f"workers must be >= 1, got {workers!r}")
        self.workers, self.drain = workers, drain
        self.config = config or SchedulerConfig()
        self._store = store if isinstance(store, TwinStore) else None
        self._location = None if self._store is not None else store
        self._owns_store = False
        self.mode = (
            "processes"
            if self._store is None and is_postgres_url(self._location)
            else "threads"
        )
        self._stop: Any = None
        self._handles: list = []
        self._supervisor: threading.Thread | None = None
        self._started_at: dict[int, float] = {}
        #: Worker processes started again after one died.
        self.restarts = 0

    @property
    def store(self) -> TwinStore:
        """The store the worker threads share (threads mode, once started)."""
        if self._store is None:
            raise DataError(
                "the scheduler has no shared store: it is not started, or its "
                "workers are processes with a connection each"
            )
        return self._store

    def start(self) -> Scheduler:
        """Start the workers; returns ``self``."""
        if self._handles:
            raise DataError("scheduler already started")
        if self.mode == "threads":
            self._start_threads()
        else:
            self._start_processes()
        logger.info("scheduler started: %d %s", self.workers, self.mode)
        return self

    def _start_threads(self) -> None:
        if self._store is None:
            self._store = open_store(self._location)
            self._owns_store = True
        if not is_postgres(self._store):
            expire_leases(self._store)  # only this process can write the file
        self._stop = threading.Event()
        self._handles = [
            threading.Thread(
                target=_work_loop,
                name=f"cartwin-worker-{i}",
                daemon=True,
                args=(self._store, self.config, i, self._stop, self.drain),
            )
            for i in range(self.workers)
        ]
        for handle in self._handles:
            handle.start()

    def _start_processes(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._handles = [self._spawn(i) for i in range(self.workers)]
        if not self.drain:
            self._supervisor = threading.Thread(
                target=self._supervise, name="cartwin-worker-supervisor", daemon=True
            )
            self._supervisor.start()

    def _spawn(self, index: int):
        handle = self._context.Process(
            target=_process_main, name=f"cartwin-worker-{index}",
            args=(self._location, self.config, index, self.drain),
        )  # fmt: skip
        handle.start()
        self._started_at[index] = time.monotonic()
        return handle

    def _supervise(self) -> None:
        """Replace worker processes that died (killed, out of memory)."""
        while not self._stop.wait(self.config.poll_s):
            for index, handle in enumerate(self._handles):
                recent = time.monotonic() - self._started_at[index] < RESTART_DELAY_S
                if handle.is_alive() or recent or self._stop.is_set():
                    continue
                logger.warning(
                    "worker process %s exited with code %s; starting another",
                    handle.pid, handle.exitcode,
                )  # fmt: skip
                self.restarts += 1
                self._handles[index] = self._spawn(index)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the workers to stop (``drain``); True when all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in self._handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            handle.join(left)
        return not any(handle.is_alive() for handle in self._handles)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the workers to stop after their current job, and wait for them.

        Worker processes get SIGTERM; those still running after ``timeout``
        seconds are killed, and their jobs are taken up again when the lease
        expires.
        """
        if self._stop is not None:
            self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        processes = [h for h in self._handles if not isinstance(h, threading.Thread)]
        for handle in processes:
            if handle.is_alive():
                handle.terminate()  # SIGTERM: stop after the current job
        self.wait(timeout)
        for handle in processes:
            if handle.is_alive():
                handle.kill()
                handle.join(5.0)
        self._handles = []
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store, self._owns_store = None, False

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
